"""The users' own pretrained classifiers: torchvision, timm and Hugging Face models from local files.

Model specifications (``load_checkpoint`` / ``load_model``, CLI ``--model``), nothing downloaded:

* ``torchvision:NAME`` with ``weights=FILE`` (``--weights``): a state_dict (``.pth``/``.pt``
  through ``torch.load(weights_only=True)``, or ``.safetensors``) for ``torchvision.models.NAME``;
  or ``weights=ENUM`` (``IMAGENET1K_V2``, ``DEFAULT``, ...), one of torchvision's own weights,
  read from the local torch hub cache (``torch.hub.get_dir()/checkpoints``) when its file is
  there. The preprocessing is that of the weights' ``transforms()`` (the model's DEFAULT weights
  for a file);
* ``timm:NAME`` (``timm:NAME.TAG``) with ``weights=FILE``: ``timm.create_model(NAME,
  pretrained=False)`` and the state_dict; the preprocessing is the model's ``pretrained_cfg``
  (mean, std, input size, interpolation, crop_pct);
* ``hf:DIR``: a ``transformers`` image classifier saved with ``save_pretrained`` (config,
  weights, and the image processor's ``preprocessor_config.json``, which gives mean, std, size,
  resample and crop), loaded with ``local_files_only``.

Each model is returned as ``Sequential(Preprocess, net)`` (:mod:`robustcert.models.preprocess`):
``model(x)`` on a [0, 1] batch equals the network on the resized, cropped and normalised batch, so
the noise goes in before the preprocessing, as Cohen et al. (2019) put the normalisation. The
class count comes from the weights; the recipe and the weights' sha256 are recorded for the
run's sidecar.

Security, as for every checkpoint: state_dicts are read with ``weights_only=True`` or from
safetensors; a Hugging Face folder whose model needs ``trust_remote_code`` (an ``auto_map`` in
its configs), or whose weights are a pickle that ``weights_only`` refuses, is refused unless
``trust_checkpoint=True`` (``--trust-checkpoint``).

timm, transformers and safetensors are the ``zoo`` extra (``pip install "robustcert[zoo]"``).
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..engine import first_line
from ..errors import CheckpointError, install_hint, require_extra
from ..files import file_sha256
from .checkpoint import (
    ARCHITECTURES, FileFormat, LoadedModel, ModelSource, clean_keys, mismatch_summary, model_from_state_dict,
    register_file_format, register_model_source, torch_load_safely,
)
from .preprocess import INTERPOLATIONS, Preprocessing, with_preprocessing

ZOO_INSTALL = install_hint("zoo")


def import_extra(module: str, needed_for: str):
    """``importlib.import_module(module)``, or one MissingDependencyError line naming the zoo extra
    (:func:`robustcert.errors.require_extra`)."""
    return require_extra(module, "zoo", needed_for)

@dataclass
class ZooModel:
    """What a zoo loader found: the network (without preprocessing) and what to record."""

    net: nn.Module
    preprocessing: Preprocessing
    num_classes: int
    weights: str
    sha256: str


# --------------------------------------------------------------------------- state_dicts
def read_state_dict(path: Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or a ``torch.save`` file (``weights_only`` unless trusted).

    A ``{"state_dict": ...}`` or ``{"model": ...}`` checkpoint gives its inner state_dict;
    DataParallel's ``module.`` segments are dropped.
    """
    if path.suffix == ".safetensors":
        safetensors_torch = import_extra("safetensors.torch", "a .safetensors file")
        try:
            payload = safetensors_torch.load_file(str(path), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: {first_line(exc)}") from None
    else:
        payload = torch_load_safely(path, trust_checkpoint)
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"weights file {path} holds a {type(payload).__name__}, not a state_dict "
                              "(a mapping of parameter names to tensors)")
    return clean_keys(payload)


def classes_of(state_dict: dict, net: nn.Module, default: int) -> int:
    """The class count of a state_dict for ``net`` built with ``default`` classes: the first
    dimension of the tensors whose shape differs from the network's only there (the classifier)."""
    found = {int(state_dict[k].shape[0]) for k, v in net.state_dict().items()
             if k in state_dict and v.ndim >= 1 and v.shape[0] == default and state_dict[k].ndim == v.ndim
             and state_dict[k].shape[1:] == v.shape[1:] and state_dict[k].shape[0] != default}
    return found.pop() if len(found) == 1 else default


