"""Datasets, always read locally (nothing is ever downloaded).

Specifications accepted by :func:`load_dataset` (and the CLI's ``--data``):

* ``digits``: scikit-learn's handwritten digits (``sklearn.datasets.load_digits``, 1797 real
  8x8 images shipped inside scikit-learn), scaled to [0,1] (pixel / 16), shape 1x8x8, 10
  classes. Fixed split: the test split is every 5th image (index % 5 == 0, 360 images); of the
  other 1437, ``val`` is every 10th (144 images, held out like the file datasets' val) and
  ``train`` the remaining 1293. ``train+val`` (Python only) is all 1437 non-test images, in order:
  what the bundled digits models were trained on.
* ``mnist:ROOT`` and ``fashion-mnist:ROOT``: the four original IDX files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each gzipped or not) directly in ROOT, or in torchvision's layout
  (``ROOT/MNIST/raw``, ``ROOT/FashionMNIST/raw``) or ``ROOT/raw``; 1x28x28, 10 classes. Debian's
  ``dataset-fashion-mnist`` package installs them in ``/usr/share/datasets/fashion-mnist``.
* ``cifar10:ROOT``: CIFAR-10, 3x32x32. The binary layout (``cifar-10-batches-bin``:
  ``data_batch_1.bin`` ... ``data_batch_5.bin``, ``test_batch.bin``, records of one label byte and
  3072 pixel bytes) in ROOT or ``ROOT/cifar-10-batches-bin`` is read directly (no unpickling);
  otherwise the python layout (``ROOT/cifar-10-batches-py``) through torchvision, which checks
  the files' md5 sums and unpickles them.
* ``imagefolder:ROOT``: an ImageNet-style class-per-folder tree (``ROOT/SPLIT`` if it exists,
  else ROOT). Images are resized and centre-cropped BEFORE the noise, as part of the data (Cohen
  et al. certify ImageNet this way): at the model's resolution with its interpolation when the
  model brings its preprocessing (``preprocessing=``, a torchvision/timm/Hugging Face model:
  e.g. resize 248, crop 224, bicubic), else the reference Resize(256), CenterCrop(224)
  (val/test); RandomResizedCrop + flip for train. Labels: the folders in sorted order (ImageNet's
  synset folders give ImageNet's class indices), or, when every folder is named by a number,
  that number (``ROOT/417/...`` has label 417, so a few classes of a 1000-class model work).
* ``npz:PATH``: a NumPy ``.npz`` holding ``x`` (N, C, H, W floats in [0,1]) and ``y`` (N ints);
  one set of inputs whatever the split.

The class count of npz data and of numbered folders is only a lower bound (the largest label +
1, ``CertDataset.classes_known`` False): a run takes the model's class count, or
``--num-classes``.

Splits of the file datasets (mnist, fashion-mnist, cifar10): ``test`` is the test file; the
training file is cut into ``val``, a held-out validation split (every 12th image of MNIST /
Fashion-MNIST, every 10th of CIFAR-10: 5000 images each), and ``train``, the rest (55000 and
45000 images). Training (:func:`robustcert.runs.train.train_model`) fits ``train`` and reports
accuracy on ``val``, so the test images stay unseen until certification.

All inputs are float tensors in [0,1] pixel space, without normalisation (the model does that).
"""
from __future__ import annotations

import gzip
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .engine import first_line
from .errors import DataError

DIGITS_TEST_EVERY = 5
DIGITS_VAL_EVERY = 10  # of the non-test images
#: The validation split of a file dataset: every k-th image of its training file.
VALIDATION_EVERY = {"mnist": 12, "fashion-mnist": 12, "cifar10": 10}


