"""How a command-line run executes: engine options (one flag each) and multi-process sharding.

:func:`runtime_options` adds to ``certify`` and ``predict``:

* ``--precision fp32|bf16|fp16``: autocast of the base model. Default fp32: bf16/fp16 run a
  different base classifier (certificates hold for *that* classifier), so they are opt-in even
  where they are faster (CPU with AVX512-BF16: 1.5-3x, see results/bench/README.md).
* ``--channels-last/--no-channels-last``: memory layout of 4-D batches and weights. Default: the
  measured one (:func:`robustcert.engine.resolve_channels_last`): on for CPU (up to 4x faster on
  the digits CNN) and for CUDA with bf16/fp16; off for CUDA fp32 until measured there.
* ``--compile``: ``torch.compile`` the base model; a compilation failure warns once and the run
  continues eagerly (recorded in the sidecar). Default off: compiling takes 10-60 s per batch
  shape on CPU, which only long runs repay.
* ``--distributed``: shard inputs across torch.distributed ranks (automatic under torchrun with
  WORLD_SIZE > 1); see :mod:`robustcert.distributed`.

and ``--batch`` accepts ``auto`` (:data:`BATCH_SIZE`; see ``robustcert.engine.auto_batch_size``).
What the engines did (batch after out-of-memory retries, precision, layout, compile status) is
written to the sidecar's run entry as ``engine`` when the run ends.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import click

META_KEY = "robustcert.engine_options"


class BatchSizeType(click.ParamType):
    """A whole number >= 1, or ``auto``."""

    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a whole number nor 'auto'", param, ctx)


BATCH_SIZE = BatchSizeType()

RUNTIME_OPTIONS = [
    click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
                 help="Autocast precision of the base model (bf16/fp16: a different, faster base classifier)."),
    click.option("--channels-last/--no-channels-last", "channels_last", default=None,
                 help="Channels-last memory layout [default: on for CPU, and for CUDA with bf16/fp16]."),
    click.option("--compile", "compile_model", is_flag=True,
                 help="torch.compile the base model (falls back to eager, with a warning, if it fails)."),
    click.option("--distributed", is_flag=True,
                 help="Shard inputs across torch.distributed ranks (automatic under torchrun, WORLD_SIZE > 1)."),
]


def runtime_options(func):
    """Add the engine and distributed flags to a command; the command function does not see them.

    The engine options are kept in the click context and applied by :func:`prepare_run`; the
    process group (if any) lives for the duration of the command.
    """
    @functools.wraps(func)
    def wrapper(*args, precision, channels_last, compile_model, distributed: bool, **kwargs):
        context = click.get_current_context()
        context.meta[META_KEY] = {"precision": precision, "channels_last": channels_last, "compile": compile_model}
        if "device" in kwargs:
            kwargs["device"] = _start_distributed(distributed, kwargs["device"])
        try:
            return func(*args, **kwargs)
        finally:
            _stop_distributed()

    for option in reversed(RUNTIME_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def _start_distributed(flag: bool, device: str) -> str:
    from . import distributed

    return distributed.start(flag, device)  # unchanged device when no process group is requested


def _stop_distributed() -> None:
    from . import distributed

    distributed.stop()


def prepare_run(smoothed, parameters: dict, out_path: Path, columns, resume: bool) -> None:
    """Before a run: apply the command's engine options to ``smoothed``; record a non-default
    precision as a run parameter (a resumed run must use the same base classifier); fold part
    files of an interrupted multi-process run into the TSV (single-process resume)."""
    from . import distributed

    context = click.get_current_context(silent=True)
    options = (context.meta.get(META_KEY) if context is not None else None) or {}
    if options:
        smoothed.set_engine_options(**options)
    if getattr(getattr(smoothed, "device", None), "type", None) == "cpu":
        from .engine import tune_cpu_allocator

        tune_cpu_allocator()  # activations reused instead of page-faulted back each forward pass
    precision = options.get("precision", getattr(smoothed, "precision", "fp32"))
    if precision != "fp32":
        parameters["precision"] = precision
    if distributed.current() is None:
        distributed.fold_interrupted_parts(Path(out_path), tuple(columns), resume)


def inputs_per_call(samples_per_input: int, batch_size, smoothed) -> int:
    """Inputs per engine call (cli.inputs_per_call); with ``--batch auto`` one input until the
    engines have chosen their batch, then as many as that batch packs."""
    from .cli import inputs_per_call as per_call

    if isinstance(batch_size, int):
        return per_call(samples_per_input, batch_size)
    chosen = [e.batch_size for e in getattr(smoothed, "_engines", {}).values() if isinstance(e.batch_size, int)]
    return per_call(samples_per_input, min(chosen)) if chosen else 1


def update_last_run(out_path: Path, **fields) -> None:
    """Set ``fields`` in the last run entry of the sidecar ``FILE.json`` of ``out_path`` (rewritten
    atomically); nothing happens when there is no sidecar."""
    from .results import write_text_atomically

    sidecar = Path(out_path).with_name(Path(out_path).name + ".json")
    if not sidecar.is_file():
        return
    record = json.loads(sidecar.read_text())
    record["runs"][-1].update(fields)
    write_text_atomically(sidecar, json.dumps(record, indent=2, default=str) + "\n")


def record_engine(out_path: Path, smoothed) -> None:
    """Add ``engine`` (``smoothed.engine_report()``) and ``finished`` to the sidecar's last run."""
    report = smoothed.engine_report() if hasattr(smoothed, "engine_report") else {}
    if not report:
        return
    try:
        update_last_run(out_path, engine=report, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    except (OSError, ValueError, KeyError, IndexError):  # never mask the run's own outcome
        pass
