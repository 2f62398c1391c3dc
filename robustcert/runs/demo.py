"""The README's main job: certify the bundled digits models and write a table and a plot.

``robustcert demo`` (or :func:`run_demo`) runs, for each bundled model trained with Gaussian
noise sigma in {0.12, 0.25, 0.5}, the command::

    robustcert certify --model bundled:digits-SIGMA --data digits --split test --sigma SIGMA \\
        --n0 100 --n 10000 --alpha 0.001 --out OUT_DIR/digits-SIGMA.tsv

on the 360 digits test images (Cohen et al.'s CERTIFY, one Clopper-Pearson bound at alpha per
image), then writes ``table.md`` (``robustcert table``), ``certified_accuracy.png``
(``robustcert plot``) and a ``README.md`` with the exact commands, parameters and wall time.

The demo writes into OUT_DIR (default ``robustcert-demo/`` in the current folder, which is not
under version control: the committed ``results/demo`` is the reference, regenerated only with an
explicit ``--out-dir results/demo``). It replaces only files it provably wrote itself: a marker
file (:data:`MARKER_FILE`) lists each file it wrote with its SHA-256. A file of the demo's names
that the marker does not vouch for (a user's own ``digits-0.25.tsv``, or a demo file edited
since) makes the demo refuse before it certifies anything, and everything else in OUT_DIR is
never touched. The runs write into a temporary folder inside OUT_DIR, and the files move into
place only when all of them are done: a demo that fails or is interrupted leaves the previous
output as it was.
"""
from __future__ import annotations

import contextlib
import platform
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from ..errors import RunError
from ..files import FileRecord, describe_file, output_lock, write_text_atomically

DEMO_MODELS = (("digits-0.12", 0.12), ("digits-0.25", 0.25), ("digits-0.50", 0.5))
DEMO_N0, DEMO_N, DEMO_ALPHA, DEMO_BATCH, DEMO_SEED, DEMO_JOBS = 100, 10_000, 0.001, 1000, 0, 3
TABLE_FILE, PLOT_FILE, README_FILE = "table.md", "certified_accuracy.png", "README.md"
MARKER_FILE = ".robustcert-demo.json"
#: Where the demo writes by default: a new folder in the current one (not results/demo, which is tracked).
DEFAULT_DEMO_DIR = Path("robustcert-demo")
#: How long the demo takes at its defaults (--help and README.md say the same).
DEMO_DURATION = "1 to 3 minutes on 2 CPU cores"


def demo_file_names() -> list[str]:
    """Every file the demo writes into its folder (the marker last)."""
    names = [f"{name}.tsv{suffix}" for name, _ in DEMO_MODELS for suffix in ("", ".json")]
    return names + [TABLE_FILE, PLOT_FILE, README_FILE, MARKER_FILE]


def demo_record(out_dir: Path) -> FileRecord:
    """The demo's record of the files it wrote into ``out_dir`` (:class:`robustcert.files.FileRecord`
    in the marker file :data:`MARKER_FILE`)."""
    return FileRecord(out_dir, MARKER_FILE, written_by="robustcert demo")


def read_marker(out_dir: Path) -> dict[str, list[str]]:
    """The files the demo wrote into ``out_dir`` with their SHA-256 digests (name -> digests: two
    while a demo is moving a new file into place); {} when there is no marker."""
    try:
        return demo_record(out_dir).read()[0]
    except RunError:
        raise RunError(f"demo: {Path(out_dir) / MARKER_FILE} is not a marker the demo wrote; it is left alone: "
                       "choose another --out-dir") from None


