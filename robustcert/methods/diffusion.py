"""Denoise-then-classify smoothing with an off-the-shelf diffusion model.

Carlini, Tramer, Dvijotham, Rice, Sun, Kolter, "(Certified!!) Adversarial Robustness for Free!",
ICLR 2023. The base classifier of randomized smoothing becomes

    f(x + delta) = classifier(denoise(x + delta)),     delta ~ N(0, sigma^2 I) in pixel space,

where ``denoise`` is one step of a DDPM noise predictor eps_theta(x_t, t), so any classifier
trained without noise can be certified with :class:`robustcert.Smooth` (Cohen et al. 2019).

The denoising step (pixel range [lo, hi], diffusion space [-1, 1]):

    scale   s = 2 / (hi - lo)                    # pixel noise sigma is noise s*sigma in [-1,1]
    t*      = min { t : (1 - abar_t) / abar_t >= (s sigma)^2 }      (abar = alphas_cumprod)
    x_t     = sqrt(abar_t*) * (s (x + delta - lo) - 1)
    x0_hat  = clip((x_t - sqrt(1 - abar_t*) eps_theta(x_t, t*)) / sqrt(abar_t*), -1, 1)
    output  = lo + (x0_hat + 1) / s

For data in [0,1], s = 2 and the threshold is 4 sigma^2 (the paper's choice). With this t*,
sqrt(abar) * s * sigma <= sqrt(1 - abar): the noise in x_t is at most the level the model was
trained to remove at t*. The engine has already added delta: the denoiser adds no noise.

Soundness: the denoiser is a deterministic function of x + delta (one-shot, or the deterministic
DDIM chain below), so ``classifier o denoise`` is just another base classifier and the Cohen et
al. certificate holds for any t*, any network weights and any number of steps; t* only affects
accuracy. The certified radius is in the pixel units of the input given to the denoiser.

Multi-step (``multistep=True``): the deterministic DDIM reverse chain (Song et al. 2021, eta = 0)
from t* to 0 over ``steps`` timesteps (default: every timestep, t* + 1 model calls):

    x_{t'} = sqrt(abar_t') x0_hat(x_t, t) + sqrt(1 - abar_t') eps_theta(x_t, t),   abar_{-1} = 1

No noise is injected, so the chain stays a deterministic function of x + delta.

Noise-level-conditioned base models (the rRCM family, Lei et al. ICLR 2025: one network that
receives the noise level instead of a denoiser + classifier pair): give the model a true
attribute ``takes_sigma``; the engine then calls ``model(batch, sigma)`` with the smoothing sigma::

    class Conditioned(torch.nn.Module):
        takes_sigma = True
        def forward(self, x, sigma):          # sigma: the pixel-space noise level of Smooth
            level = nearest_grid_level(2 * sigma)
            return self.net(x, level)
    Smooth(Conditioned(), num_classes=10, sigma=0.25).certify(x, n=10_000)

Example (diffusers UNet2DModel + DDPMScheduler saved with ``save_pretrained``, read offline)::

    from robustcert import Smooth, load_model
    from robustcert.methods.diffusion import denoised_classifier, load_denoiser
    denoiser = load_denoiser("bundled:digits-ddpm", sigma=0.25)        # or a local folder
    model = denoised_classifier(denoiser, load_model("bundled:digits-0.00"))
    Smooth(model, num_classes=10, sigma=0.25).certify(x, n0=100, n=10_000, alpha=0.001)

diffusers is imported only by :func:`load_denoiser` (the ``diffusion`` extra: ``pip install -e ".[diffusion]"``);
:class:`DiffusionDenoiser` accepts any callable ``unet(x_t, timesteps)`` returning a tensor or an
object with ``.sample``, and any scheduler object with ``alphas_cumprod``.
"""
from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.provenance import provenance, record_provenance
from ..errors import (
    CheckpointError, InvalidArgumentError, MissingDependencyError, ShapeError, check_count, check_sigma,
    install_hint,
)

INSTALL_HINT = install_hint("diffusion")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models" / "weights"
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


# ----------------------------------------------------------------------------- the formulas
def diffusion_noise_scale(data_range: Sequence[float] = (0.0, 1.0)) -> float:
    """s = 2 / (hi - lo): the factor mapping pixel units of ``data_range`` to [-1, 1] units."""
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"data_range must be a pair (lo, hi), got {data_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise InvalidArgumentError(f"data_range must be finite with hi > lo, got {data_range!r}")
    return 2.0 / (hi - lo)


