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
  Its DigitsCNN is trained here with the bundled models' recipe (experiments/train_digits.py,
  60 epochs, seed 0) into the output folder's ``models/`` (not bundled).
* ``cohen-0.25-2n``: plain smoothing at sigma 0.25 with 2n samples: the same number of base-model
  calls per image as dual-0.25 (whose branch models take half-size inputs).

    python experiments/compare_dual.py                      # all 360 test images, n = 10000 (~10 min, 1 thread)
    python experiments/compare_dual.py --n 1000 --max 50 --out-dir /tmp/dual
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_digits import train  # noqa: E402

from robustcert.results import read_results, render_table, table_from_files  # noqa: E402

RADII = "0,0.25,0.5,0.75,1.0,1.25"


def certify(out: Path, common: list[str], extra: list[str]) -> float:
    """One ``robustcert certify`` run (single-threaded); returns its wall time in seconds."""
    out.unlink(missing_ok=True)
    out.with_name(out.name + ".json").unlink(missing_ok=True)
    command = [sys.executable, "-m", "robustcert", "certify", *extra, *common, "--out", str(out), "--quiet"]
    print("$", " ".join(command[2:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max", type=int, default=-1, help="first MAX test images (-1: all 360)")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--out-dir", type=Path, default=Path("results/dual"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    sigma_matched_ceiling = 0.25 * math.sqrt(2)
    model_path = args.out_dir / "models" / f"digits-{sigma_matched_ceiling:.3f}.pt"
    if not model_path.exists():
        model_path.parent.mkdir(exist_ok=True)
        model, _, clean, noisy = train(sigma_matched_ceiling, epochs=60, seed=0)
        torch.save({"epoch": 60, "arch": "digits_cnn", "state_dict": model.state_dict(),
                    "noise_sd": sigma_matched_ceiling, "seed": 0,
                    "recipe": "experiments/train_digits.py train(0.25*sqrt(2), epochs=60, seed=0)"}, model_path)
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
    seconds = {label: certify(args.out_dir / f"{label}.tsv", common, extra) for label, extra in runs.items()}

    paths = [args.out_dir / f"{label}.tsv" for label in runs]
    table = table_from_files(paths, RADII, list(runs))
    frames = {label: read_results(path) for label, path in zip(runs, paths)}
    timing = "\n".join(
        [f"| {label} | {frames[label]['time'].mean():.4f} | {seconds[label]:.1f} |" for label in runs])
    timing = ("| run | certify seconds per image (TSV time column, mean) | wall seconds of the whole run |\n"
              "|---|---:|---:|\n" + timing + "\n")
    cohen, dual = frames["cohen-0.25"], frames["dual-0.25"]
    both = (cohen["correct"] == 1) & (dual["correct"] == 1)
    paired = (f"Images certified correctly by both cohen-0.25 and dual-0.25: {int(both.sum())}; dual radius larger on "
              f"{int((dual['radius'][both] > cohen['radius'][both]).sum())}, median radius ratio dual/cohen "
              f"{float((dual['radius'][both] / cohen['radius'][both]).median()):.3f}.")
    text = render_table(table, "markdown", decimals=3) + "\n" + paired + "\n\n" + timing
    (args.out_dir / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
