"""The ``robustcert`` command line: options and help, each command one call into robustcert.runs.

Every error a user can cause is printed as one line ``robustcert: error: ...`` on stderr with
exit status 2; result rows already written stay intact.
"""
from __future__ import annotations

import contextlib
import shlex
import sys
import warnings
from pathlib import Path

import click

from .engine import PRECISIONS
from .errors import CLIError, RobustCertError, RobustCertWarning, check_count
from .methods.base import DEFAULT_ALPHA, DEFAULT_BATCH, DEFAULT_N, DEFAULT_N0
from .methods.noises import NOISES
from .models import model_spec_help
from .results import NORMS
from .runs import sharded
from .runs.build import METHODS, OPTIONS, MethodOption, build_smoothed, method_names, methods_with, option_name
from .runs.dataset import certify_dataset, predict_dataset
from .runs.demo import DEMO_DURATION, DEFAULT_DEMO_DIR
from .runs.files import Stopped, check_output, output_lock, sidecar_path, stop_on_termination_signals
from .splits import SPLITS


def fail(message: str) -> None:
    click.echo(f"robustcert: error: {message}", err=True)
    sys.exit(2)


#: What each command leaves behind when it is interrupted (Ctrl-C, SIGTERM, SIGHUP), by command:
#: every command declares it with ``@main.command(interrupted=...)``, so the message is true.
INTERRUPTED_NOTES: dict[str, str] = {}
#: The note of a command that writes its files at the end, atomically.
WRITES_AT_THE_END = "nothing was written"


def show_warnings_as_lines() -> None:
    """Print robustcert's own warnings (:class:`robustcert.errors.RobustCertWarning`) as one line
    ``robustcert: warning: ...`` on stderr; other warnings keep Python's format."""
    default = warnings.showwarning
    if getattr(default, "one_line", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RobustCertWarning):
            click.echo(f"robustcert: warning: {' '.join(str(message).split())}", err=True)
        else:
            default(message, category, filename, lineno, file, line)
    show.one_line = True
    warnings.showwarning = show


class ErrorReportingGroup(click.Group):
    """Turn every user error into one readable line on stderr and exit status 2.

    RobustCertError, OSError and click's usage errors (missing option, ``--sigma abc``, unknown
    command) all become ``robustcert: error: ...``. Called with ``standalone_mode=False`` (from
    Python), errors propagate as exceptions instead.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        stop_on_termination_signals()  # SIGTERM / SIGHUP stop a run like Ctrl-C: its files say so
        show_warnings_as_lines()
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            fail(" ".join(exc.format_message().split()) + hint)
        except click.ClickException as exc:
            fail(" ".join(exc.format_message().split()))
        except click.Abort as exc:
            if sys.stderr.isatty():
                click.echo(err=True)  # after the terminal's ^C
            stopped = exc.__cause__ if isinstance(exc.__cause__, Stopped) else None
            how = f"stopped by {stopped.signal_name}" if stopped else "interrupted"
            command = next((a for a in (sys.argv[1:] if args is None else args) if a in self.commands), None)
            note = getattr(exc.__cause__, "interrupted_note", None) or INTERRUPTED_NOTES.get(command, WRITES_AT_THE_END)
            click.echo(f"robustcert: {how} ({note})", err=True)
            sys.exit(128 + stopped.signum if stopped else 130)
        except RobustCertError as exc:
            fail(" ".join(str(exc).split()))
        except OSError as exc:
            fail(f"{exc.strerror or exc}: {exc.filename}" if getattr(exc, "filename", None) else str(exc))
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:  # as click.Abort: click would first print an empty line
            raise click.Abort() from exc


# --------------------------------------------------------------------------- --help sections
class SectionOption(click.Option):
    """A click option listed under a section of its command's ``--help`` (see :func:`option`)."""

    def __init__(self, *declarations, section: str | None = None, **kwargs):
        super().__init__(*declarations, **kwargs)
        self.section = section


def option(*declarations, section: str, **kwargs):
    """``click.option``, listed in ``--help`` under ``section`` (a plain click.option goes under
    "Other options"). Sections appear in :data:`HELP_SECTIONS` order, then any new ones in the
    order of their first option."""
    return click.option(*declarations, cls=SectionOption, section=section, **kwargs)


MODEL_AND_DATA, CERTIFICATION, ENGINE, OUTPUT = "Model and data", "Certification", "Engine and speed", "Output"
TRAINING = "Training"
ATTACK = "Attack (empirical, not a certificate)"
DENOISER = "Diffusion denoiser (any method)"


def method_option_section(declared: MethodOption) -> str:
    """The ``--help`` section of a method option: its own, or the methods that take it
    (``--method dual``; with its group, ``--method cohen, dual: sequential``)."""
    if declared.section is not None:
        return declared.section
    return f"--method {', '.join(methods_with(declared.name))}" + (f": {declared.group}" if declared.group else "")


def method_sections() -> list[str]:
    """The sections of the methods' options, in registry order (:data:`robustcert.runs.build.METHODS`)."""
    sections = []
    for spec in METHODS.values():
        for name in spec.options:
            section = method_option_section(OPTIONS[name])
            if section not in sections and section not in (MODEL_AND_DATA, CERTIFICATION, ENGINE, OUTPUT):
                sections.append(section)
    return sections


HELP_SECTIONS = (MODEL_AND_DATA, CERTIFICATION, ATTACK, TRAINING, *method_sections(), DENOISER, ENGINE, OUTPUT)


