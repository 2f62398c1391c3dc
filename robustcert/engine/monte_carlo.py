"""The Monte Carlo engine: batched, seeded noise through a base model, on-device accumulation.

Every smoothing method estimates expectations E_delta[ h(f(x + delta)) ] from n samples. The
engine is the one loop that does this; methods differ only in the accumulator that reduces the
base model's outputs (hard votes, soft-output moments, ...).

* Noise is drawn straight into one preallocated buffer of ``batch_size`` samples on the model's
  device and the clean input is added by broadcasting (no ``repeat`` copies), so memory is
  O(batch_size * |x|), independent of n.
* Accumulators keep their statistics on the device; the loop never synchronises with the host.
  Non-finite model outputs are flagged on the device and checked once at the end.
* Each input has its own stream (:mod:`robustcert.engine.sampling`); several inputs' chunks
  share a batch when they fit (cross-input packing for small n, e.g. the n0 = 100 selection
  stage) without changing any input's samples.

Two kinds of per-input streams (``stream``, recorded as ``noise_stream`` in :meth:`report`):

* ``"generator"`` (the default on CPU, and for noises without a counter kernel): a
  ``torch.Generator`` per input, drawn chunk by chunk. On CPU an input's samples are exactly
  those of every earlier robustcert version, so committed results reproduce.
* ``"counter"`` (the default on CUDA for Gaussian and sound-mode noise, when the Triton kernel
  passes its check): the noise of sample j, coordinate k is a function of (seed, index, stage, j,
  k) alone (:mod:`robustcert.engine.counter`), drawn for a whole chunk in one kernel; the
  steady-state batches (all ``batch_size`` samples of one input) are replayed as one CUDA graph
  (:mod:`robustcert.engine.step`; ``graphs``).

Per batch the loop does no Python work beyond issuing the draws, the forward pass, one argmax
and one scatter of votes, and one float64 sum for the NaN/inf check; the batch plan and its views
of the noise buffer are computed once per (inputs, n, batch size, draw sizes).
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Callable, Sequence

import torch

from ..errors import InvalidArgumentError, ModelOutputError, ResourceError, check_count
from .accumulators import Accumulator
from .counter import STREAM_NAME, CounterStream, kind_of, reference_fill
from .device import first_line, is_out_of_memory
from .runner import ModelRunner
from .sampling import GaussianNoise, derive_seed, input_generator, plan_batches, plan_blocks
from .sound import grid_indices
from .step import GraphedVoteStep, try_graph_step

STREAMS = ("auto", "generator", "counter")
GRAPH_DEVICES = ("cuda",)  # where steady-state batches may run as a graph (tests add "cpu" with a stand-in)
SCHEDULES_KEPT = 32  # batch plans kept per engine (sequential runs use many (inputs, n) pairs)
GENERATOR_STREAM = "torch.Generator per input: derive_seed(seed, index, stage), drawn chunk by chunk"


class MonteCarloEngine:
    """Batched noise sampling through a base model, with on-device accumulation.

    Args:
        model: any callable mapping a batch (B, *input_shape) to outputs (B, num_classes).
        sigma: standard deviation of the Gaussian noise, in input (pixel) units.
        batch_size: noisy samples per batch (a whole number; ``"auto"`` is resolved before an
            engine is built, see :func:`robustcert.engine.device.auto_batch_size`).
        device: see :class:`ModelRunner`.
        precision: see :class:`ModelRunner`.
        channels_last: see :class:`ModelRunner`.
        compile: see :class:`ModelRunner`.
        noise: the noise distribution (default :class:`GaussianNoise` of level ``sigma``): any object
            with ``sample_shape`` and ``perturb`` (:mod:`robustcert.engine.sampling`), e.g.
            Laplace, uniform or randomized-ablation noise, or the floating-point-sound
            :class:`robustcert.engine.sound.DiscreteGaussianNoise`.
        sound: the floating-point-sound mode's restrictions on the forward passes (one shape,
            ``batch_size`` rows, no splits, deterministic kernels, a probe; :class:`ModelRunner`
            ``fixed_batch``); use it with :class:`robustcert.engine.sound.DiscreteGaussianNoise`.
        stream: "auto" (None; counter streams on CUDA where the noise has a kernel that passes its
            check, else generators), "generator" or "counter" (module docstring; on CPU the counter
            stream runs the torch reference, slowly: for tests and cross-checks).
        graphs: replay steady-state batches as a CUDA graph: None (auto: on CUDA with counter
            streams and a vote accumulator), True (the same, and a warning where it cannot), False.

    A noise buffer that cannot be allocated halves ``batch_size`` before any sample of the run
    is drawn; a forward pass that runs out of memory is retried on halves of the same batch
    (:meth:`ModelRunner.outputs`). Both are counted in :meth:`report`.
    """

    def __init__(self, model: Callable, sigma: float, batch_size: int = 1000,
                 device: torch.device | str | None = None, precision: str = "fp32",
                 channels_last: bool | None = None, compile: bool = False, noise=None, sound: bool = False,
                 stream: str | None = None, graphs: bool | None = None):
        self.noise = GaussianNoise(sigma) if noise is None else noise
        self.sigma = self.noise.sigma
        self.batch_size = check_count(batch_size, "batch_size")
        self.sound = bool(sound)
        self.runner = ModelRunner(model, device, precision, channels_last, compile, sigma=self.sigma,
                                  fixed_batch=self.batch_size if self.sound else None)
        self.model, self.device = model, self.runner.device
        self._buffer: torch.Tensor | None = None
        if (stream or "auto") not in STREAMS:
            raise InvalidArgumentError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
        if stream == "counter" and kind_of(self.noise) is None:
            raise InvalidArgumentError(f"{self.noise.name} noise has no counter stream; use stream='generator'")
        self.stream_request, self.graphs_request = stream or "auto", graphs
        self._fill: Callable | None = None  # the counter kernel, once the stream is resolved
        self._stream: str | None = None
        self.stream_note = ""  # why the stream is what it is, when it is not the one asked for
        self._steps: dict[tuple, GraphedVoteStep | None] = {}
        self._schedules: dict[tuple, list[ScheduledBatch]] = {}
        self.graph_status = "off" if graphs is False else \
            f"off ({self.device.type})" if self.device.type not in GRAPH_DEVICES else "not used yet"

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

    # ----------------------------------------------------------------- streams
    @property
    def stream(self) -> str:
        """"generator" or "counter": resolved once, before the first stream is handed out (on CUDA
        the counter kernel is compiled and checked against the reference here)."""
        if self._stream is None:
            self._stream, self._fill, self.stream_note = self._resolve_stream()
        return self._stream

    def _resolve_stream(self) -> tuple[str, Callable | None, str]:
        kind = kind_of(self.noise)
        if self.stream_request == "generator" or kind is None:
            return "generator", None, ""
        if self.device.type != "cuda":
            if self.stream_request == "counter":
                return "counter", reference_fill(self.noise), "torch reference"
            return "generator", None, ""
        try:
            from .counter_triton import check_against_reference, triton_fill

            problem = check_against_reference(self.noise, self.device)
        except Exception as exc:  # no Triton, no compiler, a driver too old: the generator stream
            problem = f"Triton kernel unavailable ({first_line(exc)})"
        if problem is None:
            return "counter", functools.partial(triton_fill, self.noise), "triton"
        if self.stream_request == "counter":
            warnings.warn(f"{problem}; the counter stream runs the torch reference", RuntimeWarning, stacklevel=4)
            return "counter", reference_fill(self.noise), f"torch reference ({problem})"
        return "generator", None, problem

    def stream_name(self) -> str:
        """What the run records about where its noise came from."""
        if self.stream == "generator":
            return GENERATOR_STREAM + (f" ({self.stream_note})" if self.stream_note else "")
        return f"{STREAM_NAME}; {self.noise.name}; {self.stream_note}"

    def generator(self, seed: int, index: int, stage: str):
        """The stream of one input for one stage (e.g. "selection", "estimation"): a
        ``torch.Generator``, or a :class:`CounterStream` when the engine samples from counters."""
        if self.stream == "counter":
            return CounterStream(derive_seed(seed, index, stage))
        return input_generator(self.device, seed, index, stage)

    def perturb(self, out: torch.Tensor, clean: torch.Tensor, stream) -> None:
        """Fill ``out`` (count, values per sample), contiguous, with the next ``count`` noisy copies
        of the flat input ``clean`` (pixel values, in the buffers' memory order) from ``stream`` (from
        :meth:`generator`): one draw of the sampling loop, for tools that time or inspect it."""
        if self.stream == "generator":
            self.noise.perturb(out, clean, stream)
            return
        if kind_of(self.noise) == "discrete-gaussian":
            clean = grid_indices(clean, self.noise.levels, check=False).to(out.dtype)
        keys = device_ints([stream.key, stream.position], self.device)
        self._fill(out, clean, keys[0:1], keys[1:2], 0)
        stream.position += out.shape[0]

    # ----------------------------------------------------------------- buffers and plans
    def _noise_buffer(self, input_shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """The preallocated noise batch; halves ``batch_size`` if it cannot be allocated."""
        while True:
            shape = (self.batch_size, *input_shape)
            buffer = self._buffer
            if buffer is not None and buffer.shape == shape and buffer.dtype == dtype:
                return buffer
            self._buffer = None  # release the old buffer before allocating the new one
            self._steps.clear()  # graphs and schedules hold the old buffer's memory
            self._schedules.clear()
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

    def _schedule(self, buffer: torch.Tensor, num_inputs: int, n: int,
                  blocks: tuple[int, ...] | None) -> list[ScheduledBatch]:
        """The batches of a run (:class:`ScheduledBatch`), computed once per (inputs, n, draw sizes)
        for the current buffer."""
        key = (num_inputs, n, blocks)
        schedule = self._schedules.get(key)
        if schedule is None:
            plan = plan_batches(num_inputs, n, self.batch_size) if blocks is None else \
                plan_blocks(num_inputs, list(blocks), self.batch_size)
            flat, per_sample = buffer.as_strided((buffer.numel(),), (1,)), buffer[0].numel()
            schedule = [ScheduledBatch(flat, segments, per_sample) for segments in plan]
            if len(self._schedules) >= SCHEDULES_KEPT:
                self._schedules.pop(next(iter(self._schedules)))
            self._schedules[key] = schedule
        return schedule

    @torch.inference_mode()
    def run(self, inputs: torch.Tensor, n: int, accumulator: Accumulator,
            generators: Sequence, bounded: bool = True,
            blocks: Sequence[int] | None = None) -> Accumulator:
        """Draw n noisy samples of each input, run the model, feed the accumulator.

        Args:
            inputs: (num_inputs, *input_shape) clean inputs, already on ``self.device``.
            n: samples per input (>= 1).
            accumulator: receives the outputs; statistics are *added* to what it holds, so a
                sequential method can call ``run`` again with the same generators.
            generators: one stream per input (see :meth:`generator`).
            bounded: the statistics enter a confidence bound. In the sound mode only those samples need
                the fixed forward shape; a selection stage (which only picks cA) runs unpadded.
            blocks: the sizes of the draws that make up each input's n samples (summing to n),
                so that the samples do not depend on the batch size (:func:`plan_blocks`); None:
                draws of ``min(batch_size, remaining)`` (:func:`plan_batches`, fixed-n CERTIFY).
                (Counter streams do not depend on the batch size whatever the draws.)
        Raises:
            ShapeError: the model fails on the input shape or returns the wrong number of classes.
            ModelOutputError: the model returned NaN or infinite values.
            ResourceError: out of memory even with one sample per forward pass.
        """
        n = check_count(n, "n")
        if len(generators) != inputs.shape[0]:
            raise ValueError("one generator per input is required")
        if blocks is not None and (sum(blocks) != n or min(blocks, default=0) < 1):
            raise ValueError(f"draw sizes {list(blocks)} must be >= 1 and sum to n = {n}")
        if bool(self.accumulate(inputs, n, accumulator, generators, bounded, blocks)):  # the one host sync of the run
            raise ModelOutputError("the base model returned NaN or infinite outputs on noisy inputs")
        return accumulator

    @torch.inference_mode()
    def accumulate(self, inputs: torch.Tensor, n: int, accumulator: Accumulator,
                   generators: Sequence, bounded: bool = True,
                   blocks: Sequence[int] | None = None) -> torch.Tensor:
        """The sampling loop; returns a device flag (did any output have NaN/inf?). No host sync."""
        input_shape = tuple(inputs.shape[1:])
        buffer = self._noise_buffer(torch.Size(self.noise.sample_shape(input_shape)), inputs.dtype)
        noise = self.laid_out_noise(input_shape, buffer.ndim)
        # Noise is drawn on the buffer's memory as one flat contiguous tensor, whatever its layout:
        # i.i.d. draws do not care about element order, and Tensor.normal_ is vectorised only on
        # contiguous tensors (on CPU the strided path is ~8x slower, e.g. 5% of a ResNet-50
        # forward pass with channels-last batches). The inputs are laid out the same way.
        per_input = math.prod(inputs.shape[1:])
        flat_inputs = self.runner.layout(inputs).as_strided((inputs.shape[0], per_input), (per_input, 1))
        schedule = self._schedule(buffer, inputs.shape[0], n, None if blocks is None else tuple(blocks))
        if self.stream == "counter":
            if not all(isinstance(g, CounterStream) for g in generators):
                raise ValueError("this engine samples from counter streams: pass engine.generator(...) streams")
            total = self._counter_loop(inputs, flat_inputs, schedule, accumulator, generators, bounded, buffer, noise)
        else:
            total = self._generator_loop(flat_inputs, schedule, accumulator, generators, bounded, buffer, noise)
        # one float64 sum of every output: NaN or +-inf anywhere makes it non-finite, and a float64 sum
        # of float32 values cannot overflow (cheaper than an elementwise isfinite + all per batch)
        return ~torch.isfinite(total)

    def _generator_loop(self, flat_inputs, schedule, accumulator, generators, bounded, buffer, noise) -> torch.Tensor:
        """Per-input ``torch.Generator`` streams: each segment's draw is the same generator call as
        in every earlier version (same sizes, same order), so the samples are unchanged."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        update_batch = getattr(accumulator, "update_batch", None)
        split_draw = None  # the current draw that crosses batch boundaries (drawn whole, then split)
        for batch in schedule:
            for seg, chunk in zip(batch.segments, batch.chunks):
                if not seg.draw:
                    noise.perturb(chunk, flat_inputs[seg.row], generators[seg.row])
                    continue
                if seg.offset == 0:
                    split_draw = torch.empty((seg.draw, chunk.shape[1]), dtype=chunk.dtype, device=self.device)
                    noise.perturb(split_draw, flat_inputs[seg.row], generators[seg.row])
                chunk.copy_(split_draw[seg.offset : seg.offset + seg.count])
            self._feed(buffer[: batch.filled], batch, accumulator, update_batch, bounded, total)
        return total

    def _feed(self, noisy: torch.Tensor, batch, accumulator, update_batch, bounded: bool, total: torch.Tensor):
        """Forward pass on a filled batch; outputs into the NaN/inf sum and the accumulator."""
        outputs = self.runner.outputs(noisy, accumulator.num_classes, fixed=bounded)
        total.add_(outputs.sum(dtype=torch.float64))
        if update_batch is not None:
            update_batch(outputs, batch.row, batch.sample_rows(self.device))
        else:
            for seg in batch.segments:
                accumulator.update(outputs, seg.row, seg.start, seg.start + seg.count)
        return outputs

    def _counter_loop(self, inputs, flat_inputs, schedule, accumulator, streams, bounded, buffer,
                      noise) -> torch.Tensor:
        """Counter streams: every segment is one kernel over its samples' stream positions; full
        batches of one input are replayed as a CUDA graph once one has run eagerly."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        if kind_of(noise) == "discrete-gaussian":  # the sound mode adds noise to the grid integers K
            clean = grid_indices(inputs, noise.levels, check=False).to(inputs.dtype)
            clean = self.runner.layout(clean).as_strided(flat_inputs.shape, flat_inputs.stride())
        else:
            clean = flat_inputs
        keys, bases = device_ints([s.key for s in streams] + [s.position for s in streams], self.device).split(
            len(streams))  # one copy to the device for both
        drawn = [0] * len(streams)
        update_batch = getattr(accumulator, "update_batch", None)
        step = self._graph_step(buffer, noise, accumulator, bounded, clean.shape[1])
        for batch in schedule:
            if step is not None and step.graph is not None and batch.row is not None \
                    and batch.filled == buffer.shape[0]:
                row = batch.row
                step.replay(row, keys[row : row + 1], bases[row : row + 1], drawn[row], clean[row], accumulator)
                drawn[row] += batch.filled
                continue
            for seg, chunk in zip(batch.segments, batch.chunks):
                row = seg.row
                self._fill(chunk, clean[row], keys[row : row + 1], bases[row : row + 1], drawn[row])
                drawn[row] += seg.count
            outputs = self._feed(buffer[: batch.filled], batch, accumulator, update_batch, bounded, total)
            if step is not None and step.graph is None and batch.row is not None and batch.filled == buffer.shape[0]:
                row = batch.row
                first = bases[row : row + 1] + (drawn[row] - batch.filled)
                step = self._build_step(step, keys[row : row + 1], first, clean[row], outputs)
        if step is not None:
            step.flush(accumulator)
            total.add_(step.take_total())
        for stream, count in zip(streams, drawn):
            stream.position += count
        return total

    def _graph_step(self, buffer, noise, accumulator, bounded: bool, clean_width: int) -> GraphedVoteStep | None:
        """The engine's graph step for this buffer, if graphs apply (CUDA, counter kernel, votes)."""
        if self.graphs_request is False or self.device.type not in GRAPH_DEVICES \
                or not hasattr(accumulator, "add_votes") or (self.runner.forward_batch or buffer.shape[0]) < \
                buffer.shape[0]:  # after an out-of-memory split the forward pass is no longer one call
            return None
        fixed = self.sound and bounded
        key = (buffer.data_ptr(), tuple(buffer.shape), accumulator.num_classes, fixed)
        if key not in self._steps:
            self._steps[key] = GraphedVoteStep(self.runner, buffer, self._fill, accumulator.num_classes, clean_width,
                                               fixed=fixed)
        return self._steps[key]

    def _build_step(self, step: GraphedVoteStep, key, first, clean, outputs) -> GraphedVoteStep | None:
        """Capture ``step`` after the eager batch that produced ``outputs``; None (eager) if it fails."""
        if (self.runner.forward_batch or len(step.buffer)) < len(step.buffer):
            self._steps = {k: None for k in self._steps}
            self.graph_status = "off (forward passes split after running out of memory)"
            return None
        captured, self.graph_status = try_graph_step(step, key, first, clean, outputs)
        if not captured:
            self._steps = {k: None for k in self._steps}  # do not try again on this engine
            return None
        return step

    def graphs_report(self) -> str:
        """Whether steady-state batches ran as a CUDA graph, and the check of the graph against eager."""
        if self.graph_status == "not used yet" and self.stream != "counter":
            return f"off ({self.noise.name} noise from generator streams)"
        return self.graph_status

    def laid_out_noise(self, input_shape: tuple[int, ...], batch_ndim: int):
        """The noise for this run's buffers: additive noise does not care where a value sits, but a
        noise that treats the channels of a pixel together (ablation) defines ``laid_out`` and is
        told the input shape and whether batches are channels-last."""
        laid_out = getattr(self.noise, "laid_out", None)
        if laid_out is None:
            return self.noise
        return laid_out(input_shape, self.runner.memory_format(batch_ndim) == torch.channels_last)

    def report(self) -> dict:
        """What the engine did: batch sizes after out-of-memory retries, precision, layout, compile,
        the noise stream and whether steady-state batches ran as a CUDA graph."""
        report = self.runner.report()
        report.update(batch_size=self.batch_size, forward_batch=self.runner.forward_batch or self.batch_size,
                      noise=self.noise.name, noise_stream=self.stream_name(), cuda_graphs=self.graphs_report())
        return report