def net_with_weights(build: Callable[[int], nn.Module], default_classes: int, state_dict: dict, spec: str,
                     weights: str) -> tuple[nn.Module, int]:
    """Build the network for the state_dict's class count and load it strictly.

    The network is built on the meta device (no random initialisation, which takes seconds for a
    ViT) and takes the state_dict's tensors; one that computes buffers outside its state_dict
    is built again for real. Weights of another architecture are one CheckpointError line
    summarising the difference."""
    with torch.device("meta"):
        net = build(default_classes)
    num_classes = classes_of(state_dict, net, default_classes)
    if num_classes != default_classes:
        with torch.device("meta"):
            net = build(num_classes)
    mismatch = mismatch_summary(state_dict, net.state_dict())
    if mismatch:
        raise CheckpointError(f"weights {weights} do not fit {spec}: {mismatch}")
    net.load_state_dict(state_dict, strict=True, assign=True)
    if any(t.is_meta for t in (*net.parameters(), *net.buffers())):
        net = build(num_classes)
        net.load_state_dict(state_dict, strict=True)
    return net, num_classes


def unknown_name(source: str, name: str, known: list[str]) -> CheckpointError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return CheckpointError(f"unknown {source} model {name!r}{hint}")


def weights_file(spec: str, weights) -> Path:
    """The weights file of ``spec`` (CheckpointError when none is given or it does not exist)."""
    if weights is None:
        raise CheckpointError(f"{spec} needs --weights FILE (a state_dict: .pth, .pt or .safetensors); "
                              "robustcert never downloads weights")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {weights}")
    return path


def interpolation_name(value) -> str:
    """torchvision's name of an interpolation (an InterpolationMode, a timm string or a PIL
    resampling code); filters the tensor resize cannot apply become bicubic."""
    pil_codes = {0: "nearest", 2: "bilinear", 3: "bicubic"}
    if isinstance(value, int):
        return pil_codes.get(value, "bicubic")
    name = str(getattr(value, "value", value)).lower()
    return name if name in INTERPOLATIONS else "bicubic"


# --------------------------------------------------------------------------- torchvision
TORCHVISION_DEFAULT_CLASSES = 1000
#: torchvision's builders switch these on when loading their own weights (Inception-style input transform).
TORCHVISION_WEIGHT_OPTIONS = {"inception_v3": {"transform_input": True}, "googlenet": {"transform_input": True}}


def torchvision_preprocessing(weights_enum) -> Preprocessing:
    """The recipe of a torchvision weights entry (``weights.transforms()``: resize, crop, mean, std)."""
    transform = weights_enum.transforms()
    return Preprocessing(tuple(transform.mean), tuple(transform.std), (3, transform.crop_size[0],
                         transform.crop_size[0]), interpolation_name(transform.interpolation),
                         int(transform.resize_size[0]), source=f"torchvision {weights_enum}.transforms()")


def hub_cached_file(weights_enum) -> tuple[Path, str]:
    """The torch hub cache file of a torchvision weights entry (never downloaded) and its sha256,
    checked against the hash prefix in the file's name (``resnet50-11ad3fa6.pth``), as torch.hub does."""
    name = Path(weights_enum.url.split("?")[0]).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not path.is_file():
        raise CheckpointError(f"{weights_enum} is not in the local torch hub cache ({path}); robustcert never "
                              "downloads: put the file there, or give a weights file")
    digest = file_sha256(path)
    prefix = re.search(r"-([0-9a-f]{8,})\.", path.name)
    if prefix and not digest.startswith(prefix.group(1)):
        raise CheckpointError(f"{path} is not {weights_enum}'s file: its sha256 does not start with {prefix.group(1)}")
    return path, digest


