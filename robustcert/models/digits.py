"""A small CNN for the scikit-learn digits: the bundled default models (1x8x8 inputs), the
dual-smoothing branch models on half-size sub-images (1x8x4 or 1x4x8, :mod:`robustcert.splits`)
and the randomized-ablation models (2x8x8: the ablated encoding, :class:`robustcert.engine.AblationNoise`)."""
from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """conv3x3(c->16) - ReLU - conv3x3(16->32) - ReLU - maxpool2 - fc(32*h*w/4 -> 64) - ReLU - fc(64->10),
    c = ``in_channels`` (1; 2 for ablated inputs).

    About 38k parameters (150 kB in float32) for 1x8x8 inputs, 22k for 1x8x4 sub-images.
    """

    def __init__(self, num_classes: int = 10, height: int = 8, width: int = 8, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * (height // 2) * (width // 2), 64), nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