def check_demo_folder(out_dir: Path) -> dict[str, list[str]]:
    """Refuse (RunError, one line) unless every file of the demo's names in ``out_dir`` is one the
    demo wrote there, unchanged (its marker lists it with this SHA-256). Returns the marker's files."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"demo: --out-dir {out_dir} is a file, not a folder")
    if not out_dir.exists():
        return {}
    marker = read_marker(out_dir)
    for name in demo_file_names()[:-1]:
        path = out_dir / name
        if not path.exists() and not path.is_symlink():
            continue
        if demo_record(out_dir).kind_of(path) is None:
            raise RunError(f"demo: {path} is not a file the demo wrote (or it changed since): it is "
                           f"{describe_file(path)}; it is left alone: choose another --out-dir, or move it away")
    return marker


@dataclass
class DemoResult:
    """What the demo wrote and how long it took."""

    out_dir: Path
    tsv_files: list[Path]
    table_file: Path
    plot_file: Path
    readme_file: Path
    table_markdown: str
    seconds: float
    certify_seconds: list[float] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


def certify_arguments(name: str, sigma: float, out: Path, n0: int, n: int, alpha: float, batch_size: int,
                      seed: int, max_inputs: int, quiet: bool) -> list[str]:
    """The ``robustcert certify`` arguments of one demo run."""
    arguments = ["certify", "--model", f"bundled:{name}", "--data", "digits", "--split", "test",
                 "--sigma", f"{sigma:g}", "--n0", str(n0), "--n", str(n), "--alpha", f"{alpha:g}",
                 "--batch", str(batch_size), "--seed", str(seed), "--device", "cpu", "--out", str(out)]
    if max_inputs >= 0:
        arguments += ["--max", str(max_inputs)]
    if quiet:
        arguments.append("--quiet")
    return arguments


def run_demo(out_dir: str | Path = DEFAULT_DEMO_DIR, n: int = DEMO_N, n0: int = DEMO_N0, alpha: float = DEMO_ALPHA,
             batch_size: int = DEMO_BATCH, seed: int = DEMO_SEED, max_inputs: int = -1, quiet: bool = False,
             jobs: int = DEMO_JOBS, echo: Callable[[str], None] = print) -> DemoResult:
    """Certify the three bundled digits models, then write the table, the plot and a README.

    Each certification is the ``robustcert certify`` command itself, so the TSVs and sidecars are
    exactly what that command writes and each sidecar records the equivalent shell command.
    ``jobs > 1`` runs up to ``jobs`` of them at once as child processes, each with
    ``cpu_count // jobs`` torch threads (single-threaded processes use a small shared machine far
    better than one process whose two threads wait on each other); ``jobs = 1`` runs them one
    after another in this process. Errors propagate as RobustCertError. Files in ``out_dir``: see
    the module docstring (only the demo's own, unchanged earlier output is replaced).
    """
    from ..errors import InvalidArgumentError, check_alpha, check_count

    n, n0, batch_size = check_count(n, "n"), check_count(n0, "n0"), check_count(batch_size, "batch_size")
    alpha, jobs = check_alpha(alpha), check_count(jobs, "jobs")
    seed = check_count(seed, "seed", minimum=0)  # checked here too: a refused run must not delete the last demo
    if max_inputs == 0 or max_inputs < -1:
        raise InvalidArgumentError(f"max_inputs must be >= 1, or -1 for all 360 images, got {max_inputs}")
    out_dir = Path(out_dir)
    check_demo_folder(out_dir)  # before anything slow: never touch a file the demo did not write
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with output_lock(out_dir / MARKER_FILE, "demo folder", shown=out_dir):  # one demo per folder at a time
            staging = Path(tempfile.mkdtemp(prefix=".robustcert-demo-", dir=out_dir))
            try:
                result = _run_demo_in(out_dir, staging, n, n0, alpha, batch_size, seed, max_inputs, quiet, jobs,
                                      echo)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a demo that failed leaves no empty folder behind
    return result


def _run_demo_in(out_dir: Path, staging: Path, n, n0, alpha, batch_size, seed, max_inputs, quiet, jobs,
                 echo) -> DemoResult:
    """The demo's runs, table, plot and README written into ``staging``, then moved into ``out_dir``."""
    from ..plotting import plot_files
    from ..results import render_table, table_from_files

    started, cpu_started, load = time.perf_counter(), cpu_seconds(), load_average()
    runs = []
    for name, sigma in DEMO_MODELS:
        out = out_dir / f"{name}.tsv"
        arguments = certify_arguments(name, sigma, out, n0, n, alpha, batch_size, seed, max_inputs,
                                      quiet or jobs > 1)
        runs.append(DemoRun(name, sigma, out, arguments, staging / out.name))
        echo(f"[demo] {runs[-1].command}")
    certify_settings = dict(n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, max_inputs=max_inputs)
    if jobs > 1:
        threads = run_in_processes(runs, certify_settings, jobs, echo, quiet,
                                   expected_rows=360 if max_inputs < 0 else max_inputs)
    else:
        threads = run_in_this_process(runs, certify_settings, echo, quiet)

    work_files = [run.work for run in runs]
    labels = [f"sigma={run.sigma:g}" for run in runs]
    table_markdown = render_table(table_from_files(work_files, labels=labels), "markdown", decimals=3)
    write_text_atomically(staging / TABLE_FILE, table_markdown)
    plot_files(work_files, staging / PLOT_FILE, labels=labels, title=plot_title(n, alpha))
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    settings = RunSettings(n0, n, alpha, batch_size, seed, max_inputs, jobs, threads, cpu, load)
    write_text_atomically(staging / README_FILE, demo_readme(runs, table_markdown, seconds, settings, labels))
    publish(staging, out_dir)
    tsv_files = [run.out for run in runs]
    echo("")
    echo(table_markdown.rstrip("\n"))
    echo("")
    echo(f"[demo] n0={n0}, n={n}, alpha={alpha:g} (one Clopper-Pearson bound per image), seed={seed}; "
         f"wall time {seconds:.1f} s, CPU time {cpu:.1f} s")
    echo(f"wrote {out_dir}/: {', '.join(f.name for f in tsv_files)} (+ .json sidecars), {TABLE_FILE}, "
         f"{PLOT_FILE}, {README_FILE}")
    return DemoResult(out_dir, tsv_files, out_dir / TABLE_FILE, out_dir / PLOT_FILE, out_dir / README_FILE,
                      table_markdown, seconds, [run.seconds for run in runs], [run.command for run in runs])


def publish(staging: Path, out_dir: Path) -> None:
    """Move the demo's new files from ``staging`` into ``out_dir`` and record them in the marker.

    The folder is checked again first (a file may have appeared while the demo ran). Each file is
    replaced atomically while the marker lists its old and new digests (:meth:`FileRecord.replace`),
    so that a demo killed halfway can still replace it next time.
    """
    check_demo_folder(out_dir)
    record = demo_record(out_dir)
    for name in demo_file_names()[:-1]:
        record.replace(out_dir / name, partial(shutil.copyfile, staging / name))


@dataclass
class DemoRun:
    """One ``robustcert certify`` run of the demo."""

    name: str
    sigma: float
    out: Path          # where the TSV ends up (the path its recorded command names)
    arguments: list[str]
    work: Path         # where the run writes it (the demo's temporary folder)
    seconds: float = 0.0

    @property
    def command(self) -> str:
        return shlex.join(["robustcert", *[a for a in self.arguments if a != "--quiet"]])


@dataclass
class RunSettings:
    n0: int
    n: int
    alpha: float
    batch_size: int
    seed: int
    max_inputs: int
    jobs: int
    threads: int
    cpu_seconds: float
    load_average: float | None


def load_average() -> float | None:
    """The 1-minute load average (how busy the machine was when the demo started), if known."""
    import os

    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (0 where unsupported)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def certify_demo_model(name: str, sigma: float, out: Path, n0: int, n: int, alpha: float, batch_size: int, seed: int,
                       max_inputs: int, progress: bool, command: str, threads: int | None = None) -> None:
    """One demo certification: :func:`robustcert.certify_dataset` on bundled:NAME, the digits test split."""
    from ..methods.cohen import Smooth
    from ..models import load_model
    from .dataset import certify_dataset

    smoothed = Smooth(load_model(f"bundled:{name}", device="cpu"), 10, sigma, device="cpu", input_shape=(1, 8, 8))
    certify_dataset(smoothed, "digits", out, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed,
                    max_inputs=max_inputs, progress=progress, command=command, threads=threads)


def _certify_in_child(run: "DemoRun", settings: dict, threads: int) -> float:
    started = time.perf_counter()
    certify_demo_model(run.name, run.sigma, run.work, progress=False, command=run.command, threads=threads,
                       **settings)
    return time.perf_counter() - started


def run_in_this_process(runs: list[DemoRun], settings: dict, echo, quiet: bool) -> int:
    """Run the certifications one after another in this process (errors raise). Returns torch threads."""
    import torch

    for run in runs:
        run_started = time.perf_counter()
        certify_demo_model(run.name, run.sigma, run.work, progress=not quiet, command=run.command, **settings)
        run.seconds = time.perf_counter() - run_started
        echo(f"[demo]   {run.name} done in {run.seconds:.1f} s")
    return torch.get_num_threads()


def run_in_processes(runs: list[DemoRun], settings: dict, jobs: int, echo, quiet: bool, expected_rows: int) -> int:
    """Run the certifications in up to ``jobs`` child processes at once (``cpu_count // jobs`` torch
    threads each); report progress from the rows they flush. A failing child stops the others and
    its error is raised here."""
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from ..errors import RobustCertError

    threads = max(1, (os.cpu_count() or 1) // min(jobs, len(runs)))
    total = expected_rows * len(runs)
    started = last_report = time.perf_counter()
    with ProcessPoolExecutor(min(jobs, len(runs)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_leave_interrupts_to_the_parent) as pool:
        with _children_born_ignoring_interrupts():  # the first submit starts every child
            pending = {pool.submit(_certify_in_child, run, settings, threads): run for run in runs}
        try:
            while pending:
                finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    run = pending.pop(future)
                    try:
                        run.seconds = future.result()
                    except RobustCertError as exc:
                        raise RobustCertError(f"demo run {run.command!r} failed: {exc}") from None
                    echo(f"[demo]   {run.name} done in {run.seconds:.1f} s")
                now = time.perf_counter()
                if not quiet and now - last_report >= 10 and pending:
                    echo(f"[demo]   {sum(_rows(run.work) for run in runs)}/{total} images certified, "
                         f"{now - started:.0f} s")
                    last_report = now
        except BaseException:
            for future in pending:
                future.cancel()
            for process in getattr(pool, "_processes", {}).values():  # stop children still certifying
                process.terminate()
            raise
    return threads


@contextlib.contextmanager
def _children_born_ignoring_interrupts():
    """Start child processes with SIGINT ignored from their first instruction: a Ctrl-C while a
    child still imports robustcert (seconds, before its initializer runs) would otherwise kill it
    with a traceback and leave the pool's semaphores to the resource tracker ("leaked semaphore"
    warning). An ignored signal stays ignored across exec, and Python then installs no
    KeyboardInterrupt handler. The parent's own handler is restored at once."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _leave_interrupts_to_the_parent() -> None:
    """In a child: ignore Ctrl-C (the terminal sends it to every process); the parent stops the
    children and reports once."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _rows(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return max(handle.read().count(b"\n") - 1, 0)
    except OSError:
        return 0


def plot_title(n: int, alpha: float) -> str:
    """The demo figure's title: which models, and the n and alpha its radii depend on."""
    models = ", ".join(f"digits-{sigma:.2f}" for _, sigma in DEMO_MODELS)
    return f"Bundled models {models} at their sigma, n={n}, alpha={alpha:g}"


def demo_readme(runs: list[DemoRun], table_markdown: str, seconds: float, settings: RunSettings,
                labels: list[str]) -> str:
    import os

    import torch

    from ..radius import largest_gaussian_radius
    from ..version import __version__

    n0, n, alpha = settings.n0, settings.n, settings.alpha

    tsv_paths = [shlex.quote(str(run.out)) for run in runs]
    plot_path = shlex.quote(str(runs[0].out.with_name(PLOT_FILE)))
    images = "all 360 digits test images" if settings.max_inputs < 0 else \
        f"the first {settings.max_inputs} digits test images"
    how = (f"{min(settings.jobs, len(runs))} certify processes at a time with {settings.threads} torch "
           f"thread(s) each" if settings.jobs > 1 else f"one certify run after another, {settings.threads} torch threads")
    lines = [
        "# Demo: certified accuracy of the bundled digits models",
        "",
        "Written by `robustcert demo` (the README's main job). It certified "
        f"{images} with Cohen et al.'s CERTIFY at n0={n0}, n={n}, alpha={alpha:g} "
        f"(one one-sided Clopper-Pearson bound per image, so each certificate holds with probability "
        f">= {1 - alpha:g}), seed={settings.seed}, batch {settings.batch_size}; these are the commands it ran "
        "(from the folder the demo ran in), and the `table` and `plot` commands that give the same table "
        "and figure:",
        "",
        "```bash",
        *[run.command for run in runs],
        f"robustcert table {' '.join(tsv_paths)} --labels {shlex.quote(','.join(labels))}",
        f"robustcert plot {' '.join(tsv_paths)} --labels {shlex.quote(','.join(labels))} "
        f"--title {shlex.quote(plot_title(n, alpha))} --out {plot_path}",
        "```",
        "",
        f"Wall time of the whole demo: **{seconds:.1f} s** ({how}; certify runs took "
        + ", ".join(f"{run.seconds:.1f} s" for run in runs)
        + f") on {platform.machine()} with {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"robustcert {__version__}. CPU time (user + system, all processes): {settings.cpu_seconds:.1f} s; "
        "the wall time depends on what else the machine runs (1-minute load average when the demo started: "
        f"{'unknown' if settings.load_average is None else f'{settings.load_average:.2f}'}), the CPU time much less.",
        "",
        "Certified accuracy at radius r (l2, pixel units in [0,1]) counts an image when it is "
        f"classified correctly and certified at radius >= r; abstentions count as wrong. With n={n} and "
        f"alpha={alpha:g} the largest radius a run can certify is sigma * Phi^-1(alpha^(1/n)) = "
        f"{largest_gaussian_radius(1.0, n, alpha):.2f} sigma (every vote for the top class): each curve drops "
        "to 0 there at the latest, whatever the model; the dotted lines in the figure mark it.",
        "",
        table_markdown.rstrip("\n"),
        "",
        f"![certified accuracy]({PLOT_FILE})",
        "",
    ]
    return "\n".join(lines)
