"""The ``robustcert`` command line: parse, call the Python API, write files.

Every error a user can cause is printed as one line ``robustcert: error: ...`` on stderr with
exit status 2; result rows already written stay intact.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import click

from .errors import CLIError, RobustCertError
from .cli_methods import METHOD_BUILDERS, model_input_shape, options_for
from .runtime import BATCH_SIZE, runtime_options

DEFAULT_N0, DEFAULT_N, DEFAULT_ALPHA, DEFAULT_BATCH = 100, 100_000, 0.001, 1000


def fail(message: str) -> None:
    click.echo(f"robustcert: error: {message}", err=True)
    sys.exit(2)


class ErrorReportingGroup(click.Group):
    """Turn every user error into one readable line on stderr and exit status 2.

    RobustCertError, OSError and click's usage errors (missing option, ``--sigma abc``, unknown
    command) all become ``robustcert: error: ...``. Called with ``standalone_mode=False`` (from
    Python), errors propagate as exceptions instead.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
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
        except click.Abort:
            click.echo("robustcert: interrupted (rows already written are kept; --resume continues)", err=True)
            sys.exit(130)
        except RobustCertError as exc:
            fail(" ".join(str(exc).split()))
        except OSError as exc:
            fail(f"{exc.strerror or exc}: {exc.filename}" if getattr(exc, "filename", None) else str(exc))
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robustcert")
def main():
    """Certify the adversarial robustness of classifiers by randomized smoothing.

    \b
    Typical session:
      robustcert demo          # the main job: bundled digits models, 1-3 min
      robustcert certify --model bundled:digits-0.25 --sigma 0.25 --n 10000 --out d.tsv
      robustcert table d.tsv other.tsv --format latex
      robustcert plot d.tsv other.tsv --out curve.pdf

    Errors are one line on stderr (exit status 2); result rows already written are never lost.
    Run 'robustcert COMMAND --help' for the options of a command.
    """


# --------------------------------------------------------------------------- shared options
def resolve_device(device: str):
    """--device: auto, cpu, cuda, cuda:N (an unknown or unavailable device is a one-line error)."""
    from .engine import as_device

    return as_device(device)


