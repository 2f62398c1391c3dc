"""Multi-process certification: inputs sharded across torch.distributed ranks.

    torchrun --nproc_per_node=K -m robustcert -- certify --model ... --out out.tsv    (one node)
    torchrun --nnodes=M --nproc_per_node=K --rdzv-endpoint=HOST:PORT -m robustcert -- certify ...
    torchrun --nproc_per_node=K my_script.py       (a script calling robustcert.certify_dataset)

Under torchrun with WORLD_SIZE > 1 (or with ``distributed=True`` / ``--distributed``) a dataset
run splits the inputs into the groups that one engine call packs in a single-process run
(:func:`robustcert.engine.inputs_per_call`: one input when n0 + n >= batch, several for
small n) and gives every K-th group to each rank. A rank writes its rows to ``out.tsv.partR`` (flushed line by line);
when all ranks are done, rank 0 merges the part files into ``out.tsv`` sorted by idx and records
the run (world size, backend, each rank's device and engine report) in the sidecar.

Every input's noise comes from a generator derived from (seed, index, stage), and each engine
call sees the same inputs as in a single-process run, so the merged file equals a single-process
run with the same seed except for the time column (same device type; with ``--batch auto`` rank
0 chooses the batch and every rank uses it).

Backends: gloo on CPU, nccl on CUDA (rank r uses cuda:LOCAL_RANK). Coordination (a few small
Python objects: the work list, a barrier, the engine reports) always goes through a gloo group
with a long timeout, so ranks that finish early can wait for the slowest one.

A rank that fails removes its part file if it holds no row; rank 0 also removes the TSV and
sidecar it created when no rank wrote a row, so a failed first run leaves nothing behind.

Resume: ``--resume`` first merges the rows of part files left by an interrupted run into the
TSV; the remaining inputs are sharded again, over any number of processes (or a single one).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..engine import first_line
from ..errors import RobustCertError
from ..files import (
    RowWriter, describe_file, existing_result_kind, previous_runs, sidecar_path, update_last_run, write_sidecar,
    write_text_atomically,
)

#: Long enough for the slowest rank of a multi-day run; the coordination group never times out first.
COORDINATION_TIMEOUT = datetime.timedelta(days=30)
ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RobustCertError):
    """The torch.distributed environment is missing or inconsistent."""


@dataclass
class World:
    """This process's place in the run, and the gloo group used for coordination."""

    rank: int
    size: int
    local_rank: int
    backend: str
    group: object = None
    finished: bool = False  # every rank passed the end of run_sharded

    def broadcast(self, value):
        """``value`` of rank 0, on every rank."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def gather(self, value) -> list | None:
        """Every rank's ``value`` as a list on rank 0 (None elsewhere)."""
        import torch.distributed as dist

        out = [None] * self.size if self.rank == 0 else None
        dist.gather_object(value, out, dst=0, group=self.group)
        return out

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.group)


_WORLD: World | None = None


def current() -> World | None:
    """The distributed world of this process, or None in a single-process run."""
    return _WORLD


def requested(flag: bool) -> bool:
    """True when this process is one of several (torchrun with WORLD_SIZE > 1) or ``--distributed``."""
    return flag or int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_first_rank(flag: bool = False) -> bool:
    """True unless this process is a rank > 0 of a (requested or joined) multi-process run: the
    output file is rank 0's, so only rank 0 checks it before the run (the others would race with
    rank 0 creating it)."""
    world = current()
    if world is not None:
        return world.rank == 0
    return not requested(flag) or int(os.environ.get("RANK", "0")) == 0


