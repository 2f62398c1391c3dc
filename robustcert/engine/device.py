"""Device and batch-size policy: where the engine runs, how big its batches are, CPU settings.

* :func:`as_device` / :func:`model_device`: a ``torch.device`` from a user's value or a model.
* :func:`resolve_channels_last`: the measured default memory layout.
* :func:`auto_batch_size`: ``batch_size="auto"``, resolved once per model and input shape before
  any sample is drawn (free CUDA memory, or a short CPU measurement).
* :func:`configure_cpu`: the process-wide CPU settings a certification run applies (glibc
  allocator tuning, torch threads); the dataset runs call it, API users may too.
* :func:`is_out_of_memory`: which exceptions are allocation failures (the runner retries those).
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import torch

from ..errors import InvalidArgumentError, ResourceError, ShapeError, check_count

AUTO = "auto"
#: Substrings of allocation-failure messages (CUDA caching allocator, CPU allocator, oneDNN).
OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate",
                          "bad_alloc", "cannot allocate memory")


def as_device(device: torch.device | str | None, default: torch.device | None = None) -> torch.device:
    """A torch.device from a user's value: None -> ``default`` (CPU if None too), "auto" -> CUDA
    when available else CPU; an unknown name or an unavailable CUDA device is an
    InvalidArgumentError naming it."""
    if device is None:
        return default if default is not None else torch.device("cpu")
    if device == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidArgumentError(f"unknown device {device!r} (auto, cpu, cuda, cuda:1, ...)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device {device!r} requested but no CUDA device is available")
    return resolved


def model_device(model: Callable) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for parameterless callables)."""
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for tensor in model.buffers():
            return tensor.device
    return torch.device("cpu")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure: ``torch.cuda.OutOfMemoryError`` or a CPU allocator error."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OUT_OF_MEMORY_MESSAGES)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve_channels_last(channels_last: bool | None, device: torch.device, precision: str) -> bool:
    """The memory layout of 4-D batches; ``None`` means the measured default: on.

    Measured (results/bench/README.md): on CPU, channels-last is 1.0-4x faster (oneDNN's NHWC
    kernels); on an H200 it is 1.46x (cifar_resnet110) and 1.23x (resnet50) faster at fp32, 1.4x
    and 1.5x on top of bf16, and neutral (0.99x) on the tiny digits CNN. ``device`` and
    ``precision`` are kept in the signature for a default that may come to depend on them.
    """
    if channels_last is not None:
        return bool(channels_last)
    return True


