"""Architectures by name, model sources, and safe checkpoint loading.

A model specification (``load_checkpoint`` / ``load_model``, ``--model``) is ``SCHEME:NAME`` for
a registered model source (:data:`MODEL_SOURCES`), else a file, read by the first registered file
format that recognises it (:data:`FILE_FORMATS`):

* ``bundled:NAME``: weights shipped inside the package (``robustcert/models/weights/NAME.pt``),
  e.g. ``bundled:digits-0.25``;
* a TorchScript file (``torch.jit.save``);
* a ``torch.save`` file: a reference checkpoint (Cohen et al. 2019): ``{'epoch', 'arch',
  'state_dict', 'optimizer'}`` with ``arch`` in :data:`ARCHITECTURES` and keys ``1.`` /
  ``1.module.``; a plain state_dict, with the architecture given explicitly (``arch=...`` /
  ``--arch``); a pickled module (``--trust-checkpoint``).

Registered elsewhere: ``torchvision:NAME``, ``timm:NAME`` (with ``weights=FILE`` / ``--weights``)
and ``hf:DIR``, pretrained classifiers with their preprocessing, and ``.safetensors`` state_dicts
(:mod:`robustcert.models.zoo`); ``torch.export`` programs (``.pt2``, :mod:`robustcert.models.exported`).

Each source and format returns a :class:`LoadedModel`, with the input shape the source knows
(an architecture's, a checkpoint's; None when unknown): another source (a model zoo) or file
format plugs in with one :func:`register_model_source` or :func:`register_file_format` call.

Security: checkpoints are read with ``torch.load(weights_only=True)``, which cannot run code.
A checkpoint that needs full unpickling (a pickled ``nn.Module``, custom classes) is refused
unless ``trust_checkpoint=True`` (CLI ``--trust-checkpoint``): full unpickling runs arbitrary
code from the file, so only use it on files you trust.
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..engine import as_device
from ..errors import CheckpointError
from ..files import file_sha256
from .cifar_resnet import CifarResNet
from .digits import DigitsCNN
from .mnist import MnistCNN
from .preprocess import Preprocessing
from .provenance import record_provenance
from .normalize import (
    CIFAR10_MEAN, CIFAR10_STD, DIGITS_MEAN, DIGITS_STD, IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN, MNIST_STD,
    NormalizeLayer,
)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class Architecture:
    """How to build a network, its normalisation, default class count and input shape."""

    build: Callable[[int], nn.Module]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    input_shape: tuple[int, ...]


def _resnet50(num_classes: int) -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(weights=None, num_classes=num_classes)


ARCHITECTURES: dict[str, Architecture] = {
    "cifar_resnet20": Architecture(lambda k: CifarResNet(20, k), CIFAR10_MEAN, CIFAR10_STD, 10, (3, 32, 32)),
    "cifar_resnet110": Architecture(lambda k: CifarResNet(110, k), CIFAR10_MEAN, CIFAR10_STD, 10, (3, 32, 32)),
    "resnet50": Architecture(_resnet50, IMAGENET_MEAN, IMAGENET_STD, 1000, (3, 224, 224)),
    "digits_cnn": Architecture(DigitsCNN, DIGITS_MEAN, DIGITS_STD, 10, (1, 8, 8)),
    # dual smoothing branch models on half digits (checkerboard / columns: 1x8x4, rows: 1x4x8)
    "digits_sub_8x4": Architecture(lambda k: DigitsCNN(k, 8, 4), DIGITS_MEAN, DIGITS_STD, 10, (1, 8, 4)),
    "digits_sub_4x8": Architecture(lambda k: DigitsCNN(k, 4, 8), DIGITS_MEAN, DIGITS_STD, 10, (1, 4, 8)),
    # 28x28 grey (MNIST, Fashion-MNIST) and its dual branch models on half images
    "mnist_cnn": Architecture(MnistCNN, MNIST_MEAN, MNIST_STD, 10, (1, 28, 28)),
    "mnist_sub_28x14": Architecture(lambda k: MnistCNN(k, 28, 14), MNIST_MEAN, MNIST_STD, 10, (1, 28, 14)),
    "mnist_sub_14x28": Architecture(lambda k: MnistCNN(k, 14, 28), MNIST_MEAN, MNIST_STD, 10, (1, 14, 28)),
    # randomized ablation (Levine and Feizi 2020): ablated digits, channels (x, 1 - x) and zeros where absent;
    # no normalisation, so that an ablated pixel stays exactly zero
    "digits_cnn_ablation": Architecture(lambda k: DigitsCNN(k, in_channels=2), (0.0, 0.0), (1.0, 1.0), 10,
                                        (2, 8, 8)),
    "mnist_cnn_ablation": Architecture(lambda k: MnistCNN(k, in_channels=2), (0.0, 0.0), (1.0, 1.0), 10,
                                       (2, 28, 28)),
}

#: The architecture ``robustcert train`` builds when none is given, by input shape (C, H, W).
DEFAULT_ARCHITECTURES: dict[tuple[int, ...], str] = {
    (1, 8, 8): "digits_cnn", (1, 8, 4): "digits_sub_8x4", (1, 4, 8): "digits_sub_4x8",
    (1, 28, 28): "mnist_cnn", (1, 28, 14): "mnist_sub_28x14", (1, 14, 28): "mnist_sub_14x28",
    (3, 32, 32): "cifar_resnet110", (3, 224, 224): "resnet50",
    # randomized ablation's encoding (x, 1 - x) doubles the channels
    (2, 8, 8): "digits_cnn_ablation", (2, 28, 28): "mnist_cnn_ablation",
}


def architecture(arch: str) -> Architecture:
    """The registered architecture called ``arch`` (CheckpointError if unknown)."""
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch]


def default_architecture(input_shape) -> str:
    """The registered architecture for inputs of ``input_shape`` (:data:`DEFAULT_ARCHITECTURES`)."""
    shape = tuple(int(s) for s in input_shape)
    if shape not in DEFAULT_ARCHITECTURES:
        known = ", ".join(f"{'x'.join(map(str, k))}: {v}" for k, v in DEFAULT_ARCHITECTURES.items())
        raise CheckpointError(f"no default architecture for inputs of shape {shape}; give one ({known})")
    return DEFAULT_ARCHITECTURES[shape]


def build_model(arch: str, num_classes: int | None = None) -> nn.Sequential:
    """``Sequential(NormalizeLayer(mean, std), net)`` for a named architecture (random weights)."""
    spec = architecture(arch)
    return nn.Sequential(NormalizeLayer(spec.mean, spec.std), spec.build(num_classes or spec.num_classes))


@dataclass
class LoadedModel:
    """A loaded base model and what is known about it."""

    module: nn.Module
    source: str
    arch: str | None = None
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    sha256: str | None = None
    metadata: dict = field(default_factory=dict)
    #: the resize / crop / normalisation inside ``module`` (pretrained zoo models): inputs of any
    #: height and width with ``preprocessing.input_size[0]`` channels
    preprocessing: Preprocessing | None = None
    weights: str | None = None  # the weights given with the specification (a file or a weights name)


def bundled_names() -> list[str]:
    """Names usable as ``bundled:NAME``."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


