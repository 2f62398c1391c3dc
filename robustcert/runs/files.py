"""How a run ends when the process is told to stop, and the file rules every run follows.

The file promises themselves live in :mod:`robustcert.files` (one implementation each, used by
every writer) and are re-exported here:

* an existing non-empty result file is never overwritten: a run either resumes it (same
  command kind, parameters, model hash and data, checked against the sidecar) or is refused;
* rows are appended and flushed one per input, so an interrupted run keeps every finished row;
  resuming drops a half-written last row (atomically);
* a run that fails before its first row removes the header-only TSV and the sidecar it created;
* the sidecar is rewritten atomically (a temporary file and a rename), and says how the run
  ended: ``status`` ``finished``, ``interrupted`` (Ctrl-C, SIGTERM, SIGHUP) or ``failed`` (with the error).

This module adds the process side: SIGTERM and SIGHUP end a run like Ctrl-C (:class:`Stopped`).
"""
from __future__ import annotations

import signal
import threading

from ..files import (
    OutputBusyError, RowWriter, check_output, ending_fields, finish_last_run, output_lock, previous_runs, run_status,
    sidecar_path, timestamp, update_last_run, write_sidecar,
)

__all__ = [
    "OutputBusyError", "RowWriter", "Stopped", "check_output", "ending_fields", "finish_last_run", "output_lock",
    "previous_runs", "run_status", "sidecar_path", "stop_on_termination_signals", "timestamp", "update_last_run",
    "write_sidecar",
]


class Stopped(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP) received by a run: handled like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def stop_on_termination_signals() -> None:
    """Make SIGTERM and SIGHUP (``kill``, ``timeout``, a closed terminal, a batch scheduler) raise
    :class:`Stopped`, a KeyboardInterrupt: the run then ends as after Ctrl-C (rows already written
    are kept, the sidecar records ``interrupted``) instead of dying without a word. Only from the
    main thread; signals this process ignores stay ignored."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, _raise_stopped)
