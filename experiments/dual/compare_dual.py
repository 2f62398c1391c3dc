"""Dual randomized smoothing against plain randomized smoothing on the bundled digits.

Same test images, same n0, n, alpha and seed for every row; every row is one ``robustcert
certify`` run (TSV + JSON sidecar in the output folder), then one table:

* ``cohen-0.25``: Smooth(bundled:digits-0.25), sigma 0.25, n samples.
* ``dual-0.25``: DualSmooth(bundled:digits-dual-a-0.25, bundled:digits-dual-b-0.25), checkerboard
  split, sigma_a = sigma_b = 0.25, n samples *per branch*. Matched total noise: every pixel gets
  N(0, 0.25^2), so the two noisy sub-images merged back are distributed exactly like plain
  smoothing's noisy image (same total noise energy d sigma^2). Its radius ceiling is
  sqrt(2) times plain smoothing's at the same sigma (R = sigma (a + b) / sqrt(2) <= sqrt(2) sigma a_max).
* ``cohen-0.35``: plain smoothing at sigma = 0.25 sqrt(2) = 0.354, i.e. the *same radius ceiling*
  as dual-0.25 (the other fair pairing: more noise per pixel, same maximum certifiable radius).
  Its DigitsCNN is trained here with the bundled models' recipe (experiments/weights/train_digits.py,
  60 epochs, seed 0) into the output folder's ``models/`` (not bundled).
* ``cohen-0.25-2n``: plain smoothing at sigma 0.25 with 2n samples: the same number of base-model
  calls per image as dual-0.25 (whose branch models take half-size inputs).

    python experiments/dual/compare_dual.py                      # all 360 test images, n = 10000 (~10 min, 1 thread)
    python experiments/dual/compare_dual.py --n 1000 --max 50 --out-dir /tmp/dual
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from robustcert.results import read_results, render_table, table_from_files

RADII = "0,0.25,0.5,0.75,0.8,0.9,1.0"  # 0.8: the ceiling of plain smoothing at sigma 0.25, n = 10^4, alpha = 10^-3


def bundled_digits_recipe():
    """``train()`` of experiments/weights/train_digits.py: the recipe of the bundled digits models."""
    path = Path(__file__).resolve().parents[1] / "weights" / "train_digits.py"
    spec = importlib.util.spec_from_file_location("train_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train


def certify(out: Path, common: list[str], extra: list[str]) -> None:
    """One ``robustcert certify`` run (single-threaded), replacing an earlier output."""
    out.unlink(missing_ok=True)
    out.with_name(out.name + ".json").unlink(missing_ok=True)
    command = [sys.executable, "-m", "robustcert", "certify", *extra, *common, "--out", str(out), "--quiet"]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max", type=int, default=-1, help="first MAX test images (-1: all 360)")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--out-dir", type=Path, default=Path("results/dual"))
    parser.add_argument("--table-only", action="store_true", help="rebuild table.md from the TSVs already there")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    sigma_matched_ceiling = 0.25 * math.sqrt(2)
    model_path = args.out_dir / "models" / f"digits-{sigma_matched_ceiling:.3f}.pt"
    if not model_path.exists():
        model_path.parent.mkdir(exist_ok=True)
        model, _, clean, noisy = bundled_digits_recipe()(sigma_matched_ceiling, epochs=60, seed=0)
        torch.save({"epoch": 60, "arch": "digits_cnn", "state_dict": model.state_dict(),
                    "noise_sd": sigma_matched_ceiling, "seed": 0,
                    "recipe": "experiments/weights/train_digits.py train(0.25*sqrt(2), epochs=60, seed=0)"}, model_path)
        print(f"trained {model_path}: clean acc {clean:.4f}, noisy acc {noisy:.4f}")

    common = ["--data", "digits", "--n0", str(args.n0), "--alpha", str(args.alpha), "--seed", str(args.seed),
              "--max", str(args.max), "--batch", str(args.batch)]
    runs = {
        "cohen-0.25": ["--model", "bundled:digits-0.25", "--sigma", "0.25", "--n", str(args.n)],
        "dual-0.25": ["--method", "dual", "--model", "bundled:digits-dual-a-0.25", "--model2",
                      "bundled:digits-dual-b-0.25", "--sigma", "0.25", "--n", str(args.n)],
        "cohen-0.35": ["--model", str(model_path), "--sigma", f"{sigma_matched_ceiling:.6f}", "--n", str(args.n)],
        "cohen-0.25-2n": ["--model", "bundled:digits-0.25", "--sigma", "0.25", "--n", str(2 * args.n)],
    }
    if not args.table_only:
        for label, extra in runs.items():
            certify(args.out_dir / f"{label}.tsv", common, extra)
    write_table(args.out_dir, list(runs), base_model_table(model_path, sigma_matched_ceiling))


def base_model_table(model_path: Path, sigma_matched_ceiling: float, draws: int = 20) -> str:
    """Accuracy of each base model on the test split, clean and under its training noise (mean of 20 draws)."""
    from robustcert import load_model
    from robustcert.data import digits_arrays
    from robustcert.splits import get_split

    x, y = (torch.from_numpy(a) for a in digits_arrays("test"))
    sub_a, sub_b = get_split("checkerboard").split(x)
    models = [("digits-0.25 (full image)", "bundled:digits-0.25", x, 0.25),
              ("digits-dual-a-0.25 (sub-image a)", "bundled:digits-dual-a-0.25", sub_a, 0.25),
              ("digits-dual-b-0.25 (sub-image b)", "bundled:digits-dual-b-0.25", sub_b, 0.25),
              (f"{model_path.name} (full image)", str(model_path), x, sigma_matched_ceiling)]
    generator = torch.Generator().manual_seed(0)
    lines = ["| base model | sigma | clean accuracy | accuracy under N(0, sigma^2) noise |", "|---|---:|---:|---:|"]
    with torch.no_grad():
        for name, spec, inputs, sigma in models:
            model = load_model(spec)
            clean = (model(inputs).argmax(1) == y).float().mean().item()
            noisy = sum((model(inputs + sigma * torch.randn(inputs.shape, generator=generator)).argmax(1) == y)
                        .float().mean().item() for _ in range(draws)) / draws
            lines.append(f"| {name} | {sigma:.3f} | {clean:.3f} | {noisy:.3f} |")
    return "\n".join(lines) + "\n"


def write_table(out_dir: Path, labels: list[str], base_models: str) -> None:
    """table.md: certified accuracy etc. per run, a paired dual/cohen comparison, and timings."""
    runs = labels
    paths = [out_dir / f"{label}.tsv" for label in runs]
    table = table_from_files(paths, RADII, list(runs))
    frames = {label: read_results(path) for label, path in zip(runs, paths)}
    timing = "\n".join(f"| {label} | {frames[label]['time'].mean():.3f} |" for label in runs)
    timing = "| run | seconds per image (mean of the TSV time column) |\n|---|---:|\n" + timing + "\n"
    cohen, dual = frames["cohen-0.25"], frames["dual-0.25"]
    both = (cohen["correct"] == 1) & (dual["correct"] == 1)
    paired = (f"Images certified correctly by both cohen-0.25 and dual-0.25: {int(both.sum())}; dual radius larger on "
              f"{int((dual['radius'][both] > cohen['radius'][both]).sum())}, median radius ratio dual/cohen "
              f"{float((dual['radius'][both] / cohen['radius'][both]).median()):.3f}.")
    text = render_table(table, "markdown", decimals=3) + "\n" + paired + "\n\n" + timing + "\n" + base_models
    (out_dir / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
