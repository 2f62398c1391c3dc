"""The Monte Carlo engine: batched, seeded noise through a base model, on-device accumulation.

Every smoothing method estimates expectations E_delta[ h(f(x + delta)) ] from n samples. The
engine is the one loop that does this; methods differ only in the accumulator that reduces the
base model's outputs (hard votes, soft-output moments, ...).

* Noise is drawn straight into one preallocated buffer of ``batch_size`` samples on the model's
  device and the clean input is added by broadcasting (no ``repeat`` copies), so memory is
  O(batch_size * |x|), independent of n.
* Accumulators keep their statistics on the device; the loop never synchronises with the host.
  Non-finite model outputs are flagged on the device and checked once at the end.
* Each input has its own generator (:mod:`robustcert.engine.sampling`); several inputs' chunks
  share a batch when they fit (cross-input packing for small n, e.g. the n0 = 100 selection
  stage) without changing any input's samples.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..errors import ModelOutputError, ResourceError, check_count
from .accumulators import Accumulator
from .device import first_line, is_out_of_memory
from .runner import ModelRunner
from .sampling import GaussianNoise, input_generator, plan_batches


class MonteCarloEngine:
    """Batched noise sampling through a base model, with on-device accumulation.

    Args:
        model: any callable mapping a batch (B, *input_shape) to outputs (B, num_classes).
        sigma: standard deviation of the Gaussian noise, in input (pixel) units.
        batch_size: noisy samples per batch (a whole number; ``"auto"`` is resolved before an
            engine is built, see :func:`robustcert.engine.device.auto_batch_size`).
        device, precision, channels_last, compile: see :class:`ModelRunner`.
        noise: the noise distribution (default :class:`GaussianNoise` of level ``sigma``): any object
            with ``sample_shape`` and ``perturb`` (:mod:`robustcert.engine.sampling`), e.g.
            Laplace, uniform or randomized-ablation noise, or the floating-point-sound
            :class:`robustcert.engine.sound.DiscreteGaussianNoise`.
        sound: the floating-point-sound mode's restrictions on the forward passes (one shape,
            ``batch_size`` rows, no splits, deterministic kernels, a probe; :class:`ModelRunner`
            ``fixed_batch``); use it with :class:`robustcert.engine.sound.DiscreteGaussianNoise`.

    A noise buffer that cannot be allocated halves ``batch_size`` before any sample of the run
    is drawn; a forward pass that runs out of memory is retried on halves of the same batch
    (:meth:`ModelRunner.outputs`). Both are counted in :meth:`report`.
    """

    def __init__(self, model: Callable, sigma: float, batch_size: int = 1000,
                 device: torch.device | str | None = None, precision: str = "fp32",
                 channels_last: bool | None = None, compile: bool = False, noise=None, sound: bool = False):
        self.noise = GaussianNoise(sigma) if noise is None else noise
        self.sigma = self.noise.sigma
        self.batch_size = check_count(batch_size, "batch_size")
        self.sound = bool(sound)
        self.runner = ModelRunner(model, device, precision, channels_last, compile, sigma=self.sigma,
                                  fixed_batch=self.batch_size if self.sound else None)
        self.model, self.device = model, self.runner.device
        self._buffer: torch.Tensor | None = None

    # kept as attributes of the engine for readers of reports and benchmarks
    @property
    def precision(self) -> str:
        return self.runner.precision

    @property
    def channels_last(self) -> bool:
        return self.runner.channels_last

    @property
    def forward_batch(self) -> int | None:
        return self.runner.forward_batch

    @property
    def compile_status(self) -> str:
        return self.runner.compile_status

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """One forward pass of the base model (see :meth:`ModelRunner.forward`)."""
        return self.runner.forward(batch)

    def generator(self, seed: int, index: int, stage: str) -> torch.Generator:
        """The generator of one input for one stage (e.g. "selection", "estimation")."""
        return input_generator(self.device, seed, index, stage)

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
                                           memory_format=self.runner.memory_format(len(shape)))
                return self._buffer
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                message = first_line(exc)
            if self.batch_size == 1:
                raise ResourceError(f"out of memory on {self.device} allocating one noisy sample: {message}")
            if self.sound:  # the forward shape is part of the base classifier: never change it
                raise ResourceError(f"out of memory on {self.device} allocating the sound mode's batch of "
                                    f"{self.batch_size}: rerun with a smaller batch ({message})")
            self.runner.note_out_of_memory("batch_size", self.batch_size, max(1, self.batch_size // 2), message)
            self.batch_size = max(1, self.batch_size // 2)

    @torch.inference_mode()
    def run(self, inputs: torch.Tensor, n: int, accumulator: Accumulator,
            generators: Sequence[torch.Generator], bounded: bool = True) -> Accumulator:
        """Draw n noisy samples of each input, run the model, feed the accumulator.

        Args:
            inputs: (num_inputs, *input_shape) clean inputs, already on ``self.device``.
            n: samples per input (>= 1).
            accumulator: receives the outputs; statistics are *added* to what it holds, so a
                sequential method can call ``run`` again with the same generators.
            generators: one per input (see :meth:`generator`).
            bounded: the statistics enter a confidence bound. In the sound mode only those samples need
                the fixed forward shape; a selection stage (which only picks cA) runs unpadded.
        Raises:
            ShapeError: the model fails on the input shape or returns the wrong number of classes.
            ModelOutputError: the model returned NaN or infinite values.
            ResourceError: out of memory even with one sample per forward pass.
        """
        n = check_count(n, "n")
        if len(generators) != inputs.shape[0]:
            raise ValueError("one generator per input is required")
        if bool(self.accumulate(inputs, n, accumulator, generators, bounded)):  # the one host sync of the run
            raise ModelOutputError("the base model returned NaN or infinite outputs on noisy inputs")
        return accumulator

    @torch.inference_mode()
    def accumulate(self, inputs: torch.Tensor, n: int, accumulator: Accumulator,
                   generators: Sequence[torch.Generator], bounded: bool = True) -> torch.Tensor:
        """The sampling loop; returns a device flag (did any output have NaN/inf?). No host sync."""
        input_shape = tuple(inputs.shape[1:])
        buffer = self._noise_buffer(torch.Size(self.noise.sample_shape(input_shape)), inputs.dtype)
        noise = self.laid_out_noise(input_shape, buffer.ndim)
        # Noise is drawn on the buffer's memory as one flat contiguous tensor, whatever its layout:
        # i.i.d. draws do not care about element order, and Tensor.normal_ is vectorised only on
        # contiguous tensors (on CPU the strided path is ~8x slower, e.g. 5% of a ResNet-50
        # forward pass with channels-last batches). The inputs are laid out the same way.
        per_sample, per_input = buffer[0].numel(), math.prod(inputs.shape[1:])
        flat = buffer.as_strided((buffer.numel(),), (1,))
        flat_inputs = self.runner.layout(inputs).as_strided((inputs.shape[0], per_input), (per_input, 1))
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        for segments in plan_batches(inputs.shape[0], n, self.batch_size):
            for seg in segments:
                chunk = flat[seg.start * per_sample : (seg.start + seg.count) * per_sample].view(seg.count, per_sample)
                noise.perturb(chunk, flat_inputs[seg.row], generators[seg.row])
            filled = segments[-1].start + segments[-1].count
            outputs = self.runner.outputs(buffer[:filled], accumulator.num_classes, fixed=bounded)
            # one float64 reduction: NaN or +-inf anywhere makes the sum non-finite, and a float64 sum
            # of float32 values cannot overflow (cheaper than an elementwise isfinite + all)
            nonfinite |= ~torch.isfinite(outputs.sum(dtype=torch.float64))
            for seg in segments:
                accumulator.update(outputs, seg.row, seg.start, seg.start + seg.count)
        return nonfinite

    def laid_out_noise(self, input_shape: tuple[int, ...], batch_ndim: int):
        """The noise for this run's buffers: additive noise does not care where a value sits, but a
        noise that treats the channels of a pixel together (ablation) defines ``laid_out`` and is
        told the input shape and whether batches are channels-last."""
        laid_out = getattr(self.noise, "laid_out", None)
        if laid_out is None:
            return self.noise
        return laid_out(input_shape, self.runner.memory_format(batch_ndim) == torch.channels_last)

    def report(self) -> dict:
        """What the engine did: batch sizes after out-of-memory retries, precision, layout, compile."""
        report = self.runner.report()
        report.update(batch_size=self.batch_size, forward_batch=self.runner.forward_batch or self.batch_size,
                      noise=self.noise.name)
        return report
