"""A small, fast CNN for 28x28 grey images (MNIST, Fashion-MNIST): the default architecture that
``robustcert train`` picks for them, and its dual-smoothing branch versions on the compact
sub-images of a split (1x28x14 or 1x14x28, :mod:`robustcert.splits`).

Randomized smoothing evaluates the base model n = 100000 times per certified image, so the
forward pass is what a certification run pays for: two strided convolutions instead of
convolution + pooling, and narrow layers, keep it near 0.15M multiply-adds per 28x28 image
(about 1e5 noisy samples/s on one CPU core, measured in results/fashion-mnist/).
"""
from __future__ import annotations

import torch
from torch import nn


def _halved(size: int) -> int:
    """Output size of a stride-2 convolution with 'same' padding (kernel 2p+1, padding p)."""
    return (size + 1) // 2


class MnistCNN(nn.Module):
    """conv5x5/2(1->c1)-BN-ReLU - conv3x3/2(c1->c2)-BN-ReLU - fc(c2*h/4*w/4 -> hidden)-ReLU - fc(hidden->K).

    With the defaults (c1, c2, hidden) = (8, 16, 64): 52k parameters for 1x28x28 inputs
    (``in_channels`` = 2 for ablated inputs, randomized ablation's encoding).
    """

    def __init__(self, num_classes: int = 10, height: int = 28, width: int = 28, channels: tuple[int, int] = (8, 16),
                 hidden: int = 64, in_channels: int = 1):
        super().__init__()
        first, second = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, first, 5, stride=2, padding=2), nn.BatchNorm2d(first), nn.ReLU(inplace=True),
            nn.Conv2d(first, second, 3, stride=2, padding=1), nn.BatchNorm2d(second), nn.ReLU(inplace=True),
        )
        flat = second * _halved(_halved(height)) * _halved(_halved(width))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
