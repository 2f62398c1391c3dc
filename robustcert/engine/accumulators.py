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
    """

    def __init__(self, num_inputs: int, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.counts = torch.zeros(num_inputs, num_classes, dtype=torch.int64, device=device)
        self._ones = torch.ones(0, dtype=torch.int64, device=device)
        self._outputs: torch.Tensor | None = None  # the batch whose argmax is in _predictions
        self._predictions: torch.Tensor | None = None

    def update(self, outputs: torch.Tensor, row: int, start: int, stop: int) -> None:
        if self._ones.numel() < stop - start:
            self._ones = torch.ones(stop - start, dtype=torch.int64, device=self.counts.device)
        if outputs is not self._outputs:  # one argmax per batch, however many inputs' segments it holds
            self._outputs, self._predictions = outputs, outputs.argmax(dim=1)
        # scatter_add_ instead of bincount: no device-to-host sync on CUDA.
        self.counts[row].scatter_add_(0, self._predictions[start:stop], self._ones[: stop - start])

    def result(self) -> np.ndarray:
        """Counts as an (num_inputs, num_classes) int64 array (one host copy, at the end)."""
        self._outputs = self._predictions = None
        return self.counts.cpu().numpy()
