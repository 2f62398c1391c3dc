"""Result files in the reference format, and the summaries papers report.

Formats (Cohen et al. 2019, locuslab/smoothing, kept so existing analysis scripts work):

* certify TSV: ``idx  label  predict  radius  correct  time`` (tab-separated, header line);
  ``predict = -1`` on abstention with ``radius = 0.0``; ``correct = int(predict == label)``;
  radius with 3 significant digits; time as ``H:MM:SS.ffffff`` (reference) or plain seconds.
* predict TSV: ``idx  label  predict  correct  time``.

Radii are written rounded *down* to 3 significant digits (the reference rounds to nearest,
which can print a radius a little larger than the one certified).
"""
from __future__ import annotations

import datetime
import json
import math
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binom

from .errors import InvalidArgumentError, RobustCertError, check_alpha, check_count

CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")


class ResultsError(RobustCertError):
    """A result file is missing, unreadable or not in the expected format."""


def format_radius(radius: float) -> str:
    """Radius with 3 significant digits like the reference ``{:.3}``, but rounded toward zero."""
    if radius <= 0 or not math.isfinite(radius):
        return "0.0" if radius <= 0 else f"{radius:.3}"
    exact = Decimal(radius)
    quantum = Decimal(1).scaleb(exact.adjusted() - 2)
    return f"{float(exact.quantize(quantum, rounding=ROUND_FLOOR)):.3}"


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write a text file through a temporary file beside it and a rename: a failure never leaves
    the file truncated."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def format_time(seconds: float) -> str:
    """Elapsed time as ``str(datetime.timedelta)``, e.g. ``0:02:31.238689`` (reference format)."""
    return str(datetime.timedelta(seconds=float(seconds)))


def certify_row(idx: int, label: int, prediction: int, radius: float, seconds: float) -> str:
    radius_text = "0.0" if prediction == -1 else format_radius(radius)
    return f"{idx}\t{label}\t{prediction}\t{radius_text}\t{int(prediction == label)}\t{format_time(seconds)}"


def predict_row(idx: int, label: int, prediction: int, seconds: float) -> str:
    return f"{idx}\t{label}\t{prediction}\t{int(prediction == label)}\t{format_time(seconds)}"