class ImageBytes:
    """Images stored as bytes (N, C, H, W uint8) with labels, served as floats in [0,1].

    A quarter of the memory of float32 tensors: CIFAR-10's training file is 150 MB this way.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255), int(self.labels[index])

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[indices].float().div_(255), self.labels[indices]


@dataclass
class CertDataset:
    """A dataset of (input in [0,1], label) pairs with its class count and input shape."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    source: Any  # a (x, y) pair of tensors, or a torchvision dataset
    split: str | None = None  # the split it was loaded as (train, test, ...), recorded by dataset runs
    #: False when num_classes is only the largest label + 1 (npz, numbered folders): the model decides
    classes_known: bool = True
    #: how image files were resized / cropped into inputs, before the noise (recorded by dataset runs)
    transform: dict | None = None

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

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs (B, *input_shape) and labels (B,) at ``indices``, in one call where the source allows."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        if isinstance(self.source, tuple):
            x, y = self.source
            return x[index], torch.as_tensor(y)[index].long()
        if hasattr(self.source, "batch"):
            return self.source.batch(index)
        items = [self[int(i)] for i in index]
        return (torch.stack([torch.as_tensor(x) for x, _ in items]),
                torch.tensor([label for _, label in items], dtype=torch.long))


def digits_arrays(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits as float32 (N, 1, 8, 8) in [0,1] and int64 labels, for a split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    is_test = np.arange(len(labels)) % DIGITS_TEST_EVERY == 0
    is_val = np.zeros_like(is_test)
    is_val[np.flatnonzero(~is_test)[::DIGITS_VAL_EVERY]] = True  # every 10th non-test image: disjoint from test
    keep = {"test": is_test, "val": is_val, "train": ~is_test & ~is_val, "train+val": ~is_test,
            "all": np.ones_like(is_test)}.get(split)
    if keep is None:
        raise DataError(f"unknown split {split!r} for digits (train, val, test, train+val or all)")
    return images[keep], labels[keep]


def _digits(split: str) -> CertDataset:
    x, y = digits_arrays(split)
    return CertDataset("digits", 10, (1, 8, 8), (torch.from_numpy(x), torch.from_numpy(y)))


def _npz(path: str) -> CertDataset:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"npz file not found: {path}")
    if not zipfile.is_zipfile(file):  # np.load would try to unpickle it and speak of allow_pickle
        with open(file, "rb") as handle:
            head = handle.read(512)
        what = "a .npy array (np.save), not an .npz archive (np.savez)" if head.startswith(b"\x93NUMPY") else \
            "a text file" if _is_text(head) else "not a zip archive"
        raise DataError(f"cannot read npz:{path}: it is {what}; give an .npz archive holding arrays x (N, C, H, W) "
                        "and y (N), as written by numpy.savez")
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
                       (torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))),
                       classes_known=False)


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _root_folder(kind: str, root: str) -> Path:
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError(f"{kind} root folder not found: {root}")
    return folder


def _training_part(kind: str, split: str, count: int) -> np.ndarray:
    """Indices of the training file that form ``split``: ``val`` (every k-th) or ``train`` (the rest)."""
    if split not in ("train", "val"):
        raise DataError(f"split {split!r} is not defined for {kind} (train, val or test)")
    held_out = np.arange(count) % VALIDATION_EVERY[kind] == 0
    return np.flatnonzero(held_out if split == "val" else ~held_out)