def load_torchvision(name: str, weights=None, trust_checkpoint: bool = False) -> ZooModel:
    """``torchvision:NAME`` with a state_dict file or a cached torchvision weights name."""
    from torchvision import models

    known = models.list_models(module=models)
    if name not in known:
        raise unknown_name("torchvision classification", name, known)
    entries = models.get_model_weights(name)
    spec, options = f"torchvision:{name}", {}
    if weights is not None and str(weights) in entries.__members__:
        entry = entries[str(weights)]
        path, digest = hub_cached_file(entry)
        options = TORCHVISION_WEIGHT_OPTIONS.get(name, {})
        weights = str(entry)  # recorded as the entry DEFAULT stands for in this torchvision
    else:
        if weights is not None and not Path(weights).expanduser().is_file() and not re.search(r"[/\\.]", str(weights)):
            raise CheckpointError(f"{weights!r} is neither a file nor a weights name of {spec} "
                                  f"({', '.join(entries.__members__)})")
        entry, path = entries.DEFAULT, weights_file(spec, weights)
        digest = file_sha256(path)
    net, num_classes = net_with_weights(lambda k: models.get_model(name, weights=None, num_classes=k, **options),
                                        TORCHVISION_DEFAULT_CLASSES, read_state_dict(path, trust_checkpoint), spec,
                                        str(weights))
    return ZooModel(net, torchvision_preprocessing(entry), num_classes, str(weights), digest)


