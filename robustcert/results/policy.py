"""Tables of policy-smoothing runs (Kumar et al. 2022): one row per file and budget B."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import ResultsError
from ..files import POLICY_COLUMNS


def read_policy_certificate(path: str | Path) -> pd.DataFrame:
    """A ``robustcert certify-policy`` TSV (one row per budget B) as a DataFrame, sorted by budget."""
    try:
        frame = pd.read_csv(path, sep="\t")
    except Exception as exc:
        raise ResultsError(f"cannot read policy certificate {path}: {str(exc).splitlines()[0]}") from None
    if not set(POLICY_COLUMNS) <= set(frame.columns):
        raise ResultsError(f"{path} is not a certify-policy TSV (needs budget and certified_return columns)")
    return frame.sort_values("budget")


#: The columns of a policy table, in order (certified quantiles go after certified_return).
POLICY_TABLE_COLUMNS = ("budget", "certified_return", "clean_mean", "n")


def policy_table(frames: dict[str, pd.DataFrame] | Sequence[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """The certified returns of policy-smoothing runs (Kumar et al. 2022), one row per file and budget.

    Index: the file's label; columns ``budget`` (the episode l2 budget B), ``certified_return``
    (lower bound on the expected return under attack), ``certified_qXX`` (certified quantiles),
    ``clean_mean`` (mean clean smoothed return) and ``n`` (episodes).
    """
    items = list(frames.items()) if isinstance(frames, dict) else list(frames)
    quantiles = sorted({c for _, f in items for c in f.columns if c.startswith("certified_q")},
                       key=lambda c: float(c[len("certified_q"):] or 0))
    columns = ["budget", "certified_return", *quantiles, *[c for c in POLICY_TABLE_COLUMNS[2:]
                                                           if any(c in f.columns for _, f in items)]]
    parts = [frame.reindex(columns=columns).assign(file=label).set_index("file") for label, frame in items]
    return pd.concat(parts) if parts else pd.DataFrame(columns=columns)


def is_policy_table(table: pd.DataFrame) -> bool:
    return "budget" in table.columns
