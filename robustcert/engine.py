"""The Monte Carlo engine: batched, seeded Gaussian sampling through a base model.

Every smoothing method in robustcert estimates expectations of the form
E_delta[ h(f(x + delta)) ], delta ~ N(0, sigma^2 I), from n samples. The engine is the one loop
that does this; methods differ only in the *accumulator* that reduces the base model's outputs
(hard votes for Cohen et al., soft-output moments for Lipschitz-variance-margin smoothing, ...).

Design (see ARCHITECTURE.md):

* Noise is drawn straight into one preallocated buffer of ``batch_size`` samples on the model's
  device (``Tensor.normal_``), the clean input is added by broadcasting (no ``repeat`` copies),
  so memory is O(batch_size * |x|), independent of n.
* Accumulators keep their statistics on the device; the loop never synchronises with the host.
  Non-finite model outputs are flagged on the device and checked once at the end.
* Reproducibility: each input owns a ``torch.Generator`` derived from (seed, index, stage), so
  an input's samples do not depend on which other inputs share the run, their order or sharding.
  Each input's samples are drawn in chunks of ``min(batch_size, remaining)``; several inputs'
  chunks are packed into one batch when they fit (cross-input packing for small n such as the
  n0 = 100 selection stage), without changing any input's chunk sizes. Same seed, index, stage,
  n, batch size and device therefore give the same result.
"""
from __future__ import annotations

import contextlib
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from .errors import InvalidArgumentError, ModelOutputError, ResourceError, ShapeError, check_count, check_sigma

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AUTO = "auto"
#: Substrings of allocation-failure messages (CUDA caching allocator, CPU allocator, oneDNN).
OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate",
                          "bad_alloc", "cannot allocate memory")


def derive_seed(seed: int, index: int, stage: str) -> int:
    """A 63-bit seed for one input and one sampling stage, derived from the run's seed.

    numpy's SeedSequence hashes (seed, index, stage) so that neighbouring indices give
    statistically independent streams. The whole stage name is used (as one arbitrary-size
    integer), so names that share a prefix, e.g. "selection-a" and "selection-b", never share
    a stream.
    """
    stage_key = int.from_bytes(stage.encode("utf-8"), "little")
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(index), stage_key]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def fresh_seed() -> int:
    """A random seed from the OS, to be recorded in certificates when the user gives none."""
    return int(np.random.SeedSequence().generate_state(1, np.uint32)[0])


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
    """The memory layout of 4-D batches; ``None`` means the measured default.

    Measured default (results/bench/README.md): on CPU, channels-last is 1.0-4x faster
    (oneDNN's NHWC kernels), so it is on; on CUDA it is on with bf16/fp16 (tensor-core NHWC
    kernels) and off at fp32 until experiments/gpu_check.sh measures otherwise.
    """
    if channels_last is not None:
        return bool(channels_last)
    return device.type == "cpu" or precision != "fp32"


