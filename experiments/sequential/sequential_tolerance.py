"""Sequential radius-within-tolerance mode against fixed n = 100000 on the bundled digits models.

    python experiments/sequential/sequential_tolerance.py --out-dir results/sequential

Needs results/sequential/digits_summary.json (experiments/sequential/sequential_digits.py): the fixed-n
radii of the same images, seed and noise streams. SEQUENTIAL-CERTIFY in tolerance mode stops when
R(min(U, ceiling)) - R(L) <= tolerance (further samples up to n_max cannot raise the radius by more
than the tolerance, on the event that the confidence sequences cover). Reports samples per image,
the radius each mode certifies (gap = fixed radius - sequential radius, images predicted by both)
and the certified accuracy at 0.25 and 0.5 that the single tolerance run gives.
torch.set_num_threads(1): the CPU is shared.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robustcert import Smooth, load_model
from robustcert.data import digits_arrays
from robustcert.results import format_radius


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("results/sequential"))
    parser.add_argument("--tolerance", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(1)
    summary = json.loads((args.out_dir / "digits_summary.json").read_text())
    x_all, y_all = digits_arrays("test")
    lines = [
        "# Sequential radius-within-tolerance mode against fixed n, bundled digits models\n",
        f"Command: `python {' '.join(sys.argv)}` (torch.set_num_threads(1), shared 2-core CPU).\n",
        f"Same {summary['images']} images (every {summary['skip']}rd digits test image), n0 = 100, alpha = 0.001, "
        f"batch 1000, seed {summary['seed']}, n_max = {summary['n']:,}, tolerance = {args.tolerance} (pixel units).",
        "Gap = fixed-n radius - sequential radius over images where both predict the true class. The",
        "tolerance bounds what further *sequential* samples could add; the fixed-n bound at alpha is a little",
        "tighter than the sequence's (alpha_j < alpha at every checkpoint), and the tolerance holds on the event",
        "that the stopping sequence (stop_alpha = 0.05) covers, so the gap to it can exceed the tolerance slightly.\n",
        "| model (sigma) | mean samples, fixed | mean samples, tolerance mode | fewer samples | ACR fixed | ACR sequential "
        "| mean gap | 90% quantile gap | max gap | cert. acc. at 0.25 fixed / seq. | at 0.5 fixed / seq. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    records = []
    for name, sigma in (("digits-0.25", 0.25), ("digits-0.50", 0.5)):
        run = next(r for r in summary["runs"] if r["model"] == name)
        fixed = {p["index"]: p["fixed_radius"] for p in run["per_input"]}
        indices = [p["index"] for p in run["per_input"]]
        labels = [int(y_all[i]) for i in indices]
        smoothed = Smooth(load_model(f"bundled:{name}"), num_classes=10, sigma=sigma)
        started, certs = time.perf_counter(), []
        for start in range(0, len(indices), 20):
            chunk = indices[start:start + 20]
            certs += smoothed.certify_batch(torch.from_numpy(x_all[chunk]), n0=100, n=summary["n"], alpha=0.001,
                                            batch_size=1000, seed=summary["seed"], indices=chunk, sequential=True,
                                            tolerance=args.tolerance, n_max=summary["n"])
        seconds = time.perf_counter() - started
        fixed_by_row = [fixed[i] for i in indices]
        # same selection stream, so the same cA; the fixed run predicted cA unless it abstained (radius 0)
        fixed_correct = [c.details["selected_class"] == y for c, y in zip(certs, labels)]
        correct = np.array([c.prediction == y for c, y in zip(certs, labels)])
        radius = np.array([c.radius if ok else 0.0 for c, ok in zip(certs, correct)])
        fixed_radius = np.array([r if ok else 0.0 for r, ok in zip(fixed_by_row, fixed_correct)])
        both = correct & np.array(fixed_correct) & (fixed_radius > 0)
        gap = fixed_radius[both] - radius[both]
        samples = np.array([c.samples_used for c in certs])

        def accuracy(values, r):
            return 100 * np.mean([float(format_radius(v)) >= r if v > 0 else False for v in values])

        record = {"model": name, "sigma": sigma, "tolerance": args.tolerance, "seconds": seconds,
                  "mean_samples": float(samples.mean()), "median_samples": float(np.median(samples)),
                  "acr_fixed": float(fixed_radius.mean()), "acr_sequential": float(radius.mean()),
                  "gap_mean": float(gap.mean()), "gap_q90": float(np.quantile(gap, 0.9)), "gap_max": float(gap.max()),
                  "stops": {s: int(sum(c.details["sequential"]["stop"] == s for c in certs))
                            for s in sorted({c.details["sequential"]["stop"] for c in certs})},
                  "samples_used": [int(s) for s in samples]}
        records.append(record)
        lines.append(
            f"| {name} ({sigma}) | {100_100:,} | {record['mean_samples']:,.0f} | {100_100 / record['mean_samples']:.1f}x "
            f"| {record['acr_fixed']:.3f} | {record['acr_sequential']:.3f} | {record['gap_mean']:.3f} "
            f"| {record['gap_q90']:.3f} | {record['gap_max']:.3f} "
            f"| {accuracy(fixed_radius, 0.25):.2f}% / {accuracy(radius, 0.25):.2f}% "
            f"| {accuracy(fixed_radius, 0.5):.2f}% / {accuracy(radius, 0.5):.2f}% |")
        print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", "Stopping reasons: " + "; ".join(f"{r['model']}: {r['stops']}" for r in records) + ".",
              "Wall time (s): " + "; ".join(f"{r['model']}: {r['seconds']:.0f}" for r in records) + ".", ""]
    (args.out_dir / "tolerance.md").write_text("\n".join(lines) + "\n")
    (args.out_dir / "tolerance_summary.json").write_text(json.dumps(records, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
