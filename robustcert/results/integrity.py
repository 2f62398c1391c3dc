"""What a table or figure must say about the files it summarises: rows that are not there, rows
that are there twice, runs that did not finish, runs whose radii stop at a target.

Counting rows is the whole of a certified accuracy, so a reader of a table learns, as a
:class:`robustcert.errors.RobustCertWarning` (one line on the command line's stderr), when

* a file holds an idx more than once (two writers, a concatenation): rows identical but for their
  time are counted once (the first kept, :func:`drop_duplicate_rows`); rows that disagree are
  refused (ResultsError), since no rule can say which one is the result;
* its sidecar says the last run was ``interrupted`` or ``failed``, or has no end (killed, or still
  running; a file being written holds its lock, :func:`robustcert.files.is_locked`);
* it has fewer rows than its run selected (``data.selected`` in the sidecar);
* it is a sequential run with a target radius: its radii stop near the target (the run certifies
  "radius >= target", not the largest radius), so its ACR and its accuracies beyond the target are
  not comparable with a fixed-n run's (:func:`run_mode`; tables mark it and do not rank it against
  other runs).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import ResultsError, warn
from ..files import is_locked, read_sidecar


def drop_duplicate_rows(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """``frame`` with each idx once: copies identical but for ``time`` are dropped (the first kept,
    with a warning naming how many); copies that differ raise ResultsError."""
    if "idx" not in frame.columns:
        return frame
    repeated = frame["idx"].duplicated(keep="first")
    if not repeated.any():
        return frame
    compared = [c for c in frame.columns if c != "time"]
    distinct = frame[compared].drop_duplicates()
    if distinct["idx"].duplicated().any():
        clash = int(distinct["idx"][distinct["idx"].duplicated()].iloc[0])
        raise ResultsError(f"{name} holds idx {clash} (and maybe others) more than once with different results: "
                           "it is not one run's output; remove the extra rows")
    indices = frame["idx"][repeated]
    warn(f"{name}: {int(repeated.sum())} duplicated idx rows (idx {indices.min()}-{indices.max()}, identical "
         f"results) counted once")
    return frame[~repeated].reset_index(drop=True)


def run_mode(record: dict) -> str | None:
    """``"sequential, target r=R"`` for a sequential run with a target radius, else None."""
    parameters = record.get("parameters") or {}
    target = parameters.get("target_radius")
    if parameters.get("sequential") and target is not None:
        return f"sequential, target r={float(target):g}"
    return None


def run_notes(path: str | Path, rows: int) -> list[str]:
    """What a reader of ``path``'s numbers must know from its sidecar (module docstring)."""
    record = read_sidecar(path)
    runs = record.get("runs") or []
    notes = []
    if runs and isinstance(runs[-1], dict):
        status = runs[-1].get("status")
        if status in ("interrupted", "failed"):
            error = f" ({runs[-1].get('error')})" if runs[-1].get("error") else ""
            notes.append(f"its last run {'was interrupted' if status == 'interrupted' else 'failed'}{error}")
        elif status is None and record.get("kind") != "train":
            notes.append("it is still being written" if is_locked(path) else "its last run did not record its end "
                                                                            "(killed?)")
    selected = (record.get("data") or {}).get("selected")
    if isinstance(selected, int) and rows < selected:
        notes.append(f"it has {rows} of the {selected} rows its run asked for (--resume completes it)")
    return notes


def checked_frame(path: str | Path, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` read from ``path`` with duplicates handled and the notes of :func:`run_notes` warned."""
    frame = drop_duplicate_rows(frame, str(path))
    notes = run_notes(path, len(frame))
    if notes:
        warn(f"{path}: {'; '.join(notes)}: its numbers are over the {len(frame)} rows it holds")
    return frame
