"""Pixel splits for dual randomized smoothing: one image, two compact sub-images, and back.

Dual randomized smoothing (Xia et al., ICLR 2024) partitions the d pixels of an image into two
disjoint sets and smooths a separate classifier on each. A :class:`Split` maps a batch of images
(B, C, H, W) to two *compact* sub-images that hold only their own pixels (never zero-filled
full-size images) and merges two sub-images back into full images. Every channel is split the
same way. Because a split is a partition of the coordinates,
``||x||^2 = ||x_a||^2 + ||x_b||^2``: the l2 geometry that the dual certificate relies on.

Registry (``SPLITS``; ``get_split(name)``):

=============== ================================================ ==================== =========
name            sub-image a / sub-image b                        sub-image shape      needs
=============== ================================================ ==================== =========
``checkerboard`` (row + col) even / (row + col) odd: in every 2x2  (C, H, W/2) each     W even
                block the main-diagonal pixels go to a, the
                anti-diagonal pixels to b (the paper's split)
``rows``        even rows / odd rows                             (C, H/2, W) each     H even
``columns``     even columns / odd columns                       (C, H, W/2) each     W even
=============== ================================================ ==================== =========

Pixel arrangement (checkerboard): row r of a sub-image holds the pixels of row r of the image
that belong to it, left to right, so sub-image a is ``x[c, r, 2j + (r % 2)]`` and sub-image b
``x[c, r, 2j + 1 - (r % 2)]`` at position (c, r, j). This is how the public code
(xiasong0501/DRS, ``get_res_index`` / ``get_low_res_data``) arranges a 3x32x32 image into two
3x32x16 halves; its first ("l") branch takes the (row + col) odd pixels, i.e. our sub-image b.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import InvalidArgumentError, ShapeError


@dataclass(frozen=True)
class Split:
    """A partition of the pixel grid into two sets, each read out row by row as a compact image.

    Args:
        name: registry name.
        description: one line, shown in errors and docs.
        in_a: ``in_a(rows, cols)`` -> bool (H, W) mask of the pixels of sub-image a (b is the rest).
        sub_hw: ``sub_hw(H, W)`` -> (h, w) of each sub-image, or raises ShapeError.
    """

    name: str
    description: str
    in_a: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    sub_hw: Callable[[int, int], tuple[int, int]]

    def sub_shapes(self, image_shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shapes (C, h, w) of sub-images a and b of an image of shape (C, H, W)."""
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3:
            raise ShapeError(f"the {self.name} split needs images of shape (C, H, W), got {image_shape}")
        channels, height, width = image_shape
        h, w = self.sub_hw(height, width)
        return (channels, h, w), (channels, h, w)

    def indices(self, height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat (row-major) pixel indices of sub-images a and b, in the order they are read out."""
        self.sub_hw(height, width)  # shape check
        rows = torch.arange(height, device=device).view(-1, 1).expand(height, width)
        cols = torch.arange(width, device=device).view(1, -1).expand(height, width)
        mask = self.in_a(rows, cols).reshape(-1)
        flat = torch.arange(height * width, device=device)
        return flat[mask], flat[~mask]

    def split(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) -> sub-images (B, C, h, w) and (B, C, h, w) (new tensors)."""
        if xs.ndim != 4:
            raise ShapeError(f"the {self.name} split needs a batch (B, C, H, W), got shape {tuple(xs.shape)}")
        batch, channels, height, width = xs.shape
        shape_a, shape_b = self.sub_shapes(xs.shape[1:])
        index_a, index_b = self.indices(height, width, xs.device)
        flat = xs.reshape(batch, channels, height * width)
        return (flat[:, :, index_a].reshape(batch, *shape_a), flat[:, :, index_b].reshape(batch, *shape_b))

    def merge(self, sub_a: torch.Tensor, sub_b: torch.Tensor, image_shape) -> torch.Tensor:
        """Sub-images (B, C, h, w) x 2 -> images (B, *image_shape): the inverse of :meth:`split`."""
        shape_a, shape_b = self.sub_shapes(image_shape)
        if tuple(sub_a.shape[1:]) != shape_a or tuple(sub_b.shape[1:]) != shape_b or len(sub_a) != len(sub_b):
            raise ShapeError(
                f"cannot merge sub-images {tuple(sub_a.shape)} and {tuple(sub_b.shape)} into images "
                f"{tuple(image_shape)} with the {self.name} split (expected {shape_a} each)"
            )
        channels, height, width = (int(s) for s in image_shape)
        index_a, index_b = self.indices(height, width, sub_a.device)
        out = sub_a.new_empty(len(sub_a), channels, height * width)
        out[:, :, index_a] = sub_a.reshape(len(sub_a), channels, -1)
        out[:, :, index_b] = sub_b.reshape(len(sub_b), channels, -1).to(out.dtype)
        return out.reshape(len(sub_a), channels, height, width)


def _even(size: int, what: str, split: str) -> int:
    if size < 2 or size % 2:
        raise ShapeError(f"the {split} split needs an even image {what} (>= 2), got {size}")
    return size // 2


SPLITS: dict[str, Split] = {
    "checkerboard": Split(
        "checkerboard", "2x2-block diagonals: (row + col) even -> a, odd -> b (Xia et al. 2024)",
        lambda r, c: (r + c) % 2 == 0, lambda h, w: (h, _even(w, "width", "checkerboard")),
    ),
    "rows": Split(
        "rows", "even rows -> a, odd rows -> b",
        lambda r, c: r % 2 == 0, lambda h, w: (_even(h, "height", "rows"), w),
    ),
    "columns": Split(
        "columns", "even columns -> a, odd columns -> b",
        lambda r, c: c % 2 == 0, lambda h, w: (h, _even(w, "width", "columns")),
    ),
}
DEFAULT_SPLIT = "checkerboard"


def get_split(split: str | Split | None = None) -> Split:
    """A registered split by name (default: checkerboard), or ``split`` itself if it is a Split."""
    if split is None:
        return SPLITS[DEFAULT_SPLIT]
    if isinstance(split, Split):
        return split
    if split not in SPLITS:
        raise InvalidArgumentError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return SPLITS[split]