_PREFIX = re.compile(r"(^|\.)module\.")


def clean_keys(state_dict: dict) -> dict:
    """Drop DataParallel's ``module.`` segments (reference ImageNet keys are ``1.module.``)."""
    return {_PREFIX.sub(r"\1", key): value for key, value in state_dict.items()}


def _infer_num_classes(state_dict: dict) -> int | None:
    for key in reversed(list(state_dict)):
        value = state_dict[key]
        if key.endswith("weight") and isinstance(value, torch.Tensor) and value.ndim == 2:
            return int(value.shape[0])
    return None


def _load_into(arch: str, state_dict: dict) -> tuple[nn.Sequential, int]:
    """Build ``arch`` and load a cleaned state_dict into it strictly (RuntimeError if it does not fit)."""
    num_classes = _infer_num_classes(state_dict) or architecture(arch).num_classes
    model = build_model(arch, num_classes)
    target = model if all(k.startswith("1.") for k in state_dict) else model[1]
    target.load_state_dict(state_dict, strict=True)
    return model, num_classes


def matching_architectures(state_dict: dict, exclude: str | None = None) -> list[str]:
    """The registered architectures whose parameter names and shapes are exactly those of a state_dict."""
    state_dict = clean_keys(state_dict)
    matches = []
    for name in sorted(ARCHITECTURES):
        if name == exclude:
            continue
        try:
            _load_into(name, state_dict)
        except (RuntimeError, ValueError, TypeError):
            continue
        matches.append(name)
    return matches


