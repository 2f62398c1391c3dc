"""The summaries papers report from result files: certified accuracy, ACR, the table.

Every rate is over ALL rows of a file (abstentions count as wrong); see :func:`summary_row`.
:func:`table_from_files` is what ``robustcert table`` prints.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binom

from ..errors import InvalidArgumentError, ResultsError, check_alpha, check_count
from ..files import header_columns, result_kind, same_file
from .formats import is_certify_frame, read_results
from .norms import convert_radii, fine_radii, name_norm_columns, norm_labels, result_norm
from .policy import policy_table, read_policy_certificate


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


def default_radii(max_radius: float, max_columns: int = 9) -> list[float]:
    """A radius grid from 0 up to ``max_radius`` (not beyond: a column past the largest certified
    radius would be 0 for every file) with at most ``max_columns`` points; the step is the smallest
    of 0.25, 0.5, 1, 2, 5, 10, ... that fits (0.25 gives the reference CIFAR-10 grid 0, 0.25, ...,
    1.5 for the published files)."""
    max_radius = max(float(max_radius), 0.0) if math.isfinite(max_radius) else 0.0
    steps = [0.25, 0.5, 1.0] + [m * 10.0 ** e for e in range(0, 12) for m in (2.0, 5.0, 10.0)]
    for step in steps:
        count = int(math.floor(max_radius / step + 1e-9)) + 1
        if count <= max_columns:
            return [round(i * step, 10) for i in range(count)]
    return [0.0, max_radius]


def largest_certified_radius(frame: pd.DataFrame) -> float:
    """The largest radius of a correct row (0 if none): beyond it certified accuracy is 0."""
    if not is_certify_frame(frame) or not len(frame):
        return 0.0
    correct = frame["correct"].to_numpy().astype(bool)
    return float(frame["radius"].to_numpy(dtype=float)[correct].max()) if correct.any() else 0.0


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

    ``frames`` maps a label to a DataFrame from :func:`read_results` (or
    :func:`certificates_frame`, or the frame :func:`robustcert.certify_dataset` returns).
    ``radii`` defaults to :func:`default_radii` of the largest certified radius of a correct row
    (so no column is 0 for every file). Columns: see :func:`summary_row`.
    """
    items = list(frames.items()) if isinstance(frames, dict) else list(frames)
    if radii is None:
        radii = default_radii(max((largest_certified_radius(frame) for _, frame in items), default=0.0))
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
    """Read result files (ours or the published ones) and build their table.

    certify and predict TSVs give :func:`results_table` (one row per file); certify-policy TSVs
    give :func:`policy_table` (one row per file and budget). The two kinds do not mix.

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
    if len(set(labels)) != len(labels):
        twice = next((a for i, a in enumerate(paths) if any(same_file(a, b) for b in paths[:i])), None)
        if twice is not None:
            raise ResultsError(f"{twice} is given twice")
        raise ResultsError(f"labels must differ from each other, got {', '.join(labels)}")
    kinds = [result_kind(header_columns(path)) for path in paths]
    if "attack" in kinds:
        raise ResultsError(f"{paths[kinds.index('attack')]} is an attack TSV (robustcert attack): its accuracy is "
                           "empirical, an upper bound on robust accuracy, not a certificate, so it has no place in a "
                           "table of certified accuracy; summarise it with robustcert.results.attack_summary")
    if "certify-policy" in kinds:
        if set(kinds) != {"certify-policy"}:
            raise ResultsError("certify-policy files (one row per budget) and certify/predict files cannot "
                               "share a table: make one table of each kind")
        if radii is not None:
            raise ResultsError("radii do not apply to certify-policy files: their rows are the budgets B")
        return policy_table([(label, read_policy_certificate(path)) for label, path in zip(labels, paths)])
    if isinstance(radii, str):
        radii = parse_radii(radii)
    frames, norms = [read_results(path) for path in paths], [result_norm(path) for path in paths]
    if norm is not None:
        frames = [convert_radii(frame, file_norm, norm, path) for frame, file_norm, path in zip(frames, norms, paths)]
        norms = [norm] * len(paths)
        if norm == "linf" and radii is None:
            radii = fine_radii(max((largest_certified_radius(frame) for frame in frames), default=0.0))
    labels = norm_labels(paths, labels, norms, mixed_norms)
    table = results_table(list(zip(labels, frames)), radii)
    return table if len(set(norms)) > 1 else name_norm_columns(table, norms[0])


def attack_summary(frame: pd.DataFrame) -> dict:
    """What an attack TSV (or the frame ``attack_dataset`` returns) says, over ALL its rows:
    ``clean accuracy`` (PREDICT at x correct), ``empirical robust accuracy`` (PREDICT at x_adv
    correct: an UPPER bound on robust accuracy at eps, never a certificate), the abstention rate at
    x_adv, the mean and largest l2 distance of the attack, and ``rows``."""
    rows = len(frame)
    if not rows:
        return {CLEAN_ACCURACY: math.nan, "empirical robust accuracy": math.nan, "abstention (adv)": math.nan,
                "mean distance": math.nan, "max distance": math.nan, ROWS: 0}
    return {CLEAN_ACCURACY: float((frame["predict_clean"] == frame["label"]).mean()),
            "empirical robust accuracy": float(frame["correct_adv"].mean()),
            "abstention (adv)": float((frame["predict_adv"] == -1).mean()),
            "mean distance": float(frame["distance"].mean()), "max distance": float(frame["distance"].max()),
            ROWS: rows}
