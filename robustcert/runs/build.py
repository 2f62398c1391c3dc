"""Build a smoothed classifier from specifications: what ``robustcert certify`` / ``predict`` do
with their ``--model``, ``--data``, ``--method`` and method options, as one Python call.

    smoothed, dataset, options = build_smoothed("cohen", "bundled:digits-0.25", sigma=0.25, data="digits")
    certify_dataset(smoothed, dataset, "out.tsv", **options)
    build_smoothed("cohen", "bundled:digits-0.25", sigma=0.25, noise="laplace")      # l1 certificates
    build_smoothed("ablation", "bundled:digits-ablation-k16", keep=16)                 # l0 (pixels)

The methods are one registry (:data:`METHODS`, :func:`register_method`): each
:class:`MethodSpec` holds the method's builder, its options (:class:`MethodOption`, declared
once in :data:`OPTIONS`, from which the command line makes its options and help), the options
it cannot run without, how its base model's input shape follows from the data's, whether it has
a noise level, and the line ``--method`` help gives it. ``build_smoothed`` loads the model and
the dataset, checks that they fit (classes, input shape), puts a diffusion denoiser in front
when asked, and calls the builder. Each method owns its options: giving one to another method is
an error, not silently ignored. It returns the options that belong to the certify call itself
(cohen's ``sequential=True, target_radius=...``), so that the CLI and a Python user running
``certify_dataset(Smooth(...), ..., sequential=True, ...)`` record the same parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from ..data import load_dataset
from ..engine import as_device
from ..errors import InvalidArgumentError, ShapeError, warn
from ..methods.ablation import AblationSmooth
from ..methods.cohen import Smooth
from ..methods.diffusion import with_denoiser
from ..methods.dual import DualSmooth
from ..methods.lipschitz import (
    DEFAULT_MAPS, DEFAULT_TEMPERATURES, GRID_MAPS, GRID_TEMPERATURES, SELECTIONS, LipschitzSmooth,
)
from ..methods.noises import NOISES, noise_help
from ..methods.sequential import STOP_TESTS
from ..models import load_checkpoint
from ..simplex import candidate_grid
from ..splits import SPLITS, get_split
from .dataset import selected_indices
from .lvm_select import select_on_spec


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class MethodOption:
    """One method option, declared once: the command line makes a ``--flag`` of it (cli.py), and
    :func:`build_smoothed` takes it as a keyword.

    Attributes:
        name: the keyword (``target_radius``); the flag is :func:`option_name` of it.
        help: the ``--help`` text.
        type: ``str``, ``int``, ``float`` or ``bool`` (a flag), or a function returning the choices.
        group: the ``--help`` section after the methods' names (``sequential`` gives
            ``--method cohen, dual: sequential``); None: ``--method NAME`` alone.
        section: a fixed ``--help`` section instead (e.g. ``Certification``).
        metavar: the value's name in ``--help``.
        minimum: the smallest value of an ``int`` option.
        commands: the commands that take it.
    """

    name: str
    help: str
    type: type | Callable[[], Sequence[str]] = str
    group: str | None = None
    section: str | None = None
    metavar: str | None = None
    minimum: int | None = None
    commands: tuple[str, ...] = ("certify", "predict")


@dataclass(frozen=True)
class MethodSpec:
    """Everything the runs and the command line need to know about a method.

    Attributes:
        name: ``--method NAME``.
        builder: ``builder(loaded, num_classes, sigma, device, options, trust_checkpoint)`` ->
            ``(smoothed, certify_options)``: the smoothed classifier of a loaded base model
            (:class:`robustcert.models.LoadedModel`), and the options of its certify calls.
        summary: its line in ``--method`` help (paper and what it needs).
        options: the names of its options in :data:`OPTIONS`.
        required: the options it cannot run without, and what each is (checked before any model
            is loaded, so that a missing one is reported as missing, not as a misfit model).
        input_shape: ``rule(dataset_shape, options)`` -> the input shape its base model must take
            (None: the dataset's).
        needs_sigma: whether it has a noise level (``--sigma``).
    """

    name: str
    builder: Callable
    summary: str
    options: tuple[str, ...] = ()
    required: dict[str, str] = field(default_factory=dict)
    input_shape: Callable | None = None
    needs_sigma: bool = True


#: Every method option, by keyword (:func:`register_option`).
OPTIONS: dict[str, MethodOption] = {}
#: Every method, by name, in ``--method`` help order (:func:`register_method`).
METHODS: dict[str, MethodSpec] = {}


def register_option(*options: MethodOption) -> None:
    """Declare method options (a name declared twice keeps the last declaration)."""
    for declared in options:
        OPTIONS[declared.name] = declared


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method: ``build_smoothed``, ``--method`` and its options know it from then on.

    Raises:
        InvalidArgumentError: it names an undeclared option.
    """
    unknown = [name for name in (*spec.options, *spec.required) if name not in OPTIONS]
    if unknown:
        raise InvalidArgumentError(f"method {spec.name!r} names undeclared options {', '.join(unknown)}: "
                                   "declare them with register_option")
    METHODS[spec.name] = spec
    return spec


def method_names() -> list[str]:
    """The registered methods' names, sorted."""
    return sorted(METHODS)


def methods_with(option: str) -> list[str]:
    """The methods that take ``option``, in registry order."""
    return [name for name, spec in METHODS.items() if option in spec.options]


def option_name(name: str) -> str:
    """A method option as the command line spells it (``target_radius`` -> ``--target-radius``)."""
    return "--" + name.replace("_", "-")


def method_spec(method: str) -> MethodSpec:
    """The registered method ``method`` (InvalidArgumentError if unknown)."""
    if method not in METHODS:
        raise InvalidArgumentError(f"unknown method {method!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[method]


# --------------------------------------------------------------------------- the methods' builders
SEQUENTIAL_OPTIONS = ("sequential", "target_radius", "tolerance", "n_max", "stop_alpha", "stop_test")


def sequential_certify_options(options: dict) -> dict:
    """The certify options of ``--sequential`` (removed from ``options``): ``{}`` without it, else
    ``sequential=True`` and the sequential options given (``target_radius`` or ``tolerance``, at
    most ``n_max`` samples, ``stop_alpha``, ``stop_test``)."""
    sequential = {name: options.pop(name, None) for name in SEQUENTIAL_OPTIONS}
    if not sequential.pop("sequential"):
        given = [name for name, value in sequential.items() if value is not None]
        if given:
            raise InvalidArgumentError(f"{option_name(given[0])} needs --sequential")
        return {}
    return {"sequential": True, **{k: v for k, v in sequential.items() if v is not None}}


def build_cohen(loaded, num_classes, sigma, device, options, trust_checkpoint):
    """Cohen et al.'s CERTIFY, with ``noise`` "gaussian" (default, l2), "laplace" or "uniform" (l1);
    with ``sequential=True`` (``--sequential``), SEQUENTIAL-CERTIFY: each input stops early
    (Gaussian noise only). The sequential options are returned as certify options.
    ``sound_float`` / ``quantization`` (``--sound-float``, ``--quantization``): the
    floating-point-sound mode (Voracek and Hein 2023)."""
    noise = options.pop("noise", None) or "gaussian"
    sound = {"sound_float": bool(options.pop("sound_float", None)), "quantization": options.pop("quantization", None)}
    certify_options = sequential_certify_options(options)
    if sound["quantization"] is not None and not sound["sound_float"]:
        raise InvalidArgumentError("--quantization needs --sound-float")
    smoothed = Smooth(loaded.module, num_classes, sigma, noise=noise, device=device, input_shape=loaded.input_shape,
                      **sound)
    if certify_options:
        smoothed.check_sequential()  # one clear error for a noise the sequential rules do not cover
    return smoothed, certify_options


def build_ablation(loaded, num_classes, sigma, device, options, trust_checkpoint):
    """Randomized ablation (Levine and Feizi 2020) keeping ``keep`` pixels (``--keep``): the base
    model takes the ablated encoding, twice the data's channels (checked by
    :func:`ablation_model_input_shape`)."""
    shape = loaded.input_shape
    data_shape = None if shape is None else (shape[0] // 2, *shape[1:])
    return AblationSmooth(loaded.module, num_classes, options["keep"], device=device, input_shape=data_shape), {}


def ablation_model_input_shape(dataset_shape, options):
    """Randomized ablation's base model takes (2C, *spatial) for data (C, *spatial)."""
    return (2 * dataset_shape[0], *dataset_shape[1:])


def build_dual(loaded, num_classes, sigma, device, options, trust_checkpoint):
    """Dual randomized smoothing (Xia et al. 2024): ``model`` is branch a, ``model2`` branch b.

    ``sigma`` is branch a's noise level, ``sigma2`` branch b's (default: sigma); ``dual_split``
    names the split (default checkerboard). Branch models take sub-images: ``model`` was checked
    against the split's sub-image shape (:func:`dual_model_input_shape`); ``model2`` is checked the
    same way, and against its checkpoint's recorded split and branch when present.
    """
    certify_options = sequential_certify_options(options)  # --sequential: both branches stop early
    split = get_split(options.get("dual_split"))
    second = load_checkpoint(options["model2"], arch=options.get("arch2"), device=device,
                             trust_checkpoint=trust_checkpoint)
    if second.num_classes is not None and second.num_classes != num_classes:
        raise ShapeError(f"class-count mismatch: --model2 {options['model2']} has {second.num_classes} classes, "
                         f"the dataset has {num_classes}")
    # every registered split cuts an image into two halves of the same shape, the one --model was checked on
    if None not in (loaded.input_shape, second.input_shape) and tuple(second.input_shape) != tuple(loaded.input_shape):
        raise ShapeError(f"shape mismatch: --model2 {options['model2']} expects inputs {tuple(second.input_shape)}, "
                         f"but the {split.name} split gives sub-images of shape {tuple(loaded.input_shape)}")
    for which, model in (("a", loaded), ("b", second)):
        recorded_split, recorded_branch = model.metadata.get("dual_split"), model.metadata.get("dual_branch")
        if recorded_split not in (None, split.name) or recorded_branch not in (None, which):
            raise InvalidArgumentError(
                f"model {model.source} was trained for branch {recorded_branch} of the {recorded_split} split, "
                f"but is used as branch {which} of the {split.name} split (--model is branch a, --model2 branch b)")
    return DualSmooth(loaded.module, second.module, num_classes, sigma, options.get("sigma2"), split,
                      device=device), certify_options


def dual_model_input_shape(dataset_shape, options):
    """Branch models take sub-images: the input shape ``model`` must have for this dataset."""
    return get_split(options.get("dual_split")).sub_shapes(dataset_shape)[0]


def comma_list(value, convert=str, name: str = "list") -> list | None:
    """``"a,b"`` or a sequence as a list of converted items (None stays None)."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    try:
        return [convert(v) for v in items]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{option_name(name)} must be {convert.__name__} values separated by commas, "
                                   f"got {value!r}") from None


def build_lvm(loaded, num_classes, sigma, device, options, trust_checkpoint):
    """Lipschitz-variance-margin smoothing (Delattre et al. 2024): ``maps``, ``temperatures``,
    ``lipschitz``, ``lvm_selection`` (defaults: LipschitzSmooth's: one classifier). With
    ``lvm_select_on`` the maps and temperatures are a grid (default :data:`GRID_MAPS` x
    :data:`GRID_TEMPERATURES`) from which :func:`build_smoothed` chooses one pair on held-out inputs."""
    grid = options.get("lvm_select_on") is not None
    kwargs = {"maps": comma_list(options.get("maps"), str, "maps") or (GRID_MAPS if grid else None),
              "temperatures": comma_list(options.get("temperatures"), float, "temperatures")
              or (GRID_TEMPERATURES if grid else None),
              "lipschitz": options.get("lipschitz"), "selection": options.get("lvm_selection")}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    pairs = candidate_grid(kwargs.get("maps", DEFAULT_MAPS), kwargs.get("temperatures", DEFAULT_TEMPERATURES))
    if len(pairs) > 1 and not grid:
        raise InvalidArgumentError(
            f"--maps/--temperatures give {len(pairs)} (map, temperature) pairs, i.e. {len(pairs)} smoothed "
            "classifiers: give one, or choose one on held-out inputs with --lvm-select-on SPLIT[:COUNT] (e.g. train:100)")
    return LipschitzSmooth(loaded.module, num_classes, sigma, device=device, input_shape=loaded.input_shape,
                           per_input_grid=grid, **kwargs), {}


# --------------------------------------------------------------------------- the declarations
register_option(
    MethodOption("sequential", "Stop each input as soon as the answer is decided (anytime-valid confidence "
                 "sequence; Gaussian noise only).", bool, group="sequential", commands=("certify",)),
    MethodOption("target_radius", "Decide 'certified at radius R?' (stops when known at 1-alpha).", float,
                 group="sequential", commands=("certify",)),
    MethodOption("tolerance", "Stop when more samples cannot raise the radius by more than T.", float,
                 group="sequential", commands=("certify",)),
    MethodOption("n_max", "Most estimation samples per input (default: --n).", int, group="sequential",
                 commands=("certify",)),
    MethodOption("stop_alpha", "Level of the decisions to stop without a certificate ('not certifiable', "
                 "'within tolerance'; default 0.05). The certificate itself always holds at 1-alpha.", float,
                 group="sequential", commands=("certify",)),
    MethodOption("stop_test", "How 'not certifiable' is decided (default clopper-pearson).", lambda: STOP_TESTS,
                 group="sequential", commands=("certify",)),
    MethodOption("noise", f"cohen: the noise, and so the norm of the radius: {noise_help()}. --sigma is "
                 "its per-coordinate standard deviation.", lambda: tuple(NOISES), section="Certification"),
    MethodOption("sound_float", "Floating-point-sound certificates for inputs on the grid k/L (discretized "
                 "Gaussian noise from fair coins, added in integers; one forward shape). Voracek and Hein 2023.",
                 bool, group="floating-point-sound certificates"),
    MethodOption("quantization", "--sound-float: the input grid, L levels (default 255, 8-bit images; the bundled "
                 "digits: 16 or 256) or the step 1/L.", float, group="floating-point-sound certificates",
                 metavar="L"),
    MethodOption("model2", "Base model of sub-image b (--model is sub-image a's)."),
    MethodOption("arch2", "Architecture of --model2 when it is a plain state_dict."),
    MethodOption("sigma2", "Noise level of branch b (default: --sigma).", float),
    MethodOption("dual_split", "How images are cut into two sub-images (default: checkerboard).", lambda: tuple(SPLITS)),
    MethodOption("maps", "The simplex map (default hardmax); a list such as softmax,sparsemax,hardmax is a grid "
                 "for --lvm-select-on."),
    MethodOption("temperatures", "The logit multiplier t (default 1); a list such as 0.25,0.5,1,2 is a grid for "
                 "--lvm-select-on."),
    MethodOption("lipschitz", "l2 Lipschitz constant of the model's logits (enables the Lipschitz-margin radius).",
                 float),
    MethodOption("lvm_selection", "Choose the radius formula on the n0 selection samples, or union-bound the "
                 "formulas.", lambda: SELECTIONS),
    MethodOption("lvm_select_on", "Choose one (map, temperature) of --maps x --temperatures on COUNT (default "
                 "100) held-out inputs of this split (never a certified input), with the run's n0/n/alpha; "
                 "recorded in the sidecar.", metavar="SPLIT[:COUNT]"),
    MethodOption("keep", "Pixels kept in each ablated sample (Levine and Feizi: 45 of 784 on MNIST).", int,
                 minimum=1),
)
register_method(MethodSpec(
    "cohen", build_cohen, "Cohen et al. 2019 (any --noise)",
    options=(*SEQUENTIAL_OPTIONS, "noise", "sound_float", "quantization")))
register_method(MethodSpec(
    "dual", build_dual, "Xia et al. 2024 (two branch models on two sub-images)",
    options=("model2", "arch2", "sigma2", "dual_split", *SEQUENTIAL_OPTIONS),
    required={"model2": "the base model of sub-image b; --model is sub-image a's"}, input_shape=dual_model_input_shape))
register_method(MethodSpec(
    "lvm", build_lvm, "Delattre et al. 2024 (soft outputs through a simplex map)",
    options=("maps", "temperatures", "lipschitz", "lvm_selection", "lvm_select_on")))
register_method(MethodSpec(
    "ablation", build_ablation, "l0, pixels changed (needs --keep)", options=("keep",),
    required={"keep": "how many pixels each ablated sample keeps"}, input_shape=ablation_model_input_shape,
    needs_sigma=False))


# --------------------------------------------------------------------------- checks and the build
def check_required_options(method: str, options: dict) -> None:
    """InvalidArgumentError naming the first required option of ``method`` that ``options`` lacks."""
    for name, meaning in method_spec(method).required.items():
        if not options.get(name):
            raise InvalidArgumentError(f"--method {method} needs {option_name(name)} ({meaning})")


def check_sigma_given(method: str, sigma, denoiser) -> None:
    """``--sigma`` is required by every noise method and meaningless for one without a noise
    level (ablation; so is a denoiser)."""
    if not method_spec(method).needs_sigma:
        if sigma is not None:
            raise InvalidArgumentError(f"--method {method} has no noise level: drop --sigma (--keep sets how many "
                                       f"pixels each sample keeps)")
        if denoiser is not None:
            raise InvalidArgumentError(f"--denoiser removes Gaussian noise; --method {method} adds none")
    elif sigma is None:
        raise InvalidArgumentError(f"--method {method} needs --sigma (the noise's standard deviation)")


def options_for(method: str, options: dict) -> dict:
    """``options`` without other methods' options (None: not given); refuses one given for another method."""
    own = method_spec(method).options
    kept = dict(options)
    for owner, spec in METHODS.items():
        if owner == method:
            continue
        for name in spec.options:
            if name not in own and kept.pop(name, None) is not None:
                raise InvalidArgumentError(f"{option_name(name)} is an option of --method {owner}, not {method}")
    unknown = sorted(set(kept) - set(own))
    if unknown:
        raise InvalidArgumentError(f"unknown option(s) {', '.join(unknown)} for --method {method}")
    return kept


def dataset_for_model(dataset, num_classes: int | None, model_spec: str, given: int | None = None):
    """The dataset with the class count of the model (``num_classes``, None if it does not say)
    or of ``given`` (``--num-classes``), checked against the labels.

    A dataset whose labels define its classes (digits, IDX, CIFAR-10, named folders) must have
    exactly that count; one whose count is only its largest label + 1 (npz, numbered folders:
    ``classes_known`` False) takes it when no label exceeds it.
    """
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise InvalidArgumentError(f"--num-classes must be a whole number >= 1, got {given!r}")
        if num_classes is not None and given != num_classes:
            raise ShapeError(f"class-count mismatch: --num-classes {given}, but model {model_spec} has "
                             f"{num_classes} classes")
    count = given if given is not None else num_classes
    if count is None or count == dataset.num_classes:
        return dataset
    if dataset.classes_known:
        what = f"--num-classes {count}" if given is not None else f"model {model_spec} has {count} classes"
        raise ShapeError(f"class-count mismatch: {what}, dataset {dataset.name} has {dataset.num_classes}")
    if count < dataset.num_classes:
        raise ShapeError(f"class-count mismatch: dataset {dataset.name} has label {dataset.num_classes - 1}, "
                         f"but {'--num-classes' if given is not None else f'model {model_spec} has'} {count} "
                         "classes")
    return replace(dataset, num_classes=count)


def load_model_and_data(model_spec: str, data, split: str = "test", arch: str | None = None,
                        trust_checkpoint: bool = False, device="cpu", model_input_shape=None, weights=None,
                        num_classes: int | None = None):
    """Load the base model and the dataset, and check that they fit together.

    ``model_input_shape(dataset_shape)``, when given, is the input shape the model must take
    (dual smoothing's branch models take sub-images); by default the dataset's. A model with its
    own preprocessing (torchvision:, timm:, hf:) takes any height and width (it resizes after
    the noise) and sets the resolution of ``imagefolder:`` data. ``weights``: a zoo model's
    weights; ``num_classes``: the class count where neither model nor labels tell (see
    :func:`dataset_for_model`).
    """
    loaded = load_checkpoint(model_spec, arch=arch, device=device, trust_checkpoint=trust_checkpoint, weights=weights)
    dataset = load_dataset(data, split, loaded.preprocessing) if isinstance(data, str) else data
    dataset = dataset_for_model(dataset, loaded.num_classes, model_spec, num_classes)
    if loaded.preprocessing is not None:
        channels = loaded.preprocessing.input_size[0]
        if dataset.input_shape[0] != channels:
            raise ShapeError(f"shape mismatch: model {model_spec} takes {channels}-channel images, dataset "
                             f"{dataset.name} has {dataset.input_shape[0]} channel(s)")
        return loaded, dataset
    if loaded.input_shape is None:
        return loaded, dataset
    if model_input_shape is not None:
        expected = tuple(model_input_shape(tuple(dataset.input_shape)))
        if tuple(loaded.input_shape) != expected:
            raise ShapeError(f"shape mismatch: model {model_spec} expects inputs {tuple(loaded.input_shape)}, but "
                             f"this method feeds it {expected} (dataset {dataset.name} has "
                             f"{tuple(dataset.input_shape)})")
    elif tuple(loaded.input_shape) != tuple(dataset.input_shape):
        raise ShapeError(f"shape mismatch: model {model_spec} expects inputs {tuple(loaded.input_shape)}, "
                         f"dataset {dataset.name} has {tuple(dataset.input_shape)}")
    return loaded, dataset


def warn_if_other_sigma(loaded, sigma: float | None) -> None:
    """Warn (:class:`robustcert.errors.RobustCertWarning`) when ``sigma`` is not the noise level
    the checkpoint records its model was trained at (``noise_sd``, written by robustcert train and
    in the bundled models): valid certificates, but of a model that never saw that noise."""
    trained = (loaded.metadata or {}).get("noise_sd")
    if sigma is None or isinstance(trained, bool) or not isinstance(trained, (int, float)):
        return
    if not math.isclose(float(trained), float(sigma), rel_tol=1e-6, abs_tol=1e-12):
        warn(f"{loaded.source} was trained at sigma {trained:g} (its checkpoint records it); smoothing it at sigma "
             f"{sigma:g} gives valid certificates of a model that never saw that noise level, usually far less "
             "accurate")


def build_smoothed(method: str, model: str, *, sigma: float | None = None, data="digits", split: str = "test",
                   arch: str | None = None, trust_checkpoint: bool = False, device="auto",
                   denoiser: str | None = None, denoiser_steps: int | None = None, precision: str | None = None,
                   channels_last: bool | None = None, compile: bool | None = None, selection_run: dict | None = None,
                   weights=None, num_classes: int | None = None, **method_options):
    """A smoothed classifier from specifications (see the module docstring).

    Args:
        method: a registered method (:data:`METHODS`).
        model: the base model's specification (``bundled:NAME``, a file; ``--model``).
        sigma: the noise level (None for a method without one, e.g. ablation).
        data: the dataset (a specification or a loaded dataset).
        split: its split.
        arch: the architecture of a plain state_dict.
        weights: the weights of a ``torchvision:`` / ``timm:`` model (``--weights``).
        num_classes: the class count where neither the model nor the labels tell (npz data with a
            TorchScript model; ``--num-classes``).
        trust_checkpoint: allow full unpickling (checkpoints load with
            ``torch.load(weights_only=True)`` otherwise).
        device: where to run.
        denoiser: a diffusion denoiser in front of the model.
        denoiser_steps: its DDIM steps (1: one-shot denoising).
        precision: an engine option.
        channels_last: an engine option.
        compile: an engine option.
        selection_run: with ``lvm_select_on="SPLIT[:COUNT]"`` (lvm), the run's ``n0, n, alpha,
            batch_size, seed, skip, max_inputs``: the (map, temperature) pair is chosen on COUNT
            held-out inputs of that split, none of them one the run certifies
            (:mod:`robustcert.runs.lvm_select`).
        method_options: the method's options (:data:`OPTIONS`; None: not given).

    Returns:
        ``(smoothed, dataset, certify_options)``; ``certify_options`` go to
        :func:`robustcert.certify_dataset` (empty for every method but sequential cohen and dual).
    """
    device = as_device(device)
    spec = method_spec(method)
    options = options_for(method, {k: v for k, v in method_options.items() if v is not None})
    check_sigma_given(method, sigma, denoiser)
    check_required_options(method, options)
    shape_rule = spec.input_shape
    loaded, dataset = load_model_and_data(
        model, data, split, arch, trust_checkpoint, device,
        None if shape_rule is None else (lambda dataset_shape: shape_rule(dataset_shape, options)), weights,
        num_classes)
    if denoiser_steps is not None and denoiser is None:
        raise InvalidArgumentError("--denoiser-steps needs --denoiser")
    loaded = with_denoiser(loaded, denoiser, sigma, dataset.input_shape, device,
                           multistep=denoiser_steps is not None, steps=denoiser_steps)
    smoothed, certify_options = spec.builder(loaded, dataset.num_classes, sigma, device, options, trust_checkpoint)
    if denoiser is None:
        warn_if_other_sigma(loaded, sigma)  # after the builder has checked sigma
    smoothed.set_engine_options(precision=precision, channels_last=channels_last, compile=compile)
    if options.get("lvm_select_on") is not None:
        run = dict(selection_run or {})
        certified = selected_indices(len(dataset), run.pop("skip", 1), run.pop("max_inputs", -1))
        smoothed = select_on_spec(smoothed, options["lvm_select_on"], dataset, certified, **run).smoothed
    return smoothed, dataset, certify_options