def help_sections(command: click.Command, ctx: click.Context) -> list[tuple[str, list[tuple[str, str]]]]:
    """The options of ``command`` as its ``--help`` lists them: (section, [(option, help), ...])
    in :data:`HELP_SECTIONS` order, then new sections, then "Other options" (plain click options).
    The documentation's command-line reference is generated from this too."""
    sections: dict[str, list] = {}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            sections.setdefault(getattr(param, "section", None) or "Other options", []).append(record)
    if list(sections) == ["Other options"]:  # a command without sections: click's usual "Options"
        sections = {"Options": sections["Other options"]}
    order = [name for name in HELP_SECTIONS if name in sections]
    order += [name for name in sections if name not in HELP_SECTIONS and name != "Other options"]
    return [(name, sections[name]) for name in order + (["Other options"] if "Other options" in sections else [])]


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its options by section (:func:`option`)."""

    def format_options(self, ctx, formatter):
        for name, records in help_sections(self, ctx):
            with formatter.section(name):
                formatter.write_dl(records)


class SectionedGroup(ErrorReportingGroup):
    command_class = SectionedCommand

    def command(self, *args, interrupted: str | None = None, **kwargs):
        """``click.Group.command`` that also declares what the command leaves behind when it is
        interrupted (:data:`INTERRUPTED_NOTES`); every command must say it."""
        if interrupted is None:
            raise TypeError("declare what an interrupted command leaves behind: command(..., interrupted=...)")
        decorate = super().command(*args, **kwargs)

        def register(function):
            command = decorate(function)
            INTERRUPTED_NOTES[command.name] = interrupted
            return command
        return register


@click.group(cls=SectionedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robustcert")
def main():
    """Certify the adversarial robustness of classifiers by randomized smoothing.

    \b
    Typical session:
      robustcert demo          # the main job: bundled digits models, {duration}
      robustcert train --data digits --sigma 0.25 --epochs 30 --lr 0.05 --out my.pt
      robustcert certify --model bundled:digits-0.25 --sigma 0.25 --n 10000 --out d.tsv
      robustcert table d.tsv other.tsv --format latex
      robustcert plot d.tsv other.tsv --out curve.pdf

    Errors are one line on stderr (exit status 2); result rows already written are never lost,
    and no command writes over a result file or one of its own inputs.
    Run 'robustcert COMMAND --help' for the options of a command.
    """


main.help = main.help.replace("{duration}", DEMO_DURATION)


# --------------------------------------------------------------------------- shared options
class BatchSizeType(click.ParamType):
    """A whole number >= 1, or ``auto``."""

    name = "INTEGER|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is neither a whole number nor 'auto'", param, ctx)


BATCH_SIZE = BatchSizeType()


def add_options(options):
    """A decorator adding click options in the order given."""
    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


THREADS_HELP = ("torch threads on CPU [default: one per core that other processes leave idle, "
                "at least 1; see README].")
ALPHA_HELP = "Probability that a certificate is wrong (each certificate holds with probability >= 1 - alpha)."
SEED_HELP = "Noise seed: the same seed gives the same samples, hence the same results, for each input."

model_and_data_options = add_options([
    option("--model", "model_spec", required=True, section=MODEL_AND_DATA, help=model_spec_help()),
    option("--weights", default=None, section=MODEL_AND_DATA,
           help="Weights of torchvision:NAME / timm:NAME: a state_dict file (.pth, .pt, .safetensors), or a "
                "torchvision weights name (IMAGENET1K_V2) whose file is in the local torch hub cache."),
    option("--arch", default=None, section=MODEL_AND_DATA,
           help="Architecture of a plain state_dict (e.g. cifar_resnet110)."),
    option("--num-classes", type=int, default=None, section=MODEL_AND_DATA,
           help="Class count where neither the model nor the labels tell (npz data with a TorchScript model) "
                "[default: the model's, else the dataset's]."),
    option("--trust-checkpoint", is_flag=True, section=MODEL_AND_DATA,
           help="Allow full unpickling of the checkpoint. DANGEROUS: runs code from the file."),
    option("--data", "data_spec", default="digits", show_default=True, section=MODEL_AND_DATA,
           help="digits, mnist:ROOT, fashion-mnist:ROOT, cifar10:ROOT, imagefolder:ROOT (resized and cropped to "
                "the model's resolution before the noise) or npz:PATH."),
    option("--split", default="test", show_default=True, type=click.Choice(["train", "test", "val"]),
           section=MODEL_AND_DATA, help="Which split of the dataset."),
    option("--skip", type=int, default=1, show_default=True, section=MODEL_AND_DATA,
           help="Use every SKIP-th input of the dataset."),
    option("--max", "max_inputs", type=int, default=-1, show_default=True, section=MODEL_AND_DATA,
           help="Stop after this many inputs (-1: all)."),
    option("--sigma", type=float, default=None, section=CERTIFICATION,
           help="Noise level: the per-coordinate standard deviation of the noise (pixel units, [0,1] "
                "space), whatever --noise is. Required, except for --method ablation."),
    option("--alpha", type=float, default=DEFAULT_ALPHA, show_default=True, section=CERTIFICATION, help=ALPHA_HELP),
    option("--seed", type=int, default=0, show_default=True, section=CERTIFICATION, help=SEED_HELP),
    option("--batch", "batch_size", type=BATCH_SIZE, default=DEFAULT_BATCH, show_default=True, section=ENGINE,
           help="Noisy samples per forward pass, or auto (free device memory / a short CPU measurement)."),
    option("--device", default="auto", show_default=True, section=ENGINE, help="auto, cpu, cuda, cuda:N."),
    option("--threads", type=int, default=None, section=ENGINE, help=THREADS_HELP),
    option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True, section=OUTPUT,
           help="Output TSV (a JSON sidecar FILE.json is written beside it). Never overwritten: see --resume."),
    option("--resume", is_flag=True, section=OUTPUT,
           help="Continue an interrupted run of the same command (same parameters, model and data)."),
    option("--quiet", is_flag=True, section=OUTPUT, help="No progress bar."),
])

engine_options = add_options([
    option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32", show_default=True,
           section=ENGINE, help="Autocast precision of the base model (bf16/fp16: a different, faster base classifier)."),
    option("--channels-last/--no-channels-last", "channels_last", default=None, section=ENGINE,
           help="Channels-last memory layout of 4-D batches [default: on; measured faster on CPU and CUDA]."),
    option("--compile", "compile_model", is_flag=True, section=ENGINE,
           help="torch.compile the base model (falls back to eager, with a warning, if it fails)."),
    option("--distributed", is_flag=True, section=ENGINE,
           help="Shard inputs across torch.distributed ranks (automatic under torchrun, WORLD_SIZE > 1)."),
])

def method_option(declared: MethodOption):
    """The click option of a declared method option (:class:`robustcert.runs.build.MethodOption`)."""
    kwargs = {"default": None, "section": method_option_section(declared), "help": declared.help}
    if declared.type is bool:
        kwargs["is_flag"] = True
    elif not isinstance(declared.type, type):  # a function giving the choices
        kwargs["type"] = click.Choice(list(declared.type()))
    elif declared.minimum is not None:
        kwargs["type"] = click.IntRange(min=declared.minimum)
    else:
        kwargs["type"] = declared.type
    if declared.metavar is not None:
        kwargs["metavar"] = declared.metavar
    return option(option_name(declared.name), declared.name, **kwargs)


def method_options(command: str) -> list:
    """``--method`` and the options of every method that ``command`` takes, generated from the
    registry, in registry order (each option once)."""
    declared = [OPTIONS[name] for name in dict.fromkeys(name for spec in METHODS.values() for name in spec.options)
                if command in OPTIONS[name].commands]
    summaries = "; ".join(f"{name}: {spec.summary}" for name, spec in METHODS.items())
    return [option("--method", type=click.Choice(method_names()), default="cohen", show_default=True,
                   section=CERTIFICATION, help=summaries + ".")] + [method_option(d) for d in declared]


DENOISER_OPTIONS = [
    option("--denoiser", default=None, section=DENOISER,
           help="Diffusion denoiser in front of the model (Carlini et al. 2023): bundled:digits-ddpm "
                "or a local diffusers folder (needs the diffusion extra: pip install -e \".[diffusion]\" in the "
                "checkout)."),
    option("--denoiser-steps", type=click.IntRange(min=1), default=None, section=DENOISER,
           help="Run the deterministic DDIM chain from t* in this many model calls "
                "instead of one-shot denoising (costs that many times more)."),
]


def method_option_names(command: str) -> tuple[str, ...]:
    """The keywords that ``command``'s method and denoiser options hand to build_smoothed."""
    names = dict.fromkeys(name for spec in METHODS.values() for name in spec.options if command in OPTIONS[name].commands)
    return (*names, "denoiser", "denoiser_steps")