def start(flag: bool, device_option: str) -> str:
    """Join the process group when requested; returns the device option for this rank.

    ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` when CUDA is available; an explicit
    ``cuda:N`` or ``cpu`` is kept.
    """
    global _WORLD
    if not requested(flag) or _WORLD is not None:
        return device_option
    missing = [name for name in ENVIRONMENT if name not in os.environ]
    if missing:
        raise DistributedError(
            f"--distributed needs the torch.distributed environment (missing {', '.join(missing)}); "
            "launch with: torchrun --nproc_per_node=K -m robustcert certify ..."
        )
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ["LOCAL_RANK"])
    if device_option in ("auto", "cuda") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices")
        device_option = f"cuda:{local_rank}"
    backend = "nccl" if device_option.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device_option))
    _exit_cleanly_on_sigterm()  # torchrun stops the other ranks with SIGTERM when one fails
    dist.init_process_group(backend=backend, timeout=COORDINATION_TIMEOUT)
    group = dist.new_group(backend="gloo", timeout=COORDINATION_TIMEOUT) if backend != "gloo" else None
    _WORLD = World(dist.get_rank(), dist.get_world_size(), local_rank, backend, group)
    return device_option


@contextlib.contextmanager
def session(flag: bool, device_option: str):
    """Be one rank of a process group for the duration of a command, when requested (torchrun with
    WORLD_SIZE > 1, or ``flag``); yields this rank's device option (see :func:`start`)."""
    joined = current() is None and requested(flag)
    device_option = start(flag, device_option) if joined else device_option
    try:
        yield device_option
    finally:
        if joined:
            stop()


def _raise_system_exit(signum, frame):
    raise SystemExit(128 + signum)


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so that a rank stopped by torchrun runs its cleanup (``finally``)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_system_exit)


def gather_after_run(values: list) -> list | None:
    """``values`` of every rank concatenated on rank 0 (None on the others) after a completed
    sharded run; unchanged in a single-process run. After a failed run, None (no collective call,
    which could wait forever for a rank that is gone)."""
    world = current()
    if world is None:
        return values
    if not world.finished:
        return None
    gathered = world.gather(list(values))
    return [v for part in gathered for v in part] if world.rank == 0 else None


def stop() -> None:
    """Leave the process group (no-op in a single-process run)."""
    global _WORLD
    if _WORLD is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _WORLD = None


# --------------------------------------------------------------------------- part files
def part_path(out_path: Path, rank: int) -> Path:
    return out_path.with_name(f"{out_path.name}.part{rank}")


def part_files(out_path: Path) -> list[Path]:
    """Part files of ``out_path`` left by (possibly interrupted) multi-process runs: files named
    ``out.tsv.partR`` that hold a result header (a file of that name that is not one is refused,
    never merged or removed)."""
    pattern = re.compile(re.escape(out_path.name) + r"\.part\d+$")
    if not out_path.parent.is_dir():
        return []
    parts = sorted(p for p in out_path.parent.iterdir() if pattern.fullmatch(p.name))
    for part in parts:
        if part.stat().st_size and existing_result_kind(part) is None:
            raise DistributedError(f"{part} is named like a part file of {out_path.name} but is {describe_file(part)}; "
                                   "it is left alone: move it away")
    return parts


def _complete_rows(path: Path, header: str) -> list[str]:
    """The complete rows of a TSV (a partial last line of a killed writer is dropped)."""
    text = path.read_text()
    lines = text.split("\n")
    if lines[0] != header:
        raise DistributedError(f"cannot merge {path}: its header is {lines[0]!r}, expected {header!r}")
    width = len(header.split("\t"))
    return [line for line in lines[1:-1] if len(line.split("\t")) == width]


def merge_parts(out_path: Path, columns: tuple[str, ...]) -> set[int]:
    """Merge part files into ``out_path`` (rows sorted by idx, first copy of an idx kept), atomically,
    then delete them. Returns the indices ``out_path`` holds. ``out_path`` must exist with its header."""
    header = "\t".join(columns)
    parts = part_files(out_path)
    rows = _complete_rows(out_path, header)
    if parts:
        for part in parts:
            rows += _complete_rows(part, header)
        by_index: dict[int, str] = {}
        for row in rows:
            by_index.setdefault(int(row.split("\t")[0]), row)
        rows = [by_index[i] for i in sorted(by_index)]
        write_text_atomically(out_path, "\n".join([header, *rows]) + "\n")
        for part in parts:
            part.unlink()
    return {int(row.split("\t")[0]) for row in rows}