# --------------------------------------------------------------------------- CPU settings
_ALLOCATOR_TUNED = False
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def tune_cpu_allocator(trim_threshold: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Keep memory freed by forward passes in the process heap (glibc ``mallopt``).

    With glibc's defaults, the activations of a CPU forward pass (megabytes each) are returned to
    the OS when freed and faulted back in, page by page, by the next forward pass: on the digits
    CNN this kernel time was up to half of the CPU time of a certification (results/bench). A
    high trim threshold and the largest mmap threshold make freed blocks be reused instead. The
    cost: up to ``trim_threshold`` bytes of freed memory stay with the process. Process-wide; a
    no-op (returns False) where the C library has no ``mallopt`` (macOS, musl).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        import ctypes
        import ctypes.util

        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1 and mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1
    return _ALLOCATOR_TUNED


def cpu_allocator_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` has tuned this process's allocator."""
    return _ALLOCATOR_TUNED


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _busy_cpu_seconds() -> float | None:
    """CPU seconds spent by all processes since boot (``/proc/stat``: user, nice, system, irq,
    softirq, steal), or None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def busy_cores(window: float = 0.2) -> float | None:
    """How many cores other processes keep busy: all CPU time minus this process's, over ``window``
    seconds of wall time (this process sleeps meanwhile). None where it cannot be measured (no
    /proc/stat: macOS, Windows)."""
    before = _busy_cpu_seconds()
    if before is None:
        return None
    own_before, started = sum(os.times()[:2]), time.monotonic()
    time.sleep(window)
    after, own_after, elapsed = _busy_cpu_seconds(), sum(os.times()[:2]), time.monotonic() - started
    if after is None:
        return None
    return max(0.0, ((after - before) - (own_after - own_before)) / max(elapsed, 1e-9))


def default_threads() -> tuple[int, dict]:
    """torch threads for a CPU run when the user gives none (``threads=None`` / no ``--threads``):
    one per core that other processes leave idle, at least one; and what the rule saw.

    Intra-op threads wait for each other at the end of every operation, so a thread that shares
    its core with another process holds all of them up: on a 2-core machine busy with other jobs,
    2 threads made certification 4-9x slower than 1 thread for the digits CNN, cifar_resnet20
    and cifar_resnet110 alike, while on a quiet machine 2 threads were 1.6-1.7x faster than 1
    (results/bench/threads_default.md). The other processes' load is measured directly
    (:func:`busy_cores`, 0.2 s; it excludes this process, unlike the load average), or read from
    the 1-minute load average where that is unavailable.
    """
    cores = available_cores()
    busy, source = busy_cores(), "busy_cores"
    if busy is None:
        try:
            busy, source = os.getloadavg()[0], "load average"
        except (AttributeError, OSError):
            busy, source = 0.0, "unknown"
    threads = max(1, min(cores, int(cores - busy + 0.5)))
    return threads, {"cores": cores, "busy_cores": round(busy, 2), "measured_by": source}


def configure_cpu(threads: int | None = None, tune_allocator: bool = True) -> dict:
    """Apply the CPU settings of a certification run; returns what was applied (for the sidecar).

    ``threads``: torch intra-op threads (None: :func:`default_threads`). ``tune_allocator``:
    :func:`tune_cpu_allocator`. Both are process-wide.
    """
    if threads is None:
        chosen, seen = default_threads()
        rule = {"threads_rule": "default: one per core other processes leave idle", **seen}
    else:
        chosen, rule = check_count(threads, "threads"), {"threads_rule": "given"}
    torch.set_num_threads(chosen)
    tuned = tune_cpu_allocator() if tune_allocator else cpu_allocator_tuned()
    return {"threads": chosen, **rule, "cpu_allocator": "tuned" if tuned else "default"}


# --------------------------------------------------------------------------- automatic batch size
#: Fraction of the free CUDA memory that ``auto`` batches may fill (the rest is headroom for
#: allocator fragmentation and cuDNN workspaces; an out-of-memory error still halves the batch).
AUTO_MEMORY_FRACTION = 0.6
MAX_AUTO_BATCH = {"cuda": 32768, "cpu": 4096}
#: CPU search: batches 8, 16, 32, ... until one forward pass takes longer than this.
CPU_PROBE_SECONDS = 1.0


def _floor_power_of_two(value: float) -> int:
    return 1 << max(0, int(value).bit_length() - 1) if value >= 1 else 1


def auto_batch_size(runner, input_shape: tuple[int, ...], num_classes: int) -> tuple[int, dict]:
    """A batch size for a model runner (:class:`robustcert.engine.runner.ModelRunner`) on its
    device, and what the probe measured: ``(batch_size, probe record)``.

    * CUDA: the peak memory of forward passes at 16 and 64 samples gives the memory per sample
      (activations, plus the noise buffer); the batch is the largest power of two that fills
      ``AUTO_MEMORY_FRACTION`` of the free memory, at most ``MAX_AUTO_BATCH["cuda"]``.
    * CPU: a short measurement. Forward passes at 8, 16, 32, ... samples (one warm-up and one
      timed pass each) until a pass takes more than ``CPU_PROBE_SECONDS`` or the batch reaches
      ``MAX_AUTO_BATCH["cpu"]``; the smallest batch within 5% of the best samples/s wins
      (beyond the CPU caches larger batches can be slower). Takes a few seconds at most.

    The probe runs the eager model with the runner's precision and layout.
    """
    device = runner.device

    def probe(size: int) -> None:
        batch = runner.layout(torch.rand((size, *input_shape), device=device))
        with torch.inference_mode(), runner.autocast():
            outputs = runner.call(batch)
        if isinstance(outputs, torch.Tensor) and outputs.ndim == 2 and outputs.shape[1] != num_classes:
            raise ShapeError(f"the base model returns {outputs.shape[1]} classes but num_classes={num_classes}")

    try:
        if device.type == "cuda":
            batch_size, record = _auto_batch_cuda(device, input_shape, probe)
        else:
            batch_size, record = _auto_batch_cpu(probe)
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, ShapeError):
            raise
        if is_out_of_memory(exc):
            raise ResourceError(f"out of memory on {device} while choosing the batch size: {first_line(exc)}")
        raise ShapeError(f"the base model failed on inputs of shape {tuple(input_shape)}: {first_line(exc)}") from exc
    return batch_size, {**record, "chosen": batch_size}


def _auto_batch_cuda(device, input_shape, probe) -> tuple[int, dict]:
    sample_bytes = 4 * int(np.prod(input_shape))
    peaks = {}
    for size in (16, 64):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        probe(size)
        torch.cuda.synchronize(device)
        peaks[size] = torch.cuda.max_memory_allocated(device) - before
    per_sample = max((peaks[64] - peaks[16]) / 48, peaks[64] / 64, sample_bytes) + sample_bytes
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached, reusable
    batch_size = min(_floor_power_of_two(AUTO_MEMORY_FRACTION * free / per_sample), MAX_AUTO_BATCH["cuda"])
    return batch_size, {"rule": "cuda free memory", "free_bytes": int(free), "bytes_per_sample": int(per_sample)}


def _auto_batch_cpu(probe) -> tuple[int, dict]:
    rates: dict[int, float] = {}
    size = 8
    while size <= MAX_AUTO_BATCH["cpu"]:
        probe(size)  # warm-up (oneDNN primitive creation for this shape)
        start = time.perf_counter()
        probe(size)
        seconds = time.perf_counter() - start
        rates[size] = size / max(seconds, 1e-9)
        if seconds > CPU_PROBE_SECONDS:
            break
        size *= 2
    best = max(rates.values())
    batch_size = min(s for s, rate in rates.items() if rate >= 0.95 * best)
    return batch_size, {"rule": "cpu measurement", "samples_per_s": {str(s): round(r, 1) for s, r in rates.items()}}
