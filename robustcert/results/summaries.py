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
from ..files import header_columns, read_sidecar, result_kind, same_file
from .formats import is_certify_frame, read_results
from .integrity import checked_frame, drop_duplicate_rows, run_mode
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
    :func:`certificates_frame`, or the frame :func:`robustcert.certify_dataset` returns); an idx
    repeated with identical results is counted once, with a warning, and repeated with different
    results is refused (:func:`robustcert.results.integrity.drop_duplicate_rows`).
    ``radii`` defaults to :func:`default_radii` of the largest certified radius of a correct row
    (so no column is 0 for every file). Columns: see :func:`summary_row`.
    """
    items = list(frames.items()) if isinstance(frames, dict) else list(frames)
    items = [(label, drop_duplicate_rows(frame, str(label))) for label, frame in items]  # never counted twice
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
        if radii is not None or norm is not None:
            raise ResultsError("--radii and --norm do not apply to attack files: their radius is the attack's eps")
        return attack_table(paths, labels, kinds)
    if "certify-policy" in kinds:
        if set(kinds) != {"certify-policy"}:
            raise ResultsError("certify-policy files (one row per budget) and certify/predict files cannot "
                               "share a table: make one table of each kind")
        if radii is not None:
            raise ResultsError("radii do not apply to certify-policy files: their rows are the budgets B")
        return policy_table([(label, read_policy_certificate(path)) for label, path in zip(labels, paths)])
    if isinstance(radii, str):
        radii = parse_radii(radii)
    frames, norms = [checked_frame(path, read_results(path)) for path in paths], [result_norm(path) for path in paths]
    modes = [run_mode(read_sidecar(path)) for path in paths]
    labels = [f"{label} [{mode}]" if mode else label for label, mode in zip(labels, modes)]
    if norm is not None:
        frames = [convert_radii(frame, file_norm, norm, path) for frame, file_norm, path in zip(frames, norms, paths)]
        norms = [norm] * len(paths)
        if norm == "linf" and radii is None:
            radii = fine_radii(max((largest_certified_radius(frame) for frame in frames), default=0.0))
    if norms[0] == "l0" and len(set(norms)) == 1:
        radii = whole_pixel_radii(frames, radii)
    labels = norm_labels(paths, labels, norms, mixed_norms)
    table = results_table(list(zip(labels, frames)), radii)
    table.attrs["modes"] = {label: mode for label, mode in zip(labels, modes) if mode}
    return table if len(set(norms)) > 1 else name_norm_columns(table, norms[0])


def whole_pixel_radii(frames: Sequence[pd.DataFrame], radii) -> list[float]:
    """The radii of an l0 table, which count pixels: whole numbers from 0 to the largest certified
    radius (at most 9 columns) by default; given radii must be whole numbers."""
    if radii is None:
        largest = int(max((largest_certified_radius(frame) for frame in frames), default=0.0))
        step = max(1, math.ceil(largest / 8))
        return [float(r) for r in range(0, largest + 1, step)]
    radii = parse_radii(radii)
    if any(not float(r).is_integer() for r in radii):
        raise ResultsError(f"l0 radii count pixels: give whole numbers, got {', '.join(f'{r:g}' for r in radii)}")
    return radii


# --------------------------------------------------------------------------- attacks
EMPIRICAL, BROKEN = "empirical robust accuracy (upper bound)", "broken"
ABSTAINED_CLEAN, ABSTAINED_ADV, WRONG_CLEAN = "abstained at x", "abstained at x_adv", "wrong at x"


def attack_summary(frame: pd.DataFrame) -> dict:
    """What an attack TSV (or the frame ``attack_dataset`` returns) says, over ALL its rows.

    PREDICT either returns a class or abstains; only a returned class says anything about the
    smoothed classifier g (it is g's class with probability >= 1 - alpha). So an input is shown
    NOT robust at eps when PREDICT returns a wrong class at x (``wrong at x``) or at x_adv
    (``broken``: the attack found a point within eps where g gives another class), and an
    abstention, at x or at x_adv, shows nothing (g may well give the label there). Hence:

    * ``empirical robust accuracy (upper bound)`` = 1 - (wrong at x or broken) / rows: an UPPER
      bound on the robust accuracy at eps (up to PREDICT's errors), since a stronger attack can only
      break more; never a certificate. Certified accuracy at radius eps bounds it from below.
    * ``clean accuracy`` (PREDICT at x returns the label), ``abstained at x``, ``abstained at x_adv``,
      ``broken``, ``wrong at x`` (fractions of all rows), ``correct at x_adv`` (PREDICT at x_adv
      returns the label: abstentions count as wrong, so it is neither bound), the mean and largest
      l2 distance of the attack, and ``rows``.
    """
    rows = len(frame)
    names = (CLEAN_ACCURACY, ABSTAINED_CLEAN, WRONG_CLEAN, ABSTAINED_ADV, BROKEN, EMPIRICAL, "correct at x_adv",
             "mean distance", "max distance")
    if not rows:
        return {**{name: math.nan for name in names}, ROWS: 0}
    label, clean, adversarial = (frame[c].to_numpy() for c in ("label", "predict_clean", "predict_adv"))
    wrong_clean = (clean != label) & (clean != -1)
    broken = (adversarial != label) & (adversarial != -1)
    values = (clean == label, clean == -1, wrong_clean, adversarial == -1, broken, ~(wrong_clean | broken),
              adversarial == label)
    summary = {name: float(np.mean(v)) for name, v in zip(names, values)}
    summary.update({"mean distance": float(frame["distance"].mean()), "max distance": float(frame["distance"].max()),
                    ROWS: rows})
    return summary


def attack_line(frame: pd.DataFrame, eps: float | None = None) -> str:
    """One line for the end of ``robustcert attack``: the upper bound and the counts it rests on
    (:func:`attack_summary`)."""
    summary, rows = attack_summary(frame), len(frame)

    def count(name: str) -> int:
        return int(round(summary[name] * rows)) if rows else 0

    at = f" at eps={eps:g}" if eps is not None else ""
    return (f"empirical robust accuracy{at} (an upper bound, not a certificate): {summary[EMPIRICAL]:.3f} "
            f"({count(EMPIRICAL)} of {rows}); broken {count(BROKEN)}, abstained at x_adv {count(ABSTAINED_ADV)}, "
            f"wrong at x {count(WRONG_CLEAN)}, abstained at x {count(ABSTAINED_CLEAN)}; clean accuracy "
            f"{summary[CLEAN_ACCURACY]:.3f}")


ATTACK_TABLE_COLUMNS = ("eps", CLEAN_ACCURACY, ABSTAINED_CLEAN, ABSTAINED_ADV, BROKEN, EMPIRICAL, ROWS)


def attack_table(paths: Sequence[str | Path], labels: Sequence[str], kinds: Sequence[str]) -> pd.DataFrame:
    """One row per attack file (:func:`attack_summary`), with the certified accuracy at radius eps
    of each certify file given beside them, over the same images (the attack file's idx: a certify
    file must hold them all). certified <= robust <= empirical (up to alpha): the two bound the
    robust accuracy at eps from below and from above."""
    if any(kind not in ("attack", "certify") for kind in kinds):
        raise ResultsError("an attack table takes attack files and, beside them, certify files (their certified "
                           "accuracy at r = eps); not predict or certify-policy files")
    certify = [(label, path) for label, path, kind in zip(labels, paths, kinds) if kind == "certify"]
    for label, path in certify:
        norm = read_sidecar(path).get("norm", "l2")
        if norm != "l2":
            raise ResultsError(f"{path} certifies {norm} radii; the attack's ball is l2")
    certified_frames = [(label, path, checked_frame(path, read_results(path))) for label, path in certify]
    lines, index = [], []
    for label, path, kind in zip(labels, paths, kinds):
        if kind != "attack":
            continue
        frame = checked_frame(path, read_results(path))
        eps = (read_sidecar(path).get("parameters") or {}).get("eps")
        line = {"eps": math.nan if eps is None else float(eps), **attack_summary(frame)}
        line = {column: line[column] for column in ATTACK_TABLE_COLUMNS}
        for certify_label, certify_path, certified in certified_frames:
            if eps is None:
                raise ResultsError(f"{path} has no sidecar recording its eps: certified accuracy at r = eps "
                                   "cannot be read beside it")
            missing = sorted(set(frame["idx"]) - set(certified["idx"]))
            if missing:
                raise ResultsError(f"{certify_path} lacks {len(missing)} of the images of {path} (idx "
                                   f"{missing[0]}, ...): certify the same images (same --data, --split, --skip, "
                                   "--max) to compare")
            same = certified[certified["idx"].isin(frame["idx"])]
            line[f"certified at r=eps ({certify_label})"] = float(certified_accuracy(same, [float(eps)])[0])
        lines.append(line)
        index.append(label)
    return pd.DataFrame(lines, index=pd.Index(index, name="file"))
