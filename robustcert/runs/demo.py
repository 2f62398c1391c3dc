"""The README's main job: certify the bundled digits models and write a table and a plot.

``robustcert demo`` (or :func:`run_demo`) runs, for each bundled model trained with Gaussian
noise sigma in {0.12, 0.25, 0.5}, the command::

    robustcert certify --model bundled:digits-SIGMA --data digits --split test --sigma SIGMA \\
        --n0 100 --n 10000 --alpha 0.001 --out OUT_DIR/digits-SIGMA.tsv

on the 360 digits test images (Cohen et al.'s CERTIFY, one Clopper-Pearson bound at alpha per
image), then writes ``table.md`` (``robustcert table``), ``certified_accuracy.png``
(``robustcert plot``) and a ``README.md`` with the exact commands, parameters and wall time.

The demo regenerates its own files in OUT_DIR (the three TSVs, their sidecars, the table, the
plot and the README); it touches nothing else there.
"""
from __future__ import annotations

import platform
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

DEMO_MODELS = (("digits-0.12", 0.12), ("digits-0.25", 0.25), ("digits-0.50", 0.5))
DEMO_N0, DEMO_N, DEMO_ALPHA, DEMO_BATCH, DEMO_SEED, DEMO_JOBS = 100, 10_000, 0.001, 1000, 0, 3
TABLE_FILE, PLOT_FILE, README_FILE = "table.md", "certified_accuracy.png", "README.md"


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