def mismatch_summary(state_dict: dict, expected: dict) -> str:
    """A short, whole-name summary of how a state_dict's keys differ from a model's: counts and
    one example of each kind (missing, unexpected, of another shape)."""
    missing, unexpected = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(k for k in set(state_dict) & set(expected) if state_dict[k].shape != expected[k].shape)
    parts = [f"{len(items)} {what}{'s' if len(items) > 1 else ''}{suffix} (e.g. {items[0]})"
             for items, what, suffix in ((missing, "missing key", ""), (unexpected, "unexpected key", ""),
                                         (wrong_shape, "key", " of another shape")) if items]
    return ", ".join(parts)


def _mismatch(state_dict: dict, model: nn.Module) -> str:
    """:func:`mismatch_summary` against ``Sequential(NormalizeLayer, net)`` (bare keys get ``1.``)."""
    if not all(k.startswith("1.") for k in state_dict):
        state_dict = {f"1.{k}": v for k, v in state_dict.items()}
    return mismatch_summary(state_dict, model.state_dict())


def model_from_state_dict(state_dict: dict, arch: str) -> tuple[nn.Sequential, int]:
    """Build ``arch`` and load a state_dict for it (full model keys ``1.`` or bare network keys).

    A state_dict for another architecture is a CheckpointError that names the architectures its
    keys fit (``--arch cifar_resnet110``), or summarises the difference when none fits.
    """
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"the checkpoint's state_dict is a {type(state_dict).__name__}, "
                              "not a mapping of parameter names to tensors")
    state_dict = clean_keys(state_dict)
    architecture(arch)
    try:
        return _load_into(arch, state_dict)
    except RuntimeError:
        pass
    fits = matching_architectures(state_dict, exclude=arch)
    if fits:
        raise CheckpointError(f"checkpoint does not match architecture {arch!r}: its weights fit "
                              f"{' or '.join(fits)} (give --arch {fits[0]})") from None
    num_classes = _infer_num_classes(state_dict) or architecture(arch).num_classes
    raise CheckpointError(f"checkpoint does not match architecture {arch!r}, nor any other known one "
                          f"({', '.join(sorted(ARCHITECTURES))}): "
                          f"{_mismatch(state_dict, build_model(arch, num_classes))}") from None


