"""A small CNN for the 1x8x8 scikit-learn digits (the bundled default models)."""
from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """conv3x3(1->16) - ReLU - conv3x3(16->32) - ReLU - maxpool2 - fc(512->64) - ReLU - fc(64->10).

    About 38k parameters (150 kB in float32).
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