def device_ints(values: list[int], device: torch.device) -> torch.Tensor:
    """int64 values on ``device`` without a host synchronisation (pinned memory, asynchronous copy)."""
    host = torch.tensor(values, dtype=torch.int64)
    if device.type != "cuda":
        return host
    return host.pin_memory().to(device, non_blocking=True)


class ScheduledBatch:
    """One batch of a run: how many rows are filled, its segments and their chunks of the flat
    noise buffer; ``row`` when all its samples belong to one input (else None)."""

    __slots__ = ("filled", "segments", "chunks", "row", "_rows")

    def __init__(self, flat: torch.Tensor, segments, per_sample: int):
        self.segments = segments
        self.filled = segments[-1].start + segments[-1].count
        self.chunks = [flat[seg.start * per_sample : (seg.start + seg.count) * per_sample].view(seg.count, per_sample)
                       for seg in segments]
        rows = {seg.row for seg in segments}
        self.row = segments[0].row if len(rows) == 1 else None
        self._rows: torch.Tensor | None = None

    def sample_rows(self, device: torch.device) -> torch.Tensor | None:
        """The input of each filled row (int64 on ``device``), for batches that hold several inputs."""
        if self.row is not None:
            return None
        if self._rows is None:
            self._rows = torch.cat([torch.full((seg.count,), seg.row, dtype=torch.int64, device=device)
                                    for seg in self.segments])
        return self._rows