def as_alphas_cumprod(scheduler) -> np.ndarray:
    """abar_t as float64 from a scheduler (``.alphas_cumprod``) or a sequence; checked."""
    values = getattr(scheduler, "alphas_cumprod", scheduler)
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    try:
        abar = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InvalidArgumentError("the scheduler has no usable alphas_cumprod") from None
    if abar.size == 0 or not np.all(np.isfinite(abar)) or np.any(abar <= 0) or np.any(abar > 1):
        raise InvalidArgumentError("alphas_cumprod must be non-empty values in (0, 1]")
    if np.any(np.diff(abar) > 0):
        raise InvalidArgumentError("alphas_cumprod must be non-increasing in t")
    return abar


def select_timestep(alphas_cumprod, sigma: float, data_range: Sequence[float] = (0.0, 1.0)) -> int:
    """t* = min { t : (1 - abar_t) / abar_t >= (s sigma)^2 }, s = 2 / (hi - lo) (Carlini et al. 2023).

    For [0,1] data the threshold is 4 sigma^2; linear schedule T = 1000: sigma 0.25 -> 145,
    0.5 -> 259, 1.0 -> 396.
    """
    sigma = check_sigma(sigma)
    abar = as_alphas_cumprod(alphas_cumprod)
    target = (diffusion_noise_scale(data_range) * sigma) ** 2
    ratio = (1.0 - abar) / abar
    reached = np.nonzero(ratio >= target)[0]
    if reached.size == 0:
        raise InvalidArgumentError(
            f"sigma={sigma} is beyond the diffusion schedule: its largest noise level "
            f"sqrt((1-abar)/abar) = {math.sqrt(ratio[-1]):.4g} in [-1,1] units is below {math.sqrt(target):.4g}"
        )
    return int(reached[0])


def _prediction_type(scheduler) -> str:
    config = getattr(scheduler, "config", None)
    kind = getattr(config, "prediction_type", None) or (config.get("prediction_type") if isinstance(config, dict) else None)
    kind = kind or "epsilon"
    if kind not in PREDICTION_TYPES:
        raise InvalidArgumentError(f"unsupported prediction_type {kind!r} (supported: {', '.join(PREDICTION_TYPES)})")
    return kind


def _expected_input_shape(unet) -> tuple[int | None, tuple[int, int] | None]:
    """(channels, (H, W)) declared by a diffusers model's config, None where unknown."""
    config = getattr(unet, "config", None)
    if config is None:
        return None, None
    channels = getattr(config, "in_channels", None)
    size = getattr(config, "sample_size", None)
    if isinstance(size, int):
        size = (size, size)
    elif size is not None:
        size = tuple(int(v) for v in size)
    return channels, size