def _looks_like_text(path: Path) -> bool:
    """True when the file starts with readable text (UTF-8, no NUL bytes): a model never does."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a multi-byte character cut by the 4096-byte read
            return False
    return bool(head) and b"\x00" not in head


NOT_A_CHECKPOINT = ("give a file saved with torch.save (a state_dict or {'arch', 'state_dict'}), a TorchScript "
                    "file, or bundled:NAME")


def _looks_like_torch_save(path: Path) -> bool:
    """True for a zip archive (torch.save since 1.6) or a pickle of protocol >= 2 (legacy torch.save)."""
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80" or zipfile.is_zipfile(path)


def torch_load_safely(path: Path, trust_checkpoint: bool):
    try:
        with warnings.catch_warnings():  # a plain pickle.dump makes torch warn before our one-line error
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as exc:
        if not _looks_like_torch_save(path):  # random bytes also fail the weights-only unpickler
            what = "a text file" if _looks_like_text(path) else "neither a zip archive nor a pickle"
            raise CheckpointError(f"cannot read checkpoint {path}: not a torch.save file ({what}); "
                                  f"{NOT_A_CHECKPOINT}") from None
        if not trust_checkpoint and "weights only" in str(exc).lower():
            raise CheckpointError(
                f"checkpoint {path} needs full unpickling, which can run arbitrary code; "
                "pass --trust-checkpoint (trust_checkpoint=True) only if you trust its source"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # corrupt zip, truncated file, not a torch file at all
        if not _looks_like_torch_save(path):
            what = "a text file" if _looks_like_text(path) else "neither a zip archive nor a pickle"
            raise CheckpointError(f"cannot read checkpoint {path}: it is {what}, not a model; "
                                  f"{NOT_A_CHECKPOINT}") from None
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {message} (a damaged or truncated file?)") from None


# --------------------------------------------------------------------------- model sources and file formats
@dataclass(frozen=True)
class FileFormat:
    """A kind of model file.

    Attributes:
        name: a short name (``torchscript``).
        detect: path -> whether this format reads the file (by suffix or content).
        load: ``load(path, spec, arch, trust_checkpoint)`` -> a :class:`LoadedModel` on the CPU
            (``spec``: the specification as given, recorded as the model's source).
        help: the format in words, for ``--model`` help.
    """

    name: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, str, str | None, bool], "LoadedModel"]
    help: str


@dataclass(frozen=True)
class ModelSource:
    """A scheme of model specifications, ``SCHEME:NAME``.

    Attributes:
        scheme: the part before the colon (``bundled``).
        load: ``load(name, spec, arch, trust_checkpoint)`` -> a :class:`LoadedModel` on the CPU,
            with the input shape (and preprocessing, inside the module) the source defines; with
            ``takes_weights``, also ``weights=`` (``--weights``: the weights of a named architecture).
        help: the source in words, for ``--model`` help (``bundled:NAME``).
        takes_weights: whether the source reads ``weights`` (``torchvision:NAME``, ``timm:NAME``).
    """

    scheme: str
    load: Callable[..., "LoadedModel"]
    help: str
    takes_weights: bool = False


#: Model file formats, checked in order; the last, ``torch.save``, reads every other file.
FILE_FORMATS: dict[str, FileFormat] = {}
#: Model sources by scheme.
MODEL_SOURCES: dict[str, ModelSource] = {}


def register_file_format(file_format: FileFormat, before: str | None = "torch.save") -> FileFormat:
    """Add (or replace) a model file format, checked before ``before`` (default: before the
    ``torch.save`` fallback; None: last)."""
    items = [(k, v) for k, v in FILE_FORMATS.items() if k != file_format.name]
    names = [k for k, _ in items]
    position = names.index(before) if before in names else len(items)
    items.insert(position, (file_format.name, file_format))
    FILE_FORMATS.clear()
    FILE_FORMATS.update(items)
    return file_format


def register_model_source(source: ModelSource) -> ModelSource:
    """Add (or replace) a model source: ``SCHEME:NAME`` specifications load through it from then on."""
    MODEL_SOURCES[source.scheme] = source
    return source


def model_spec_help() -> str:
    """What ``--model`` accepts, from the registries."""
    return ", ".join([*(s.help for s in MODEL_SOURCES.values()), *(f.help for f in FILE_FORMATS.values())]) + "."


def _load_torchscript(path: Path, spec: str, arch: str | None, trust_checkpoint: bool) -> "LoadedModel":
    try:
        with warnings.catch_warnings():  # torch's deprecation notice is for library authors, not users
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise CheckpointError(f"cannot read TorchScript file {path}: {str(exc).splitlines()[0]}") from None
    return LoadedModel(module, spec, arch)


def _load_torch_save(path: Path, spec: str, arch: str | None, trust_checkpoint: bool) -> "LoadedModel":
    """A pickled module, a reference checkpoint or a plain state_dict (with ``arch``); the input
    shape is the architecture's."""
    payload = torch_load_safely(path, trust_checkpoint)
    if isinstance(payload, nn.Module):
        return LoadedModel(payload, spec, arch)
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(payload).__name__}, not a model or state_dict")
    metadata = {k: v for k, v in payload.items() if k not in ("state_dict", "optimizer")}
    if "state_dict" in payload:
        state_dict = payload["state_dict"]
        arch = arch or payload.get("arch")
    elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        state_dict = payload
        metadata = {}
    else:
        raise CheckpointError(f"checkpoint {path} has no 'state_dict' and is not a state_dict")
    if arch is None:
        raise CheckpointError(
            f"checkpoint {path} is a plain state_dict: give its architecture with --arch "
            f"({', '.join(sorted(ARCHITECTURES))})"
        )
    model, num_classes = model_from_state_dict(state_dict, arch)
    return LoadedModel(model, spec, arch, num_classes, ARCHITECTURES[arch].input_shape, None,
                       {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool, list, dict))})


