"""Data augmentation of clean training batches (before the noise): pure, seeded tensor functions.

``random_crop_flip`` is the standard CIFAR-10 recipe that Cohen et al. (2019) trained their
cifar_resnet110 models with (torchvision's RandomCrop(32, padding=4) and RandomHorizontalFlip),
applied to a whole batch at once with an explicit generator, so a training epoch is a function
of (seed, epoch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ShapeError


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Each image of ``x`` (B, C, H, W): zero-pad by ``padding``, crop a random HxW window, and
    mirror left-right with probability 1/2. ``generator`` must live on ``x``'s device."""
    if x.ndim != 4:
        raise ShapeError(f"random_crop_flip needs a batch (B, C, H, W), got shape {tuple(x.shape)}")
    batch, channels, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator, device=x.device)
    flip = torch.rand(batch, generator=generator, device=x.device) < 0.5
    rows = offsets[0].view(-1, 1) + torch.arange(height, device=x.device)          # (B, H)
    cols = offsets[1].view(-1, 1) + torch.arange(width, device=x.device)           # (B, W)
    cols = torch.where(flip.view(-1, 1), cols.flip(1), cols)
    batch_index = torch.arange(batch, device=x.device).view(-1, 1, 1, 1)
    channel_index = torch.arange(channels, device=x.device).view(1, -1, 1, 1)
    return padded[batch_index, channel_index, rows.view(batch, 1, height, 1), cols.view(batch, 1, 1, width)]


AUGMENTATIONS = {"none": None, "crop-flip": random_crop_flip}