# ----------------------------------------------------------------------------- the denoiser
class DiffusionDenoiser(nn.Module):
    """x + delta (pixel space) -> denoised image in the same range, by a DDPM noise predictor.

    Args:
        unet: the noise predictor, called as ``unet(x_t, timesteps)`` with ``timesteps`` a long
            tensor (B,); returns a tensor or an object with ``.sample`` (diffusers
            ``UNet2DModel``). Outputs with 2C channels (learned variance) use the first C.
        scheduler: anything with ``alphas_cumprod`` (diffusers ``DDPMScheduler``); its
            ``config.prediction_type`` (epsilon, sample, v_prediction) is honoured.
        sigma: the smoothing noise level in pixel units; picks t* (see the module docstring).
        multistep: run the deterministic DDIM chain from t* to 0 instead of the one-shot estimate.
        data_range: (lo, hi), the pixel range of the inputs and outputs (the classifier's range).
        steps: model calls of the multi-step chain (default t* + 1: every timestep); ignored
            when ``multistep`` is False.

    Attributes: ``t_star``, ``sigma``, ``timesteps`` (the timesteps the forward pass visits).
    """

    def __init__(self, unet: Callable, scheduler, sigma: float, multistep: bool = False,
                 data_range: Sequence[float] = (0.0, 1.0), steps: int | None = None):
        super().__init__()
        if not callable(unet):
            raise InvalidArgumentError("unet must be callable as unet(x_t, timesteps)")
        self.unet = unet  # registered as a submodule when it is an nn.Module
        self.sigma = check_sigma(sigma)
        self.data_range = tuple(float(v) for v in data_range)
        self.scale = diffusion_noise_scale(self.data_range)
        self.alphas_cumprod = as_alphas_cumprod(scheduler)
        self.prediction_type = _prediction_type(scheduler)
        self.t_star = select_timestep(self.alphas_cumprod, self.sigma, self.data_range)
        self.multistep = bool(multistep)
        self.steps = steps if self.multistep else None
        if self.multistep:
            steps = self.t_star + 1 if steps is None else check_count(steps, "steps")
            grid = np.linspace(self.t_star, 0, min(steps, self.t_star + 1))
            self.timesteps = sorted({int(round(t)) for t in grid}, reverse=True)
        else:
            self.timesteps = [self.t_star]
        self.expected_channels, self.expected_size = _expected_input_shape(unet)

    def extra_repr(self) -> str:
        return (f"sigma={self.sigma}, t_star={self.t_star}, multistep={self.multistep}, "
                f"model_calls={len(self.timesteps)}, data_range={self.data_range}")

    def check_input_shape(self, shape: Sequence[int]) -> None:
        """Raise ShapeError when (C, H, W) does not match what the diffusion model declares."""
        shape = tuple(int(v) for v in shape)
        if len(shape) != 3:
            raise ShapeError(f"the diffusion denoiser takes images (C, H, W), got input shape {shape}")
        if self.expected_channels is not None and shape[0] != self.expected_channels:
            raise ShapeError(f"the diffusion model takes {self.expected_channels}-channel images, got {shape[0]} channels")
        if self.expected_size is not None and shape[1:] != self.expected_size:
            raise ShapeError(
                f"the diffusion model was trained on {self.expected_size[0]}x{self.expected_size[1]} images, "
                f"got {shape[1]}x{shape[2]}: give it inputs of its own size (resize after denoising, not before)"
            )

    def predict_clean(self, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat clipped to [-1,1], eps_hat) from one model call at timestep t."""
        abar = float(self.alphas_cumprod[t])
        timesteps = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        out = self.unet(x_t, timesteps)
        out = getattr(out, "sample", out)
        if isinstance(out, (tuple, list)):
            out = out[0]
        channels = x_t.shape[1]
        if out.shape[1] == 2 * channels:  # learned-variance models: mean prediction first
            out = out[:, :channels]
        out = out.to(x_t.dtype)
        root_abar, root_rest = math.sqrt(abar), math.sqrt(1.0 - abar)
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (x_t - root_rest * eps) / root_abar
        elif self.prediction_type == "sample":
            x0 = out
            eps = (x_t - root_abar * x0) / root_rest
        else:  # v_prediction: v = sqrt(abar) eps - sqrt(1 - abar) x0
            x0 = root_abar * x_t - root_rest * out
            eps = root_rest * x_t + root_abar * out
        return x0.clamp(-1.0, 1.0), eps

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        if noisy.ndim != 4:
            raise ShapeError(f"the diffusion denoiser takes batches (B, C, H, W), got shape {tuple(noisy.shape)}")
        self.check_input_shape(noisy.shape[1:])
        lo = self.data_range[0]
        abar = float(self.alphas_cumprod[self.t_star])
        x_t = math.sqrt(abar) * ((noisy - lo) * self.scale - 1.0)
        x0 = x_t
        for position, t in enumerate(self.timesteps):
            x0, eps = self.predict_clean(x_t, t)
            if position + 1 < len(self.timesteps):  # deterministic DDIM step to the next timestep
                abar_next = float(self.alphas_cumprod[self.timesteps[position + 1]])
                x_t = math.sqrt(abar_next) * x0 + math.sqrt(1.0 - abar_next) * eps
        return lo + (x0 + 1.0) / self.scale


# ----------------------------------------------------------------------------- composition
class DenoisedClassifier(nn.Module):
    """classifier(resize(denoiser(x))): one base model for Smooth (or any method).

    It declares ``takes_sigma`` so the engine passes the smoothing sigma; a sigma other than the
    one the denoiser was built for only warns (certificates stay sound, accuracy drops).
    """

    takes_sigma = True

    def __init__(self, denoiser: Callable, classifier: Callable, resize_to: int | Sequence[int] | None = None):
        super().__init__()
        if not callable(denoiser) or not callable(classifier):
            raise InvalidArgumentError("denoiser and classifier must be callables (e.g. torch modules)")
        self.denoiser = denoiser
        self.classifier = classifier
        if resize_to is not None:
            size = (resize_to, resize_to) if isinstance(resize_to, int) else tuple(int(v) for v in resize_to)
            if len(size) != 2 or min(size) < 1:
                raise InvalidArgumentError(f"resize_to must be an int or (height, width), got {resize_to!r}")
            resize_to = size
        self.resize_to = resize_to
        self._warned = False

    def settings(self) -> dict:
        """The denoiser's part of a run's parameters: its specification and weights hash (as loaded),
        t* and the denoising mode."""
        record = provenance(self.denoiser)
        return {
            "denoiser": record["spec"],
            "denoiser_t_star": getattr(self.denoiser, "t_star", None),
            "denoiser_multistep": getattr(self.denoiser, "multistep", None),
            "denoiser_steps": getattr(self.denoiser, "steps", None),
            "denoiser_sha256": record["sha256"],
        }

    def forward(self, x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        own_sigma = getattr(self.denoiser, "sigma", None)
        if sigma is not None and own_sigma is not None and not math.isclose(sigma, own_sigma) and not self._warned:
            self._warned = True
            warnings.warn(
                f"the denoiser was built for sigma={own_sigma} but the smoothing noise is sigma={sigma}: "
                "certificates stay sound but accuracy suffers; build the denoiser with the same sigma",
                RuntimeWarning, stacklevel=2,
            )
        images = self.denoiser(x)
        if self.resize_to is not None and tuple(images.shape[-2:]) != self.resize_to:
            images = F.interpolate(images, size=self.resize_to, mode="bilinear", align_corners=False, antialias=True)
        return self.classifier(images)


def denoised_classifier(denoiser: Callable, classifier: Callable,
                        resize_to: int | Sequence[int] | None = None) -> DenoisedClassifier:
    """Compose a denoiser and a classifier into one base model (Carlini et al. 2023).

    ``resize_to`` (int or (H, W)): resize the denoised images to the classifier's input size
    (bilinear, antialiased). Noise is added at the denoiser's resolution, so radii are in its
    pixel units.
    """
    return DenoisedClassifier(denoiser, classifier, resize_to)


# ----------------------------------------------------------------------------- a new model
#: Block widths of a new noise predictor (``unet_config``): three levels, 28x28 -> 14x14 -> 7x7 for
#: Fashion-MNIST; about 0.64M parameters and 5.0 ms per denoised and classified sample on one CPU
#: thread (results/fashion-mnist/README.md, denoised smoothing).
DEFAULT_CHANNELS = (16, 32, 64)


def unet_config(input_shape: Sequence[int], channels: Sequence[int] = DEFAULT_CHANNELS) -> dict:
    """The diffusers ``UNet2DModel`` configuration of a new DDPM noise predictor eps_theta(x_t, t).

    One ResNet block per level (``len(channels)`` levels, each halving the resolution but the
    last), no attention but the 1-head attention of the middle block at the lowest resolution,
    group norms of min(8, gcd(channels)) groups. The height and width must be divisible by
    2^(levels - 1), so that the skip connections meet (28x28: at most 3 levels).
    """
    shape = tuple(int(v) for v in input_shape)
    widths = tuple(int(v) for v in channels)
    if len(shape) != 3 or min(shape) < 1:
        raise ShapeError(f"a denoiser takes images (C, H, W), got input shape {shape}")
    if not widths or min(widths) < 1:
        raise InvalidArgumentError(f"channels must be positive block widths, got {channels!r}")
    factor = 2 ** (len(widths) - 1)
    if shape[1] % factor or shape[2] % factor:
        raise ShapeError(f"{len(widths)} levels halve {shape[1]}x{shape[2]} images {len(widths) - 1} times: the "
                         f"height and width must be divisible by {factor} (give fewer channels)")
    levels = len(widths)
    return dict(sample_size=(shape[1], shape[2]) if shape[1] != shape[2] else shape[1], in_channels=shape[0],
                out_channels=shape[0], layers_per_block=1, block_out_channels=widths,
                down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
                norm_num_groups=min(8, math.gcd(*widths)))


def new_ddpm(input_shape: Sequence[int], channels: Sequence[int] = DEFAULT_CHANNELS, seed: int = 0,
             num_train_timesteps: int = 1000):
    """(UNet2DModel, DDPMScheduler): an untrained noise predictor (:func:`unet_config`, initial weights
    from ``seed``) and the linear schedule of Ho et al. 2020 (T = 1000, beta 1e-4 .. 0.02)."""
    diffusers = import_diffusers()
    config = unet_config(input_shape, channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = diffusers.UNet2DModel(**config)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear")
    return unet, scheduler


# ----------------------------------------------------------------------------- loading
def import_diffusers():
    """diffusers, imported offline (HF_HUB_OFFLINE=1); MissingDependencyError if absent."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import diffusers
    except ImportError:
        raise MissingDependencyError(
            f"the diffusion denoiser needs the diffusers package: {INSTALL_HINT}"
        ) from None
    return diffusers


