"""The file promises, each implemented once: every module that writes a file goes through here.

1. **Atomic writes** (:func:`atomic_write`): a text, a figure, a checkpoint or any bytes reach their
   path through a temporary file beside it and one ``os.replace``, so a crash, a full disk or
   Ctrl-C never leaves a truncated file (the old content stays until the new one is complete).
2. **Never writing over results** (:func:`check_output` for a run's TSV and sidecar,
   :func:`check_derived_output` for tables and figures): an existing non-empty result file is
   continued (resume) or refused, never replaced; a run's sidecar is never replaced by another
   run's; a table or figure never goes over one of its inputs or over any result file.
3. **What a file is** (:func:`existing_result_kind`): the kind of result file a path holds, from its
   header (:data:`RESULT_KINDS`) or its JSON record; :func:`same_file` whatever the spelling.
4. **Sidecars and how a run ended** (:func:`sidecar_path`, :func:`read_sidecar`,
   :func:`write_sidecar`, :func:`finish_last_run`): ``FILE.json`` beside ``FILE`` records the
   command, parameters and each run; every command ends its last run entry with the same
   ``status`` field (``finished``, ``interrupted`` or ``failed`` with the ``error``).
5. **Rows that survive an interruption** (:class:`RowWriter`): one flushed line per input; a resumed
   file loses only a half-written last row.
6. **One writer per output** (:func:`output_lock`): every command holds an exclusive lock on each
   file it writes for its whole run (``flock`` on ``.NAME.lock`` beside it, which the kernel
   releases when the process ends, even after ``kill -9``); a second writer is refused with the
   holder's PID and changes nothing.
7. **Never over a file robustcert did not write** (:class:`FileRecord`, :func:`describe_file`):
   tables, figures, bench records and the demo's files replace only an earlier output of the same
   command, recognised by the folder's record of what robustcert wrote there (name, kind,
   SHA-256); anything else is refused with one line saying what the file is (``--force`` replaces
   a file robustcert knows nothing about, never a result file, a sidecar or a run's output).

Dependencies: the standard library and :mod:`robustcert.errors` only, so every layer can use it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .errors import ResultsError, RunError

# --------------------------------------------------------------------------- atomic writes
Content = str | bytes | Callable[[Path], object]


def atomic_write(path: str | Path, content: Content, encoding: str = "utf-8",
                 before_replace: Callable[[Path], None] | None = None) -> Path:
    """Write ``content`` to ``path`` through a temporary file beside it and one ``os.replace``.

    The one implementation of the temporary-file-and-rename promise: readers see the old file or
    the complete new one, never a truncated one, and no temporary file is left behind on failure
    (a full disk, an exception, Ctrl-C).

    Args:
        path: the file to (re)write; its folder must exist.
        content: the text (``str``, written with ``encoding``), the bytes, or a function that
            writes the file at the temporary path it is given (``figure.savefig``,
            ``torch.save``, ``shutil.copyfile``).
        encoding: the encoding of a text.
        before_replace: called with the complete temporary file just before it moves in (the
            folder record notes the new file's digest there, so a crash in between leaves the
            new file recognised as robustcert's own).

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if callable(content):
            content(temporary)
        elif isinstance(content, bytes):
            temporary.write_bytes(content)
        else:
            temporary.write_text(content, encoding=encoding)
        if before_replace is not None:
            before_replace(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write a text file atomically (:func:`atomic_write`)."""
    atomic_write(path, text)


def write_json_atomically(path: str | Path, record) -> None:
    """Write a JSON record (indented, one trailing newline) atomically (:func:`atomic_write`)."""
    atomic_write(path, json.dumps(record, indent=2, default=str) + "\n")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when two paths name one file (also through links or different spellings)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


# --------------------------------------------------------------------------- kinds of result files
CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")
ATTACK_COLUMNS = ("idx", "label", "predict_clean", "predict_adv", "correct_adv", "distance", "time")
POLICY_COLUMNS = ("budget", "certified_return")

#: Each kind of result file and the header columns that identify it, checked in this order (an
#: attack TSV before a certify TSV before a predict TSV, whose columns the others contain).
RESULT_KINDS: dict[str, frozenset] = {
    "attack": frozenset(ATTACK_COLUMNS[:5]),
    "certify": frozenset(CERTIFY_COLUMNS[:5]),
    "predict": frozenset(PREDICT_COLUMNS[:4]),
    "certify-policy": frozenset(POLICY_COLUMNS),
}


def register_result_kind(name: str, columns: Sequence[str], before: str | None = None) -> None:
    """Make a new kind of result file known to every check that refuses to write over results.

    Args:
        name: the kind (the ``kind`` its sidecar records).
        columns: the header columns that identify it.
        before: check it before this kind (when its columns contain that kind's); default last.
    """
    items = [(k, v) for k, v in RESULT_KINDS.items() if k != name]
    position = len(items) if before is None else [k for k, _ in items].index(before)
    items.insert(position, (name, frozenset(columns)))
    RESULT_KINDS.clear()
    RESULT_KINDS.update(items)


def result_kind(columns: set[str]) -> str | None:
    """The kind of result file (``certify``, ``predict``, ``attack``, ``certify-policy``, ...) whose
    header holds ``columns``, else None."""
    return next((kind for kind, needed in RESULT_KINDS.items() if needed <= set(columns)), None)


def header_columns(path: str | Path) -> set[str]:
    """The column names in the first line of a TSV.

    Raises:
        ResultsError: the file is missing, unreadable, not text or empty.
    """
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


def is_sidecar_record(record) -> bool:
    """True for the JSON object a run writes beside its result file (command kind, parameters, runs)."""
    return isinstance(record, dict) and "kind" in record and ("parameters" in record or "runs" in record)


def existing_result_kind(path: str | Path) -> str | None:
    """What an existing file holds if a run wrote it: a kind of :data:`RESULT_KINDS` (a TSV with
    that header, also a torchrun part file) or ``sidecar`` (a run's JSON record); None for anything
    else (or no file). Reads at most the first 64 KiB, or a small JSON file."""
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


# --------------------------------------------------------------------------- never writing over results
def check_output(path: str | Path, resume: bool, kind: str | None = None) -> bool:
    """Check that a run may write its result file ``path`` (and its sidecar).

    Called before anything slow (model loading) and again by :class:`RowWriter`, so that a run
    that is going to be refused fails at once and never touches existing results. It changes
    nothing; :func:`output_lock` keeps a second writer away for the whole run.

    Args:
        path: the run's result file (TSV or checkpoint).
        resume: whether the run continues the results already in ``path``.
        kind: the kind of run (``certify``, ``train``, ...): an existing file of another kind (a
            checkpoint given to certify, a text file) is refused whatever ``resume``, with what it is.

    Returns:
        True when ``path`` holds results that ``resume`` continues.

    Raises:
        RunError: a folder, a missing or read-only folder, a file of another kind, existing
            results without ``resume``, or the sidecar of an earlier run beside a new one.
    """
    path = Path(path)
    if path.is_dir():
        raise RunError(f"output {path} is a folder, not a file")
    if not path.parent.is_dir():
        raise RunError(f"output folder does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise RunError(f"output folder is not writable: {path.parent}")
    exists = path.exists() and path.stat().st_size > 0
    if exists and kind is not None:
        found = run_output_kind(path) if kind == "train" else existing_result_kind(path)
        if found != kind:
            raise RunError(f"refusing to write over {path}: it is {describe_file(path)}, not the output of a "
                           f"robustcert {kind} run; choose another output file")
    if exists and not resume:
        raise RunError(f"{path} already exists and is not empty: resume it (--resume, resume=True) or remove it")
    sidecar = sidecar_path(path)
    if not exists and not resume and sidecar.exists():  # the record of an earlier run: keep it
        raise RunError(f"{sidecar} already exists (the record of an earlier run): remove it, or choose another output")
    if exists and not os.access(path, os.W_OK):
        raise RunError(f"output file is not writable: {path}")
    return exists


def check_derived_output(out: str | Path, inputs: Sequence[str | Path], what: str = "output",
                         kind: str | None = None, force: bool = False) -> Path:
    """Refuse to write a table or figure over one of its inputs, over any result file, or over a
    file that is not an earlier output of the same command.

    Args:
        out: where the table or figure would go.
        inputs: the files it is made from.
        what: what is written (for the message).
        kind: the kind recorded for it (:data:`WRITERS`: ``table``, ``figure``, ``bench``): an
            existing ``out`` is replaced only when the folder's :class:`FileRecord` lists it as this
            kind with its present content. None: only the checks on inputs and results.
        force: also replace a file robustcert knows nothing about (never an input, a result file,
            a sidecar or a run's output such as a checkpoint robustcert train wrote).

    Returns:
        ``out`` as a Path.

    Raises:
        ResultsError: ``out`` is refused; the message says what the file is. Nothing is written.
    """
    out = Path(out)
    for source in inputs:
        if same_file(out, source):
            raise ResultsError(f"refusing to write the {what} to {out}: it is one of the input files")
    if out.is_dir():
        raise ResultsError(f"refusing to write the {what} to {out}: it is a folder")
    if out.name == FILE_RECORD or (out.name.startswith(".") and out.name.endswith(".lock")):
        raise ResultsError(f"refusing to write the {what} to {out}: it is robustcert's own bookkeeping (the record "
                           "of the files it wrote, or a lock); choose another output file")
    if existing_result_kind(out) is not None or run_output_kind(out) is not None:
        raise ResultsError(f"refusing to overwrite {out}: it is {describe_file(out)}; choose another output file")
    if kind is None or not (out.exists() or out.is_symlink()):
        return out
    try:
        recorded = FileRecord(out.parent).kind_of(out)
    except RunError as exc:
        raise ResultsError(str(exc)) from None
    recognise = RECOGNISERS.get(kind)
    if recorded == kind or force or (recorded is None and recognise is not None and _safely(recognise, out)):
        return out
    writer = WRITERS.get(kind, "robustcert")
    raise ResultsError(f"refusing to overwrite {out}: it is {describe_file(out)}, not a {what} that {writer} wrote "
                       f"there; choose another output file, or --force to replace it")


def _safely(recognise: Callable[[Path], bool], path: Path) -> bool:
    try:
        return bool(recognise(path))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return False


def write_derived_file(out: str | Path, content: Content, inputs: Sequence[str | Path], what: str = "table",
                       kind: str | None = None, force: bool = False) -> Path:
    """Write a table or figure made from ``inputs`` to ``out``: checked by
    :func:`check_derived_output`, written by :func:`atomic_write`, and recorded as ``kind`` in
    the folder's :class:`FileRecord` (so that the same command may replace it next time).

    Args:
        out: the file to write (its folder must exist).
        content: as for :func:`atomic_write` (a text, bytes or a function writing the file).
        inputs: the result files it is made from.
        what: what is written (for messages).
        kind: its kind in the record (default: ``what``).
        force: see :func:`check_derived_output`.

    Returns:
        ``out`` as a Path.

    Raises:
        ResultsError: the folder is missing, ``out`` is refused, or the write failed.
    """
    out = Path(out)
    kind = kind or what
    if not out.parent.is_dir():
        raise ResultsError(f"output folder does not exist: {out.parent}")
    check_derived_output(out, inputs, what, kind, force)
    try:
        with output_lock(out, what):
            check_derived_output(out, inputs, what, kind, force)  # again: another process may have written it
            FileRecord(out.parent).replace(out, content, kind)
    except RunError as exc:
        raise ResultsError(str(exc)) from None
    except OSError as exc:
        raise ResultsError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


# --------------------------------------------------------------------------- sidecars and how a run ended
def sidecar_path(path: str | Path) -> Path:
    """``FILE.json`` beside a result file ``FILE``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def timestamp() -> str:
    """The local time, ISO 8601 with the UTC offset (what sidecars record)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_sidecar(path: str | Path) -> dict:
    """The JSON sidecar of a result file, or {} when there is none (the published reference files)
    or it is not a JSON object.

    Raises:
        ResultsError: the sidecar exists but is not JSON.
    """
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ResultsError(f"cannot read the sidecar {sidecar} of {path}: not a JSON file") from None
    return record if isinstance(record, dict) else {}


def previous_runs(path: str | Path, record: dict) -> list:
    """The runs recorded in the sidecar of a result file being resumed, after checking that the
    new run has the same parameters, model (sha256), data and kind; [] if there is nothing yet.

    A file with rows but no sidecar cannot be resumed: its parameters are unknown.

    Raises:
        RunError: the sidecar is missing (with rows), unreadable, or records another run.
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
    for section, key in (("model", "sha256"), ("model", "preprocessing"), ("data", "spec"), ("data", "transform")):
        if (previous.get(section) or {}).get(key) != (record.get(section) or {}).get(key):
            differing.append(f"{section} {key}")
    if previous.get("kind") != record.get("kind"):
        differing.append("command")
    if differing:
        raise RunError(f"cannot resume {path}: differs from the first run in {', '.join(differing)}")
    return previous.get("runs", [])


def write_sidecar(path: str | Path, record: dict, resume: bool = False) -> None:
    """Write the sidecar ``FILE.json`` of the result file ``path`` atomically.

    Args:
        path: the result file.
        record: the run's record (``command``, ``kind``, ``parameters``, ``runs``, ...).
        resume: the run continues ``path``: the earlier runs are checked against this one
            (:func:`previous_runs`) and kept before it in ``record["runs"]``.
    """
    if resume:
        record["runs"] = previous_runs(path, record) + record["runs"]
    write_json_atomically(sidecar_path(path), record)


def update_last_run(out_path: str | Path, **fields) -> None:
    """Set ``fields`` in the last run entry of the sidecar of ``out_path`` (rewritten atomically);
    nothing happens when there is no sidecar."""
    sidecar = sidecar_path(out_path)
    if not sidecar.is_file():
        return
    record = json.loads(sidecar.read_text())
    record["runs"][-1].update(fields)
    write_json_atomically(sidecar, record)


def run_status(ending: BaseException | None) -> str:
    """``finished`` (no exception), ``interrupted`` (Ctrl-C, a termination signal, an exit) or ``failed``."""
    if ending is None:
        return "finished"
    return "interrupted" if isinstance(ending, (KeyboardInterrupt, SystemExit)) else "failed"


def ending_fields(ending: BaseException | None) -> dict:
    """The end-of-run fields every command records in its last run entry: ``status``
    (:func:`run_status`), the time under that same key, and for a failure the ``error`` line."""
    status = run_status(ending)
    fields = {"status": status, status: timestamp()}
    if status == "failed":
        fields["error"] = " ".join(str(ending).split()) or type(ending).__name__
    return fields


def finish_last_run(out_path: str | Path, ending: BaseException | None = None, **fields) -> None:
    """Record how the run ended (:func:`ending_fields`) and ``fields`` in the sidecar's last run
    entry; never masks the run's own outcome (a sidecar that cannot be updated is left as it is).

    Args:
        out_path: the run's result file.
        ending: the exception that stopped the run (None: it finished).
        fields: more entries for the last run (engine report, samples used, ...).
    """
    try:
        update_last_run(out_path, **ending_fields(ending), **fields)
    except (OSError, ValueError, KeyError, IndexError):
        pass


# --------------------------------------------------------------------------- one writer per output
try:
    import fcntl
except ImportError:  # Windows: no flock; outputs are then not locked (documented in the README)
    fcntl = None


class OutputBusyError(RunError):
    """Another process is writing the same output (it holds its lock)."""


def lock_path(path: str | Path) -> Path:
    """The lock file of an output: ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


#: Locks this process holds: lock file -> [descriptor, depth] (a lock taken again by the same
#: process, e.g. by the command line and then by certify_dataset, is re-entered, not refused).
_HELD: dict[str, list] = {}


def _holder(descriptor: int) -> str:
    """What the lock file says about its holder (PID and command), read a few times: the holder
    writes it just after taking the lock."""
    for _ in range(50):
        text = os.pread(descriptor, 4096, 0).decode("utf-8", "replace").strip()
        if text:
            pid, _, command = text.partition(" ")
            return f"PID {pid}" + (f": {command}" if command else "")
        time.sleep(0.01)
    return "PID unknown"


def _this_command(what: str) -> str:
    """This process's command line as a user typed it (``robustcert certify ...``), shortened."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    words = (["robustcert"] if program in ("__main__.py", "robustcert") else [program]) + sys.argv[1:]
    text = " ".join(word for word in words if word) or what
    return text if len(text) <= 160 else text[:157] + "..."


@contextlib.contextmanager
def output_lock(path: str | Path, what: str = "output", wait: bool = False,
                shown: str | Path | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on the output ``path`` for the duration of the block.

    The lock is ``flock`` on ``.NAME.lock`` beside ``path``: the kernel releases it when the
    process ends in any way (also ``kill -9``), so a stale lock file never blocks a later run. The
    holder writes its PID and command line into it for the message a second writer gets. On
    release the lock file is removed (a process that opened it meanwhile sees a different file at
    the path and starts again, so two holders never coexist). Re-entrant within one process.

    Args:
        path: the file (or folder) about to be written.
        what: what it is, for the message.
        wait: wait for the holder instead of refusing (short critical sections only).
        shown: what the refusal names (default ``path``; the demo names its folder).

    Raises:
        OutputBusyError: another process holds the lock (``wait`` False); nothing was changed.
        RunError: the folder does not exist or is not writable.
    """
    lock = lock_path(path)
    key = os.path.join(os.path.realpath(lock.parent), lock.name)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield Path(path)
        finally:
            _HELD[key][1] -= 1
        return
    if not lock.parent.is_dir():
        raise RunError(f"output folder does not exist: {lock.parent}")
    if fcntl is None:
        yield Path(path)
        return
    while True:
        try:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            raise RunError(f"output folder is not writable: {lock.parent}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise OutputBusyError(f"{shown or path} is being written by another process ({holder}); wait for it "
                                  f"to end or stop it: nothing was changed") from None
        try:
            current = os.stat(lock)
            mine = os.fstat(descriptor)
            if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(descriptor)  # the holder released (and removed) it between our open and flock: again
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()} {_this_command(what)}\n".encode(), 0)
    _HELD[key] = [descriptor, 1]
    try:
        yield Path(path)
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(descriptor)


def is_locked(path: str | Path) -> bool:
    """True when the lock file of ``path`` (:func:`output_lock`) names a live process: the output is
    being written. Reads only (no lock is tried, which could make a starting writer fail); a stale
    lock file of a killed process is not a lock."""
    try:
        text = lock_path(path).read_text(encoding="utf-8", errors="replace")
        pid = int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- what robustcert wrote
#: The record, in each folder, of the tables, figures and bench files robustcert wrote there.
FILE_RECORD = ".robustcert-files.json"
#: Who wrote each kind of recorded file (for messages).
WRITERS = {"table": "robustcert table", "figure": "robustcert plot", "bench": "robustcert bench",
           "demo": "robustcert demo"}


#: kind -> a function telling from a file's content that it is an earlier output of that kind
#: (outputs written before the folder had a record, e.g. the committed bench records).
RECOGNISERS: dict[str, Callable[[Path], bool]] = {}


def register_recogniser(kind: str, recognise: Callable[[Path], bool]) -> None:
    """Let :func:`check_derived_output` recognise an earlier output of ``kind`` by its content."""
    RECOGNISERS[kind] = recognise


class FileRecord:
    """The files robustcert wrote into one folder, each with its kind and SHA-256: a command
    replaces a file only when the record lists it, of its own kind, with its present content.

    The record is a JSON file in the folder (:data:`FILE_RECORD`, or the demo's own marker):
    ``{"written_by": ..., "files": {name: [sha256, ...]}, "kinds": {name: kind}}``. While a file is
    being replaced both digests are listed (:meth:`replace`), so that a process killed between
    the move and the record's update leaves a file the next run still recognises.

    Args:
        folder: the folder.
        name: the record's file name.
        written_by: who writes this record (checked when reading it).
    """

    def __init__(self, folder: str | Path, name: str = FILE_RECORD, written_by: str = "robustcert"):
        self.folder, self.path, self.written_by = Path(folder), Path(folder) / name, written_by

    def read(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        """(name -> SHA-256 digests, name -> kind); empty when there is no record.

        Raises:
            RunError: the file is not a record robustcert wrote (it is then left alone).
        """
        if not self.path.exists() and not self.path.is_symlink():
            return {}, {}
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            files, kinds = record["files"], record.get("kinds", {})
            if record.get("written_by") != self.written_by or not all(
                    isinstance(k, str) and isinstance(v, list) for k, v in files.items()) \
                    or not isinstance(kinds, dict):
                raise ValueError
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise RunError(f"{self.path} is not a record {self.written_by} wrote; it is left alone: remove it or "
                           "write elsewhere") from None
        return files, kinds

    def write(self, files: dict[str, list[str]], kinds: dict[str, str]) -> None:
        record = {"written_by": self.written_by,
                  "note": "files robustcert wrote in this folder, with their sha256: it replaces only these, "
                          "and only while unchanged", "files": files}
        if kinds:
            record["kinds"] = kinds
        write_json_atomically(self.path, record)

    def kind_of(self, path: str | Path) -> str | None:
        """The kind the record gives ``path`` if it lists the file with its present content
        (``""`` for a record without kinds, like the demo's), else None."""
        path = Path(path)
        files, kinds = self.read()
        if path.name not in files or path.is_symlink() or not path.is_file():
            return None
        return kinds.get(path.name, "") if file_sha256(path) in files[path.name] else None

    def listed(self, path: str | Path) -> str | None:
        """The kind the record gives ``path``'s name whatever its content (None if unlisted)."""
        files, kinds = self.read()
        return kinds.get(Path(path).name, "") if Path(path).name in files else None

    def replace(self, path: str | Path, content: Content, kind: str | None = None) -> Path:
        """Write ``content`` to ``path`` atomically and record it as this folder's ``kind``.

        The caller has checked that ``path`` may be replaced; the record is locked meanwhile
        (other processes writing into the folder wait for it).
        """
        path = Path(path)
        with output_lock(self.path, "the record of written files", wait=True):
            files, kinds = self.read()

            def record_both(temporary: Path) -> None:
                files[path.name] = sorted(set(files.get(path.name, [])) | {file_sha256(temporary)})
                if kind:
                    kinds[path.name] = kind
                self.write(files, kinds)  # both digests while the new file moves in

            atomic_write(path, content, before_replace=record_both)
            files[path.name] = [file_sha256(path)]
            self.write(files, kinds)
        return path


def _article(words: str) -> str:
    return ("an " if words[:1].lower() in "aeio" else "a ") + words


def run_output_kind(path: str | Path) -> str | None:
    """The kind of robustcert run whose sidecar sits beside ``path`` (``train`` for a checkpoint
    robustcert train wrote), else None."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record.get("kind") if is_sidecar_record(record) else None


def describe_file(path: str | Path) -> str:
    """What an existing file is, in a few words, for a refusal: a result file of some kind, a
    run's sidecar, a checkpoint robustcert train wrote, a table or figure robustcert wrote (or
    one changed since), a PyTorch or NumPy archive, an image, a text file."""
    path = Path(path)
    kind = existing_result_kind(path)
    if kind == "sidecar":
        return f"the JSON sidecar of a robustcert {json.loads(path.read_text(encoding='utf-8')).get('kind')} run"
    if kind is not None:
        return _article(f"{kind} result file")
    run = run_output_kind(path)
    if run == "train":
        return f"a checkpoint written by robustcert train (its sidecar is {sidecar_path(path).name})"
    if run is not None:
        return f"the output of a robustcert {run} run (its sidecar is {sidecar_path(path).name})"
    try:
        recorded, listed = FileRecord(path.parent).kind_of(path), FileRecord(path.parent).listed(path)
    except RunError:
        recorded = listed = None
    if recorded:
        return f"{_article(recorded)} that {WRITERS.get(recorded, 'robustcert')} wrote"
    if listed:
        return f"{_article(listed)} that {WRITERS.get(listed, 'robustcert')} wrote, changed since"
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (OSError, zipfile.BadZipFile):
            names = []
        if any(name.endswith("data.pkl") for name in names):
            return "a PyTorch file (torch.save: a checkpoint or tensors)"
        if names and all(name.endswith(".npy") for name in names):
            return "a NumPy .npz archive"
        return "a zip archive"
    for magic, words in ((b"\x89PNG", "a PNG image"), (b"%PDF", "a PDF file"), (b"\x80", "a pickle file")):
        if head.startswith(magic):
            return words
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "a binary file"


# --------------------------------------------------------------------------- rows that survive interruptions
class RowWriter:
    """Append rows to a TSV, one flushed line each; refuses to clobber existing results.

    With ``resume``: the header must match, a trailing partial line (a run killed mid-write) is
    dropped, and the indices already written are in :attr:`done` so the run can skip them.

    Args:
        path: the TSV.
        header: its column names.
        resume: continue the rows already in ``path`` (:func:`check_output`).
    """

    def __init__(self, path: str | Path, header: tuple[str, ...], resume: bool):
        self.path = Path(path)
        self.header = "\t".join(header)
        self.done: set[int] = set()
        self._lock = output_lock(self.path)  # one writer per file, until close()
        self._lock.__enter__()
        try:
            exists = check_output(self.path, resume)
            self.created, self.rows_written = not self.path.exists(), 0  # see discard_if_unused
            if exists:
                self._recover()
            else:
                with open(self.path, "w") as handle:
                    handle.write(self.header + "\n")
            self.handle = open(self.path, "a")
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

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
        """Append one row and flush it."""
        self.handle.write(line + "\n")
        self.handle.flush()
        self.rows_written += 1

    def close(self) -> None:
        self.handle.close()
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def discard_if_unused(self, with_sidecar: bool = True) -> None:
        """Remove the file (and its sidecar) if this writer created the file and wrote no row: a
        run that fails before its first row (NaN outputs, a model that does not fit) leaves nothing."""
        self.close()
        if self.created and self.rows_written == 0:
            self.path.unlink(missing_ok=True)
            if with_sidecar:
                sidecar_path(self.path).unlink(missing_ok=True)