def invocation_command() -> str:
    """This run's command line, shell-quoted (``robustcert certify --model ...``), as the sidecar records it.

    A caller that runs a command from Python (``main.main(args, obj={"argv": [...]})``) records
    the equivalent shell command through ``obj["argv"]``.
    """
    context = click.get_current_context(silent=True)
    obj = context.find_root().obj if context is not None else None
    if isinstance(obj, dict) and "argv" in obj:
        return shlex.join(["robustcert", *obj["argv"]])
    return shlex.join(["robustcert", *sys.argv[1:]])  # also for `python -m robustcert` (argv[0] __main__.py)


def check_selection(skip: int, max_inputs: int) -> None:
    """--skip and --max, checked before anything is loaded."""
    check_count(skip, "--skip")
    if max_inputs == 0 or max_inputs < -1:
        raise CLIError(f"--max must be >= 1, or -1 for all inputs, got {max_inputs}")


def dataset_run(run, model_spec, weights, arch, num_classes, trust_checkpoint, data_spec, split, sigma, out_path, skip,
                max_inputs, device, resume, quiet, threads, precision, channels_last, compile_model, distributed,
                method, method_options, kind, **run_options):
    """certify / predict / attack: lock and check the output, join the process group (torchrun),
    build, run, report."""
    check_selection(skip, max_inputs)
    with contextlib.ExitStack() as hold:
        if sharded.is_first_rank(distributed):
            hold.enter_context(output_lock(out_path))  # one writer per output, for the whole run
            check_output(out_path, resume, kind)  # fail before loading anything; never touch existing results
        held = hold.pop_all()
    with held, sharded.session(distributed, device) as device:
        selection_run = {"n0": run_options.get("n0", DEFAULT_N0), "n": run_options["n"], "alpha": run_options["alpha"],
                         "batch_size": run_options["batch_size"], "seed": run_options["seed"], "skip": skip,
                         "max_inputs": max_inputs}
        smoothed, dataset, certify_options = build_smoothed(
            method, model_spec, sigma=sigma, data=data_spec, split=split, arch=arch, weights=weights,
            num_classes=num_classes, trust_checkpoint=trust_checkpoint, device=device, precision=precision, channels_last=channels_last,
            compile=compile_model, selection_run=selection_run, **method_options)
        frame = run(smoothed, dataset, out_path, skip=skip, max_inputs=max_inputs, resume=resume,
                    progress=not quiet, threads=threads, command=invocation_command(), **run_options,
                    **certify_options)
        if sharded.current() is None or sharded.current().rank == 0:
            click.echo(f"wrote {out_path} ({len(frame)} rows) and {sidecar_path(out_path).name}")


ROWS_KEPT = "rows already written are kept; --resume continues"


@main.command(interrupted=ROWS_KEPT)
@model_and_data_options
@engine_options
@option("--n0", type=int, default=DEFAULT_N0, show_default=True, section=CERTIFICATION,
        help="Selection samples per input (choose the class; --sequential: the most).")
@option("--n", "n", type=int, default=DEFAULT_N, show_default=True, section=CERTIFICATION,
        help="Estimation samples per input (bound its probability; the largest radius is sigma * "
             "Phi^-1(alpha^(1/n))).")
@add_options(method_options("certify") + DENOISER_OPTIONS)
def certify(n0, n, alpha, batch_size, seed, method, **options):
    """Certify the inputs of a dataset, one TSV row each.

    Columns: idx, label, predict, radius, correct, time (the reference format).
    """
    method_options = {name: options.pop(name) for name in method_option_names("certify")}
    dataset_run(certify_dataset, method=method, method_options=method_options, kind="certify", n0=n0, n=n, alpha=alpha,
                batch_size=batch_size, seed=seed, **options)


