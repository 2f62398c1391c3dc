"""How the command line builds each smoothing method from its options.

``certify`` collects the method-specific options (``--model2``, ``--maps``, ``--sequential``, ...)
into a dict and hands it to ``METHOD_BUILDERS[method](loaded, num_classes, sigma, device,
options)``, which returns a configured smoothed classifier and records the resolved options in
the dict (they become run parameters in the sidecar). ``METHOD_OPTIONS`` lists the options that
belong to one method: giving one with another method is an error, not silently ignored.
"""
from __future__ import annotations

import click

from .errors import CLIError


def build_cohen(loaded, num_classes, sigma, device, options):
    """Cohen et al.'s CERTIFY; with --sequential, SEQUENTIAL-CERTIFY (methods/sequential.py), whose
    certify_batch stops each input early (--target-radius R or --tolerance T, at most --n-max samples)."""
    from .methods.cohen import Smooth

    common = dict(device=device, input_shape=loaded.input_shape)
    sequential = {name: options.pop(name, None) for name in METHOD_OPTIONS["cohen"]}
    if not sequential.pop("sequential"):
        given = [name for name, value in sequential.items() if value is not None]
        if given:
            raise CLIError(f"--{given[0].replace('_', '-')} needs --sequential")
        return Smooth(loaded.module, num_classes, sigma, **common)
    from .methods.sequential import SequentialSmooth

    smoothed = SequentialSmooth(loaded.module, num_classes, sigma, **sequential, **common)
    options.update(sequential=True, **sequential)  # recorded as run parameters
    return smoothed


def build_dual(loaded, num_classes, sigma, device, options):
    """Dual randomized smoothing (Xia et al. 2024): --model is branch a, --model2 branch b.

    --sigma is branch a's noise level, --sigma2 branch b's (default: --sigma); --dual-split names
    the split (default checkerboard). Branch models take sub-images: load_run_inputs checked
    --model against the split's sub-image shape (see ``dual_model_input_shape``); here --model2
    is checked the same way, and against its checkpoint's recorded split and branch when present.
    Records the second model's sha256 in the run parameters.
    """
    from .methods.dual import DualSmooth
    from .models import load_checkpoint
    from .splits import get_split

    split = get_split(options.get("dual_split"))
    if not options.get("model2"):
        raise CLIError("--method dual needs --model2 (the base model of sub-image b)")
    trust = bool(click.get_current_context().params.get("trust_checkpoint", False))  # certify's flag
    second = load_checkpoint(options["model2"], arch=options.get("arch2"), device=device, trust_checkpoint=trust)
    if second.num_classes is not None and second.num_classes != num_classes:
        raise CLIError(f"class-count mismatch: --model2 {options['model2']} has {second.num_classes} classes, "
                       f"the dataset has {num_classes}")
    # every registered split cuts an image into two halves of the same shape, the one --model was checked on
    if None not in (loaded.input_shape, second.input_shape) and tuple(second.input_shape) != tuple(loaded.input_shape):
        raise CLIError(f"shape mismatch: --model2 {options['model2']} expects inputs {tuple(second.input_shape)}, but "
                       f"the {split.name} split gives sub-images of shape {tuple(loaded.input_shape)}")
    for which, model in (("a", loaded), ("b", second)):
        recorded_split, recorded_branch = model.metadata.get("dual_split"), model.metadata.get("dual_branch")
        if recorded_split not in (None, split.name) or recorded_branch not in (None, which):
            raise CLIError(f"model {model.source} was trained for branch {recorded_branch} of the {recorded_split} "
                           f"split, but is used as branch {which} of the {split.name} split "
                           f"(--model is branch a, --model2 branch b)")
    smoothed = DualSmooth(loaded.module, second.module, num_classes, sigma, options.get("sigma2"), split, device=device)
    options.update(dual_split=split.name, sigma2=smoothed.sigma_b, model2_sha256=second.sha256)  # recorded as run parameters
    return smoothed


def dual_model_input_shape(dataset_shape, options):
    """Branch models take sub-images: the input shape --model must have for this dataset."""
    from .splits import get_split

    return get_split(options.get("dual_split")).sub_shapes(dataset_shape)[0]


def build_lvm(loaded, num_classes, sigma, device, options):
    """Lipschitz-variance-margin smoothing (Delattre et al. 2024): --maps, --temperatures, --lipschitz,
    --lvm-selection (defaults: LipschitzSmooth's). Records the resolved grid as run parameters."""
    from .methods.lipschitz import LipschitzSmooth

    kwargs = {}
    if options.get("maps"):
        kwargs["maps"] = [name.strip() for name in options["maps"].split(",") if name.strip()]
    if options.get("temperatures"):
        try:
            kwargs["temperatures"] = [float(t) for t in options["temperatures"].split(",") if t.strip()]
        except ValueError:
            raise CLIError(f"--temperatures must be numbers separated by commas, got {options['temperatures']!r}") from None
    if options.get("lipschitz") is not None:
        kwargs["lipschitz"] = options["lipschitz"]
    if options.get("lvm_selection"):
        kwargs["selection"] = options["lvm_selection"]
    smoothed = LipschitzSmooth(loaded.module, num_classes, sigma, device=device, input_shape=loaded.input_shape,
                               **kwargs)
    options.update(candidates=[c.label for c in smoothed.candidates], formulas=smoothed.formulas,
                   lvm_selection=smoothed.selection)
    return smoothed


METHOD_BUILDERS = {"cohen": build_cohen, "dual": build_dual, "lvm": build_lvm}
METHOD_OPTIONS = {
    "cohen": ("sequential", "target_radius", "tolerance", "n_max"),
    "dual": ("model2", "arch2", "sigma2", "dual_split"),
    "lvm": ("maps", "temperatures", "lipschitz", "lvm_selection"),
}
# How --model's input shape follows from the dataset's (default: the dataset's own shape).
METHOD_INPUT_SHAPES = {"dual": dual_model_input_shape}


def options_for(method, options):
    """``options`` without other methods' options (None: not given); refuses one given for another method."""
    kept = dict(options)
    for owner, names in METHOD_OPTIONS.items():
        if owner == method:
            continue
        for name in names:
            if kept.pop(name, None) is not None:
                raise CLIError(f"--{name.replace('_', '-')} is an option of --method {owner}, not {method}")
    return kept


def model_input_shape(method, options):
    """The rule giving --model's input shape from the dataset's (None: the dataset's own shape)."""
    rule = METHOD_INPUT_SHAPES.get(method)
    return None if rule is None else (lambda dataset_shape: rule(dataset_shape, options))
