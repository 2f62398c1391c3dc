"""Output files of a dataset run: the TSV (one flushed row per input) and its JSON sidecar.

Rules every run follows, whatever calls it (the CLI or :func:`robustcert.certify_dataset`):

* an existing non-empty result file is never overwritten: a run either resumes it (same
  command kind, parameters, model hash and data, checked against the sidecar) or is refused;
* rows are appended and flushed one per input, so an interrupted run keeps every finished row;
  resuming drops a half-written last row (atomically);
* a run that fails before its first row removes the header-only TSV and the sidecar it created;
* the sidecar is rewritten atomically (a temporary file and a rename), and says how the run
  ended: ``finished``, ``interrupted`` (Ctrl-C, SIGTERM, SIGHUP) or ``failed`` (with the error).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from ..errors import RunError
from ..results import write_text_atomically


def sidecar_path(path: str | Path) -> Path:
    """``FILE.json`` beside a result file ``FILE``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def check_output(path: Path, resume: bool) -> bool:
    """Check that ``path`` can be written; True when it holds results that ``resume`` continues.

    Called before anything slow (model loading) and again by RowWriter, so that a run that is
    going to be refused fails at once and never touches existing results.
    """
    path = Path(path)
    if path.is_dir():
        raise RunError(f"output {path} is a folder, not a file")
    if not path.parent.is_dir():
        raise RunError(f"output folder does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise RunError(f"output folder is not writable: {path.parent}")
    exists = path.exists() and path.stat().st_size > 0
    if exists and not resume:
        raise RunError(f"{path} already exists and is not empty: resume it (--resume, resume=True) or remove it")
    sidecar = sidecar_path(path)
    if not exists and not resume and sidecar.exists():  # the record of an earlier run: keep it
        raise RunError(f"{sidecar} already exists (the record of an earlier run): remove it, or choose another output")
    if exists and not os.access(path, os.W_OK):
        raise RunError(f"output file is not writable: {path}")
    return exists


class RowWriter:
    """Append rows to a TSV, one flushed line each; refuses to clobber existing results.

    With ``resume``: the header must match, a trailing partial line (a run killed mid-write) is
    dropped, and the indices already written are returned so the run can skip them.
    """

    def __init__(self, path: Path, header: tuple[str, ...], resume: bool):
        self.path = Path(path)
        self.header = "\t".join(header)
        self.done: set[int] = set()
        exists = check_output(self.path, resume)
        self.created, self.rows_written = not self.path.exists(), 0  # see discard_if_unused
        if exists:
            self._recover()
        else:
            with open(self.path, "w") as handle:
                handle.write(self.header + "\n")
        self.handle = open(self.path, "a")

    def _recover(self) -> None:
        try:
            text = self.path.read_text()
        except UnicodeDecodeError:
            raise RunError(f"cannot resume {self.path}: it is not a text file") from None
        lines = text.split("\n")
        if len(lines) == 1 and self.header.startswith(text):  # killed while writing the header: no rows
            lines = [self.header, ""]
        if lines[0] != self.header:
            raise RunError(f"cannot resume {self.path}: its header is {lines[0]!r}, expected {self.header!r}")
        complete = lines[:-1]  # the last element is "" after a final newline, else a partial row
        width = len(self.header.split("\t"))
        kept = [complete[0]] + [line for line in complete[1:] if len(line.split("\t")) == width]
        try:
            self.done = {int(line.split("\t")[0]) for line in kept[1:]}
        except ValueError:
            raise RunError(f"cannot resume {self.path}: a row has a non-integer idx") from None
        if len(kept) != len(complete) or not text.endswith("\n"):
            # drop the partial last row of a killed run; atomic, so a crash here loses nothing
            write_text_atomically(self.path, "\n".join(kept) + "\n")

    def write(self, line: str) -> None:
        self.handle.write(line + "\n")
        self.handle.flush()
        self.rows_written += 1

    def close(self) -> None:
        self.handle.close()

    def discard_if_unused(self, with_sidecar: bool = True) -> None:
        """Remove the file (and its sidecar) if this writer created the file and wrote no row: a
        run that fails before its first row (NaN outputs, a model that does not fit) leaves nothing."""
        self.close()
        if self.created and self.rows_written == 0:
            self.path.unlink(missing_ok=True)
            if with_sidecar:
                sidecar_path(self.path).unlink(missing_ok=True)


def previous_runs(path: Path, record: dict) -> list:
    """The runs recorded in the sidecar of a result file being resumed, after checking that the
    new run has the same parameters, model (sha256), data and kind; [] if there is nothing yet.

    A file with rows but no sidecar cannot be resumed: its parameters are unknown.
    """
    path = Path(path)
    sidecar = sidecar_path(path)
    has_rows = path.is_file() and b"\n" in path.read_bytes().rstrip(b"\n")
    if not sidecar.exists():
        if has_rows:
            raise RunError(f"cannot resume {path}: its sidecar {sidecar.name} is missing, so its parameters are unknown")
        return []
    try:
        previous = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunError(f"cannot resume: sidecar {sidecar} is not valid JSON") from None
    if not isinstance(previous, dict) or not isinstance(previous.get("parameters", {}), dict):
        raise RunError(f"cannot resume: sidecar {sidecar} is not a robustcert sidecar (no parameters object)")
    old, new = previous.get("parameters", {}), record["parameters"]
    differing = [k for k in sorted(set(old) | set(new))
                 if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str)]
    for section, key in (("model", "sha256"), ("data", "spec")):
        if (previous.get(section) or {}).get(key) != (record.get(section) or {}).get(key):
            differing.append(f"{section} {key}")
    if previous.get("kind") != record.get("kind"):
        differing.append("command")
    if differing:
        raise RunError(f"cannot resume {path}: differs from the first run in {', '.join(differing)}")
    return previous.get("runs", [])


def write_sidecar(path: Path, record: dict, resume: bool) -> None:
    """Write ``FILE.json`` atomically; on resume the run must match the recorded one (previous_runs)."""
    if resume:
        record["runs"] = previous_runs(path, record) + record["runs"]
    write_text_atomically(sidecar_path(path), json.dumps(record, indent=2, default=str) + "\n")


def update_last_run(out_path: Path, **fields) -> None:
    """Set ``fields`` in the last run entry of the sidecar of ``out_path`` (rewritten atomically);
    nothing happens when there is no sidecar."""
    sidecar = sidecar_path(out_path)
    if not sidecar.is_file():
        return
    record = json.loads(sidecar.read_text())
    record["runs"][-1].update(fields)
    write_text_atomically(sidecar, json.dumps(record, indent=2, default=str) + "\n")


def finish_last_run(out_path: Path, ending: BaseException | None = None, **fields) -> None:
    """Record how the run ended in the sidecar's last run entry, with ``fields``; never masks the
    run's own outcome.

    ``ending`` is the exception that stopped the run (None: it finished). The entry gets
    ``status`` (``finished``, ``interrupted`` or ``failed``), the time under that same key, and
    for a failure the ``error`` line.
    """
    status = run_status(ending)
    fields = {"status": status, status: timestamp(), **fields}
    if status == "failed":
        fields["error"] = " ".join(str(ending).split()) or type(ending).__name__
    try:
        update_last_run(out_path, **fields)
    except (OSError, ValueError, KeyError, IndexError):
        pass


def run_status(ending: BaseException | None) -> str:
    """``finished`` (no exception), ``interrupted`` (Ctrl-C, a termination signal, an exit) or ``failed``."""
    if ending is None:
        return "finished"
    return "interrupted" if isinstance(ending, (KeyboardInterrupt, SystemExit)) else "failed"


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
