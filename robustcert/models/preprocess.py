"""A pretrained model's preprocessing, as the first layer of the base classifier (after the noise).

Cohen et al. (2019) add the noise to the [0, 1] image and make the normalisation the first layer
of the base classifier, so that radii are in the image's pixel units. A torchvision, timm or
Hugging Face classifier comes with more preprocessing than a mean and a std: an input size, a
resize (often to ``size / crop_pct``), a centre crop and an interpolation. :class:`Preprocessing`
holds that recipe; :meth:`Preprocessing.module` is the layer that applies it to a noisy [0, 1]
batch inside the base classifier:

    f(x) = net((crop(resize(x)) * scale - mean) / std)

and the smoothed classifier g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I) at the
data's resolution. The resize and crop are part of f (deterministic, after the noise), so the
certificate is a statement about the data's pixels: the l2 ball of radius R around the image as
the dataset gives it, whatever resolution the network sees.

Data already at the model's input size is taken as already resized and cropped (the layer only
normalises): that is how ``imagefolder:`` data are prepared for such a model (the resize and
crop are then part of the data, before the noise: :meth:`Preprocessing.data_transform`), and
how an ImageNet-style 224x224 npz is meant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

#: Interpolations the tensor resize can apply (torchvision's names).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocessing:
    """How a pretrained model expects its images: the network's input and how to get there.

    Args:
        mean, std: per-channel normalisation, ``(x * scale - mean) / std``.
        input_size: (channels, height, width) the network takes.
        interpolation: "nearest", "bilinear" or "bicubic" (antialiased, as PIL resizes).
        resize: the size images are resized to before a centre crop to the input size: an int
            (the shorter side, aspect ratio kept) or (height, width); None: straight to the input
            size, no crop (Hugging Face processors with a height and width).
        scale: factor applied to the [0, 1] pixels before the normalisation (1 for every model
            whose processor rescales 0-255 images by 1/255: our pixels are already in [0, 1]).
        source: where the recipe came from (recorded, e.g. "timm pretrained_cfg").
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]
    interpolation: str = "bilinear"
    resize: int | tuple[int, int] | None = None
    scale: float = 1.0
    source: str = ""

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")

    @classmethod
    def from_crop_pct(cls, mean: Sequence[float], std: Sequence[float], input_size: Sequence[int],
                      interpolation: str, crop_pct: float | None, **kwargs) -> "Preprocessing":
        """timm's evaluation recipe: resize the shorter side to floor(size / crop_pct), then crop
        the centre ``size`` (crop_pct None counts as 1)."""
        channels, height, width = (int(v) for v in input_size)
        crop_pct = crop_pct or 1.0
        resize = (math.floor(height / crop_pct) if height == width
                  else (math.floor(height / crop_pct), math.floor(width / crop_pct)))
        return cls(tuple(mean), tuple(std), (channels, height, width), interpolation, resize, **kwargs)

    @classmethod
    def from_record(cls, record: dict) -> "Preprocessing":
        """The recipe a :meth:`record` describes."""
        resize = record.get("resize")
        return cls(tuple(record["mean"]), tuple(record["std"]), tuple(record["size"]), record["interpolation"],
                   tuple(resize) if isinstance(resize, list) else resize, record.get("scale", 1.0),
                   record.get("source", ""))

    @property
    def size(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[2]

    def record(self) -> dict:
        """What a run's sidecar records (JSON types only)."""
        record = {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                  "size": list(self.input_size), "interpolation": self.interpolation,
                  "resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
                  "crop": None if self.resize is None else list(self.size)}
        if self.scale != 1.0:
            record["scale"] = self.scale
        if self.source:
            record["source"] = self.source
        return record

    def module(self) -> "Preprocess":
        """The layer that applies this recipe inside the base classifier."""
        return Preprocess(self)

    def data_transform(self):
        """The same resize and crop on PIL images (for ``imagefolder:`` data, before the noise),
        then ``ToTensor``: images come out at the network's input size, in [0, 1]."""
        from torchvision import transforms

        mode = transforms.InterpolationMode(self.interpolation)
        steps = [transforms.Resize(self.resize if self.resize is not None else self.size, interpolation=mode)]
        if self.resize is not None:
            steps.append(transforms.CenterCrop(self.size))
        return transforms.Compose([*steps, transforms.ToTensor()])

    def data_record(self) -> dict:
        """How ``data_transform`` prepares images, as a dataset run records it."""
        return {"resize": list(self.resize) if isinstance(self.resize, tuple) else (self.resize or list(self.size)),
                "crop": None if self.resize is None else list(self.size),
                "interpolation": self.interpolation, "size": list(self.input_size)}


class Preprocess(nn.Module):
    """Resize and crop a [0, 1] batch to the network's input size when it is not already, then
    normalise: ``(crop(resize(x)) * scale - mean) / std``. No saved state (like NormalizeLayer)."""

    def __init__(self, preprocessing: Preprocessing):
        super().__init__()
        self.preprocessing = preprocessing
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        recipe = self.preprocessing
        if tuple(x.shape[-2:]) != recipe.size:
            mode = F.InterpolationMode(recipe.interpolation)
            x = F.resize(x, list(recipe.resize) if isinstance(recipe.resize, tuple)
                         else [recipe.resize] if recipe.resize is not None else list(recipe.size),
                         interpolation=mode, antialias=True)
            if recipe.resize is not None:
                x = F.center_crop(x, list(recipe.size))
        if recipe.scale != 1.0:
            x = x * recipe.scale
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.preprocessing.record().items())


def with_preprocessing(net: nn.Module, preprocessing: Preprocessing) -> nn.Sequential:
    """``Sequential(Preprocess(preprocessing), net)``: the base classifier on [0, 1] inputs."""
    return nn.Sequential(preprocessing.module(), net)