def fold_interrupted_parts(out_path: Path, columns: tuple[str, ...], resume: bool) -> None:
    """Before a single-process run: on resume, merge part files of an interrupted multi-process
    run into the TSV; on a fresh run (no TSV yet), remove stale part files."""
    parts = part_files(Path(out_path))
    if not parts:
        return
    out_path = Path(out_path)
    if resume and out_path.is_file() and out_path.stat().st_size > 0:
        merge_parts(out_path, columns)
    elif not out_path.exists():
        for part in parts:
            part.unlink()




# --------------------------------------------------------------------------- the sharded run
def shard_groups(todo: list[int], per_call: int, world: World) -> list[list[int]]:
    """This rank's groups: the single-process run's engine calls, every ``world.size``-th one."""
    groups = [todo[start:start + per_call] for start in range(0, len(todo), per_call)]
    return groups[world.rank::world.size]


def _rows_in(path: Path) -> bool:
    try:
        return path.is_file() and b"\n" in path.read_bytes().rstrip(b"\n")
    except OSError:
        return False


def run_sharded(out_path: Path, columns: tuple[str, ...], record: dict, resume: bool, indices: list[int],
                per_call: int, work, engine_report) -> None:
    """One rank's part of a multi-process dataset run (see the module docstring).

    ``work(groups, writer, show_progress)`` certifies this rank's groups of input indices and
    writes their rows; ``engine_report()`` says what the rank's engines did. Rank 0 prepares the
    TSV and sidecar (resume checked first), every rank writes its part file, rank 0 merges them.
    """
    import time

    world = current()
    out_path = Path(out_path)
    distributed_entry = {"world_size": world.size, "backend": world.backend}
    record["runs"][-1]["distributed"] = distributed_entry
    plan: dict = {}
    created = False
    if world.rank == 0:
        try:
            if resume:
                previous_runs(out_path, record)  # refuse a mismatched resume before touching files
            else:
                for part in part_files(out_path):  # stale parts of a removed TSV
                    part.unlink()
            writer = RowWriter(out_path, columns, resume)  # create, or check and repair, the TSV
            created = writer.created
            writer.close()
            plan["done"] = sorted(merge_parts(out_path, columns))
            write_sidecar(out_path, record, resume)
        except (RobustCertError, OSError) as exc:
            world.broadcast({"error": str(exc)})
            raise
    plan = world.broadcast(plan)
    if "error" in plan:
        raise SystemExit(2)  # rank 0 reports the error
    done = set(plan["done"])
    groups = shard_groups([i for i in indices if i not in done], per_call, world)
    writer = RowWriter(part_path(out_path, world.rank), columns, resume=False)
    started = time.perf_counter()
    try:
        work(groups, writer, world.rank == 0)
        report = {"rank": world.rank, "inputs": sum(map(len, groups)),
                  "seconds": round(time.perf_counter() - started, 3), "engine": engine_report()}
        try:
            world.barrier()
            reports = world.gather(report)
        except RuntimeError as exc:  # a peer died: its own error line says why
            raise DistributedError(f"another process of this run failed ({first_line(exc)}); the rows "
                                   "written so far are kept, --resume continues") from None
    except BaseException:
        writer.discard_if_unused(with_sidecar=False)
        if world.rank == 0 and created and not any(_rows_in(p) for p in [out_path, *part_files(out_path)]):
            out_path.unlink(missing_ok=True)  # a first run that wrote no row anywhere leaves nothing
            sidecar_path(out_path).unlink(missing_ok=True)
        raise
    finally:
        writer.close()
    world.finished = True
    if world.rank == 0:
        merge_parts(out_path, columns)
        update_last_run(out_path, distributed={**distributed_entry, "ranks": reports})