def run_demo(out_dir: str | Path = "results/demo", n: int = DEMO_N, n0: int = DEMO_N0, alpha: float = DEMO_ALPHA,
             batch_size: int = DEMO_BATCH, seed: int = DEMO_SEED, max_inputs: int = -1, quiet: bool = False,
             jobs: int = DEMO_JOBS, echo: Callable[[str], None] = print) -> DemoResult:
    """Certify the three bundled digits models, then write the table, the plot and a README.

    Each certification is the ``robustcert certify`` command itself, so the TSVs and sidecars are
    exactly what that command writes and each sidecar records the equivalent shell command.
    ``jobs > 1`` runs up to ``jobs`` of them at once as child processes, each with
    ``cpu_count // jobs`` torch threads (single-threaded processes use a small shared machine far
    better than one process whose two threads wait on each other); ``jobs = 1`` runs them one
    after another in this process. Errors propagate as RobustCertError.
    """
    from ..errors import InvalidArgumentError, check_alpha, check_count
    from ..plotting import plot_files
    from ..results import render_table, table_from_files, write_text_atomically

    n, n0, batch_size = check_count(n, "n"), check_count(n0, "n0"), check_count(batch_size, "batch_size")
    alpha, jobs = check_alpha(alpha), check_count(jobs, "jobs")
    seed = check_count(seed, "seed", minimum=0)  # checked here too: a refused run must not delete the last demo
    if max_inputs == 0 or max_inputs < -1:
        raise InvalidArgumentError(f"max_inputs must be >= 1, or -1 for all 360 images, got {max_inputs}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started, cpu_started, load = time.perf_counter(), cpu_seconds(), load_average()
    runs = []
    for name, sigma in DEMO_MODELS:
        out = out_dir / f"{name}.tsv"
        for stale in (out, out.with_name(out.name + ".json")):  # the demo regenerates its own outputs
            stale.unlink(missing_ok=True)
        arguments = certify_arguments(name, sigma, out, n0, n, alpha, batch_size, seed, max_inputs,
                                      quiet or jobs > 1)
        runs.append(DemoRun(name, sigma, out, arguments))
        echo(f"[demo] {runs[-1].command}")
    certify_settings = dict(n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, max_inputs=max_inputs)
    if jobs > 1:
        threads = run_in_processes(runs, certify_settings, jobs, echo, quiet,
                                   expected_rows=360 if max_inputs < 0 else max_inputs)
    else:
        threads = run_in_this_process(runs, certify_settings, echo, quiet)

    tsv_files = [run.out for run in runs]
    labels = [f"bundled:{run.name} sigma={run.sigma:g}" for run in runs]
    table = table_from_files(tsv_files, labels=labels)
    table_markdown = render_table(table, "markdown", decimals=3)
    table_file = out_dir / TABLE_FILE
    write_text_atomically(table_file, table_markdown)
    plot_file = plot_files(tsv_files, out_dir / PLOT_FILE, labels=labels,
                           title=f"bundled digits models, n={n}, alpha={alpha:g}")
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    readme_file = out_dir / README_FILE
    settings = RunSettings(n0, n, alpha, batch_size, seed, max_inputs, jobs, threads, cpu, load)
    write_text_atomically(readme_file, demo_readme(runs, table_markdown, seconds, settings, labels))
    echo("")
    echo(table_markdown.rstrip("\n"))
    echo("")
    echo(f"[demo] n0={n0}, n={n}, alpha={alpha:g} (one Clopper-Pearson bound per image), seed={seed}; "
         f"wrote {out_dir}/: {', '.join(f.name for f in tsv_files)} (+ .json sidecars), {TABLE_FILE}, "
         f"{PLOT_FILE}, {README_FILE}; wall time {seconds:.1f} s, CPU time {cpu:.1f} s")
    return DemoResult(out_dir, tsv_files, table_file, plot_file, readme_file, table_markdown, seconds,
                      [run.seconds for run in runs], [run.command for run in runs])


@dataclass
class DemoRun:
    """One ``robustcert certify`` run of the demo."""

    name: str
    sigma: float
    out: Path
    arguments: list[str]
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
    certify_demo_model(run.name, run.sigma, run.out, progress=False, command=run.command, threads=threads,
                       **settings)
    return time.perf_counter() - started


def run_in_this_process(runs: list[DemoRun], settings: dict, echo, quiet: bool) -> int:
    """Run the certifications one after another in this process (errors raise). Returns torch threads."""
    import torch

    for run in runs:
        run_started = time.perf_counter()
        certify_demo_model(run.name, run.sigma, run.out, progress=not quiet, command=run.command, **settings)
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
    with ProcessPoolExecutor(min(jobs, len(runs)), mp_context=multiprocessing.get_context("spawn")) as pool:
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
                    echo(f"[demo]   {sum(_rows(run.out) for run in runs)}/{total} images certified, "
                         f"{now - started:.0f} s")
                    last_report = now
        except BaseException:
            for future in pending:
                future.cancel()
            for process in getattr(pool, "_processes", {}).values():  # stop children still certifying
                process.terminate()
            raise
    return threads


def _rows(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return max(handle.read().count(b"\n") - 1, 0)
    except OSError:
        return 0


def largest_radius_factor(n: int, alpha: float) -> float:
    """R_max / sigma = Phi^-1(alpha^(1/n)): the radius when all n votes go to the top class."""
    from scipy.stats import norm

    return float(norm.ppf(alpha ** (1.0 / n)))


def demo_readme(runs: list[DemoRun], table_markdown: str, seconds: float, settings: RunSettings,
                labels: list[str]) -> str:
    import os

    import torch

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
        "(from the repository root), and the `table` and `plot` commands that give the same table and figure:",
        "",
        "```bash",
        *[run.command for run in runs],
        f"robustcert table {' '.join(tsv_paths)} --labels {shlex.quote(','.join(labels))}",
        f"robustcert plot {' '.join(tsv_paths)} --labels {shlex.quote(','.join(labels))} --out {plot_path}",
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
        f"alpha={alpha:g} the largest radius a run can certify is {largest_radius_factor(n, alpha):.2f} sigma "
        "(every vote for the top class).",
        "",
        table_markdown.rstrip("\n"),
        "",
        f"![certified accuracy]({PLOT_FILE})",
        "",
    ]
    return "\n".join(lines)
