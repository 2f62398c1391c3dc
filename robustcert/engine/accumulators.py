"""Accumulators: reduce base-model outputs into per-input statistics kept on the device.

The engine calls ``update`` for every segment of every batch and never reads the statistics
back; a method reads them once, at the end (``result``). Hard votes are here; soft-output
moments (Lipschitz-variance-margin smoothing) live beside the simplex maps that define them
(:class:`robustcert.simplex.SoftMoments`).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Accumulator(Protocol):
    """Reduces base-model outputs into per-input statistics kept on the device."""

    num_classes: int

    def update(self, outputs: torch.Tensor, row: int, start: int, stop: int) -> None:
        """Add ``outputs[start:stop]``, the outputs on samples of input ``row``."""


class VoteCounter:
    """Hard votes: ``counts[i, c]`` = number of noisy samples of input i classified as c.

    This is the accumulator of randomized smoothing (Cohen et al. 2019, SampleUnderNoise).
    Besides the per-segment ``update`` of every accumulator it has the engine's batch-level
    entry points: ``update_batch`` (one argmax and one scatter per batch, whatever the number of
    inputs in it) and ``add_votes`` (votes counted elsewhere, e.g. inside a CUDA graph).
    """

    def __init__(self, num_inputs: int, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.counts = torch.zeros(num_inputs, num_classes, dtype=torch.int64, device=device)
        self._outputs: torch.Tensor | None = None  # the batch whose argmax is in _predictions
        self._predictions: torch.Tensor | None = None

    def update(self, outputs: torch.Tensor, row: int, start: int, stop: int) -> None:
        if outputs is not self._outputs:  # one argmax per batch, however many inputs' segments it holds
            self._outputs, self._predictions = outputs, outputs.argmax(dim=1)
        # scatter_add_ instead of bincount: no device-to-host sync on CUDA.
        self.counts[row].scatter_add_(0, self._predictions[start:stop], ones(stop - start, self.counts.device))

    def update_batch(self, outputs: torch.Tensor, row: int | None, sample_rows: torch.Tensor | None = None) -> None:
        """Add the votes of a whole batch: all of input ``row``, or (``row`` None) of the inputs
        ``sample_rows`` (int64, one per output row, on the device)."""
        predictions = outputs.argmax(dim=1)
        count = predictions.shape[0]
        if row is not None:
            self.counts[row].scatter_add_(0, predictions, ones(count, self.counts.device))
            return
        cells = sample_rows * self.num_classes + predictions
        self.counts.view(-1).scatter_add_(0, cells, ones(count, self.counts.device))

    def add_votes(self, row: int, votes: torch.Tensor) -> None:
        """Add ``votes`` (num_classes,) int64, counted on the device, to input ``row``."""
        self.counts[row].add_(votes)

    def result(self) -> np.ndarray:
        """Counts as an (num_inputs, num_classes) int64 array (one host copy, at the end)."""
        self._outputs = self._predictions = None
        return self.counts.cpu().numpy()


_ONES: dict[torch.device, torch.Tensor] = {}


def ones(count: int, device: torch.device) -> torch.Tensor:
    """``count`` int64 ones on ``device``: a view of one cached tensor (vote increments)."""
    cached = _ONES.get(device)
    if cached is None or cached.numel() < count:
        cached = _ONES[device] = torch.ones(max(count, 1024), dtype=torch.int64, device=device)
    return cached[:count]
