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
import math
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import RobustCertError

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
        frame = pd.read_csv(path, sep="\t", dtype={"time": str})
    except Exception as exc:
        raise ResultsError(f"cannot read result file {path}: {str(exc).splitlines()[0]}") from None
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
        if "time" in frame:
            frame["time"] = frame["time"].map(parse_time)
    except (ValueError, TypeError) as exc:
        raise ResultsError(f"malformed row in {path}: {exc}") from None
    return frame


def certified_accuracy(frame: pd.DataFrame, radii: Iterable[float]) -> np.ndarray:
    """Certified accuracy at each radius r: mean over ALL rows of (correct and radius >= r).

    Abstentions count as wrong (they have correct = 0) and the comparison is inclusive.
    """
    correct = frame["correct"].to_numpy().astype(bool)
    radius = frame["radius"].to_numpy()
    if len(frame) == 0:
        return np.zeros(len(list(radii)))
    return np.array([np.mean(correct & (radius >= r)) for r in radii])


def average_certified_radius(frame: pd.DataFrame) -> float:
    """ACR: mean over all rows of radius * correct."""
    if len(frame) == 0:
        return 0.0
    return float(np.mean(frame["radius"].to_numpy() * frame["correct"].to_numpy()))


def high_probability_accuracy(accuracy: float, rows: int, a: float = 0.001, rho: float = 0.001) -> float:
    """Cohen et al.'s lower bound on the accuracy of the smoothed classifier from m = rows samples:

    acc - a - sqrt(a (1 - a) ln(1/rho) / m) - ln(1/rho) / (3 m).
    """
    log_term = math.log(1.0 / rho)
    return accuracy - a - math.sqrt(a * (1 - a) * log_term / rows) - log_term / (3 * rows)


def parse_radii(text: str | Sequence[float]) -> list[float]:
    """Radii from ``"0,0.25,0.5"`` or ``"0:1.5:0.25"`` (start:stop:step, inclusive)."""
    if not isinstance(text, str):
        return [float(r) for r in text]
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            return [round(start + i * step, 10) for i in range(count)]
        radii = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ResultsError(f"bad radius list {text!r}: use e.g. 0,0.25,0.5 or 0:1.5:0.25") from None
    if not radii or any(r < 0 or not math.isfinite(r) for r in radii):
        raise ResultsError(f"bad radius list {text!r}: radii must be finite and >= 0")
    return radii