@main.command(interrupted=ROWS_KEPT)
@model_and_data_options
@engine_options
@option("--n", "n", type=int, default=DEFAULT_N, show_default=True, section=CERTIFICATION,
        help="Samples per input.")
@add_options(method_options("predict") + DENOISER_OPTIONS)
def predict(n, alpha, batch_size, seed, method, **options):
    """Predict with the smoothed classifier (may abstain) on the inputs of a dataset.

    Columns: idx, label, predict, correct, time (the reference format). How each method decides
    and spends alpha: its predict_batch (cohen and dual: Cohen et al.'s binomial test; lvm:
    simultaneous Bernstein / Clopper-Pearson bounds on every class, with the first map).
    """
    method_options = {name: options.pop(name) for name in method_option_names("predict")}
    dataset_run(predict_dataset, method=method, method_options=method_options, kind="predict", n=n, alpha=alpha,
                batch_size=batch_size, seed=seed, **options)


@main.command(interrupted=ROWS_KEPT)
@model_and_data_options
@option("--eps", type=float, required=True, section=ATTACK,
        help="l2 radius of the attack (pixel units, [0,1] space).")
@option("--steps", type=int, default=20, show_default=True, section=ATTACK,
        help="PGD steps (normalised gradient ascent, step 2*eps/steps, projection on the ball and [0,1]).")
@option("--m", "m", type=int, default=32, show_default=True, section=ATTACK,
        help="Noise draws of the Monte Carlo soft smoothed classifier the attack differentiates (fixed over the steps).")
@option("--n", "n", type=int, default=DEFAULT_N, show_default=True, section=CERTIFICATION,
        help="Samples of each PREDICT (at the input and at the adversarial point).")
@option("--noise", type=click.Choice(list(NOISES)), default=None, section=CERTIFICATION,
        help="The smoothing noise (default gaussian); the attack's ball is l2 whatever the noise.")
def attack(eps, steps, m, n, alpha, batch_size, seed, noise, **options):
    """Attack the smoothed classifier (PGD of Salman et al. 2019, SmoothAdv) and PREDICT at the
    adversarial point: EMPIRICAL robust accuracy, an UPPER bound, never a certificate.

    For each input: PREDICT (Cohen et al., may abstain) at x, PGD on the cross-entropy of the soft
    smoothed classifier within --eps of x (l2, inside [0,1]), PREDICT at x_adv on samples the attack
    never saw. Columns: idx, label, predict_clean, predict_adv, correct_adv, distance, time. An
    input is broken when PREDICT at x_adv returns another class (an abstention shows nothing and
    is counted apart, at x and at x_adv). The fraction of inputs neither broken nor wrong at x is an
    empirical robust accuracy at eps: a stronger attack can only lower it, so it bounds the robust
    accuracy from ABOVE; certify's certified accuracy at radius eps bounds it from below. The last
    line says it; 'robustcert table ATTACK.tsv [CERTIFY.tsv]' sets the two side by side.
    """
    from .results import attack_line
    from .runs.attack import attack_dataset

    def run(smoothed, dataset, out_path, **run_options):
        frame = attack_dataset(smoothed, dataset, out_path, eps=eps, steps=steps, m=m, **run_options)
        click.echo(attack_line(frame, eps))
        return frame

    dataset_run(run, method="cohen", method_options={"noise": noise}, kind="attack", n=n, alpha=alpha, batch_size=batch_size,
                seed=seed, precision="fp32", channels_last=None, compile_model=False, distributed=False, **options)


# --------------------------------------------------------------------------- training
@main.command(interrupted="the checkpoint and sidecar of the last finished epoch, if any, are kept; --resume continues")
@option("--data", "data_spec", default="digits", show_default=True,
        help="Training data: digits, mnist:ROOT, fashion-mnist:ROOT, cifar10:ROOT, imagefolder:ROOT or "
             "npz:PATH (its train split; per-epoch accuracy on its val split).", section=MODEL_AND_DATA)
@option("--sigma", type=float, default=None,
        help="Noise level to train at (pixel units, [0,1] space); 0: clean images (a classifier for certify "
             "--denoiser). Required, except with --keep.", section=TRAINING)
@option("--noise", type=click.Choice(list(NOISES)), default=None,
        help="The noise to train with: the one certify --noise will certify with (--sigma is its per-coordinate "
             "standard deviation) [default: gaussian].", section=TRAINING)
@option("--keep", type=click.IntRange(min=1), default=None,
        help="Randomized ablation (Levine and Feizi 2020) instead of noise: keep this many random pixels of each "
             "copy, as certify --method ablation --keep K does (no --sigma).", section=TRAINING)
@option("--arch", default=None,
        help="Architecture [default: from the input shape: mnist_cnn for 28x28 grey, cifar_resnet110 for "
             "32x32 colour, resnet50 for 224x224, digits_cnn for the digits].", section=MODEL_AND_DATA)
@option("--epochs", type=int, default=90, show_default=True, help="Passes over the training split.", section=TRAINING)
@option("--batch", "batch_size", type=int, default=256, show_default=True,
        help="Images per step (each with --noise-copies noisy copies).", section=TRAINING)
@option("--lr", type=float, default=0.1, show_default=True, help="SGD learning rate.", section=TRAINING)
@option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum.", section=TRAINING)
@option("--weight-decay", type=float, default=1e-4, show_default=True, help="SGD weight decay (L2 penalty).",
        section=TRAINING)
@option("--lr-step", type=int, default=None,
        help="Multiply the learning rate by 0.1 every LR_STEP epochs [default: a third of --epochs].", section=TRAINING)
@option("--seed", type=int, default=0, show_default=True,
        help="Seed of the initial weights, the data order and the noise: same seed, same model.", section=TRAINING)
