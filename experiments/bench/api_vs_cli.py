"""Certification throughput through the Python API (certify_dataset) against the CLI (robustcert certify).

Both are the same code path since the layers refactor; this checks that an API user gets the
CLI's speed (CPU allocator tuning and thread choice are applied by certify_dataset), and sets
both against a hand-written loop over ``Smooth.certify_batch`` in a fresh process (what an API
user had to write before: no allocator tuning, torch's default threads).

Each variant runs in its own fresh process (the allocator setting is process-wide), variants
interleaved over repetitions; the figure is inputs per second of certification time (the sum of
the TSV's per-input time column, so process start-up and model loading are excluded), median
over repetitions, with the ratios to the CLI.

    python experiments/bench/api_vs_cli.py --out results/bench/api_vs_cli.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch

from robustcert.models import build_model
from robustcert.results import read_results

MODELS = {
    # name: (model spec or None for a random-weight reference checkpoint, data, n0, n, batch, max inputs)
    "digits (bundled CNN, 1x8x8)": ("bundled:digits-0.25", "digits", 100, 20_000, 1000, 12),
    "cifar_resnet110 (random weights, 3x32x32)": (None, None, 20, 300, 100, 3),
}

HAND_LOOP = textwrap.dedent("""
    import sys, time, torch
    from robustcert import Smooth, load_dataset, load_model
    from robustcert.results import CERTIFY_COLUMNS, certify_row
    model, data, n0, n, batch, count, out = sys.argv[1:8]
    dataset = load_dataset(data)
    smoothed = Smooth(load_model(model), 10, 0.25)
    with open(out, "w") as handle:
        handle.write("\\t".join(CERTIFY_COLUMNS) + "\\n")
        for i in range(int(count)):
            x, y = dataset[i]
            c = smoothed.certify(x, int(n0), int(n), 0.001, int(batch), seed=0, index=i)
            handle.write(certify_row(i, y, c.prediction, c.radius, c.time) + "\\n")
""")
API = textwrap.dedent("""
    import sys
    from robustcert import Smooth, certify_dataset, load_dataset, load_model
    model, data, n0, n, batch, count, out = sys.argv[1:8]
    dataset = load_dataset(data)
    smoothed = Smooth(load_model(model), 10, 0.25)
    certify_dataset(smoothed, dataset, out, n0=int(n0), n=int(n), batch_size=int(batch), max_inputs=int(count),
                    progress=False)
""")


def command(variant: str, model: str, data: str, n0: int, n: int, batch: int, count: int, out: Path) -> list[str]:
    if variant == "cli":
        return [sys.executable, "-m", "robustcert", "certify", "--model", model, "--data", data, "--sigma", "0.25",
                "--n0", str(n0), "--n", str(n), "--batch", str(batch), "--max", str(count), "--device", "cpu",
                "--quiet", "--out", str(out)]
    script = API if variant == "api" else HAND_LOOP
    return [sys.executable, "-c", script, model, data, str(n0), str(n), str(batch), str(count), str(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="api_vs_cli_"))
    lines = ["# Certify throughput: Python API vs CLI vs a hand-written loop", "",
             f"Command: `python experiments/bench/api_vs_cli.py --reps {args.reps}`; torch {torch.__version__}, "
             f"{os.cpu_count()} CPU cores, default threads in every variant; load average at start "
             f"{os.getloadavg()[0]:.2f}. Inputs per second of certification time (sum of the TSV time column), "
             "median over interleaved repetitions, each variant in a fresh process.", "",
             "| model | n0 + n | batch | CLI inputs/s | API inputs/s | hand loop inputs/s | API / CLI | hand loop / CLI |",
             "|---|---|---|---|---|---|---|---|"]
    for name, (spec, data, n0, n, batch, count) in MODELS.items():
        if spec is None:  # a reference checkpoint with random weights, and random CIFAR-sized images
            spec = str(workdir / "resnet110.pth.tar")
            torch.save({"arch": "cifar_resnet110", "state_dict": build_model("cifar_resnet110").state_dict()}, spec)
            data_path = workdir / "cifar.npz"
            rng = np.random.default_rng(0)
            np.savez(data_path, x=rng.random((10, 3, 32, 32), dtype=np.float32), y=np.arange(10))  # all 10 classes
            data = f"npz:{data_path}"
        rates: dict[str, list[float]] = {"cli": [], "api": [], "hand": []}
        for rep in range(args.reps):
            for variant in rates:
                out = workdir / f"{variant}-{rep}-{len(rates[variant])}-{abs(hash(name))}.tsv"
                subprocess.run(command(variant, spec, data, n0, n, batch, count, out), check=True,
                               capture_output=True, text=True)
                rates[variant].append(count / read_results(out)["time"].sum())
        median = {k: statistics.median(v) for k, v in rates.items()}
        line = (f"| {name} | {n0 + n} | {batch} | {median['cli']:.3g} | {median['api']:.3g} | {median['hand']:.3g} | "
                f"{median['api'] / median['cli']:.2f} | {median['hand'] / median['cli']:.2f} |")
        lines.append(line)
        print(line, flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
