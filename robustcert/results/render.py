"""Rendering a results table as markdown, LaTeX or csv, with the best values marked."""
from __future__ import annotations

import math

import pandas as pd

from ..errors import ResultsError
from .policy import is_policy_table
from .summaries import ABSTENTION, ACR, ROWS


# Which way is better, per column kind: certified/clean accuracy and ACR up, abstention down.
def column_direction(column: str) -> int:
    """+1 if larger is better, -1 if smaller is better, 0 if the column has no best (rows)."""
    if column == ROWS:
        return 0
    return -1 if column == ABSTENTION else 1


def comparable_groups(table: pd.DataFrame) -> list[list[str]]:
    """The groups of files of a :func:`results_table` whose numbers may be compared: the same kind
    of run (certify or predict: a predict file's accuracy is not a certified accuracy) and the same
    number of rows (rates over different test sets are not comparable). Files without rows join
    no group; a policy table has none (its rows are budgets)."""
    if is_policy_table(table) or ACR not in table.columns:  # policy rows are budgets; attack rows are not ranked
        return []
    modes = table.attrs.get("modes", {})
    groups: dict[tuple, list[str]] = {}
    for label, line in table.iterrows():
        if int(line[ROWS]) == 0:
            continue
        kind = "predict" if pd.isna(line[ACR]) else "certify"
        groups.setdefault((kind, int(line[ROWS]), modes.get(label)), []).append(label)
    return list(groups.values())


def best_rows(table: pd.DataFrame, decimals: int = 3) -> dict[str, set]:
    """For each column, the labels whose value is best at the displayed precision (ties: all),
    within each group of :func:`comparable_groups`.

    A group marks nothing in a column where fewer than two of its files have a value or all shown
    values are equal.
    """
    best: dict[str, set] = {column: set() for column in table.columns}
    for group in comparable_groups(table):
        for column in table.columns:
            direction = column_direction(column)
            values = table.loc[group, column].astype(float).round(decimals).dropna()
            if direction == 0 or len(values) < 2 or values.nunique() < 2:
                continue
            target = values.max() if direction > 0 else values.min()
            best[column] |= set(values.index[values == target])
    return best


def marking_note(table: pd.DataFrame) -> str | None:
    """Why some files were not compared when the best values were marked (None when all were)."""
    if is_policy_table(table) or ACR not in table.columns:
        return None  # nothing is marked: policy rows are budgets, attack rows bounds
    groups = comparable_groups(table)
    if len(table) < 2 or (len(groups) == 1 and len(groups[0]) == len(table)):
        return None
    compared = [group for group in groups if len(group) >= 2]
    if not compared:
        return ("no best value marked: no two files are of the same kind (certify/predict) with the same "
                "number of rows and mode (fixed n, or a sequential target radius)")
    return ("best values marked only among files of the same kind (certify/predict) with the same number of "
            "rows and mode (fixed n, or a sequential target radius): "
            + "; ".join(", ".join(map(str, group)) for group in compared))


INTEGER_COLUMNS = (ROWS, "n")


def _cell(value, column: str, decimals: int, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if column in INTEGER_COLUMNS:
        return str(int(value))
    if column in ("budget", "eps"):
        return f"{value:g}"
    return f"{value:.{decimals}f}"


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


def render_table(table: pd.DataFrame, fmt: str = "markdown", decimals: int = 3, mark_best: bool | None = None) -> str:
    """Format a :func:`results_table` (or :func:`policy_table`) as ``markdown``, ``latex`` (booktabs)
    or ``csv`` text.

    ``mark_best`` (default: on for markdown and LaTeX, off for csv): the best value of each column
    among comparable files (:func:`best_rows`) is **bold** in markdown, ``\\textbf`` in LaTeX and
    followed by ``*`` in csv. csv is data: one row per file (per file and budget for a policy
    table), numbers only, an empty cell for a value that does not exist (a predict file's
    certified accuracy), no comment lines; ``*`` marks appear only when asked for.
    """
    if fmt not in ("markdown", "latex", "csv"):
        raise ResultsError(f"unknown table format {fmt!r}: use markdown, latex or csv")
    if mark_best is None:
        mark_best = fmt != "csv"
    best = best_rows(table, decimals) if mark_best else {c: set() for c in table.columns}
    columns = list(table.columns)
    body = []
    for label, values in table.iterrows():
        cells = []
        for column in columns:
            text = _cell(values[column], column, decimals, missing="" if fmt == "csv" else "-")
            if label in best[column]:
                text = {"markdown": f"**{text}**", "latex": f"\\textbf{{{text}}}", "csv": f"{text}*"}[fmt]
            cells.append(text)
        body.append((str(label), cells))
    if fmt == "markdown":
        lines = ["| " + " | ".join([table.index.name or "file"] + columns) + " |",
                 "|---|" + "---:|" * len(columns)]
        lines += ["| " + " | ".join([label.replace("|", "\\|")] + cells) + " |" for label, cells in body]
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        header = [table.index.name or "file"] + [f"${c.replace('=', '{=}')}$" if c.startswith("r=") else c
                                                  for c in columns]
        lines = [r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule",
                 " & ".join(_latex_escape(h) if not h.startswith("$") else h for h in header) + r" \\",
                 r"\midrule"]
        lines += [" & ".join([_latex_escape(label)] + cells) + r" \\" for label, cells in body]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([table.index.name or "file"] + columns)
    for label, cells in body:
        writer.writerow([label] + cells)
    return buffer.getvalue()