@option("--consistency", "consistency", type=float, default=None, metavar="LAMBDA",
        help="Consistency regularization (Jeong and Shin 2020) with weight LAMBDA [default: plain Gaussian "
             "augmentation].", section=TRAINING)
@option("--eta", type=float, default=None, help="--consistency: weight of the entropy term [default: 0.5].", section=TRAINING)
@option("--noise-copies", type=int, default=None,
        help="Noisy copies M of each image per step [default: 2 with --consistency, else 1].", section=TRAINING)
@option("--adversarial", type=float, default=None, metavar="EPS",
        help="SmoothAdv (Salman et al. 2019): train on the PGD adversarial example (l2 radius EPS) of the soft "
             "smoothed classifier of the current model instead of the clean image.", section=TRAINING)
@option("--attack-steps", type=int, default=None,
        help="--adversarial: PGD steps per training step [default: 2]; the attack and the loss share the "
             "--noise-copies draws.", section=TRAINING)
@option("--dual-split", "dual_split", default=None, type=click.Choice(list(SPLITS)),
        help="Train a dual smoothing branch model on the sub-images of this pixel split (needs --branch; the "
             "same as certify's --dual-split; training always reads the train split of --data).",
        section=MODEL_AND_DATA)
@option("--split", "deprecated_split", default=None, type=click.Choice(list(SPLITS)), hidden=True,
        help="Deprecated name of --dual-split (certify's --split is the dataset split).", section=MODEL_AND_DATA)
@option("--branch", default=None, type=click.Choice(["a", "b"]), help="--dual-split: which sub-image.",
        section=MODEL_AND_DATA)
@option("--augment", default="auto", show_default=True, type=click.Choice(["auto", "none", "crop-flip"]),
        help="Clean-image augmentation before the noise (auto: crop-flip for 32x32 colour, else none).", section=TRAINING)
@option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.", section=ENGINE)
@option("--threads", type=int, default=None, help=THREADS_HELP, section=ENGINE)
@option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32", show_default=True,
        help="Autocast precision of the forward pass.", section=ENGINE)
@option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
        help="Checkpoint to write (reference format; a JSON sidecar FILE.json is written beside it).", section=OUTPUT)
@option("--resume", is_flag=True, help="Continue an interrupted run from its last finished epoch, or extend a "
        "finished one to a larger --epochs (same recipe otherwise).", section=OUTPUT)
@option("--quiet", is_flag=True, help="No progress bar and no per-epoch lines.", section=OUTPUT)
def train(data_spec, sigma, noise, keep, arch, epochs, batch_size, lr, momentum, weight_decay, lr_step, seed, consistency, eta,
          noise_copies, adversarial, attack_steps, dual_split, deprecated_split, branch, augment, device, threads,
          precision, out_path, resume, quiet):
    """Train a base classifier with Gaussian noise augmentation (Cohen et al. 2019), consistency
    regularization (Jeong and Shin 2020) or SmoothAdv (Salman et al. 2019, --adversarial), for
    certification at --sigma.

    Writes a reference checkpoint (certify loads it without --arch) after every epoch, and
    FILE.json with the per-epoch losses and the clean and noisy validation accuracy.
    """
    from .runs.train import train_model

    if eta is not None and consistency is None:
        raise CLIError("--eta needs --consistency")
    if deprecated_split is not None:
        if dual_split is not None:
            raise CLIError("give --dual-split only (--split is its deprecated name)")
        click.echo("robustcert: note: train --split is deprecated: it is the dual pixel split, now --dual-split "
                   "(certify's --split is the dataset split)", err=True)
        dual_split = deprecated_split
    result = train_model(
        data_spec, out_path, sigma=sigma, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
        weight_decay=weight_decay, lr_step=lr_step, seed=seed, consistency=consistency,
        eta=0.5 if eta is None else eta, noise_copies=noise_copies, adversarial=adversarial,
        attack_steps=attack_steps, dual_split=dual_split, branch=branch, augment=augment,
        device=device, threads=threads, precision=precision, resume=resume, progress=not quiet,
        log=None if quiet else click.echo, command=invocation_command(), noise=noise, keep=keep)
    if result.epochs_trained == 0:
        click.echo(f"nothing to train: {out_path} already holds the {len(result.history)} epochs asked for "
                   f"(--resume --epochs N with N > {len(result.history)} trains it further); nothing was written")
    else:
        click.echo(f"wrote {out_path} ({result.arch}, {len(result.history)} epochs) and {sidecar_path(out_path).name}")


@main.command("train-denoiser", interrupted="the folder of the last save, if any, is kept with its resume state; "
              "--resume continues")
@option("--data", "data_spec", required=True,
        help="Training images: digits, mnist:ROOT, fashion-mnist:ROOT, cifar10:ROOT, imagefolder:ROOT or npz:PATH "
             "(its train split; denoising error on its val split).", section=MODEL_AND_DATA)
@option("--sigma", "sigmas", default="0.5", show_default=True,
        help="The certification sigma(s) the denoiser is for, comma-separated (pixel units).", section=TRAINING)
@option("--timesteps", type=click.Choice(["around", "full"]), default="around", show_default=True,
        help="around: train on t within 1 +- --window of each sigma's t* (one-shot denoising asks nothing "
             "else); full: all timesteps (needed by --denoiser-steps).", section=TRAINING)
@option("--window", type=float, default=0.25, show_default=True, help="--timesteps around: relative width.",
        section=TRAINING)
@option("--channels", default="16,32,64", show_default=True,
        help="UNet block widths, one per level (each level halves the image).", section=TRAINING)
@option("--steps", type=int, default=4000, show_default=True, help="AdamW steps.", section=TRAINING)
@option("--batch", "batch_size", type=int, default=128, show_default=True, help="Images per step.", section=TRAINING)
@option("--lr", type=float, default=2e-3, show_default=True, help="Peak learning rate (warm-up, cosine decay).",
        section=TRAINING)
@option("--ema", type=float, default=0.999, show_default=True, help="Decay of the saved moving average.",
        section=TRAINING)