def parse_time(value) -> float:
    """Seconds from a time cell: plain seconds (``12.3``) or a timedelta (``0:02:31.238689``)."""
    text = str(value).strip()
    if ":" not in text:
        return float(text)
    days = 0.0
    if "day" in text:  # "1 day, 0:00:01"
        day_part, text = text.split(",", 1)
        days = float(day_part.split()[0])
    hours, minutes, seconds = text.strip().split(":")
    return days * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a certify or predict TSV (ours or the published reference files) into a DataFrame.

    The ``time`` column is converted to seconds. Raises ResultsError on a missing or malformed file.
    """
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"result file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            handle.readline()
        frame = pd.read_csv(path, sep="\t", dtype={"time": str})
    except UnicodeDecodeError:
        raise ResultsError(f"cannot read result file {path}: not a text file") from None
    except pd.errors.EmptyDataError:
        raise ResultsError(f"cannot read result file {path}: it is empty (no header line)") from None
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ResultsError(f"cannot read result file {path}: not a tab-separated result file ({detail})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    required = {"idx", "label", "predict", "correct"}
    if not required <= set(frame.columns):
        raise ResultsError(
            f"{path} is not a certify/predict TSV: columns {list(frame.columns)}, need {sorted(required)}"
        )
    try:
        for column in ("idx", "label", "predict", "correct"):
            frame[column] = frame[column].astype(int)
        if "radius" in frame:
            frame["radius"] = frame["radius"].astype(float)
            bad = frame["radius"][~np.isfinite(frame["radius"]) | (frame["radius"] < 0)]
            if len(bad):  # certify writes finite radii >= 0; anything else would skew every summary
                raise ResultsError(f"malformed row in {path}: radius {bad.iloc[0]} (must be a finite number >= 0)")
        if "time" in frame:
            frame["time"] = frame["time"].map(parse_time)
    except (ValueError, TypeError) as exc:
        raise ResultsError(f"malformed row in {path}: {exc}") from None
    return frame


def certified_accuracy(frame: pd.DataFrame, radii: Iterable[float]) -> np.ndarray:
    """Certified accuracy at each radius r: mean over ALL rows of (correct and radius >= r).

    Abstentions count as wrong (they have correct = 0) and the comparison is inclusive. NaN for a
    file without rows (there is no accuracy to report).
    """
    radii = [float(r) for r in radii]
    if len(frame) == 0:
        return np.full(len(radii), np.nan)
    correct = frame["correct"].to_numpy().astype(bool)
    radius = frame["radius"].to_numpy(dtype=float)
    return np.array([np.mean(correct & (radius >= r)) for r in radii])


def average_certified_radius(frame: pd.DataFrame) -> float:
    """ACR: mean over all rows of radius * correct."""
    if len(frame) == 0:
        return 0.0
    return float(np.mean(frame["radius"].to_numpy() * frame["correct"].to_numpy()))


def false_certificate_quantile(rows: int, a: float, rho: float) -> int:
    """The smallest k with P(Binomial(rows, a) > k) <= rho (exact, from the binomial tail).

    If each of ``rows`` certificates is false with probability at most ``a``, independently (each
    input has its own noise), the number of false ones is stochastically below Binomial(rows, a),
    so it exceeds k with probability at most rho.
    """
    rows = check_count(rows, "rows")
    a, rho = check_alpha(a, "a"), check_alpha(rho, "rho")
    k = int(binom.ppf(1.0 - rho, rows, a))
    while binom.sf(k, rows, a) > rho:  # ppf works on 1 - rho, which rounds; the tail decides
        k += 1
    while k > 0 and binom.sf(k - 1, rows, a) <= rho:
        k -= 1
    return k


HIGH_PROBABILITY_BOUNDS = ("binomial", "bernstein")


def high_probability_accuracy(accuracy: float, rows: int, a: float = 0.001, rho: float = 0.001,
                              bound: str = "binomial") -> float:
    """A lower bound, holding with probability >= 1 - rho, on the accuracy that m = ``rows``
    certificates at level ``a`` (each false with probability <= a) claim (Cohen et al. 2019, Sec. 4).

    The rows whose certificate is false number F <= Binomial(m, a) stochastically, and the true
    certified accuracy is >= accuracy - F / m. The bound subtracts a deficit d with P(F > m d) <= rho:

    * ``"binomial"`` (default, exact): d = k / m, k = :func:`false_certificate_quantile` (m, a, rho);
    * ``"bernstein"``: d = a + sqrt(2 a (1 - a) L / m) + 2 L / (3 m), L = ln(1/rho) (Bernstein's
      inequality solved for the deviation; looser than the exact quantile).

    Not the published form a + sqrt(a (1 - a) L / m) + L / (3 m) of Cohen et al.'s analysis code:
    it lacks Bernstein's factor 2 on both terms, and P(F > m d) exceeds rho = 0.001 from m of a
    few thousand on (0.0016 at m = 10^4, 0.0038 at m = 10^6; tests/test_results.py computes
    the exact binomial tails).
    """
    if bound not in HIGH_PROBABILITY_BOUNDS:
        raise InvalidArgumentError(f"bound must be one of {HIGH_PROBABILITY_BOUNDS}, got {bound!r}")
    rows = check_count(rows, "rows")
    a, rho = check_alpha(a, "a"), check_alpha(rho, "rho")
    if bound == "binomial":
        return accuracy - false_certificate_quantile(rows, a, rho) / rows
    log_term = math.log(1.0 / rho)
    return accuracy - a - math.sqrt(2 * a * (1 - a) * log_term / rows) - 2 * log_term / (3 * rows)


def parse_radii(text: str | Sequence[float]) -> list[float]:
    """Radii from ``"0,0.25,0.5"`` or ``"0:1.5:0.25"`` (start:stop:step, stop included), or a list.

    Raises ResultsError unless the radii are finite numbers >= 0.
    """
    try:
        if not isinstance(text, str):
            radii = [float(r) for r in text]
        elif ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if not step > 0 or not math.isfinite(stop - start):
                raise ValueError
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            radii = [round(start + i * step, 10) for i in range(max(count, 0))]
        else:
            radii = [float(v) for v in text.split(",") if v.strip()]
    except (TypeError, ValueError):
        raise ResultsError(f"bad radius list {text!r}: use e.g. 0,0.25,0.5 or 0:1.5:0.25") from None
    if not radii or any(not math.isfinite(r) or r < 0 for r in radii):
        raise ResultsError(f"bad radius list {text!r}: give one or more finite radii >= 0, e.g. 0,0.25,0.5")
    return radii


# --------------------------------------------------------------------------- summary tables
CLEAN_ACCURACY, ABSTENTION, ACR, ROWS = "clean accuracy", "abstention", "ACR", "rows"


def radius_column(radius: float) -> str:
    """Column name of the certified accuracy at a radius, e.g. ``r=0.25``."""
    return f"r={radius:g}"


def is_certify_frame(frame: pd.DataFrame) -> bool:
    """True for a certify TSV (it has a radius column), False for a predict TSV."""
    return "radius" in frame.columns


def default_radii(max_radius: float, max_columns: int = 9) -> list[float]:
    """A radius grid from 0 to ``max_radius`` (rounded up to the step) with at most ``max_columns``
    points; the step is the smallest of 0.25, 0.5, 1, 2, 5, 10, ... that fits (0.25 gives the
    reference CIFAR-10 grid 0, 0.25, ..., 1.5 for the published files)."""
    max_radius = max(float(max_radius), 0.0) if math.isfinite(max_radius) else 0.0
    steps = [0.25, 0.5, 1.0] + [m * 10.0 ** e for e in range(0, 12) for m in (2.0, 5.0, 10.0)]
    for step in steps:
        count = int(math.ceil(max_radius / step - 1e-9)) + 1
        if count <= max_columns:
            return [round(i * step, 10) for i in range(max(count, 2))]
    return [0.0, max_radius]


def summary_row(frame: pd.DataFrame, radii: Sequence[float]) -> dict[str, float]:
    """One line of a results table for one file.

    * ``r=R``: certified accuracy at R (mean over ALL rows of correct and radius >= R; abstentions
      count as wrong); NaN for a predict file, which certifies nothing.
    * ``clean accuracy``: mean of ``correct`` (for a certify file the certified accuracy at r=0,
      for a predict file the smoothed classifier's accuracy).
    * ``abstention``: fraction of rows with ``predict == -1``.
    * ``ACR``: average certified radius (mean of radius * correct); NaN for a predict file.
    * ``rows``: number of rows (the denominator of every rate).
    Rates of a file with no rows are NaN.
    """
    rows = len(frame)
    certify = is_certify_frame(frame)
    if certify and rows:
        accuracies = certified_accuracy(frame, radii)
    else:
        accuracies = np.full(len(radii), np.nan)
    line = {radius_column(r): float(a) for r, a in zip(radii, accuracies)}
    line[CLEAN_ACCURACY] = float(frame["correct"].mean()) if rows else math.nan
    line[ABSTENTION] = float((frame["predict"] == -1).mean()) if rows else math.nan
    line[ACR] = average_certified_radius(frame) if certify and rows else math.nan
    line[ROWS] = rows
    return line


def results_table(frames: dict[str, pd.DataFrame] | Sequence[tuple[str, pd.DataFrame]],
                  radii: Sequence[float] | None = None) -> pd.DataFrame:
    """The table papers report, one row per result file (index: its label).

    ``frames`` maps a label to a DataFrame from :func:`read_results`. ``radii`` defaults to
    :func:`default_radii` of the largest radius in the certify files. Columns: see
    :func:`summary_row`.
    """
    items = list(frames.items()) if isinstance(frames, dict) else list(frames)
    if radii is None:
        largest = max((float(f["radius"].max()) for _, f in items if is_certify_frame(f) and len(f)), default=0.0)
        radii = default_radii(largest)
    radii = parse_radii(radii)
    table = pd.DataFrame([summary_row(frame, radii) for _, frame in items],
                         index=pd.Index([label for label, _ in items], name="file"))
    table[ROWS] = table[ROWS].astype(int)
    return table


def default_labels(paths: Sequence[str | Path]) -> list[str]:
    """Short distinct labels for result files: the fewest trailing path parts that tell them apart
    (``sigma_0.25``, or ``noise_0.12/test/sigma_0.50`` when two files share a name), ``.tsv`` dropped."""
    parts = [list(Path(p).with_suffix("").parts if Path(p).suffix == ".tsv" else Path(p).parts) for p in paths]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def table_from_files(paths: Sequence[str | Path], radii: Sequence[float] | str | None = None,
                     labels: Sequence[str] | None = None, norm: str | None = None,
                     mixed_norms: bool = False) -> pd.DataFrame:
    """Read result files (ours or the published ones) and build :func:`results_table`.

    Every file's radii are in the norm its sidecar records (:func:`result_norm`). Files of
    different norms are refused unless ``mixed_norms`` (then each label says its norm);
    ``norm="linf"`` converts l2 and l1 radii to l-infinity ones (:func:`linf_radii`). Radius
    columns name the norm (``l1 r=0.5``), except l2's (``r=0.5``, the reference format).
    """
    if not paths:
        raise ResultsError("no result files given")
    if labels is None:
        labels = default_labels(paths)
    elif len(labels) != len(paths):
        raise ResultsError(f"got {len(labels)} labels for {len(paths)} files")
    if isinstance(radii, str):
        radii = parse_radii(radii)
    frames, norms = [read_results(path) for path in paths], [result_norm(path) for path in paths]
    if norm is not None:
        frames = [convert_radii(frame, file_norm, norm, path) for frame, file_norm, path in zip(frames, norms, paths)]
        norms = [norm] * len(paths)
        if norm == "linf" and radii is None:
            radii = fine_radii(max((float(f["radius"].max()) for f in frames if is_certify_frame(f) and len(f)),
                                   default=0.0))
    labels = norm_labels(paths, labels, norms, mixed_norms)
    table = results_table(list(zip(labels, frames)), radii)
    return table if len(set(norms)) > 1 else name_norm_columns(table, norms[0])


# --------------------------------------------------------------------------- norms of result files
NORMS = ("l2", "l1", "linf", "l0")
LINF_NOTE = ("l-infinity radii converted from l2 (R / sqrt(d)) and l1 (R / d) certificates: valid lower bounds, "
             "but weak ones (an l-infinity certificate of its own would be larger)")


def read_sidecar(path: str | Path) -> dict:
    """The JSON sidecar ``FILE.json`` of a result file, or {} when there is none (the published
    reference files) or it is not a JSON object."""
    sidecar = Path(path).with_name(Path(path).name + ".json")
    if not sidecar.is_file():
        return {}
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ResultsError(f"cannot read the sidecar {sidecar} of {path}: not a JSON file") from None
    return record if isinstance(record, dict) else {}


def result_norm(path: str | Path) -> str:
    """The norm of a result file's radii, from its sidecar; "l2" when the sidecar records none
    (Cohen et al.'s reference files, and runs of l2 methods made before norms were recorded)."""
    norm = read_sidecar(path).get("norm", "l2")
    if norm not in NORMS:
        raise ResultsError(f"{path}: its sidecar records an unknown norm {norm!r}")
    return norm


def input_dimension(path: str | Path) -> int | None:
    """d, the number of input coordinates, from the sidecar's data section (None if unknown)."""
    shape = (read_sidecar(path).get("data") or {}).get("input_shape")
    return math.prod(int(v) for v in shape) if shape else None


def linf_radii(radii, norm: str, dimension: int):
    """l-infinity radii certified by l2 or l1 radii in dimension d: ||v||_2 <= sqrt(d) ||v||_inf and
    ||v||_1 <= d ||v||_inf, so every v with ||v||_inf < R_2 / sqrt(d) (or R_1 / d) lies in the
    certified l2 (l1) ball. Valid and weak: for d = 3072 (CIFAR-10) R_2 / sqrt(d) = R_2 / 55."""
    if norm == "l2":
        return radii / math.sqrt(dimension)
    if norm == "l1":
        return radii / dimension
    if norm == "linf":
        return radii
    raise ResultsError(f"{norm} radii do not convert to l-infinity radii")


def convert_radii(frame: pd.DataFrame, norm: str, target: str, path) -> pd.DataFrame:
    """``frame`` (a result file's rows, radii in ``norm``) with radii in ``target``: the same norm,
    or l-infinity from l2 or l1 (:func:`linf_radii`)."""
    if target not in NORMS:
        raise ResultsError(f"unknown norm {target!r}: use {', '.join(NORMS)}")
    if norm == target or not is_certify_frame(frame):
        return frame
    if target != "linf" or norm not in ("l2", "l1"):
        raise ResultsError(f"{path} certifies {norm} radii, which do not convert to {target} radii "
                           f"(only l2 and l1 radii convert, to linf)")
    dimension = input_dimension(path)
    if dimension is None:
        raise ResultsError(f"cannot convert {path} to l-infinity radii: its input dimension is unknown "
                           f"(no sidecar {Path(path).name}.json with the data's input shape)")
    converted = frame.copy()
    converted["radius"] = linf_radii(frame["radius"].to_numpy(dtype=float), norm, dimension)
    return converted


def norm_labels(paths, labels: Sequence[str], norms: Sequence[str], mixed_norms: bool) -> list[str]:
    """The labels, refusing files of different norms unless ``mixed_norms`` (then each label ends
    with its norm, e.g. ``sigma_0.25 [l1]``)."""
    if len(set(norms)) <= 1:
        return list(labels)
    if not mixed_norms:
        listed = ", ".join(f"{Path(p).name}: {n}" for p, n in zip(paths, norms))
        raise ResultsError(f"these files certify radii in different norms ({listed}), which are not comparable; "
                           f"pass --mixed-norms (mixed_norms=True) to show them together anyway, or --norm linf "
                           f"to convert l2 and l1 radii to (weak) l-infinity ones")
    return [f"{label} [{norm}]" for label, norm in zip(labels, norms)]


def name_norm_columns(table: pd.DataFrame, norm: str) -> pd.DataFrame:
    """Radius columns that say their norm (``l1 r=0.5``); l2 keeps the reference names (``r=0.5``)."""
    if norm == "l2":
        return table
    return table.rename(columns={c: f"{norm} {c}" for c in table.columns if c.startswith("r=")})


def fine_radii(max_radius: float, max_columns: int = 9) -> list[float]:
    """A radius grid from 0 to ``max_radius`` for small radii (l-infinity): the smallest step
    1, 2 or 5 x 10^e that needs at most ``max_columns`` points."""
    if not (math.isfinite(max_radius) and max_radius > 0):
        return [0.0]
    for exponent in range(-6, 7):
        for mantissa in (1, 2, 5):
            step = mantissa * 10.0 ** exponent
            count = int(math.ceil(max_radius / step - 1e-9)) + 1
            if count <= max_columns:
                return [round(i * step, 12) for i in range(count)]
    return [0.0, max_radius]


# Which way is better, per column kind: certified/clean accuracy and ACR up, abstention down.
def column_direction(column: str) -> int:
    """+1 if larger is better, -1 if smaller is better, 0 if the column has no best (rows)."""
    if column == ROWS:
        return 0
    return -1 if column == ABSTENTION else 1


def best_rows(table: pd.DataFrame, decimals: int = 3) -> dict[str, set]:
    """For each column, the labels whose value is best at the displayed precision (ties: all).

    A column has no best when fewer than two files have a value or all shown values are equal.
    """
    best: dict[str, set] = {}
    for column in table.columns:
        direction = column_direction(column)
        values = table[column].astype(float).round(decimals).dropna()
        if direction == 0 or len(values) < 2 or values.nunique() < 2:
            best[column] = set()
            continue
        target = values.max() if direction > 0 else values.min()
        best[column] = set(values.index[values == target])
    return best


def _cell(value, column: str, decimals: int) -> str:
    if column == ROWS:
        return str(int(value))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{decimals}f}"


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


def render_table(table: pd.DataFrame, fmt: str = "markdown", decimals: int = 3, mark_best: bool = True) -> str:
    """Format a :func:`results_table` as ``markdown``, ``latex`` (booktabs) or ``csv`` text.

    The best value of each column is **bold** in markdown, ``\\textbf`` in LaTeX, and followed by
    ``*`` in csv (with a closing ``# * = best`` comment line; ``mark_best=False`` gives plain numbers).
    """
    if fmt not in ("markdown", "latex", "csv"):
        raise ResultsError(f"unknown table format {fmt!r}: use markdown, latex or csv")
    best = best_rows(table, decimals) if mark_best else {c: set() for c in table.columns}
    columns = list(table.columns)
    body = []
    for label, values in table.iterrows():
        cells = []
        for column in columns:
            text = _cell(values[column], column, decimals)
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
    if mark_best and any(best.values()):
        buffer.write("# * = best value in its column\n")
    return buffer.getvalue()


def certificates_frame(certificates: Sequence, labels: Sequence[int]) -> pd.DataFrame:
    """Certificates from the Python API (``Smooth.certify_batch``) as a certify-TSV-like DataFrame.

    Columns ``idx label predict radius correct time`` with the same conventions as the TSV
    (abstention: predict -1, radius 0.0, correct 0), so every summary in this module applies.
    Radii are kept exact here (the TSV rounds them down to 3 significant digits).
    """
    if len(certificates) != len(labels):
        raise ResultsError(f"got {len(labels)} labels for {len(certificates)} certificates")
    rows = []
    for certificate, label in zip(certificates, labels):
        abstained = certificate.prediction == -1
        rows.append({"idx": int(certificate.index), "label": int(label), "predict": int(certificate.prediction),
                     "radius": 0.0 if abstained else float(certificate.radius),
                     "correct": int(not abstained and certificate.prediction == int(label)),
                     "time": float(certificate.time)})
    return pd.DataFrame(rows, columns=list(CERTIFY_COLUMNS))