def model_and_data_options(func):
    options = [
        click.option("--model", "model_spec", required=True,
                     help="bundled:NAME, a reference checkpoint, a state_dict (with --arch) or a TorchScript file."),
        click.option("--arch", default=None, help="Architecture of a plain state_dict (e.g. cifar_resnet110)."),
        click.option("--trust-checkpoint", is_flag=True,
                     help="Allow full unpickling of the checkpoint. DANGEROUS: runs code from the file."),
        click.option("--data", "data_spec", default="digits", show_default=True,
                     help="digits, cifar10:ROOT, mnist:ROOT, imagefolder:ROOT or npz:PATH."),
        click.option("--split", default="test", show_default=True, type=click.Choice(["train", "test", "val"])),
        click.option("--sigma", type=float, required=True, help="Noise level (pixel units, [0,1] space)."),
        click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
                     help="Output TSV (a JSON sidecar FILE.json is written beside it)."),
        click.option("--alpha", type=float, default=DEFAULT_ALPHA, show_default=True),
        click.option("--batch", "batch_size", type=BATCH_SIZE, default=DEFAULT_BATCH, show_default=True,
                     help="Noisy samples per forward pass, or auto (free device memory / a short CPU measurement)."),
        click.option("--skip", type=int, default=1, show_default=True, help="Certify every SKIP-th input."),
        click.option("--max", "max_inputs", type=int, default=-1, show_default=True,
                     help="Stop after this many inputs (-1: all)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run of the same command."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def package_versions() -> dict:
    import numpy
    import scipy
    import torch

    from . import __version__

    return {"robustcert": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__}


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def selected_indices(length: int, skip: int, max_inputs: int) -> list[int]:
    if skip < 1:
        raise CLIError(f"--skip must be >= 1, got {skip}")
    if max_inputs == 0 or max_inputs < -1:
        raise CLIError(f"--max must be >= 1, or -1 for all inputs, got {max_inputs}")
    indices = list(range(0, length, skip))
    return indices if max_inputs < 0 else indices[:max_inputs]


def load_run_inputs(model_spec, arch, trust_checkpoint, data_spec, split, device, model_input_shape=None):
    """Load the base model and the dataset, and check that they fit together.

    ``model_input_shape(dataset_shape)``, when given, is the input shape the model must take
    (dual smoothing's branch models take sub-images); by default the dataset's.
    """
    from .data import load_dataset
    from .models import load_checkpoint

    dataset = load_dataset(data_spec, split)
    loaded = load_checkpoint(model_spec, arch=arch, device=device, trust_checkpoint=trust_checkpoint)
    if loaded.num_classes is not None and loaded.num_classes != dataset.num_classes:
        raise CLIError(
            f"class-count mismatch: model {model_spec} has {loaded.num_classes} classes, "
            f"dataset {data_spec} has {dataset.num_classes}"
        )
    if model_input_shape is not None:
        expected = tuple(model_input_shape(tuple(dataset.input_shape)))
        if loaded.input_shape is not None and tuple(loaded.input_shape) != expected:
            raise CLIError(
                f"shape mismatch: model {model_spec} expects inputs {tuple(loaded.input_shape)}, but this method "
                f"feeds it {expected} (dataset {data_spec} has {tuple(dataset.input_shape)})"
            )
    elif loaded.input_shape is not None and tuple(loaded.input_shape) != tuple(dataset.input_shape):
        raise CLIError(
            f"shape mismatch: model {model_spec} expects inputs {tuple(loaded.input_shape)}, "
            f"dataset {data_spec} has {tuple(dataset.input_shape)}"
        )
    return loaded, dataset


# --------------------------------------------------------------------------- output files
class RowWriter:
    """Append rows to a TSV, one flushed line each; refuses to clobber existing results.

    With ``resume``: the header must match, a trailing partial line (a run killed mid-write) is
    dropped, and the indices already written are returned so the run can skip them.
    """

    def __init__(self, path: Path, header: tuple[str, ...], resume: bool):
        self.path = path
        self.header = "\t".join(header)
        self.done: set[int] = set()
        exists = check_output(path, resume)
        self.created, self.rows_written = not Path(path).exists(), 0  # see discard_if_unused
        if exists:
            self._recover()
        else:
            with open(path, "w") as handle:
                handle.write(self.header + "\n")
        self.handle = open(path, "a")

    def _recover(self) -> None:
        try:
            text = self.path.read_text()
        except UnicodeDecodeError:
            raise CLIError(f"cannot resume {self.path}: it is not a text file") from None
        lines = text.split("\n")
        if len(lines) == 1 and self.header.startswith(text):  # killed while writing the header: no rows
            lines = [self.header, ""]
        if lines[0] != self.header:
            raise CLIError(f"cannot resume {self.path}: its header is {lines[0]!r}, expected {self.header!r}")
        complete = lines[:-1]  # the last element is "" after a final newline, else a partial row
        width = len(self.header.split("\t"))
        kept = [complete[0]] + [line for line in complete[1:] if len(line.split("\t")) == width]
        try:
            self.done = {int(line.split("\t")[0]) for line in kept[1:]}
        except ValueError:
            raise CLIError(f"cannot resume {self.path}: a row has a non-integer idx") from None
        if len(kept) != len(complete) or not text.endswith("\n"):
            # drop the partial last row of a killed run; atomic, so a crash here loses nothing
            from .results import write_text_atomically

            write_text_atomically(self.path, "\n".join(kept) + "\n")

    def write(self, line: str) -> None:
        self.handle.write(line + "\n")
        self.handle.flush()
        self.rows_written += 1

    def close(self) -> None:
        self.handle.close()

    def discard_if_unused(self) -> None:
        """Remove the file and its sidecar if this writer created the file and wrote no row: a run
        that fails before its first row (NaN outputs, a model that does not fit) leaves nothing."""
        self.close()
        if self.created and self.rows_written == 0:
            for path in (Path(self.path), Path(self.path).with_name(Path(self.path).name + ".json")):
                path.unlink(missing_ok=True)


def check_output(path: Path, resume: bool) -> bool:
    """Check that ``path`` can be written; True when it holds results that ``resume`` continues.

    Called before anything slow (model loading) and again by RowWriter, so that a run that is
    going to be refused fails at once and never touches existing results.
    """
    path = Path(path)
    if path.is_dir():
        raise CLIError(f"output {path} is a folder, not a file")
    if not path.parent.is_dir():
        raise CLIError(f"output folder does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise CLIError(f"output folder is not writable: {path.parent}")
    exists = path.exists() and path.stat().st_size > 0
    if exists and not resume:
        raise CLIError(f"{path} already exists and is not empty: pass --resume to continue it, or remove it")
    if exists and not os.access(path, os.W_OK):
        raise CLIError(f"output file is not writable: {path}")
    return exists


def previous_runs(path: Path, record: dict) -> list:
    """The runs recorded in the sidecar of a result file being resumed, after checking that the
    new run has the same parameters, model (sha256), data and kind; [] if there is nothing yet.

    A file with rows but no sidecar cannot be resumed: its parameters are unknown.
    """
    path = Path(path)
    sidecar = path.with_name(path.name + ".json")
    has_rows = path.is_file() and b"\n" in path.read_bytes().rstrip(b"\n")
    if not sidecar.exists():
        if has_rows:
            raise CLIError(f"cannot resume {path}: its sidecar {sidecar.name} is missing, so its parameters are unknown")
        return []
    try:
        previous = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CLIError(f"cannot resume: sidecar {sidecar} is not valid JSON") from None
    if not isinstance(previous, dict) or not isinstance(previous.get("parameters", {}), dict):
        raise CLIError(f"cannot resume: sidecar {sidecar} is not a robustcert sidecar (no parameters object)")
    old, new = previous.get("parameters", {}), record["parameters"]
    differing = [k for k in sorted(set(old) | set(new))
                 if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str)]
    for section, key in (("model", "sha256"), ("data", "spec")):
        if (previous.get(section) or {}).get(key) != (record.get(section) or {}).get(key):
            differing.append(f"{section} {key}")
    if previous.get("kind") != record.get("kind"):
        differing.append("command")
    if differing:
        raise CLIError(f"cannot resume {path}: differs from the first run in {', '.join(differing)}")
    return previous.get("runs", [])


def write_sidecar(path: Path, record: dict, resume: bool) -> None:
    """Write ``FILE.json`` atomically; on resume the run must match the recorded one (previous_runs)."""
    sidecar = path.with_name(path.name + ".json")
    from .results import write_text_atomically

    if resume:
        record["runs"] = previous_runs(path, record) + record["runs"]
    write_text_atomically(sidecar, json.dumps(record, indent=2, default=str) + "\n")


def progress_bar(total: int, quiet: bool, unit: str = "input", initial: int = 0):
    """tqdm on stderr (inputs done, rate, ETA); off with --quiet or when stderr is not a terminal.

    ``initial`` counts work done by an earlier run (resume) without inflating the rate and ETA.
    """
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty())