def resolve_denoiser_path(spec: str | Path) -> Path:
    """The local folder of a denoiser spec: ``bundled:NAME`` or a path (never a hub id)."""
    spec = str(spec)
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        path = BUNDLED_DIR / name
        if not name or not (path / "unet").is_dir():
            available = sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "unet").is_dir())
            raise CheckpointError(f"no bundled denoiser {name!r}; available: {', '.join(available) or 'none'}")
        return path
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"denoiser folder not found: {spec} (a local save_pretrained folder; nothing is downloaded)")
    return path


def _component_dirs(path: Path) -> tuple[Path, Path]:
    """(unet folder, scheduler folder): pipeline layout (unet/, scheduler/) or one flat folder."""
    if (path / "unet").is_dir():
        return path / "unet", path / "scheduler"
    return path, path


def denoiser_digest(path: Path) -> str:
    """sha256 over the weight files of a denoiser folder (provenance for result sidecars)."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if file.is_file() and file.suffix in (".safetensors", ".bin", ".json"):
            digest.update(file.relative_to(path).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def load_denoiser(spec: str | Path, sigma: float, multistep: bool = False, data_range: Sequence[float] = (0.0, 1.0),
                  steps: int | None = None, device: torch.device | str = "cpu") -> DiffusionDenoiser:
    """A DiffusionDenoiser from a local diffusers folder (UNet2DModel + DDPMScheduler), offline.

    ``spec``: ``bundled:digits-ddpm`` or a folder written by ``save_pretrained``, either in the
    pipeline layout (``unet/`` and ``scheduler/`` subfolders) or flat (``config.json``, weights
    and ``scheduler_config.json`` in one folder).
    """
    path = resolve_denoiser_path(spec)
    diffusers = import_diffusers()
    unet_dir, scheduler_dir = _component_dirs(path)
    try:
        # low_cpu_mem_usage=False: no accelerate needed (and no warning about it) for small models
        unet = diffusers.UNet2DModel.from_pretrained(unet_dir, local_files_only=True, low_cpu_mem_usage=False)
        scheduler = diffusers.DDPMScheduler.from_pretrained(scheduler_dir, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load the diffusion model from {path}: {message}") from None
    denoiser = DiffusionDenoiser(unet.to(device).eval(), scheduler, sigma, multistep, data_range, steps)
    record_provenance(denoiser, str(spec), denoiser_digest(path))
    return denoiser


def with_denoiser(loaded, spec: str | Path | None, sigma: float, input_shape: Sequence[int],
                  device: torch.device | str = "cpu", multistep: bool = False, steps: int | None = None):
    """Put a denoiser in front of a loaded classifier (the CLI's ``--denoiser``).

    Returns the LoadedModel of the composed base model (taking ``input_shape`` inputs, resized to
    the classifier's input size when it declares another one); ``spec=None`` returns ``loaded``
    unchanged. ``multistep``/``steps``: the deterministic DDIM chain from t* (see
    DiffusionDenoiser) instead of one-shot denoising. What a run records about the denoiser:
    :meth:`DenoisedClassifier.settings`.
    """
    if spec is None:
        return loaded
    from ..models.checkpoint import LoadedModel

    denoiser = load_denoiser(spec, sigma, multistep=multistep, steps=steps, device=device)
    input_shape = tuple(int(v) for v in input_shape)
    denoiser.check_input_shape(input_shape)
    resize_to = None
    if loaded.input_shape is not None and tuple(loaded.input_shape) != input_shape:
        if loaded.input_shape[0] != input_shape[0]:
            raise ShapeError(
                f"the classifier takes {loaded.input_shape[0]}-channel images, the data has {input_shape[0]} channels"
            )
        resize_to = tuple(loaded.input_shape[1:])
    model = denoised_classifier(denoiser, loaded.module, resize_to).to(device).eval()
    composed = LoadedModel(model, loaded.source, loaded.arch, loaded.num_classes, input_shape, loaded.sha256,
                           {**loaded.metadata, **model.settings()})
    return composed
