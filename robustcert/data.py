"""Datasets, always read locally (nothing is ever downloaded).

Specifications accepted by :func:`load_dataset` (and the CLI's ``--data``):

* ``digits``: scikit-learn's handwritten digits (``sklearn.datasets.load_digits``, 1797 real
  8x8 images shipped inside scikit-learn), scaled to [0,1] (pixel / 16), shape 1x8x8, 10
  classes. Fixed split: the test split is every 5th image (index % 5 == 0, 360 images), the
  train split the other 1437.
* ``cifar10:ROOT``: torchvision CIFAR-10 from ROOT (the ``cifar-10-batches-py`` folder inside it).
* ``mnist:ROOT``: torchvision MNIST from ROOT (``ROOT/MNIST/raw``).
* ``imagefolder:ROOT``: an ImageNet-style class-per-folder tree (``ROOT/SPLIT`` if it exists,
  else ROOT), with the reference preprocessing Resize(256), CenterCrop(224) (val/test), or
  RandomResizedCrop(224) + flip (train).
* ``npz:PATH``: a NumPy ``.npz`` holding ``x`` (N, C, H, W floats in [0,1]) and ``y`` (N ints).

All inputs are float tensors in [0,1] pixel space, without normalisation (the model does that).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError

DIGITS_TEST_EVERY = 5


@dataclass
class CertDataset:
    """A dataset of (input in [0,1], label) pairs with its class count and input shape."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    source: Any  # a (x, y) pair of tensors, or a torchvision dataset
    split: str | None = None  # the split it was loaded as (train, test, ...), recorded by dataset runs

    def __len__(self) -> int:
        if isinstance(self.source, tuple):
            return len(self.source[1])
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if isinstance(self.source, tuple):
            x, y = self.source
            return x[index], int(y[index])
        try:
            image, label = self.source[index]
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read item {index} of {self.name}: {exc}") from None
        return image, int(label)


def digits_arrays(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits as float32 (N, 1, 8, 8) in [0,1] and int64 labels, for a split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    is_test = np.arange(len(labels)) % DIGITS_TEST_EVERY == 0
    if split == "test":
        keep = is_test
    elif split == "train":
        keep = ~is_test
    elif split == "all":
        keep = np.ones_like(is_test)
    else:
        raise DataError(f"unknown split {split!r} for digits (train, test or all)")
    return images[keep], labels[keep]


def _digits(split: str) -> CertDataset:
    x, y = digits_arrays(split)
    return CertDataset("digits", 10, (1, 8, 8), (torch.from_numpy(x), torch.from_numpy(y)))


def _npz(path: str) -> CertDataset:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"npz file not found: {path}")
    try:
        with np.load(file, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DataError(f"npz file {path} must hold arrays 'x' and 'y', found {sorted(archive.files)}")
            x, y = np.asarray(archive["x"]), np.asarray(archive["y"])
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read npz file {path}: {exc}") from None
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"npz file {path}: x must be (N, C, H, W) and y (N,), got {x.shape} and {y.shape}")
    if len(y) == 0:
        raise DataError(f"npz file {path} holds no inputs (x has shape {x.shape})")
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataError(f"npz file {path}: x must hold finite floats in [0, 1]")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DataError(f"npz file {path}: y must hold non-negative integer labels")
    num_classes = int(y.max()) + 1 if len(y) else 0
    return CertDataset(f"npz:{path}", num_classes, tuple(x.shape[1:]),
                       (torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))))


def _torchvision(kind: str, root: str, split: str) -> CertDataset:
    from torchvision import datasets, transforms

    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError(f"{kind} root folder not found: {root}")
    train = split == "train"
    try:
        if kind == "cifar10":
            data = datasets.CIFAR10(str(folder), train=train, download=False, transform=transforms.ToTensor())
            return CertDataset(f"cifar10:{root}", 10, (3, 32, 32), data)
        if kind == "mnist":
            data = datasets.MNIST(str(folder), train=train, download=False, transform=transforms.ToTensor())
            return CertDataset(f"mnist:{root}", 10, (1, 28, 28), data)
        subfolder = folder / split if (folder / split).is_dir() else folder
        if train:
            transform = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                            transforms.ToTensor()])
        else:
            transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
        data = datasets.ImageFolder(str(subfolder), transform=transform)
        return CertDataset(f"imagefolder:{root}", len(data.classes), (3, 224, 224), data)
    except DataError:
        raise
    except Exception as exc:  # torchvision raises RuntimeError / FileNotFoundError on missing files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {kind} data from {root}: {message}") from None


def load_dataset(spec: str, split: str = "test") -> CertDataset:
    """Load a dataset from a specification (see the module docstring)."""
    if not isinstance(spec, str):
        raise DataError(f"a dataset specification is a string such as 'digits' or 'npz:PATH', got {spec!r}")
    if split not in ("train", "test", "val", "all"):
        raise DataError(f"unknown split {split!r} (train, test, val or all)")
    dataset = _load(spec, split)
    dataset.split = split
    return dataset


def _load(spec: str, split: str) -> CertDataset:
    if spec == "digits":
        return _digits("test" if split == "val" else split)
    scheme, sep, location = spec.partition(":")
    if not sep or not location:
        raise DataError(
            f"unknown dataset {spec!r}: use digits, cifar10:ROOT, mnist:ROOT, imagefolder:ROOT or npz:PATH"
        )
    if scheme == "npz":
        return _npz(location)
    if scheme in ("cifar10", "mnist", "imagefolder"):
        return _torchvision(scheme, location, split)
    raise DataError(f"unknown dataset scheme {scheme!r}: use digits, cifar10, mnist, imagefolder or npz")