# --------------------------------------------------------------------------- timm
def timm_preprocessing(net: nn.Module) -> Preprocessing:
    """The recipe of a timm model's ``pretrained_cfg`` (via ``timm.data.resolve_data_config``)."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=net)
    return Preprocessing.from_crop_pct(config["mean"], config["std"], config["input_size"],
                                       interpolation_name(config.get("interpolation", "bicubic")),
                                       config.get("crop_pct"), source="timm pretrained_cfg")


def load_timm(name: str, weights=None, trust_checkpoint: bool = False) -> ZooModel:
    """``timm:NAME`` (or ``timm:NAME.TAG``) with a state_dict file."""
    timm = import_extra("timm", "timm:NAME")
    spec = f"timm:{name}"
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        raise CheckpointError(f"{spec}: give a timm model name and --weights FILE (robustcert never downloads)")
    architecture = name.split(".", 1)[0]
    if not timm.is_model(architecture):
        raise unknown_name("timm", architecture, timm.list_models())
    path = weights_file(spec, weights)

    def build(num_classes: int | None) -> nn.Module:
        try:
            return timm.create_model(name, pretrained=False, **({} if num_classes is None else
                                                                {"num_classes": num_classes}))
        except RuntimeError as exc:  # an unknown pretrained tag
            raise CheckpointError(f"{spec}: {first_line(exc)}") from None

    with torch.device("meta"):
        default = int(build(None).num_classes)
    net, num_classes = net_with_weights(build, default, read_state_dict(path, trust_checkpoint), spec, str(weights))
    return ZooModel(net, timm_preprocessing(net), num_classes, str(weights), file_sha256(path))


# --------------------------------------------------------------------------- Hugging Face transformers
class HFLogits(nn.Module):
    """A transformers image classifier as a plain classifier: ``pixel_values -> logits``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def hf_preprocessing(processor: dict, channels: int, image_size=None) -> Preprocessing:
    """The recipe of a Hugging Face image processor's config.

    ``size`` {height, width} resizes straight to that size (then ``crop_size`` if
    ``do_center_crop``); {shortest_edge} keeps the aspect ratio and crops the centre (ConvNeXt's
    processor: to shortest_edge after a resize to shortest_edge / crop_pct below 384 pixels).
    Inputs are already in [0, 1], so ``do_rescale`` (1/255) is not applied again: the scale is
    255 * rescale_factor (1 for the usual 1/255).
    """
    normalize = processor.get("do_normalize", True)
    mean = processor.get("image_mean") if normalize else [0.0] * channels
    std = processor.get("image_std") if normalize else [1.0] * channels
    if mean is None or std is None:
        raise CheckpointError("the image processor's config has no image_mean / image_std")
    mean = [float(mean)] * channels if isinstance(mean, (int, float)) else [float(v) for v in mean]
    std = [float(std)] * channels if isinstance(std, (int, float)) else [float(v) for v in std]
    scale = 255.0 * float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 1.0
    interpolation = interpolation_name(processor.get("resample", 2))
    size, crop = processor.get("size") or {}, processor.get("crop_size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crops = processor.get("do_center_crop") and "height" in crop
    if not processor.get("do_resize", True) or not size:
        if image_size is None:
            raise CheckpointError("the image processor does not resize and the model config gives no image_size")
        side = image_size if isinstance(image_size, int) else image_size[0]
        input_hw, resize = (side, side), None
    elif "height" in size:
        resize = (int(size["height"]), int(size["width"]))
        input_hw, resize = ((int(crop["height"]), int(crop["width"])), resize) if crops else (resize, None)
    elif "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        if processor.get("crop_pct") is not None:  # ConvNeXt's rule
            input_hw, resize = (edge, edge), (int(edge / processor["crop_pct"]) if edge < 384 else None)
        elif crops:
            input_hw, resize = (int(crop["height"]), int(crop["width"])), edge
        else:
            input_hw, resize = (edge, edge), edge
    else:
        raise CheckpointError(f"unsupported image processor size {size}")
    return Preprocessing(tuple(mean), tuple(std), (channels, *input_hw), interpolation, resize, scale,
                         source=f"{processor.get('image_processor_type', 'image processor')} config")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {first_line(exc)}") from None


def folder_sha256(folder: Path, names: list[str]) -> str:
    """sha256 over the listed files' names and sha256s (the weights, config and processor config)."""
    lines = "".join(f"{name}:{file_sha256(folder / name)}\n" for name in sorted(names))
    return hashlib.sha256(lines.encode()).hexdigest()


def load_hf(location: str, weights=None, trust_checkpoint: bool = False) -> ZooModel:
    """``hf:DIR``: AutoModelForImageClassification and AutoImageProcessor from a local folder."""
    spec = f"hf:{location}"
    if weights is not None:
        raise CheckpointError(f"--weights does not apply to {spec}: the folder holds its weights")
    folder = Path(location).expanduser()
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{spec}: not a Hugging Face model folder (no config.json); save one with "
                              "model.save_pretrained(DIR) and processor.save_pretrained(DIR)")
    if not (folder / "preprocessor_config.json").is_file():
        raise CheckpointError(f"{spec}: no preprocessor_config.json (the image processor's mean, std and size); "
                              "save it with AutoImageProcessor...save_pretrained(DIR)")
    configs = (_json(folder / "config.json"), _json(folder / "preprocessor_config.json"))
    if any("auto_map" in config for config in configs) and not trust_checkpoint:
        raise CheckpointError(f"{spec} needs trust_remote_code (its config names code in the folder, which would "
                              "run); pass --trust-checkpoint only if you trust its source")
    safe = sorted(p.name for p in folder.glob("*.safetensors")) + sorted(p.name for p in folder.glob(
        "*.safetensors.index.json"))
    pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.bin.index.json"))
    if not safe and not pickled:
        raise CheckpointError(f"{spec}: no weights in the folder (model.safetensors or pytorch_model.bin)")
    transformers = import_extra("transformers", "hf:DIR")
    with quiet(transformers):
        model = _from_pretrained(transformers, folder, spec, use_safetensors=bool(safe),
                                 trust_checkpoint=trust_checkpoint)
        try:  # the processor class fills in its defaults for what the saved config leaves out
            processor = transformers.AutoImageProcessor.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust_checkpoint).to_dict()
        except Exception as exc:
            raise CheckpointError(f"cannot load the image processor of {spec}: {first_line(exc)}") from None
    channels = int(getattr(model.config, "num_channels", 3))
    preprocessing = hf_preprocessing(processor, channels, getattr(model.config, "image_size", None))
    digest = folder_sha256(folder, ["config.json", "preprocessor_config.json", *(safe or pickled)])
    return ZooModel(HFLogits(model), preprocessing, int(model.config.num_labels), "", digest)