@option("--seed", type=int, default=0, show_default=True, help="Initial weights, data, timesteps and noise.",
        section=TRAINING)
@option("--save-every", type=int, default=250, show_default=True,
        help="Write the folder (and the resume state) every so many steps.", section=OUTPUT)
@option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.", section=ENGINE)
@option("--threads", type=int, default=None, help=THREADS_HELP, section=ENGINE)
@option("--out", "out_path", type=click.Path(file_okay=False, path_type=Path), required=True,
        help="Folder to write (unet/, scheduler/, training.json): what certify --denoiser reads.", section=OUTPUT)
@option("--resume", is_flag=True, help="Continue an interrupted run from its last save.", section=OUTPUT)
@option("--quiet", is_flag=True, help="No progress bar and no per-save lines.", section=OUTPUT)
def train_denoiser(data_spec, sigmas, timesteps, window, channels, steps, batch_size, lr, ema, seed, save_every,
                   device, threads, out_path, resume, quiet):
    """Train a DDPM denoiser (diffusers UNet2DModel + DDPMScheduler) for certify --denoiser
    (denoised smoothing, Carlini et al. 2023) on your own images.

    One-shot denoising asks the model about one timestep, t* of --sigma, so by default it trains
    only around it. Writes the folder every --save-every steps, with training.json (the command,
    the loss and the validation denoising error at t*).
    """
    from .runs.denoiser import train_denoiser as run

    try:
        widths = [int(v) for v in channels.split(",")]
    except ValueError:
        raise CLIError(f"bad --channels {channels!r}: use block widths such as 16,32,64") from None
    result = run(data_spec, out_path, sigmas=parse_float_list(sigmas, "--sigma"), timesteps=timesteps,
                 window=window, channels=widths, steps=steps, batch_size=batch_size, lr=lr, ema=ema, seed=seed,
                 save_every=save_every, device=device, threads=threads, resume=resume, progress=not quiet,
                 log=None if quiet else click.echo, command=invocation_command())
    click.echo(f"wrote {out_path} ({result.parameters['steps']} steps): certify with --denoiser {out_path}")


# --------------------------------------------------------------------------- tables, plots, demo
def split_labels(labels: str | None, count: int) -> list[str] | None:
    """``--labels a,b,c``: one label per file, or None for the default (shortest distinct path)."""
    if labels is None:
        return None
    parts = [label.strip() for label in labels.split(",")]
    if len(parts) != count or not all(parts):
        raise CLIError(f"--labels needs {count} non-empty comma-separated labels (one per file), got {labels!r}")
    return parts


RESULT_FILES = click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
LABELS = click.option("--labels", default=None,
                      help="Comma-separated names, one per file (default: the shortest distinct path ends).")
NORM = click.option("--norm", type=click.Choice(list(NORMS)), default=None,
                    help="Show radii in this norm: linf converts l2 and l1 radii (R/sqrt(d), R/d; weak bounds); "
                         "default: the files' own norm.")
FORCE = click.option("--force", is_flag=True,
                     help="Replace --out even if robustcert did not write it there (never a result file, a sidecar, "
                          "an input or a run's output such as a checkpoint of robustcert train).")
MIXED_NORMS = click.option("--mixed-norms", is_flag=True,
                           help="Allow files whose radii are in different norms (each label then names its norm).")


@main.command(interrupted=WRITES_AT_THE_END)
@RESULT_FILES
@click.option("--radii", default=None,
              help="Radii as 0,0.25,0.5 or START:STOP:STEP (default: 0 up to the largest certified radius, at most "
                   "9 columns).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "latex", "csv"]), default="markdown",
              show_default=True, help="csv is data: numbers only, one row per file, no marks unless --mark.")
@LABELS
@click.option("--decimals", type=click.IntRange(0, 6), default=3, show_default=True, help="Digits after the point.")
@click.option("--mark/--no-mark", "mark", default=None,
              help="Mark the best value of each column among comparable files [default: on for markdown and "
                   "latex, off for csv].")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the table to this file instead of printing it; it replaces only a table robustcert "
                   "table wrote there (see --force).")
@FORCE
@NORM
@MIXED_NORMS
def table(files, radii, fmt, labels, decimals, mark, out_path, force, norm, mixed_norms):
    """Summarise result files as a certified-accuracy table.

    Reads certify/predict TSVs, ours or the published ones, certify-policy TSVs, or attack TSVs.

    One line per certify/predict file: certified accuracy at each radius (abstentions count as
    wrong, radius >= r, over all rows), clean accuracy, abstention rate, average certified radius
    (ACR) and the number of rows. The best value of each column is bold (markdown), \\textbf
    (latex) or starred (csv with --mark), compared among files of the same kind (certify or
    predict) and the same number of rows only. A certify-policy file gives one line per budget.
    Radii are in the norm the run recorded (l2 for the reference files): columns say it (l1 r=0.5,
    l0 r=3 pixels; plain r=0.5 is l2), and files of different norms are refused unless
    --mixed-norms. --norm linf converts l2 and l1 radii to l-infinity ones, R/sqrt(d) and R/d: valid
    but weak bounds.

    Never counted silently (a warning on stderr): an idx repeated with the same result (counted
    once; with different results the file is refused), a run that was interrupted, failed or has
    fewer rows than it selected. A sequential run with a target radius is marked [sequential,
    target r=R] and not ranked against others (its radii stop near the target).

    Attack TSVs (robustcert attack) give one line each: eps, clean accuracy, abstentions at x and
    at x_adv, broken (PREDICT returns another class at x_adv) and the empirical robust accuracy (an
    upper bound); certify TSVs given with them add their certified accuracy at r = eps on the same
    images (a lower bound).
    """
    from .results import LINF_NOTE, marking_note, render_table, table_from_files, write_derived_file

    summary = table_from_files(list(files), radii, split_labels(labels, len(files)), norm, mixed_norms)
    if norm == "linf":
        click.echo(f"robustcert: note: {LINF_NOTE}", err=True)
    mark = fmt != "csv" if mark is None else mark
    text = render_table(summary, fmt, decimals, mark_best=mark)
    note = marking_note(summary) if mark else None
    if note:
        click.echo(f"robustcert: note: {note}", err=True)
    if out_path is None:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {write_derived_file(out_path, text, list(files), 'table', force=force)}")