# --------------------------------------------------------------------------- methods
def record_samples_used(out_path: Path, samples: list[int]) -> None:
    """Add this run's sample count (total, mean and max per input) to the sidecar's last run entry."""
    from . import distributed

    from .runtime import update_last_run

    samples = distributed.gather_after_run(samples)  # several processes: every rank's inputs, on rank 0 only
    if samples:
        update_last_run(out_path, samples_used={"inputs": len(samples), "total": int(sum(samples)),
                                                "mean_per_input": sum(samples) / len(samples),
                                                "max_per_input": max(samples)})


def invocation_command() -> str:
    """This run's command line, shell-quoted (``robustcert certify --model ...``).

    A caller that runs a command from Python (``certify.main(args, obj={"argv": [...]})``, as
    ``robustcert demo`` does) records the equivalent shell command through ``obj["argv"]``.
    """
    import shlex

    context = click.get_current_context(silent=True)
    obj = context.find_root().obj if context is not None else None
    if isinstance(obj, dict) and "argv" in obj:
        return shlex.join(["robustcert", *obj["argv"]])
    return shlex.join(["robustcert", *sys.argv[1:]])  # also for `python -m robustcert` (argv[0] __main__.py)


def run_record(kind, method, smoothed, loaded, dataset, parameters, device) -> dict:
    """The JSON sidecar: command, parameters (incl. alpha spending), model, data, device, versions."""
    return {
        "command": invocation_command(),
        "kind": kind,
        "method": method,
        "parameters": parameters,
        "model": {"spec": loaded.source, "arch": loaded.arch, "sha256": loaded.sha256},
        "data": {"spec": dataset.name, "num_classes": dataset.num_classes,
                 "input_shape": list(dataset.input_shape)},
        "runs": [{"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": invocation_command(),
                  "device": device_name(device),
                  "versions": package_versions()}],
    }