@contextlib.contextmanager
def quiet(transformers):
    """transformers' warnings and progress bars off (one error line is the rule), restored after."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _from_pretrained(transformers, folder: Path, spec: str, use_safetensors: bool, trust_checkpoint: bool):
    """The model, loaded strictly: any missing, unexpected or resized weight is an error (transformers
    would initialise missing weights at random and only warn)."""
    try:
        model, info = transformers.AutoModelForImageClassification.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_checkpoint, use_safetensors=use_safetensors,
            weights_only=not trust_checkpoint, output_loading_info=True)
    except Exception as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise CheckpointError(f"{spec}: its weights are a pickle that needs full unpickling, which can run "
                                  "arbitrary code; pass --trust-checkpoint only if you trust its source") from None
        raise CheckpointError(f"cannot load {spec}: {first_line(exc)}") from None
    problems = {kind: info.get(kind) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    problems = {kind: sorted(map(str, keys)) for kind, keys in problems.items() if keys}
    if problems:
        raise CheckpointError(f"the weights in {spec} do not fit its config: " + ", ".join(
            f"{len(keys)} {kind.replace('_', ' ')} (e.g. {keys[0]})" for kind, keys in problems.items()))
    return model.float().eval()  # saved in half precision or not, the engine feeds float32 (autocast aside)


# --------------------------------------------------------------------------- the registered sources
def as_loaded(found: ZooModel, spec: str) -> LoadedModel:
    """The base classifier ``Sequential(Preprocess, net)`` and what the sidecar records."""
    return LoadedModel(with_preprocessing(found.net.eval(), found.preprocessing), spec, None, found.num_classes,
                       None, found.sha256, preprocessing=found.preprocessing, weights=found.weights or None)


def zoo_source(scheme: str, loader: Callable[..., ZooModel], help: str, takes_weights: bool) -> ModelSource:
    """A :class:`ModelSource` for ``SCHEME:LOCATION`` that loads with ``loader(location, weights, trust)``."""
    def load(location: str, spec: str, arch: str | None, trust_checkpoint: bool, weights=None) -> LoadedModel:
        if arch is not None:
            raise CheckpointError(f"--arch is for plain state_dicts; {spec} names its architecture itself")
        if not location:
            raise CheckpointError(f"{spec}: give a name after '{scheme}:' (e.g. torchvision:resnet50, "
                                  "timm:convnext_tiny, hf:DIR)")
        return as_loaded(loader(location, weights, trust_checkpoint), spec)

    return ModelSource(scheme, load, help, takes_weights)


def load_safetensors(path: Path, spec: str, arch: str | None, trust_checkpoint: bool) -> LoadedModel:
    """A ``.safetensors`` state_dict for a registered architecture (``--arch``), as for ``torch.save`` ones."""
    if arch is None:
        raise CheckpointError(f"{path} is a plain state_dict: give its architecture with --arch "
                              f"({', '.join(sorted(ARCHITECTURES))})")
    model, num_classes = model_from_state_dict(read_state_dict(path), arch)
    return LoadedModel(model, spec, arch, num_classes, ARCHITECTURES[arch].input_shape)


register_model_source(zoo_source("torchvision", load_torchvision, "torchvision:NAME (with --weights)", True))
register_model_source(zoo_source("timm", load_timm, "timm:NAME (with --weights)", True))
register_model_source(zoo_source("hf", load_hf, "hf:DIR (a transformers save_pretrained folder)", False))
register_file_format(FileFormat("safetensors", lambda path: path.suffix == ".safetensors", load_safetensors,
                                "a .safetensors state_dict (with --arch)"))


def random_zoo_model(spec: str) -> ZooModel:
    """A torchvision or timm architecture with random weights (its default class count) and its
    preprocessing, for speed measurements (``robustcert bench``); certifying random weights
    means nothing, so ``load_model`` never builds one."""
    from torchvision import models

    scheme, _, name = spec.partition(":")
    if scheme == "torchvision":
        if name not in models.list_models(module=models):
            raise unknown_name("torchvision classification", name, models.list_models(module=models))
        net = models.get_model(name, weights=None, num_classes=TORCHVISION_DEFAULT_CLASSES)
        preprocessing = torchvision_preprocessing(models.get_model_weights(name).DEFAULT)
        return ZooModel(net.eval(), preprocessing, TORCHVISION_DEFAULT_CLASSES, "random", "")
    if scheme == "timm":
        timm = import_extra("timm", "timm:NAME")
        if not timm.is_model(name.split(".", 1)[0]):
            raise unknown_name("timm", name, timm.list_models())
        net = timm.create_model(name, pretrained=False)
        return ZooModel(net.eval(), timm_preprocessing(net), int(net.num_classes), "random", "")
    raise CheckpointError(f"random weights are built for torchvision:NAME and timm:NAME models, not {spec}")
