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
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from .errors import ModelOutputError, ShapeError, check_count, check_sigma

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def derive_seed(seed: int, index: int, stage: str) -> int:
    """A 63-bit seed for one input and one sampling stage, derived from the run's seed.

    numpy's SeedSequence hashes (seed, index, stage) so that neighbouring indices give
    statistically independent streams.
    """
    stage_key = int.from_bytes(stage.encode("utf-8")[:8].ljust(8, b"\0"), "little")
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(index), stage_key]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def fresh_seed() -> int:
    """A random seed from the OS, to be recorded in certificates when the user gives none."""
    return int(np.random.SeedSequence().generate_state(1, np.uint32)[0])


def model_device(model: Callable) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for parameterless callables)."""
    if isinstance(model, torch.nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for tensor in model.buffers():
            return tensor.device
    return torch.device("cpu")


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
            noise and the accumulated statistics stay in full precision.
        channels_last: store 4-D noise batches in channels-last memory format.
    """

    def __init__(
        self,
        model: Callable,
        sigma: float,
        batch_size: int = 1000,
        device: torch.device | str | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
    ):
        self.model = model
        self.sigma = check_sigma(sigma)
        self.batch_size = check_count(batch_size, "batch_size")
        self.device = torch.device(device) if device is not None else model_device(model)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.channels_last = channels_last
        self._buffer: torch.Tensor | None = None
        if isinstance(model, torch.nn.Module):
            model.eval()

    def generator(self, seed: int, index: int, stage: str) -> torch.Generator:
        """The generator of one input for one stage (e.g. "selection", "estimation")."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(derive_seed(seed, index, stage))
        return generator

    def _noise_buffer(self, input_shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        shape = (self.batch_size, *input_shape)
        buffer = self._buffer
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            memory_format = (
                torch.channels_last if self.channels_last and len(shape) == 4 else torch.contiguous_format
            )
            buffer = torch.empty(shape, dtype=dtype, device=self.device, memory_format=memory_format)
            self._buffer = buffer
        return buffer

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """One forward pass of the base model on a batch of noisy inputs."""
        with self._autocast():
            if getattr(self.model, "takes_sigma", False):
                return self.model(batch, self.sigma)
            return self.model(batch)

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
        """
        n = check_count(n, "n")
        if len(generators) != inputs.shape[0]:
            raise ValueError("one generator per input is required")
        buffer = self._noise_buffer(inputs.shape[1:], inputs.dtype)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        for segments in plan_batches(inputs.shape[0], n, self.batch_size):
            for seg in segments:
                chunk = buffer[seg.start : seg.start + seg.count]
                chunk.normal_(0.0, self.sigma, generator=generators[seg.row])
                chunk.add_(inputs[seg.row])
            filled = segments[-1].start + segments[-1].count
            outputs = self._checked_forward(buffer[:filled], accumulator.num_classes)
            nonfinite |= ~torch.isfinite(outputs).all()
            for seg in segments:
                accumulator.update(outputs, seg.row, seg.start, seg.start + seg.count)
        if bool(nonfinite):
            raise ModelOutputError("the base model returned NaN or infinite outputs on noisy inputs")
        return accumulator

    def _checked_forward(self, batch: torch.Tensor, num_classes: int) -> torch.Tensor:
        try:
            outputs = self.forward(batch)
        except (RuntimeError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ShapeError(
                f"the base model failed on inputs of shape {tuple(batch.shape[1:])}: {first_line}"
            ) from exc
        if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2 or outputs.shape[0] != batch.shape[0]:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise ShapeError(f"the base model must return (batch, num_classes) outputs, got {shape}")
        if outputs.shape[1] != num_classes:
            raise ShapeError(
                f"the base model returns {outputs.shape[1]} classes but num_classes={num_classes}"
            )
        return outputs
