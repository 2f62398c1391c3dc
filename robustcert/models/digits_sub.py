"""A small CNN for half-size digits sub-images (dual randomized smoothing branch models).

The checkerboard and column splits (:mod:`robustcert.splits`) cut a 1x8x8 digit into two 1x8x4
sub-images, the row split into two 1x4x8 sub-images; registered as ``digits_sub_8x4`` and
``digits_sub_4x8`` in :data:`robustcert.models.checkpoint.ARCHITECTURES`.
"""
from __future__ import annotations

import torch
from torch import nn


class DigitsSubCNN(nn.Module):
    """conv3x3(1->16) - ReLU - conv3x3(16->32) - ReLU - maxpool2 - fc(32*h*w/4 -> 64) - ReLU - fc(64->10).

    For 1x8x4 inputs: about 22k parameters (90 kB in float32).
    """

    def __init__(self, num_classes: int = 10, height: int = 8, width: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * (height // 2) * (width // 2), 64), nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