def inputs_per_call(n_total: int, batch_size: int) -> int:
    """How many inputs to certify per engine call: pack several when their samples fit a batch."""
    return max(1, batch_size // n_total) if n_total < batch_size else 1


def run_over_dataset(kind, columns, method, smoothed, loaded, dataset, parameters, device, out_path, resume,
                     quiet, samples_per_input, batch_size, indices, rows_for):
    """Shared driver of certify / predict: resumable, one flushed row per input, progress on stderr.

    ``rows_for(xs, indices, labels)`` returns one TSV line per input. Engine options and
    multi-process runs: robustcert/runtime.py and robustcert/distributed.py.
    """
    import torch

    from . import distributed, runtime

    runtime.prepare_run(smoothed, parameters, out_path, columns, resume)
    if distributed.current() is not None:
        return distributed.run_sharded(kind, columns, method, smoothed, loaded, dataset, parameters, device,
                                       out_path, resume, quiet, samples_per_input, batch_size, indices, rows_for)
    record = run_record(kind, method, smoothed, loaded, dataset, parameters, device)
    if resume:
        previous_runs(out_path, record)  # refuse a mismatched resume before touching the TSV
    writer = RowWriter(out_path, columns, resume)
    todo = [i for i in indices if i not in writer.done]
    write_sidecar(out_path, record, resume)
    started, samples_done, start = time.perf_counter(), 0, 0
    with progress_bar(len(indices), quiet, initial=len(indices) - len(todo)) as bar:
        try:
            while start < len(todo):  # --batch auto: one input per call until the engine chose its batch
                batch_indices = todo[start:start + runtime.inputs_per_call(samples_per_input, batch_size, smoothed)]
                start += len(batch_indices)
                items = [dataset[i] for i in batch_indices]
                xs = torch.stack([x for x, _ in items])
                for line in rows_for(xs, batch_indices, [label for _, label in items]):
                    writer.write(line)
                samples_done += samples_per_input * len(batch_indices)
                rate = samples_done / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(samples_per_s=f"{rate:.3g}", refresh=False)
                bar.update(len(batch_indices))
        except BaseException:
            writer.discard_if_unused()
            raise
        finally:
            writer.close()
            runtime.record_engine(out_path, smoothed)


def method_and_denoiser_options(func):
    """Options of the dual and lvm methods and the diffusion denoiser, shared by certify and predict."""
    options = [
        click.option("--model2", default=None, help="dual: base model of sub-image b (--model is sub-image a's)."),
        click.option("--arch2", default=None, help="dual: architecture of --model2 when it is a plain state_dict."),
        click.option("--sigma2", type=float, default=None, help="dual: noise level of branch b (default: --sigma)."),
        click.option("--dual-split", default=None, type=click.Choice(["checkerboard", "rows", "columns"]),
                     help="dual: how images are cut into two sub-images (default: checkerboard)."),
        click.option("--denoiser", default=None,
                     help="Diffusion denoiser in front of the model (Carlini et al. 2023): bundled:digits-ddpm "
                          "or a local diffusers folder (needs pip install robustcert[diffusion])."),
        click.option("--denoiser-steps", type=click.IntRange(min=1), default=None,
                     help="With --denoiser: run the deterministic DDIM chain from t* in this many model calls "
                          "instead of one-shot denoising (costs that many times more)."),
        click.option("--maps", default=None, help="lvm: simplex maps, e.g. softmax,sparsemax,hardmax."),
        click.option("--temperatures", default=None, help="lvm: logit multipliers t, e.g. 0.25,0.5,1,2."),
        click.option("--lipschitz", type=float, default=None,
                     help="lvm: l2 Lipschitz constant of the model's logits (enables the Lipschitz-margin radius)."),
        click.option("--lvm-selection", default=None, type=click.Choice(["holdout", "union"]),
                     help="lvm: choose map/temperature on the n0 selection samples, or union-bound the grid."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_smoothed(method, method_options, model_spec, arch, trust_checkpoint, data_spec, split, sigma, device):
    """Load the model and data, put the denoiser in front if asked, build the method.

    Returns (smoothed classifier, loaded model, dataset, run parameters of the method and denoiser).
    """
    from .methods.diffusion import with_denoiser

    method_options = options_for(method, method_options)
    loaded, dataset = load_run_inputs(model_spec, arch, trust_checkpoint, data_spec, split, device,
                                      model_input_shape(method, method_options))
    denoiser, steps = method_options.pop("denoiser", None), method_options.pop("denoiser_steps", None)
    if steps is not None and denoiser is None:
        raise CLIError("--denoiser-steps needs --denoiser")
    loaded, denoising = with_denoiser(loaded, denoiser, sigma, dataset.input_shape, device,
                                      multistep=steps is not None, steps=steps)
    smoothed = METHOD_BUILDERS[method](loaded, dataset.num_classes, sigma, device, method_options)
    return smoothed, loaded, dataset, {**method_options, **denoising}


@main.command()
@model_and_data_options
@runtime_options
@click.option("--n0", type=int, default=DEFAULT_N0, show_default=True, help="Selection samples per input.")
@click.option("--n", "n", type=int, default=DEFAULT_N, show_default=True, help="Estimation samples per input.")
@click.option("--method", type=click.Choice(sorted(METHOD_BUILDERS)), default="cohen", show_default=True)
@method_and_denoiser_options
@click.option("--sequential", is_flag=True, default=None,
              help="cohen: stop each input as soon as the answer is decided (anytime-valid confidence sequence).")
@click.option("--target-radius", type=float, default=None,
              help="--sequential: decide 'certified at radius R?' (stops when known at 1-alpha).")
@click.option("--tolerance", type=float, default=None,
              help="--sequential: stop when more samples cannot raise the radius by more than T.")
@click.option("--n-max", type=int, default=None, help="--sequential: most estimation samples per input (default: --n).")
def certify(model_spec, arch, trust_checkpoint, data_spec, split, sigma, out_path, alpha, batch_size, skip,
            max_inputs, seed, device, resume, quiet, n0, n, method, **method_options):
    """Certify the inputs of a dataset, one TSV row each.

    Columns: idx, label, predict, radius, correct, time (the reference format).
    """
    from .results import CERTIFY_COLUMNS, certify_row

    check_output(out_path, resume)  # fail before loading anything; never touch existing results
    device = resolve_device(device)
    smoothed, loaded, dataset, method_parameters = build_smoothed(
        method, method_options, model_spec, arch, trust_checkpoint, data_spec, split, sigma, device)
    n0, n, alpha, batch_size = smoothed.check_certify_args(n0, n, alpha, batch_size)
    parameters = {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "batch": batch_size, "seed": seed,
                  "skip": skip, "max": max_inputs, "split": split, "method": method, **method_parameters,
                  "alpha_spending": smoothed.alpha_spending(alpha)}

    samples_used = []  # per input certified in this run; the sidecar records total and mean

    def rows_for(xs, batch_indices, labels):
        certificates = smoothed.certify_batch(xs, n0, n, alpha, batch_size, seed, batch_indices)
        samples_used.extend(c.samples_used for c in certificates)
        return [certify_row(c.index, y, c.prediction, c.radius, c.time) for c, y in zip(certificates, labels)]

    try:
        run_over_dataset("certify", CERTIFY_COLUMNS, method, smoothed, loaded, dataset, parameters, device,
                         out_path, resume, quiet, n0 + n, batch_size, selected_indices(len(dataset), skip, max_inputs),
                         rows_for)
    finally:
        record_samples_used(out_path, samples_used)


@main.command()
@model_and_data_options
@runtime_options
@click.option("--n", "n", type=int, default=DEFAULT_N, show_default=True, help="Samples per input.")
@click.option("--method", type=click.Choice(sorted(METHOD_BUILDERS)), default="cohen", show_default=True)
@method_and_denoiser_options
def predict(model_spec, arch, trust_checkpoint, data_spec, split, sigma, out_path, alpha, batch_size, skip,
            max_inputs, seed, device, resume, quiet, n, method, **method_options):
    """Predict with the smoothed classifier (may abstain).

    Columns: idx, label, predict, correct, time (the reference format). How each method decides
    and spends alpha: its predict_batch (cohen and dual: Cohen et al.'s binomial test; lvm:
    simultaneous Bernstein / Clopper-Pearson bounds on every class, with the first map).
    """
    from .results import PREDICT_COLUMNS, predict_row

    check_output(out_path, resume)  # fail before loading anything; never touch existing results
    device = resolve_device(device)
    smoothed, loaded, dataset, method_parameters = build_smoothed(
        method, method_options, model_spec, arch, trust_checkpoint, data_spec, split, sigma, device)
    _, n, alpha, batch_size = smoothed.check_certify_args(1, n, alpha, batch_size)
    parameters = {"sigma": sigma, "n": n, "alpha": alpha, "batch": batch_size, "seed": seed, "skip": skip,
                  "max": max_inputs, "split": split, "method": method, **method_parameters}

    def rows_for(xs, batch_indices, labels):
        predictions = smoothed.predict_batch(xs, n, alpha, batch_size, seed, batch_indices)
        return [predict_row(p.index, y, p.prediction, p.time) for p, y in zip(predictions, labels)]

    run_over_dataset("predict", PREDICT_COLUMNS, method, smoothed, loaded, dataset, parameters, device, out_path,
                     resume, quiet, n, batch_size, selected_indices(len(dataset), skip, max_inputs), rows_for)


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


@main.command()
@RESULT_FILES
@click.option("--radii", default=None,
              help="Radii as 0,0.25,0.5 or START:STOP:STEP (default: 0 to the largest radius, at most 9 columns).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "latex", "csv"]), default="markdown",
              show_default=True)
@LABELS
@click.option("--decimals", type=click.IntRange(0, 6), default=3, show_default=True)
@click.option("--no-mark", is_flag=True, help="Do not mark the best value of each column.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the table to this file.")
def table(files, radii, fmt, labels, decimals, no_mark, out_path):
    """Summarise result files as a certified-accuracy table.

    Reads certify/predict TSVs, ours or the published ones.

    One line per file: certified accuracy at each radius (abstentions count as wrong, radius >= r,
    over all rows), clean accuracy, abstention rate, average certified radius (ACR) and the number
    of rows. The best value of each column is bold (markdown), \\textbf (latex) or starred (csv).
    """
    from .results import render_table, table_from_files, write_text_atomically

    summary = table_from_files(list(files), radii, split_labels(labels, len(files)))
    text = render_table(summary, fmt, decimals, mark_best=not no_mark)
    if out_path is not None:
        if not out_path.parent.is_dir():
            raise CLIError(f"output folder does not exist: {out_path.parent}")
        write_text_atomically(out_path, text)
    click.echo(text, nl=False)


@main.command()
@RESULT_FILES
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Figure file: .png, .pdf or .svg.")
@LABELS
@click.option("--max-radius", type=float, default=None, help="Right end of the radius axis.")
@click.option("--title", default=None)
def plot(files, out_path, labels, max_radius, title):
    """Plot certified accuracy against radius.

    One curve per certify TSV; headless (no display needed).
    """
    from .plotting import plot_files

    if max_radius is not None and not (max_radius > 0 and max_radius < float("inf")):
        raise CLIError(f"--max-radius must be a finite number > 0, got {max_radius}")
    written = plot_files(list(files), out_path, split_labels(labels, len(files)), max_radius, title)
    click.echo(f"wrote {written}")


@main.command()
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results/demo"),
              show_default=True)
@click.option("--n0", type=int, default=100, show_default=True, help="Selection samples per image.")
@click.option("--n", "n", type=int, default=10_000, show_default=True, help="Estimation samples per image.")
@click.option("--alpha", type=float, default=DEFAULT_ALPHA, show_default=True)
@click.option("--batch", "batch_size", type=int, default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max", "max_inputs", type=int, default=-1, show_default=True,
              help="Only the first MAX test images (-1: all 360).")
@click.option("--jobs", type=int, default=3, show_default=True,
              help="Certify runs at once, as child processes (1: one after another in this process).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def demo(out_dir, n0, n, alpha, batch_size, seed, max_inputs, jobs, quiet):
    """Run the main job on the bundled digits models.

    Writes TSVs, a table and a plot.

    Certifies bundled:digits-0.12/0.25/0.50 at sigma 0.12/0.25/0.5 on the 360 digits test images
    (1 to 2.5 minutes on 2 CPU cores at the defaults), then writes the three TSVs with their JSON
    sidecars, table.md, certified_accuracy.png and a README.md into OUT_DIR, replacing the demo's
    own earlier output there.
    """
    from .demo import run_demo

    run_demo(out_dir, n=n, n0=n0, alpha=alpha, batch_size=batch_size, seed=seed, max_inputs=max_inputs,
             quiet=quiet, jobs=jobs, echo=lambda line: click.echo(line))


# --------------------------------------------------------------------------- policy smoothing (RL)
def parse_float_list(text: str, name: str) -> list[float]:
    """``"0,0.1,0.2"`` or ``"0:0.8:0.1"`` (start:stop:step, inclusive) as floats."""
    from .results import ResultsError, parse_radii

    try:
        return parse_radii(text)
    except ResultsError:
        raise CLIError(f"bad {name} {text!r}: use e.g. 0,0.1,0.2 or 0:0.8:0.1 (numbers >= 0)") from None


@main.command("certify-policy")
@click.option("--env", "env_id", required=True, help="Gymnasium id (CartPole-v1, ...) or pong / freeway / an ALE id.")
@click.option("--policy", "policy_spec", required=True,
              help="Bundled policy (cartpole-0.2), built-in controller (cartpole-pd), .pt state_dict / "
                   "TorchScript file, or stable-baselines3 .zip (needs --trust-checkpoint).")
@click.option("--sigma", type=float, required=True, help="Observation noise level (observation units).")
@click.option("--episodes", type=int, default=1000, show_default=True, help="Smoothed episodes n.")
@click.option("--budgets", required=True, help="Episode l2 budgets B: 0,0.1,0.2 or 0:0.8:0.1.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output TSV, one row per budget (a JSON sidecar FILE.json is written beside it).")
@click.option("--alpha", type=float, default=0.05, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bound", type=click.Choice(["dkw", "clopper-pearson"]), default="dkw", show_default=True)
@click.option("--return-lower-bound", type=float, default=0.0, show_default=True,
              help="A known lower bound on every episode's return (v_0).")
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
@click.option("--trust-checkpoint", is_flag=True,
              help="Allow full unpickling of the policy file (SB3 .zip). DANGEROUS: runs code from the file.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def certify_policy(env_id, policy_spec, sigma, episodes, budgets, out_path, alpha, seed, bound, return_lower_bound,
                   quantiles, thresholds, frame_stack, max_episode_steps, one_round, num_envs, device,
                   trust_checkpoint, quiet):
    """Certify the expected return of a smoothed RL agent (Kumar et al. 2022); one row per budget."""
    import gymnasium as gym

    from .errors import check_alpha, check_count, check_sigma
    from .methods.policy import PolicySmooth, alpha_spending
    from .rl.envs import env_factory
    from .rl.policies import TorchPolicy, load_policy

    check_output(out_path, resume=False)
    sigma, alpha, episodes = check_sigma(sigma), check_alpha(alpha), check_count(episodes, "--episodes")
    if max_episode_steps is not None:
        check_count(max_episode_steps, "--max-episode-steps")  # 0 was a gymnasium traceback, -1 accepted
    budget_list = parse_float_list(budgets, "--budgets")
    quantile_list = [check_alpha(q, "quantile") for q in parse_float_list(quantiles, "--quantiles")]
    threshold_list = parse_float_list(thresholds, "--thresholds") if thresholds else None
    device = resolve_device(device)
    loaded = load_policy(policy_spec, device=device, trust_checkpoint=trust_checkpoint)
    frame_stack = check_count(frame_stack if frame_stack is not None else (loaded.frame_stack or 1), "--frame-stack")
    if max_episode_steps is None:
        max_episode_steps = loaded.metadata.get("max_episode_steps")
    env_fn = env_factory(env_id, max_episode_steps, one_round)
    if isinstance(loaded.policy, TorchPolicy):  # a torch policy's outputs are logits only for discrete actions
        probe = env_fn()
        loaded.policy.discrete = isinstance(probe.action_space, gym.spaces.Discrete)
        probe.close()
    agent = PolicySmooth(loaded.policy, sigma, frame_stack=frame_stack, num_envs=check_count(num_envs, "--num-envs"))
    parameters = {"env": env_id, "sigma": sigma, "episodes": episodes, "budgets": budget_list, "alpha": alpha,
                  "seed": seed, "bound": bound, "return_lower_bound": return_lower_bound,
                  "quantiles": quantile_list, "thresholds": thresholds, "frame_stack": frame_stack,
                  "max_episode_steps": max_episode_steps, "one_round": one_round,
                  "alpha_spending": alpha_spending(alpha, bound, episodes,
                                                   None if threshold_list is None else len(set(threshold_list)))}
    with progress_bar(episodes, quiet, unit="episode") as bar:
        table = agent.certify(env_fn, episodes, budget_list, alpha, seed, return_lower_bound, bound, quantile_list,
                              threshold_list, progress=lambda done: bar.update(done - bar.n))
    record = {
        "command": invocation_command(), "kind": "certify-policy", "method": PolicySmooth.method,
        "parameters": parameters,
        "model": {"spec": loaded.source, "sha256": loaded.sha256, "metadata": loaded.metadata},
        "data": {"spec": env_id},
        "runs": [{"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": invocation_command(),
                  "device": device_name(device), "versions": package_versions(),
                  "seconds": table.attrs["seconds"], "episodes_per_second": table.attrs["episodes_per_second"],
                  "num_envs": table.attrs["num_envs"]}],
        "mean_episode_length": table.attrs["mean_length"],
        "returns_histogram": table.attrs["returns_histogram"],
    }
    from .results import write_text_atomically

    # full precision: a rounded bound could round up
    write_text_atomically(out_path, table.to_csv(sep="\t", index=False))
    write_sidecar(out_path, record, resume=False)
    click.echo(table[["budget", "certified_return"] + [c for c in table.columns if c.startswith("certified_q")]]
               .to_string(index=False))


@main.command()
@click.option("--models", default="digits,cifar_resnet110,resnet50", show_default=True,
              help="Comma-separated: digits (bundled CNN), cifar_resnet110 (32x32), resnet50 (224x224).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--channels-last/--no-channels-last", "channels_last", default=None,
              help="Layout for (a) and (b) [default: the engine's measured default].")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model for (a) and (b).")
@click.option("--quick", is_flag=True, help="Small sample counts (a minute or two on CPU).")
@click.option("--sweep", is_flag=True, help="Also measure (b) under each engine option.")
@click.option("--no-packing", is_flag=True, help="Skip the cross-input packing measurement.")
@click.option("--n", "n", type=int, default=None, help="Override the profile's estimation samples per image.")
@click.option("--reps", type=int, default=None, help="Override the profile's repetitions.")
@click.option("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's.")
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="cpu: process CPU time, for --threads 1 on a CPU shared with other jobs.")
@click.option("--no-malloc-tuning", is_flag=True, help="Keep glibc's default allocator settings (CPU).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results/bench"),
              show_default=True)
def bench(models, device, precision, channels_last, compile_model, quick, sweep, no_packing, n, reps, threads,
          clock, no_malloc_tuning, out_dir):
    """Measure the certification loop: (a) forward-pass limit, (b) robustcert, (c) published loop.

    Interleaved repetitions, medians, samples/s and the ratios (b)/(a), (b)/(c); plus cross-input
    packing for small n. Writes JSON and markdown into --out-dir (see robustcert/bench.py).
    """
    from .bench import MODELS, run_bench
    from .errors import check_count

    names = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        raise CLIError(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODELS)}")
    for value, name in ((n, "--n"), (reps, "--reps"), (threads, "--threads")):
        if value is not None:
            check_count(value, name)  # --reps 0 was a statistics traceback, --threads -1 a torch one
    device = resolve_device(device)  # before creating --out-dir: a refused run leaves no folder behind
    out_dir.mkdir(parents=True, exist_ok=True)
    run_bench(names, device, precision, channels_last, compile_model, quick, out_dir, threads,
              sweep, not no_packing, n, reps, clock, not no_malloc_tuning, log=click.echo)


if __name__ == "__main__":
    main()
