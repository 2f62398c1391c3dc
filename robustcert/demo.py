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
DEMO_N0, DEMO_N, DEMO_ALPHA, DEMO_BATCH, DEMO_SEED = 100, 10_000, 0.001, 2000, 0
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
             echo: Callable[[str], None] = print) -> DemoResult:
    """Certify the three bundled digits models, then write the table, the plot and a README.

    Each certification goes through the ``robustcert certify`` command itself (in this process),
    so the TSVs and sidecars are exactly what that command writes, and each sidecar records the
    equivalent shell command. Errors propagate as RobustCertError.
    """
    from .cli import certify
    from .errors import check_alpha, check_count
    from .plotting import plot_files
    from .results import render_table, table_from_files

    n, n0, batch_size = check_count(n, "n"), check_count(n0, "n0"), check_count(batch_size, "batch_size")
    alpha = check_alpha(alpha)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tsv_files, labels, commands, certify_seconds = [], [], [], []
    for name, sigma in DEMO_MODELS:
        out = out_dir / f"{name}.tsv"
        for stale in (out, out.with_name(out.name + ".json")):  # the demo regenerates its own outputs
            stale.unlink(missing_ok=True)
        arguments = certify_arguments(name, sigma, out, n0, n, alpha, batch_size, seed, max_inputs, quiet)
        command = shlex.join(["robustcert", *[a for a in arguments if a != "--quiet"]])
        echo(f"[demo] {command}")
        run_started = time.perf_counter()
        certify.main(args=arguments[1:], prog_name="robustcert certify", standalone_mode=False,
                     obj={"argv": arguments})
        certify_seconds.append(time.perf_counter() - run_started)
        echo(f"[demo]   done in {certify_seconds[-1]:.1f} s")
        tsv_files.append(out)
        labels.append(f"bundled:{name} sigma={sigma:g}")
        commands.append(command)

    table = table_from_files(tsv_files, labels=labels)
    table_markdown = render_table(table, "markdown", decimals=3)
    table_file = out_dir / TABLE_FILE
    write_text(table_file, table_markdown)
    plot_file = plot_files(tsv_files, out_dir / PLOT_FILE, labels=labels,
                           title=f"bundled digits models, n={n}, alpha={alpha:g}")
    seconds = time.perf_counter() - started
    readme_file = out_dir / README_FILE
    write_text(readme_file, demo_readme(commands, table_markdown, seconds, certify_seconds, n0, n, alpha,
                                        batch_size, seed, max_inputs, [f.name for f in tsv_files], labels))
    echo("")
    echo(table_markdown.rstrip("\n"))
    echo("")
    echo(f"[demo] n0={n0}, n={n}, alpha={alpha:g} (one Clopper-Pearson bound per image), seed={seed}; "
         f"wrote {out_dir}/: {', '.join(f.name for f in tsv_files)} (+ .json sidecars), {TABLE_FILE}, "
         f"{PLOT_FILE}, {README_FILE}; wall time {seconds:.1f} s")
    return DemoResult(out_dir, tsv_files, table_file, plot_file, readme_file, table_markdown, seconds,
                      certify_seconds, commands)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (a failure never leaves it truncated)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def largest_radius_factor(n: int, alpha: float) -> float:
    """R_max / sigma = Phi^-1(alpha^(1/n)): the radius when all n votes go to the top class."""
    from scipy.stats import norm

    return float(norm.ppf(alpha ** (1.0 / n)))


def demo_readme(commands, table_markdown, seconds, certify_seconds, n0, n, alpha, batch_size, seed, max_inputs,
                tsv_names, labels) -> str:
    import os

    import torch

    from . import __version__

    images = "all 360 digits test images" if max_inputs < 0 else f"the first {max_inputs} digits test images"
    lines = [
        "# Demo: certified accuracy of the bundled digits models",
        "",
        "Written by `robustcert demo` (the README's main job). It certified "
        f"{images} with Cohen et al.'s CERTIFY at n0={n0}, n={n}, alpha={alpha:g} "
        f"(one one-sided Clopper-Pearson bound per image, so each certificate holds with probability "
        f">= {1 - alpha:g}), seed={seed}, batch {batch_size}, with these commands:",
        "",
        "```bash",
        *commands,
        f"robustcert table {' '.join(tsv_names)} --labels {shlex.quote(','.join(labels))}",
        f"robustcert plot {' '.join(tsv_names)} --labels {shlex.quote(','.join(labels))} --out {PLOT_FILE}",
        "```",
        "",
        f"Wall time of the whole demo: **{seconds:.1f} s** (certify runs: "
        + ", ".join(f"{s:.1f} s" for s in certify_seconds)
        + f") on {platform.machine()} with {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), robustcert {__version__}.",
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