_ALLOCATOR_TUNED = False
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def tune_cpu_allocator(trim_threshold: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Keep memory freed by forward passes in the process heap (glibc ``mallopt``).

    With glibc's defaults, the activations of a CPU forward pass (megabytes each) are returned to
    the OS when freed and faulted back in, page by page, by the next forward pass: on the digits
    CNN this kernel time was up to half of the CPU time of a certification (results/bench). A
    high trim threshold and the largest mmap threshold make freed blocks be reused instead. The
    cost: up to ``trim_threshold`` bytes of freed memory stay with the process. Process-wide, so
    it is called by the CLI (certify, predict, bench on CPU) and left to API users to call; a
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


_COMPILED: "weakref.WeakKeyDictionary[Callable, Callable]" = weakref.WeakKeyDictionary()


def compiled_model(model: Callable) -> Callable:
    """``torch.compile(model)``, shared by every engine of the same model (one compilation cache)."""
    try:
        return _COMPILED[model]
    except (KeyError, TypeError):
        pass
    result = torch.compile(model)
    try:
        _COMPILED[model] = result
    except TypeError:  # not weak-referenceable: compile again next time
        pass
    return result


class Accumulator(Protocol):
    """Reduces base-model outputs into per-input statistics kept on the device."""

    num_classes: int

    def update(self, outputs: torch.Tensor, row: int, start: int, stop: int) -> None:
        """Add ``outputs[start:stop]``, the outputs on samples of input ``row``."""


class VoteCounter:
    """Hard votes: ``counts[i, c]`` = number of noisy samples of input i classified as c.

    This is the accumulator of randomized smoothing (Cohen et al. 2019, SampleUnderNoise).
    """

    def __init__(self, num_inputs: int, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.counts = torch.zeros(num_inputs, num_classes, dtype=torch.int64, device=device)
        self._ones = torch.ones(0, dtype=torch.int64, device=device)

    def update(self, outputs: torch.Tensor, row: int, start: int, stop: int) -> None:
        if self._ones.numel() < stop - start:
            self._ones = torch.ones(stop - start, dtype=torch.int64, device=self.counts.device)
        predictions = outputs[start:stop].argmax(dim=1)
        # scatter_add_ instead of bincount: no device-to-host sync on CUDA.
        self.counts[row].scatter_add_(0, predictions, self._ones[: stop - start])

    def result(self) -> np.ndarray:
        """Counts as an (num_inputs, num_classes) int64 array (one host copy, at the end)."""
        return self.counts.cpu().numpy()


@dataclass
class Segment:
    """``count`` samples of input ``row``, placed at ``[start, start + count)`` of a batch."""

    row: int
    start: int
    count: int


def plan_batches(num_inputs: int, n: int, batch_size: int) -> list[list[Segment]]:
    """Split n samples per input into chunks of ``min(batch_size, remaining)`` and pack them.

    Chunks of consecutive inputs share a batch when they fit (first fit, in order). The chunk
    sizes of an input depend only on n and batch_size, never on its neighbours.
    """
    batches: list[list[Segment]] = []
    current: list[Segment] = []
    used = 0
    for row in range(num_inputs):
        remaining = n
        while remaining > 0:
            count = min(batch_size, remaining)
            if used + count > batch_size:
                batches.append(current)
                current, used = [], 0
            current.append(Segment(row, used, count))
            used += count
            remaining -= count
    if current:
        batches.append(current)
    return batches


class MonteCarloEngine:
    """Batched Gaussian sampling through a base model, with on-device accumulation.

    Args:
        model: any callable mapping a batch (B, *input_shape) to outputs (B, num_classes);
            a ``torch.nn.Module`` is put in eval mode. A model whose attribute
            ``takes_sigma`` is true (noise-level-conditioned models such as rRCM) is called as
            ``model(batch, sigma)``.
        sigma: standard deviation of the Gaussian noise, in input (pixel) units.
        batch_size: number of noisy samples per forward pass.
        device: where noise is drawn and the model runs; None means the model's device.
        precision: "fp32" (default), "bf16" or "fp16": autocast for the forward pass only; the
            noise and the accumulated statistics stay in full precision (outputs are returned to
            the accumulator as float32). bf16/fp16 make a different base classifier: certificates
            hold for that classifier.
        channels_last: store 4-D noise batches (and the model's 4-D weights, in place; values are
            unchanged) in channels-last memory format. None: the measured default
            (:func:`resolve_channels_last`).
        compile: run ``torch.compile(model)``; if compilation fails on this machine, warn once
            and run the model eagerly (``report()["compile"]`` says which happened).

    Out of memory: a forward pass that runs out of device memory is retried on halves of the
    same noisy batch (``forward_batch`` halves each time, down to 1), so the samples and the
    statistics are the same as without the failure; a noise buffer that cannot be allocated
    halves ``batch_size`` before any sample of the run is drawn. Both are counted in
    :meth:`report`. ``batch_size="auto"`` chooses the batch at the first run
    (:func:`auto_batch_size`).
    """

    def __init__(
        self,
        model: Callable,
        sigma: float,
        batch_size: int | str = 1000,
        device: torch.device | str | None = None,
        precision: str = "fp32",
        channels_last: bool | None = None,
        compile: bool = False,
    ):
        self.model = model
        self.sigma = check_sigma(sigma)
        self.batch_size = AUTO if batch_size == AUTO else check_count(batch_size, "batch_size")
        self.device = as_device(device, model_device(model))
        if precision not in PRECISIONS:
            raise InvalidArgumentError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.channels_last = resolve_channels_last(channels_last, self.device, precision)
        self._buffer: torch.Tensor | None = None
        self.forward_batch: int | None = None  # largest forward pass after out-of-memory retries
        self.oom_retries = 0
        self.auto_batch_probe: dict | None = None
        if isinstance(model, torch.nn.Module):
            model.eval()
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
        self.compile_status = "off"
        self._compiled: Callable | None = None
        if compile:
            try:
                self._compiled = compiled_model(model)
                self.compile_status = "on"
            except Exception as exc:  # torch.compile itself unavailable (e.g. unsupported Python)
                self._compile_failed(exc)

    def generator(self, seed: int, index: int, stage: str) -> torch.Generator:
        """The generator of one input for one stage (e.g. "selection", "estimation")."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(seed, index, stage))
        return generator

    def _noise_buffer(self, input_shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """The preallocated noise batch; halves ``batch_size`` if it cannot be allocated."""
        while True:
            shape = (self.batch_size, *input_shape)
            buffer = self._buffer
            if buffer is not None and buffer.shape == shape and buffer.dtype == dtype:
                return buffer
            self._buffer = None  # release the old buffer before allocating the new one
            try:
                self._buffer = torch.empty(shape, dtype=dtype, device=self.device,
                                           memory_format=self._memory_format(len(shape)))
                return self._buffer
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                message = first_line(exc)
            if self.batch_size == 1:
                raise ResourceError(f"out of memory on {self.device} allocating one noisy sample: {message}")
            self._after_out_of_memory("batch_size", self.batch_size, max(1, self.batch_size // 2), message)
            self.batch_size = max(1, self.batch_size // 2)

    def _memory_format(self, ndim: int) -> torch.memory_format:
        return torch.channels_last if self.channels_last and ndim == 4 else torch.contiguous_format

    def _after_out_of_memory(self, what: str, old: int, new: int, message: str) -> None:
        self.oom_retries += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        warnings.warn(f"out of memory on {self.device} with {what}={old} ({message}); retrying with {new}",
                      RuntimeWarning, stacklevel=3)

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _call(self, model: Callable, batch: torch.Tensor) -> torch.Tensor:
        if getattr(self.model, "takes_sigma", False):
            return model(batch, self.sigma)
        return model(batch)

    def _compile_failed(self, exc: BaseException | str) -> None:
        message = exc if isinstance(exc, str) else first_line(exc)
        self._compiled = None
        self.compile_status = f"failed: {message}"
        warnings.warn(f"torch.compile failed on this machine ({message}); running the model without compilation",
                      RuntimeWarning, stacklevel=3)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """One forward pass of the base model on a batch of noisy inputs.

        With ``compile``, a failure of the compiled model is checked against the eager model:
        if the eager model succeeds, compilation is what failed, and it is switched off.
        """
        with self._autocast():
            if self._compiled is None:
                return self._call(self.model, batch)
            try:
                return self._call(self._compiled, batch)
            except Exception as exc:
                if is_out_of_memory(exc):
                    raise
                message = first_line(exc)
            outputs = self._call(self.model, batch)  # raises if the model itself fails
            self._compile_failed(message)
            return outputs

    @torch.inference_mode()
    def run(
        self,
        inputs: torch.Tensor,
        n: int,
        accumulator: Accumulator,
        generators: Sequence[torch.Generator],
    ) -> Accumulator:
        """Draw n noisy samples of each input, run the model, feed the accumulator.

        Args:
            inputs: (num_inputs, *input_shape) clean inputs, already on ``self.device``.
            n: samples per input (>= 1).
            accumulator: receives the outputs; statistics are *added* to what it holds, so a
                sequential method can call ``run`` again with the same generators.
            generators: one per input (see :meth:`generator`).
        Raises:
            ShapeError: the model fails on the input shape or returns the wrong number of classes.
            ModelOutputError: the model returned NaN or infinite values.
            ResourceError: out of memory even with one sample per forward pass.
        """
        n = check_count(n, "n")
        if len(generators) != inputs.shape[0]:
            raise ValueError("one generator per input is required")
        if self.batch_size == AUTO:
            self.batch_size = auto_batch_size(self, tuple(inputs.shape[1:]), accumulator.num_classes)
        if bool(self._sample(inputs, n, accumulator, generators)):  # the one host sync of the run
            raise ModelOutputError("the base model returned NaN or infinite outputs on noisy inputs")
        return accumulator

    def _sample(self, inputs: torch.Tensor, n: int, accumulator: Accumulator,
                generators: Sequence[torch.Generator]) -> torch.Tensor:
        """The sampling loop; returns a device flag: did any output have NaN/inf? No host sync."""
        buffer = self._noise_buffer(inputs.shape[1:], inputs.dtype)
        # Noise is drawn on the buffer's memory as one flat contiguous tensor, whatever its layout:
        # i.i.d. draws do not care about element order, and Tensor.normal_ is vectorised only on
        # contiguous tensors (on CPU the strided path is ~8x slower, e.g. 5% of a ResNet-50
        # forward pass with channels-last batches). The inputs are laid out the same way.
        per_sample = buffer[0].numel()
        flat = buffer.as_strided((buffer.numel(),), (1,))
        flat_inputs = inputs.contiguous(memory_format=self._memory_format(inputs.ndim))
        flat_inputs = flat_inputs.as_strided((inputs.shape[0], per_sample), (per_sample, 1))
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        for segments in plan_batches(inputs.shape[0], n, self.batch_size):
            for seg in segments:
                chunk = flat[seg.start * per_sample : (seg.start + seg.count) * per_sample].view(seg.count, per_sample)
                chunk.normal_(0.0, self.sigma, generator=generators[seg.row])
                chunk.add_(flat_inputs[seg.row])
            filled = segments[-1].start + segments[-1].count
            outputs = self._forward_in_pieces(buffer[:filled], accumulator.num_classes)
            # one float64 reduction: NaN or +-inf anywhere makes the sum non-finite, and a float64 sum
            # of float32 values cannot overflow (cheaper than an elementwise isfinite + all)
            nonfinite |= ~torch.isfinite(outputs.sum(dtype=torch.float64))
            for seg in segments:
                accumulator.update(outputs, seg.row, seg.start, seg.start + seg.count)
        return nonfinite

    def _forward_in_pieces(self, batch: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Outputs on a noisy batch, in forward passes of at most ``forward_batch`` samples.

        On out of memory the same batch is retried in halves: the samples do not change.
        """
        while True:
            limit = min(self.forward_batch or batch.shape[0], batch.shape[0])
            try:
                if limit == batch.shape[0]:
                    return self._checked_forward(batch, num_classes)
                return torch.cat([self._checked_forward(piece, num_classes) for piece in batch.split(limit)])
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                message = first_line(exc)
            if limit == 1:
                raise ResourceError(f"out of memory on {self.device} even with one sample per forward pass: {message}")
            self._after_out_of_memory("forward batch", limit, limit // 2, message)
            self.forward_batch = limit // 2

    def _checked_forward(self, batch: torch.Tensor, num_classes: int) -> torch.Tensor:
        try:
            outputs = self.forward(batch)
        except (RuntimeError, ValueError) as exc:
            if is_out_of_memory(exc):
                raise
            raise ShapeError(
                f"the base model failed on inputs of shape {tuple(batch.shape[1:])}: {first_line(exc)}"
            ) from exc
        if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2 or outputs.shape[0] != batch.shape[0]:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise ShapeError(f"the base model must return (batch, num_classes) outputs, got {shape}")
        if outputs.shape[1] != num_classes:
            raise ShapeError(
                f"the base model returns {outputs.shape[1]} classes but num_classes={num_classes}"
            )
        if outputs.dtype in (torch.bfloat16, torch.float16):
            outputs = outputs.float()  # accumulators compute in float32 whatever the autocast dtype
        return outputs

    def report(self) -> dict:
        """What the engine did: batch sizes after out-of-memory retries, precision, layout, compile."""
        report = {
            "device": str(self.device),
            "batch_size": self.batch_size,
            "forward_batch": self.forward_batch or self.batch_size,
            "oom_retries": self.oom_retries,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile_status,
        }
        if self.device.type == "cpu":
            report["cpu_allocator"] = "tuned" if _ALLOCATOR_TUNED else "default"
        if self.auto_batch_probe is not None:
            report["auto_batch"] = self.auto_batch_probe
        return report


# --------------------------------------------------------------------------- automatic batch size
#: Fraction of the free CUDA memory that ``auto`` batches may fill (the rest is headroom for
#: allocator fragmentation and cuDNN workspaces; an out-of-memory error still halves the batch).
AUTO_MEMORY_FRACTION = 0.6
MAX_AUTO_BATCH = {"cuda": 32768, "cpu": 4096}
#: CPU search: batches 8, 16, 32, ... until one forward pass takes longer than this.
CPU_PROBE_SECONDS = 1.0


def _floor_power_of_two(value: float) -> int:
    return 1 << max(0, int(value).bit_length() - 1) if value >= 1 else 1


def auto_batch_size(engine: MonteCarloEngine, input_shape: tuple[int, ...], num_classes: int) -> int:
    """A batch size for ``engine``'s model on its device (``batch_size="auto"``).

    * CUDA: the peak memory of forward passes at 16 and 64 samples gives the memory per sample
      (activations, plus the noise buffer); the batch is the largest power of two that fills
      ``AUTO_MEMORY_FRACTION`` of the free memory, at most ``MAX_AUTO_BATCH["cuda"]``.
    * CPU: a short measurement. Forward passes at 8, 16, 32, ... samples (one warm-up and one
      timed pass each) until a pass takes more than ``CPU_PROBE_SECONDS`` or the batch reaches
      ``MAX_AUTO_BATCH["cpu"]``; the smallest batch within 5% of the best samples/s wins
      (beyond the CPU caches larger batches can be slower). Takes a few seconds at most.

    The probe runs the eager model with the engine's precision and layout; what it measured is
    kept in ``engine.auto_batch_probe`` (and ``engine.report()``).
    """
    device = engine.device

    def probe(size: int) -> None:
        batch = torch.rand((size, *input_shape), device=device)
        batch = batch.contiguous(memory_format=engine._memory_format(batch.ndim))
        with torch.inference_mode(), engine._autocast():
            outputs = engine._call(engine.model, batch)
        if isinstance(outputs, torch.Tensor) and outputs.ndim == 2 and outputs.shape[1] != num_classes:
            raise ShapeError(f"the base model returns {outputs.shape[1]} classes but num_classes={num_classes}")

    try:
        if device.type == "cuda":
            batch_size = _auto_batch_cuda(engine, input_shape, probe)
        else:
            batch_size = _auto_batch_cpu(engine, probe)
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, ShapeError):
            raise
        if is_out_of_memory(exc):
            raise ResourceError(f"out of memory on {device} while choosing the batch size: {first_line(exc)}")
        raise ShapeError(f"the base model failed on inputs of shape {input_shape}: {first_line(exc)}") from exc
    engine.auto_batch_probe = dict(engine.auto_batch_probe or {}, chosen=batch_size)
    return batch_size


def _auto_batch_cuda(engine: MonteCarloEngine, input_shape, probe) -> int:
    device = engine.device
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
    engine.auto_batch_probe = {"rule": "cuda free memory", "free_bytes": int(free),
                               "bytes_per_sample": int(per_sample)}
    return batch_size


def _auto_batch_cpu(engine: MonteCarloEngine, probe) -> int:
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
    engine.auto_batch_probe = {"rule": "cpu measurement", "samples_per_s": {str(s): round(r, 1) for s, r in rates.items()}}
    return batch_size
