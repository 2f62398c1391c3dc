"""NormalizeLayer: the first layer of every base model, so noise is added in pixel space."""
from __future__ import annotations

from typing import Sequence

import torch

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
# scikit-learn digits scaled to [0,1] (pixel value / 16): mean and std over the training split.
DIGITS_MEAN, DIGITS_STD = (0.3052,), (0.3763,)


class NormalizeLayer(torch.nn.Module):
    """(x - mean) / std per channel, with no saved state.

    Matches the reference code (Cohen et al. 2019): the model is
    ``Sequential(NormalizeLayer(mean, std), net)``, the normaliser stores nothing in the
    state_dict, so the network's keys start with ``1.``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
