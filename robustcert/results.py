"""Result files in the reference format, and the summaries papers report.

Formats (Cohen et al. 2019, locuslab/smoothing, kept so existing analysis scripts work):

* certify TSV: ``idx  label  predict  radius  correct  time`` (tab-separated, header line);
  ``predict = -1`` on abstention with ``radius = 0.0``; ``correct = int(predict == label)``;
  radius with 3 significant digits; time as ``H:MM:SS.ffffff`` (reference) or plain seconds.
* predict TSV: ``idx  label  predict  correct  time``.
* attack TSV (``robustcert attack``, ours): ``idx  label  predict_clean  predict_adv  correct_adv
  distance  time``: PREDICT at the clean input and at the adversarial point found by PGD on the
  smoothed classifier. Its accuracy is empirical (an upper bound on robust accuracy), never a
  certificate, so ``table`` and ``plot`` refuse these files.

Radii are written rounded *down* to 3 significant digits (the reference rounds to nearest,
which can print a radius a little larger than the one certified).
"""
from __future__ import annotations

import datetime
import json
import math
import os
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import binom

from .errors import InvalidArgumentError, RobustCertError, check_alpha, check_count

CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")
ATTACK_COLUMNS = ("idx", "label", "predict_clean", "predict_adv", "correct_adv", "distance", "time")


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
    try:
        temporary.write_text(text)
        temporary.replace(path)
    except BaseException:  # a full disk or Ctrl-C: no half-written temporary file left behind either
        temporary.unlink(missing_ok=True)
        raise


def write_derived_file(out: str | Path, text: str, inputs: Sequence[str | Path], what: str = "table") -> Path:
    """Write ``text`` (a table made from ``inputs``) to ``out`` atomically, after
    :func:`check_derived_output`: never over an input or a result file."""
    out = Path(out)
    if not out.parent.is_dir():
        raise ResultsError(f"output folder does not exist: {out.parent}")
    check_derived_output(out, inputs, what)
    try:
        write_text_atomically(out, text)
    except OSError as exc:
        raise ResultsError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def format_time(seconds: float) -> str:
    """Elapsed time as ``str(datetime.timedelta)``, e.g. ``0:02:31.238689`` (reference format)."""
    return str(datetime.timedelta(seconds=float(seconds)))


def certify_row(idx: int, label: int, prediction: int, radius: float, seconds: float) -> str:
    radius_text = "0.0" if prediction == -1 else format_radius(radius)
    return f"{idx}\t{label}\t{prediction}\t{radius_text}\t{int(prediction == label)}\t{format_time(seconds)}"


def predict_row(idx: int, label: int, prediction: int, seconds: float) -> str:
    return f"{idx}\t{label}\t{prediction}\t{int(prediction == label)}\t{format_time(seconds)}"


def attack_row(idx: int, label: int, predict_clean: int, predict_adv: int, distance: float, seconds: float) -> str:
    """One attack TSV line; ``correct_adv = int(predict_adv == label)``, the distance to 6 digits."""
    return (f"{idx}\t{label}\t{predict_clean}\t{predict_adv}\t{int(predict_adv == label)}\t{distance:.6g}\t"
            f"{format_time(seconds)}")


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
    attack = result_kind(set(frame.columns)) == "attack"
    required = set(ATTACK_COLUMNS[:5]) if attack else {"idx", "label", "predict", "correct"}
    if not required <= set(frame.columns):
        if existing_result_kind(path) == "sidecar":
            raise ResultsError(f"{path} is a run's JSON sidecar, not its result file: give the TSV beside it "
                               f"({path.name[:-len('.json')] if path.name.endswith('.json') else 'FILE'})")
        header = ", ".join(map(str, frame.columns))
        raise ResultsError(f"{path} is not a certify/predict TSV: its first line is {header[:60]!r}"
                           f"{'...' if len(header) > 60 else ''}, need the columns {', '.join(sorted(required))}")
    try:
        for column in sorted(required):
            frame[column] = frame[column].astype(int)
        if "distance" in frame:
            frame["distance"] = frame["distance"].astype(float)
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


POLICY_COLUMNS = ("budget", "certified_return")