def _file_dataset(kind: str, root: str, split: str, images: np.ndarray, labels: np.ndarray,
                  num_classes: int = 10) -> CertDataset:
    """Check one split's arrays (images N x C x H x W bytes, labels N) and wrap them."""
    if len(images) != len(labels):
        raise DataError(f"cannot read {kind} data from {root}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise DataError(f"cannot read {kind} data from {root}: the {split} files hold no images")
    if labels.max() >= num_classes:
        raise DataError(f"cannot read {kind} data from {root}: label {int(labels.max())} is not one of the "
                        f"{num_classes} classes")
    writable = np.require(images, np.uint8, ["C", "W"])  # np.frombuffer arrays are read-only
    source = ImageBytes(torch.from_numpy(writable), torch.from_numpy(labels.astype(np.int64)))
    return CertDataset(f"{kind}:{root}", num_classes, tuple(int(s) for s in images.shape[1:]), source)


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_FOLDERS = {"mnist": ("", "MNIST/raw", "raw"), "fashion-mnist": ("", "FashionMNIST/raw", "raw")}


def find_idx_file(folder: Path, subfolders: Sequence[str], stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` (also spelt ``train-images.idx3-ubyte``) in the first subfolder holding it."""
    names = [stem, stem.replace("-idx", ".idx")]
    for sub in subfolders:
        for name in names:
            for candidate in (folder / sub / name, folder / sub / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format; gzipped or not) as a uint8 array.

    Header: two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions d, then
    d big-endian 32-bit sizes; the data follow, row-major.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"cannot read IDX file {path}: it does not start with an IDX header")
    if raw[2] != 0x08:
        raise DataError(f"cannot read IDX file {path}: type code 0x{raw[2]:02x}, expected 0x08 (unsigned bytes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"cannot read IDX file {path}: truncated header")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(shape)):
        raise DataError(f"cannot read IDX file {path}: the header announces {shape} = {int(np.prod(shape))} bytes, "
                        f"the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx(kind: str, root: str, split: str) -> CertDataset:
    folder = _root_folder(kind, root)
    part = "test" if split == "test" else "train"
    paths = [find_idx_file(folder, IDX_FOLDERS[kind], stem) for stem in IDX_FILES[part]]
    missing = [stem for stem, path in zip(IDX_FILES[part], paths) if path is None]
    if missing:
        places = ", ".join(f"ROOT/{sub}" if sub else "ROOT" for sub in IDX_FOLDERS[kind])
        raise DataError(f"cannot read {kind} data from {root}: no {missing[0]} (or .gz) in {places}")
    images, labels = (read_idx(path) for path in paths)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"cannot read {kind} data from {root}: expected images (N, H, W) and labels (N,), "
                        f"got {images.shape} and {labels.shape}")
    images = images[:, None, :, :]
    if part == "train":
        keep = _training_part(kind, split, len(labels))
        images, labels = images[keep], labels[keep]
    return _file_dataset(kind, root, split, images, labels)


# --------------------------------------------------------------------------- CIFAR-10 binary layout
CIFAR_BINARY_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_BINARY_TEST = ("test_batch.bin",)
CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then the red, green and blue 32x32 planes


def cifar_binary_folder(folder: Path) -> Path | None:
    """The folder holding CIFAR-10's binary batches: ROOT/cifar-10-batches-bin or ROOT itself."""
    for candidate in (folder / "cifar-10-batches-bin", folder):
        if (candidate / CIFAR_BINARY_TEST[0]).is_file() or (candidate / CIFAR_BINARY_TRAIN[0]).is_file():
            return candidate
    return None


def read_cifar_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: images (N, 3, 32, 32) uint8 and labels (N,)."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {exc}") from None
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {raw.size} bytes is not a whole number of "
                        f"{CIFAR_RECORD}-byte records")
    records = raw.reshape(-1, CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].copy()


def _cifar_binary(folder: Path, root: str, split: str) -> CertDataset:
    names = CIFAR_BINARY_TEST if split == "test" else CIFAR_BINARY_TRAIN
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(f"cannot read cifar10 data from {root}: {missing[0]} is missing in {folder}")
    parts = [read_cifar_binary(folder / name) for name in names]
    images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if split != "test":
        keep = _training_part("cifar10", split, len(labels))
        images, labels = images[keep], labels[keep]
    return _file_dataset("cifar10", root, split, images, labels)


def _cifar10(root: str, split: str) -> CertDataset:
    """The binary layout if it is there (read here, no pickle), else torchvision's python layout."""
    binary = cifar_binary_folder(_root_folder("cifar10", root))
    return _cifar10_python(root, split) if binary is None else _cifar_binary(binary, root, split)


#: The reference ImageNet preprocessing of imagefolder data when the model brings none.
REFERENCE_IMAGE_TRANSFORM = {"resize": 256, "crop": [224, 224], "interpolation": "bilinear", "size": [3, 224, 224]}


def _imagefolder(root: str, split: str, preprocessing=None) -> CertDataset:
    """An ImageNet-style folder, resized and cropped at the model's resolution (see the module docstring)."""
    from torchvision import datasets, transforms
    from torchvision.datasets.folder import find_classes

    folder = _root_folder("imagefolder", root)
    subfolder = folder / split if (folder / split).is_dir() else folder
    record = dict(REFERENCE_IMAGE_TRANSFORM) if preprocessing is None else preprocessing.data_record()
    size = tuple(record["size"][1:])
    try:
        classes, _ = find_classes(str(subfolder))
        numbered = all(name.isdigit() for name in classes)
        labels = [int(name) for name in classes] if numbered else list(range(len(classes)))
        if split == "train":
            mode = transforms.InterpolationMode(record["interpolation"])
            transform = transforms.Compose([transforms.RandomResizedCrop(size, interpolation=mode),
                                            transforms.RandomHorizontalFlip(), transforms.ToTensor()])
            record = {"random_resized_crop": list(size), "flip": True, "interpolation": record["interpolation"],
                      "size": record["size"]}
        elif preprocessing is None:
            transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
        else:
            transform = preprocessing.data_transform()
        data = datasets.ImageFolder(str(subfolder), transform=transform, target_transform=labels.__getitem__)
    except Exception as exc:  # torchvision raises FileNotFoundError on an empty tree, OSError on bad files
        raise DataError(f"cannot read imagefolder data from {root}: {first_line(exc)}") from None
    return CertDataset(f"imagefolder:{root}", max(labels) + 1, (record["size"][0], *size),
                       data, classes_known=not numbered, transform=record)


def _cifar10_python(root: str, split: str) -> CertDataset:
    """CIFAR-10's python layout through torchvision (which checks the md5 sums and unpickles)."""
    from torchvision import datasets, transforms

    folder = _root_folder("cifar10", root)
    if split == "all":
        raise DataError("split 'all' is not defined for cifar10 (train, val or test)")
    train = split in ("train", "val")
    try:
        data = datasets.CIFAR10(str(folder), train=train, download=False, transform=transforms.ToTensor())
    except Exception as exc:  # torchvision raises RuntimeError / FileNotFoundError on missing files
        raise DataError(f"cannot read cifar10 data from {root}: {first_line(exc)}") from None
    if train:
        data = torch.utils.data.Subset(data, _training_part("cifar10", split, len(data)).tolist())
    return CertDataset(f"cifar10:{root}", 10, (3, 32, 32), data)


def load_dataset(spec: str, split: str = "test", preprocessing=None) -> CertDataset:
    """Load a dataset from a specification (see the module docstring).

    Args:
        spec: the dataset specification.
        split: train, test, val or all.
        preprocessing: the model's :class:`robustcert.models.preprocess.Preprocessing`, when it
            has one: ``imagefolder:`` images are resized and cropped to its resolution.

    Returns:
        The CertDataset.
    """
    if not isinstance(spec, str):
        raise DataError(f"a dataset specification is a string such as 'digits' or 'npz:PATH', got {spec!r}")
    if split not in ("train", "test", "val", "all", "train+val"):
        raise DataError(f"unknown split {split!r} (train, test, val or all)")
    if split == "train+val" and spec != "digits":
        raise DataError("split 'train+val' is defined for digits only (the whole training file of the others: 'all' "
                        "minus 'test')")
    dataset = _load(spec, split, preprocessing)
    dataset.split = split
    return dataset


def _load(spec: str, split: str, preprocessing=None) -> CertDataset:
    if spec == "digits":
        return _digits(split)
    scheme, sep, location = spec.partition(":")
    if not sep or not location:
        raise DataError(
            f"unknown dataset {spec!r}: use digits, mnist:ROOT, fashion-mnist:ROOT, cifar10:ROOT, imagefolder:ROOT "
            "or npz:PATH"
        )
    if scheme == "npz":
        return _npz(location)
    if scheme in IDX_FOLDERS:
        return _idx(scheme, location, split)
    if scheme == "cifar10":
        return _cifar10(location, split)
    if scheme == "imagefolder":
        return _imagefolder(location, split, preprocessing)
    raise DataError(f"unknown dataset scheme {scheme!r}: use digits, mnist, fashion-mnist, cifar10, imagefolder "
                    "or npz")
