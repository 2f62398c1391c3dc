"""The steady-state step of the sampling loop as one CUDA graph, with an eager fallback.

In the loop's steady state every batch holds ``batch_size`` samples of one input. On a GPU a small
model's batch is a few dozen short kernels, and launching them from Python costs more than
running them (issue 26: 305 launches per digits certification). :class:`GraphedVoteStep` records
the whole step once:

    noise for the batch (one kernel: the input's counter stream, :mod:`robustcert.engine.counter`)
    -> + clean input -> forward pass -> argmax -> votes += one-hot counts -> NaN/inf sum

as a CUDA graph (``torch.cuda.CUDAGraph``) over static buffers, and replays it; between replays
the engine only writes the input's key and first sample index into two device scalars (and the
clean input when the input changes). No host synchronisation, one launch per batch.

Safety: the step is captured after the first such batch has run eagerly (so the model's output
checks and the sound mode's probe have passed), then replayed once on that same batch: its votes
must equal the eager batch's (the logits are compared too and recorded), else the engine stays
eager. Any failure to capture (an operation that cannot be captured, memory, a CUDA error) is a
warning and the eager loop; the samples are the same either way, since both run the same noise
kernel on the same stream positions. :func:`capture` is also what the benchmark uses to raise
the forward-pass limit (a) by the same technique.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import torch

from .device import first_line
from .runner import deterministic_kernels


def capture(body: Callable[[], object], device: torch.device, warmup: int = 1) -> torch.cuda.CUDAGraph:
    """Record ``body()`` as a CUDA graph, after ``warmup`` eager calls on a side stream (cuDNN
    and allocator set-up must not be captured). Raises whatever capture raises."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    return graph


class GraphedVoteStep:
    """The step for full batches of one input on a CUDA engine whose noise has a counter kernel.

    Args:
        runner: the engine's :class:`robustcert.engine.runner.ModelRunner`.
        buffer: the engine's noise batch (batch_size, *sample_shape) (its memory is reused).
        fill: the counter kernel, ``fill(out, clean, key, first)`` with device scalars.
        num_classes: the model's classes.
        clean_width: values per input (the flat clean input the noise is added to).
        fixed: run the forward pass under the sound mode's deterministic kernels.
    """

    def __init__(self, runner, buffer: torch.Tensor, fill: Callable, num_classes: int, clean_width: int,
                 fixed: bool = False):
        device = buffer.device
        self.runner, self.buffer, self.fill, self.fixed = runner, buffer, fill, fixed
        self.flat = buffer.as_strided((buffer.shape[0], buffer[0].numel()), (buffer[0].numel(), 1))
        self.key = torch.zeros(1, dtype=torch.int64, device=device)
        self.first = torch.zeros(1, dtype=torch.int64, device=device)
        self.clean = torch.zeros(clean_width, dtype=buffer.dtype, device=device)
        self.votes = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.ones = torch.ones(buffer.shape[0], dtype=torch.int64, device=device)
        self.outputs: torch.Tensor | None = None  # the graph's output logits (static memory)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.row: int | None = None  # the input whose clean values, key and votes the step holds

    def body(self) -> None:
        """One batch: noise + clean input, forward pass, votes and the NaN/inf sum, all on the device."""
        self.fill(self.flat, self.clean, self.key, self.first)
        outputs = self.runner.forward(self.buffer)
        if outputs.dtype != torch.float32:
            outputs = outputs.float()
        self.total.add_(outputs.sum(dtype=torch.float64))
        self.votes.scatter_add_(0, outputs.argmax(dim=1), self.ones)
        self.outputs = outputs

    def build(self, key: torch.Tensor, first: torch.Tensor, clean: torch.Tensor,
              eager_outputs: torch.Tensor) -> str:
        """Capture the graph and replay it on the batch that just ran eagerly (its key, first sample,
        clean input and outputs); returns what the check found. Raises if the graph cannot be used."""
        self.load(key, first, clean)
        with deterministic_kernels() if self.fixed else contextlib.nullcontext():
            self.graph = capture(self.body, self.buffer.device)
        self.load(key, first, clean)
        self.votes.zero_()
        self.total.zero_()
        self.graph.replay()
        expected = torch.zeros_like(self.votes).scatter_add_(0, eager_outputs.argmax(dim=1), self.ones)
        if not torch.equal(self.votes, expected):
            raise RuntimeError("the graph's votes differ from the eager batch's")
        same = torch.equal(self.outputs, eager_outputs.float())
        self.votes.zero_()
        self.total.zero_()
        self.row = None
        return "votes equal to eager" + (", logits bitwise equal" if same else ", logits not bitwise equal")

    def load(self, key: torch.Tensor, first: torch.Tensor, clean: torch.Tensor) -> None:
        """Write the input's key, first sample index (device scalars) and clean values into the step."""
        self.key.copy_(key)
        self.first.copy_(first)
        self.clean.copy_(clean)

    def replay(self, row: int, key: torch.Tensor, base: torch.Tensor, skip: int, clean: torch.Tensor,
               accumulator) -> None:
        """One batch of input ``row`` from sample ``base + skip`` (``key``, ``base``: device scalars):
        the votes stay in the step until the input changes."""
        if row != self.row:
            self.flush(accumulator)
            self.key.copy_(key)
            self.clean.copy_(clean)
            self.row = row
        torch.add(base, skip, out=self.first)
        self.graph.replay()

    def flush(self, accumulator) -> None:
        """Hand the held votes to the accumulator (at the end of a run and when the input changes)."""
        if self.row is not None:
            accumulator.add_votes(self.row, self.votes)
            self.votes.zero_()
        self.row = None

    def take_total(self) -> torch.Tensor:
        """The NaN/inf sum of the replays since the last call (a new tensor), and reset it."""
        total = self.total.clone()
        self.total.zero_()
        return total


def try_graph_step(step: GraphedVoteStep, key, first, clean, eager_outputs) -> tuple[bool, str]:
    """Build ``step``; (True, check) on success, (False, why) after one warning on failure."""
    try:
        return True, step.build(key, first, clean, eager_outputs)
    except Exception as exc:  # capture errors are many and device-specific: any of them means eager
        message = first_line(exc)
        try:
            torch.cuda.synchronize(step.buffer.device)
        except Exception:
            pass
        warnings.warn(f"CUDA graph of the sampling step failed ({message}); running the loop eagerly",
                      RuntimeWarning, stacklevel=3)
        return False, f"failed: {message}"