def header_columns(path: str | Path) -> set[str]:
    """The column names in the first line of a TSV (ResultsError if missing, unreadable or empty)."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"result file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
    except UnicodeDecodeError:
        raise ResultsError(f"cannot read result file {path}: not a text file") from None
    except OSError as exc:
        raise ResultsError(f"cannot read result file {path}: {exc.strerror or exc}") from None
    if not first.strip():
        raise ResultsError(f"cannot read result file {path}: it is empty (no header line)")
    return {c.strip() for c in first.rstrip("\n").split("\t")}


def result_kind(columns: set[str]) -> str | None:
    """``certify``, ``predict``, ``attack`` or ``certify-policy`` for a result file's header columns, else None."""
    if set(ATTACK_COLUMNS[:5]) <= columns:
        return "attack"
    if set(CERTIFY_COLUMNS[:5]) <= columns:
        return "certify"
    if {"idx", "label", "predict", "correct"} <= columns:
        return "predict"
    if set(POLICY_COLUMNS) <= columns:
        return "certify-policy"
    return None


def is_sidecar_record(record) -> bool:
    """True for the JSON object a run writes beside its result file (command kind, parameters, runs)."""
    return isinstance(record, dict) and "kind" in record and ("parameters" in record or "runs" in record)


def existing_result_kind(path: str | Path) -> str | None:
    """What an existing file holds if a run wrote it: ``certify``, ``predict``, ``attack``,
    ``certify-policy`` (a TSV with that header, also a torchrun part file) or ``sidecar`` (a run's JSON record);
    None for anything else (or no file). Reads at most the first line, or a small JSON file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
        first = head.split(b"\n", 1)[0].decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    kind = result_kind({c.strip() for c in first.split("\t")})
    if kind is not None:
        return kind
    if head.lstrip().startswith(b"{") and path.stat().st_size < (64 << 20):
        try:
            return "sidecar" if is_sidecar_record(json.loads(path.read_text(encoding="utf-8"))) else None
        except (OSError, UnicodeDecodeError, ValueError):
            return None
    return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when two paths name one file (also through links or different spellings)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_derived_output(out: str | Path, inputs: Sequence[str | Path], what: str = "output") -> Path:
    """Refuse to write a table or figure over one of its own input files or over any result file.

    ``out`` may not be one of ``inputs`` (whatever its spelling), nor an existing certify,
    predict, attack or certify-policy TSV or a run's sidecar: those hold results that took hours to
    compute. Raises ResultsError (nothing is written); returns ``out`` as a Path.
    """
    out = Path(out)
    for source in inputs:
        if same_file(out, source):
            raise ResultsError(f"refusing to write the {what} to {out}: it is one of the input files")
    kind = existing_result_kind(out)
    if kind is not None:
        described = "a run's JSON sidecar" if kind == "sidecar" else f"a {kind} result file"
        raise ResultsError(f"refusing to overwrite {out}: it is {described}; choose another output file")
    return out


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
    """A radius grid from 0 up to ``max_radius`` (not beyond, see :func:`default_radii`) for small
    radii (l-infinity): the smallest step 1, 2 or 5 x 10^e that needs at most ``max_columns`` points."""
    if not (math.isfinite(max_radius) and max_radius > 0):
        return [0.0]
    for exponent in range(-6, 7):
        for mantissa in (1, 2, 5):
            step = mantissa * 10.0 ** exponent
            count = int(math.floor(max_radius / step + 1e-9)) + 1
            if count <= max_columns:
                return [round(i * step, 12) for i in range(count)]
    return [0.0, max_radius]


# --------------------------------------------------------------------------- policy tables
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


# --------------------------------------------------------------------------- marking the best value
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
    if is_policy_table(table):
        return []
    groups: dict[tuple, list[str]] = {}
    for label, line in table.iterrows():
        if int(line[ROWS]) == 0:
            continue
        kind = "predict" if pd.isna(line[ACR]) else "certify"
        groups.setdefault((kind, int(line[ROWS])), []).append(label)
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
    if is_policy_table(table):
        return None  # nothing is marked: its rows are budgets
    groups = comparable_groups(table)
    if len(table) < 2 or (len(groups) == 1 and len(groups[0]) == len(table)):
        return None
    compared = [group for group in groups if len(group) >= 2]
    if not compared:
        return ("no best value marked: no two files are of the same kind (certify/predict) with the same "
                "number of rows")
    return ("best values marked only among files of the same kind (certify/predict) with the same number of "
            "rows: " + "; ".join(", ".join(map(str, group)) for group in compared))


INTEGER_COLUMNS = (ROWS, "n")


def _cell(value, column: str, decimals: int, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if column in INTEGER_COLUMNS:
        return str(int(value))
    if column == "budget":
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
