"""Result files in the reference format: writing rows, reading files back.

Formats (Cohen et al. 2019, locuslab/smoothing, kept so existing analysis scripts work):

* certify TSV: ``idx  label  predict  radius  correct  time`` (tab-separated, header line);
  ``predict = -1`` on abstention with ``radius = 0.0``; ``correct = int(predict == label)``;
  radius with 3 significant digits; time as ``H:MM:SS.ffffff`` (reference) or plain seconds.
* predict TSV: ``idx  label  predict  correct  time``.
* attack TSV (``robustcert attack``, ours): ``idx  label  predict_clean  predict_adv  correct_adv
  distance  time``: PREDICT at the clean input and at the adversarial point found by PGD on the
  smoothed classifier. Its accuracy is empirical (an upper bound on robust accuracy), never a
  certificate, so ``table`` and ``plot`` refuse these files.
* certify-policy TSV (``robustcert certify-policy``): one row per budget, ``budget
  certified_return ...`` (:mod:`robustcert.results.policy`).

The column sets that identify each kind live with the other file promises
(:data:`robustcert.files.RESULT_KINDS`). Radii are written rounded *down* to 3 significant digits
(the reference rounds to nearest, which can print a radius a little larger than the one certified).
"""
from __future__ import annotations

import datetime
import math
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import ResultsError
from ..files import ATTACK_COLUMNS, CERTIFY_COLUMNS, existing_result_kind, result_kind


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


def is_certify_frame(frame: pd.DataFrame) -> bool:
    """True for a certify TSV (it has a radius column), False for a predict TSV."""
    return "radius" in frame.columns


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