@main.command(interrupted=WRITES_AT_THE_END)
@RESULT_FILES
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Figure file: .png, .pdf or .svg; it replaces only a figure robustcert plot wrote there (see "
                   "--force).")
@FORCE
@LABELS
@click.option("--max-radius", type=float, default=None, help="Right end of the radius axis.")
@click.option("--title", default=None, help="Title above the figure.")
@NORM
@MIXED_NORMS
def plot(files, out_path, force, labels, max_radius, title, norm, mixed_norms):
    """Plot certified accuracy against radius.

    One curve per certify TSV (or certified return against the budget, one per certify-policy
    TSV); headless (no display needed). Curves are named after the files, with sigma from their
    sidecars. The radius axis names the norm the runs recorded (l2, l1, or pixels for l0); files of
    different norms need --mixed-norms. A dotted line in a curve's colour marks the largest radius
    a Gaussian CERTIFY run's n and alpha allow, sigma * Phi^-1(alpha^(1/n)): the curve drops to 0
    there at the latest, whatever the model.
    """
    from .plotting import plot_files

    if max_radius is not None and not (max_radius > 0 and max_radius < float("inf")):
        raise CLIError(f"--max-radius must be a finite number > 0, got {max_radius}")
    if norm == "linf":
        from .results import LINF_NOTE

        click.echo(f"robustcert: note: {LINF_NOTE}", err=True)
    written = plot_files(list(files), out_path, split_labels(labels, len(files)), max_radius, title,
                         mixed_norms=mixed_norms, norm=norm, force=force)
    click.echo(f"wrote {written}")


@main.command(interrupted="the demo's earlier output, if any, is unchanged")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DEMO_DIR,
              show_default=True,
              help="Folder for the demo's files. The demo replaces only files it wrote there itself, unchanged "
                   "(it refuses otherwise); anything else in the folder is left alone.")
@click.option("--n0", type=int, default=100, show_default=True, help="Selection samples per image.")
@click.option("--n", "n", type=int, default=10_000, show_default=True, help="Estimation samples per image.")
@click.option("--alpha", type=float, default=DEFAULT_ALPHA, show_default=True, help=ALPHA_HELP)
@click.option("--batch", "batch_size", type=int, default=1000, show_default=True,
              help="Noisy samples per forward pass.")
@click.option("--seed", type=int, default=0, show_default=True, help=SEED_HELP)
@click.option("--max", "max_inputs", type=int, default=-1, show_default=True,
              help="Only the first MAX test images (-1: all 360).")