def load_model_file(path: str | Path, spec: str | None = None, arch: str | None = None,
                    trust_checkpoint: bool = False) -> "LoadedModel":
    """Read a model file with the first registered format that recognises it (on the CPU).

    Args:
        path: the file.
        spec: the specification to record as its source (default: the path).
        arch: the architecture of a plain state_dict.
        trust_checkpoint: allow full unpickling.

    Returns:
        The :class:`LoadedModel`, with the file's SHA-256 unless the format set one.
    """
    path = Path(path)
    spec = str(path) if spec is None else spec
    file_format = next(f for f in FILE_FORMATS.values() if f.detect(path))
    loaded = file_format.load(path, spec, arch, trust_checkpoint)
    if loaded.sha256 is None:
        loaded.sha256 = file_sha256(path)
    return loaded


def _load_bundled(name: str, spec: str, arch: str | None, trust_checkpoint: bool) -> "LoadedModel":
    path = WEIGHTS_DIR / f"{name}.pt"
    if not path.is_file():
        raise CheckpointError(f"no bundled model {name!r}; available: {', '.join(bundled_names()) or 'none'}")
    return load_model_file(path, spec, arch, trust_checkpoint)


register_file_format(FileFormat("torchscript", is_torchscript, _load_torchscript, "a TorchScript file"), before=None)
register_file_format(FileFormat("torch.save", lambda path: True, _load_torch_save,
                                "a reference checkpoint or a state_dict (with --arch)"), before=None)
register_model_source(ModelSource("bundled", _load_bundled, "bundled:NAME"))


def load_checkpoint(spec: str | Path, arch: str | None = None, device: torch.device | str = "cpu",
                    trust_checkpoint: bool = False, weights: str | Path | None = None) -> LoadedModel:
    """Load a base model from a specification (see the module docstring).

    Args:
        spec: ``SCHEME:NAME`` of a registered model source, or a file.
        arch: the architecture of a plain state_dict.
        device: where the model goes (eval mode).
        trust_checkpoint: allow full unpickling (runs code from the file).
        weights: the weights of a ``torchvision:`` / ``timm:`` model (a state_dict file, or a
            torchvision weights name cached locally).

    Returns:
        The :class:`LoadedModel`; its module's specification, file hash and (pretrained models)
        weights and preprocessing are recorded (:mod:`robustcert.models.provenance`).
    """
    device = as_device(device)
    spec = str(spec)
    scheme, colon, name = spec.partition(":")
    source = MODEL_SOURCES.get(scheme) if colon else None
    if weights is not None and (source is None or not source.takes_weights):
        takers = " and ".join(f"{s.scheme}:NAME" for s in MODEL_SOURCES.values() if s.takes_weights)
        raise CheckpointError(f"--weights is for {takers or 'named architectures'}; {spec} holds its own weights")
    if source is not None:
        loaded = source.load(name, spec, arch, trust_checkpoint, **({"weights": weights} if source.takes_weights
                                                                   else {}))
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            hint = (f" (and {scheme}: is no model source; known: {', '.join(f'{s}:' for s in MODEL_SOURCES)})"
                    if colon and re.fullmatch(r"[a-z][a-z0-9+.-]+", scheme) else "")
            raise CheckpointError(f"checkpoint not found: {spec}{hint}")
        loaded = load_model_file(path, spec, arch, trust_checkpoint)
    loaded.module = loaded.module.to(device).eval()
    extra = {} if loaded.preprocessing is None else {"weights": loaded.weights,
                                                     "preprocessing": loaded.preprocessing.record()}
    record_provenance(loaded.module, loaded.source, loaded.sha256, loaded.arch, **extra)
    return loaded


def load_model(spec: str | Path, arch: str | None = None, device: torch.device | str = "cpu",
               trust_checkpoint: bool = False, weights: str | Path | None = None) -> nn.Module:
    """The base model of a specification, ready for :class:`robustcert.Smooth`: a module mapping
    [0, 1] inputs to logits, its normalisation (and a pretrained model's resize and crop) inside.

    ``load_model("timm:convnext_tiny", weights="convnext.safetensors")(x)`` equals the timm
    network on ``x`` resized, cropped and normalised per its ``pretrained_cfg``."""
    return load_checkpoint(spec, arch, device, trust_checkpoint, weights).module
