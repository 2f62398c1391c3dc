"""Sequential against fixed-n dual randomized smoothing on the bundled dual digits branches.

    python experiments/sequential/sequential_dual.py --out results/sequential/dual.md

bundled:digits-dual-a-0.25 and digits-dual-b-0.25 (checkerboard split, sigma 0.25 in both
branches), every SKIP-th digits test image (default 3: 120 images), n0 = 100, alpha = 0.001, batch
1000, seed 0: fixed-n dual CERTIFY with n = 100000 per branch, against sequential dual at target
radius r = 0.25 and 0.5 with n_max = 100000 (default design; two lower sequences at alpha/2).
Samples count both branches (2 (n0 + n) for fixed n). torch.set_num_threads(1): the CPU is shared.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from robustcert import DualSmooth, load_model
from robustcert.data import digits_arrays
from robustcert.results import format_radius

RADII = (0.25, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/sequential/dual.md"))
    parser.add_argument("--skip", type=int, default=3)
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x_all, y_all = digits_arrays("test")
    indices = list(range(0, len(y_all), args.skip))
    xs, labels = torch.from_numpy(x_all[indices]), [int(y) for y in y_all[indices]]
    smoothed = DualSmooth(load_model("bundled:digits-dual-a-0.25"), load_model("bundled:digits-dual-b-0.25"), 10, 0.25)

    def run(**options):
        per_call = smoothed.certify_inputs_per_call(100, args.n, 1000, **options)
        cpu, certs = time.process_time(), []
        for start in range(0, len(indices), per_call):
            certs += smoothed.certify_batch(xs[start:start + per_call], n0=100, n=args.n, alpha=0.001, batch_size=1000,
                                            seed=0, indices=indices[start:start + per_call], **options)
        return certs, time.process_time() - cpu

    def certified(certs, radius):
        return np.array([c.prediction == y and float(format_radius(c.radius)) >= radius for c, y in zip(certs, labels)])

    load_before = os.getloadavg()[0]
    fixed, fixed_cpu = run()
    print(f"fixed: {fixed_cpu:.0f} s CPU", file=sys.stderr, flush=True)
    rows, reasons = [], []
    for radius in RADII:
        seq, seq_cpu = run(sequential=True, target_radius=radius, n_max=args.n)
        a, b = certified(fixed, radius), certified(seq, radius)
        fixed_samples = np.mean([c.samples_used for c in fixed])
        seq_samples = np.mean([c.samples_used for c in seq])
        rows.append(f"| {radius} | {100 * a.mean():.2f}% | {100 * b.mean():.2f}% | {int((a & ~b).sum())} / "
                    f"{int((b & ~a).sum())} | {fixed_samples:,.0f} | {seq_samples:,.0f} | "
                    f"{fixed_samples / seq_samples:.0f}x | {fixed_cpu:.0f} / {seq_cpu:.1f} |")
        stops = Counter(c.details["sequential"]["stop"] for c in seq)
        reasons.append(f"- r = {radius}: " + ", ".join(f"{stop}: {count}" for stop, count in sorted(stops.items())))
        print(rows[-1], file=sys.stderr, flush=True)
    lines = [
        "# Sequential dual randomized smoothing against fixed n\n",
        f"Command: `python {' '.join(sys.argv)}` (one torch thread, shared 2-core CPU; 1-minute load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end).\n",
        f"bundled:digits-dual-a-0.25 / digits-dual-b-0.25 (checkerboard, sigma 0.25 in both branches), one "
        f"digits test image in {args.skip} ({len(indices)} images), n0 = 100, alpha = 0.001, batch 1000, seed 0.",
        f"Fixed: dual CERTIFY with n = {args.n:,} per branch. Sequential: target radius r, n_max = {args.n:,},",
        "default design, one stitched Clopper-Pearson lower sequence per branch at alpha/2. Samples count both",
        "branches. Certified accuracy at r: correct and radius >= r (as written in the TSV) over all images.\n",
        "| r | certified acc., fixed | certified acc., sequential | only fixed / only sequential | mean samples, fixed "
        "| mean samples, sequential | fewer samples | CPU s fixed / sequential |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "\nStopping reasons of the sequential runs (images):\n",
        *reasons,
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)

if __name__ == "__main__":
    main()