@click.option("--jobs", type=int, default=3, show_default=True,
              help="Certify runs at once, as child processes (1: one after another in this process).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def demo(out_dir, n0, n, alpha, batch_size, seed, max_inputs, jobs, quiet):
    """Run the main job on the bundled digits models.

    Writes TSVs, a table and a plot.

    Certifies bundled:digits-0.12/0.25/0.50 at sigma 0.12/0.25/0.5 on the 360 digits test images
    ({duration} at the defaults), then writes the three TSVs with their JSON sidecars, table.md,
    certified_accuracy.png and a README.md into OUT_DIR.
    """
    from .runs.demo import run_demo

    run_demo(out_dir, n=n, n0=n0, alpha=alpha, batch_size=batch_size, seed=seed, max_inputs=max_inputs,
             quiet=quiet, jobs=jobs, echo=lambda line: click.echo(line))


demo.help = demo.help.replace("{duration}", DEMO_DURATION)


# --------------------------------------------------------------------------- policy smoothing (RL)
def parse_float_list(text: str, name: str) -> list[float]:
    """``"0,0.1,0.2"`` or ``"0:0.8:0.1"`` (start:stop:step, inclusive) as floats."""
    from .results import ResultsError, parse_radii

    try:
        return parse_radii(text)
    except ResultsError:
        raise CLIError(f"bad {name} {text!r}: use e.g. 0,0.1,0.2 or 0:0.8:0.1 (numbers >= 0)") from None


@main.command("certify-policy", interrupted=WRITES_AT_THE_END)
@click.option("--env", "env_id", required=True,
              help="The seed paper's environments in its setting: cartpole, mountaincar, pong (one round), freeway; "
                   "or a gymnasium id (CartPole-v1, ...) or an ALE id.")
@click.option("--policy", "policy_spec", required=True,
              help="Bundled policy (cartpole-0.2, mountaincar-0.2, pong-0.05, freeway-0.05, ...), built-in "
                   "controller (noop: the environment's no-op action; cartpole-pd), .pt checkpoint / TorchScript "
                   "file, or stable-baselines3 .zip (needs --trust-checkpoint).")
@click.option("--sigma", type=float, required=True, help="Observation noise level (observation units).")
@click.option("--episodes", type=int, default=1000, show_default=True, help="Smoothed episodes n.")
@click.option("--budgets", required=True, help="Episode l2 budgets B: 0,0.1,0.2 or 0:0.8:0.1.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output TSV, one row per budget (a JSON sidecar FILE.json is written beside it).")
@click.option("--alpha", type=float, default=0.05, show_default=True, help=ALPHA_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the environments and the noise.")
@click.option("--bound", type=click.Choice(["dkw", "clopper-pearson"]), default="dkw", show_default=True,
              help="Simultaneous lower band on P(R >= v): one-sided DKW, or Clopper-Pearson with alpha split over "
                   "the levels.")
@click.option("--return-lower-bound", type=float, default=None,
              help="A known lower bound on every episode's return (v_0) [default: the named environment's "
                   "(pong -1, cartpole / mountaincar / freeway 0), else 0].")
@click.option("--quantiles", default="0.1,0.25,0.5", show_default=True,
              help="Certified quantiles q: columns certified_qXX with P_attacked(R >= value) >= 1 - q.")
@click.option("--thresholds", default=None,
              help="Fixed return grid declared in advance (e.g. 1:200:1); default: the observed returns.")
@click.option("--frame-stack", type=int, default=None, help="Noisy frames the agent sees (default: the policy's).")
@click.option("--max-episode-steps", type=int, default=None,
              help="Episode time limit (default: the policy's, else the environment's).")
@click.option("--one-round", is_flag=True, help="Pong: end each episode at the first point.")
@click.option("--num-envs", type=int, default=64, show_default=True, help="Vectorised environments.")
@click.option("--device", default="cpu", show_default=True, help="Where a torch policy runs (auto, cpu, cuda).")
@click.option("--threads", type=int, default=None, help=THREADS_HELP)
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow full unpickling of the policy file (SB3 .zip). DANGEROUS: runs code from the file.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def certify_policy(env_id, policy_spec, sigma, episodes, budgets, out_path, alpha, seed, bound, return_lower_bound,
                   quantiles, thresholds, frame_stack, max_episode_steps, one_round, num_envs, device, threads,
                   trust_checkpoint, quiet):
    """Certify the expected return of a smoothed RL agent (Kumar et al. 2022); one row per budget."""
    from .runs.policy import certify_policy_file
    from .runs.progress import progress_bar

    check_output(out_path, resume=False, kind="certify-policy")
    if max_episode_steps is not None:
        check_count(max_episode_steps, "--max-episode-steps")
    if threads is not None:
        check_count(threads, "--threads")
    budget_list = parse_float_list(budgets, "--budgets")
    quantile_list = parse_float_list(quantiles, "--quantiles")
    threshold_list = parse_float_list(thresholds, "--thresholds") if thresholds else None
    with progress_bar(episodes if isinstance(episodes, int) and episodes > 0 else 0, not quiet,
                      unit="episode", what="certify-policy") as bar:
        table = certify_policy_file(
            env_id, policy_spec, sigma, out_path, episodes=episodes, budgets=budget_list, alpha=alpha, seed=seed,
            bound=bound, return_lower_bound=return_lower_bound, quantiles=quantile_list, thresholds=threshold_list,
            frame_stack=frame_stack, max_episode_steps=max_episode_steps, one_round=one_round, num_envs=num_envs,
            device=device, threads=threads, trust_checkpoint=trust_checkpoint,
            progress=lambda done: bar.update(done - bar.n), command=invocation_command())
    click.echo(table[["budget", "certified_return"] + [c for c in table.columns if c.startswith("certified_q")]]
               .to_string(index=False))
    click.echo(f"wrote {out_path} ({len(table)} rows) and {sidecar_path(out_path).name}")


@main.command(interrupted="nothing was written to --out-dir (a new one may be left empty)")
@click.option("--models", default="digits,cifar_resnet110,resnet50", show_default=True,
              help="Comma-separated: digits (bundled CNN), mnist_cnn (28x28), cifar_resnet110 (32x32), "
                   "resnet50 (224x224), and torchvision:NAME / timm:NAME (random weights, their own input size "
                   "and preprocessing).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32", show_default=True,
              help="Autocast precision for (a) and (b).")
@click.option("--channels-last/--no-channels-last", "channels_last", default=None,
              help="Layout for (a) and (b) [default: the engine's measured default].")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model for (a) and (b).")
@click.option("--graphs/--no-graphs", "graphs", default=None,
              help="CUDA graphs of (b)'s steady-state batches (and of (a)) [default: on for CUDA].")
@click.option("--sound", is_flag=True, help="Also time (b) in the floating-point-sound mode (sound/standard).")
@click.option("--quick", is_flag=True, help="Small sample counts (a minute or two on CPU).")
@click.option("--sweep", is_flag=True, help="Also measure (b) under each engine option.")
@click.option("--sweep-compile", is_flag=True, help="Include torch.compile in the sweep for every model (slow).")
@click.option("--no-packing", is_flag=True, help="Skip the cross-input packing measurement.")
@click.option("--n", "n", type=int, default=None, help="Override the profile's estimation samples per image.")
@click.option("--reps", type=int, default=None, help="Override the profile's repetitions.")
@click.option("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's.")
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="cpu: process CPU time, for --threads 1 on a CPU shared with other jobs.")
@click.option("--no-malloc-tuning", is_flag=True, help="Keep glibc's default allocator settings (CPU).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("robustcert-bench"),
              show_default=True, help="Folder for the JSON and markdown (results/bench holds the committed figures).")
def bench(models, device, precision, channels_last, compile_model, graphs, sound, quick, sweep, sweep_compile,
          no_packing, n, reps, threads, clock, no_malloc_tuning, out_dir):
    """Measure the certification loop: (a) forward-pass limit, (b) robustcert, (c) published loop.

    Interleaved repetitions, medians, samples/s and the ratios (b)/(a), (b)/(c); plus cross-input
    packing for small n. Writes JSON and markdown into --out-dir (see robustcert/runs/bench.py).
    """
    from .engine import as_device
    from .runs.bench import MODELS, run_bench, unknown_models

    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = unknown_models(names)
    if unknown or not names:
        raise CLIError(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}, "
                       "torchvision:NAME, timm:NAME")
    for value, name in ((n, "--n"), (reps, "--reps"), (threads, "--threads")):
        if value is not None:
            check_count(value, name)  # --reps 0 was a statistics traceback, --threads -1 a torch one
    device = as_device(device)  # before creating --out-dir: a refused run leaves no folder behind
    out_dir.mkdir(parents=True, exist_ok=True)
    run_bench(names, device, precision, channels_last, compile_model, quick, out_dir, threads,
              sweep, not no_packing, n, reps, clock, not no_malloc_tuning, log=click.echo, graphs=graphs, sound=sound,
              sweep_compile=sweep_compile)


if __name__ == "__main__":
    main()
