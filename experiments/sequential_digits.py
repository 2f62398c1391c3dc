"""Sequential against fixed-n certification on the bundled digits models.

    python experiments/sequential_digits.py --out-dir results/sequential

For each model (bundled:digits-0.25 at sigma 0.25, bundled:digits-0.50 at sigma 0.5) and every
SKIP-th digits test image (default 3: 120 of the 360 images), with n0 = 100, alpha = 0.001,
batch 1000, seed 0:

* fixed n = 100000 CERTIFY (Cohen et al.), once; certified accuracy read off at each radius;
* SEQUENTIAL-CERTIFY in target-radius mode at r = 0.25 and r = 0.5, n_max = 100000 (default
  schedule: checkpoints 1000, 2000, 4000, ..., 64000, 100000; stitched Clopper-Pearson at alpha/8).

Both use the same per-input generators, so the sequential run's first n samples of an input are
exactly the fixed run's first n samples (a paired comparison: differences come from the bound,
not from sampling noise). Certified accuracy at r = fraction of ALL images with a correct
prediction and radius >= r (abstentions count as wrong). Writes one reference-format TSV per run,
per-input samples and stopping reasons (JSON), and README.md with the table.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from robustcert import Smooth, load_model  # noqa: E402
from robustcert.data import digits_arrays  # noqa: E402
from robustcert.results import CERTIFY_COLUMNS, certify_row, format_radius  # noqa: E402

MODELS = (("digits-0.25", 0.25), ("digits-0.50", 0.5))
RADII = (0.25, 0.5)


def certified(certs, labels, radius: float) -> np.ndarray:
    """Per image: correct and radius >= r, with the radius as written in the TSV (rounded down)."""
    return np.array([c.prediction == y and float(format_radius(c.radius)) >= radius for c, y in zip(certs, labels)])


def write_tsv(path: Path, certs, labels) -> None:
    lines = ["\t".join(CERTIFY_COLUMNS)] + [certify_row(c.index, y, c.prediction, c.radius, c.time)
                                            for c, y in zip(certs, labels)]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("results/sequential"))
    parser.add_argument("--skip", type=int, default=3)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=20, help="images per certify_batch call")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    x_all, y_all = digits_arrays("test")
    indices = list(range(0, len(y_all), args.skip))
    xs, labels = torch.from_numpy(x_all[indices]), [int(y) for y in y_all[indices]]
    common = dict(n0=100, alpha=0.001, batch_size=1000, seed=args.seed)
    summary = {"command": "python " + " ".join(sys.argv), "images": len(indices), "skip": args.skip,
               "n": args.n, **common, "runs": []}

    def run(smoothed, **options):
        started, certs = time.perf_counter(), []
        for start in range(0, len(indices), args.chunk):
            certs += smoothed.certify_batch(xs[start:start + args.chunk], n=args.n,
                                            indices=indices[start:start + args.chunk], **common, **options)
        return certs, time.perf_counter() - started

    rows = []
    for name, sigma in MODELS:
        smoothed = Smooth(load_model(f"bundled:{name}"), num_classes=10, sigma=sigma)
        fixed, fixed_seconds = run(smoothed)
        write_tsv(args.out_dir / f"{name}_fixed_n{args.n}.tsv", fixed, labels)
        print(f"{name}: fixed n={args.n} done in {fixed_seconds:.0f} s", file=sys.stderr, flush=True)
        for radius in RADII:
            seq, seq_seconds = run(smoothed, sequential=True, target_radius=radius, n_max=args.n)
            write_tsv(args.out_dir / f"{name}_sequential_r{radius}.tsv", seq, labels)
            fixed_ok, seq_ok = certified(fixed, labels, radius), certified(seq, labels, radius)
            fixed_samples = np.array([c.samples_used for c in fixed])
            seq_samples = np.array([c.samples_used for c in seq])
            reasons = [c.details["sequential"]["stop"] for c in seq]
            by_reason = {reason: {"inputs": int(sum(r == reason for r in reasons)),
                                  "mean_samples": float(np.mean([s for s, r in zip(seq_samples, reasons) if r == reason]))}
                         for reason in sorted(set(reasons))}
            record = {
                "model": name, "sigma": sigma, "target_radius": radius,
                "fixed_certified_accuracy": float(fixed_ok.mean()), "sequential_certified_accuracy": float(seq_ok.mean()),
                "certified_by_fixed_only": [c.index for c, a, b in zip(seq, fixed_ok, seq_ok) if a and not b],
                "certified_by_sequential_only": [c.index for c, a, b in zip(seq, fixed_ok, seq_ok) if b and not a],
                "fixed_mean_samples": float(fixed_samples.mean()), "sequential_mean_samples": float(seq_samples.mean()),
                "sequential_median_samples": float(np.median(seq_samples)),
                "sample_ratio": float(fixed_samples.mean() / seq_samples.mean()),
                "fixed_seconds": fixed_seconds, "sequential_seconds": seq_seconds,
                "stops": by_reason,
                "per_input": [{"index": c.index, "label": y, "prediction": c.prediction, "radius": c.radius,
                               "samples_used": c.samples_used, "stop": c.details["sequential"]["stop"],
                               "p_lower": c.p_lower, "p_upper": c.details["sequential"]["p_upper"],
                               "fixed_radius": f.radius, "fixed_p_lower": f.p_lower}
                              for c, y, f in zip(seq, labels, fixed)],
            }
            summary["runs"].append(record)
            rows.append(record)
            print(f"{name} r={radius}: fixed {100 * record['fixed_certified_accuracy']:.2f}% "
                  f"sequential {100 * record['sequential_certified_accuracy']:.2f}% samples "
                  f"{record['sequential_mean_samples']:.0f} ({record['sample_ratio']:.1f}x) in {seq_seconds:.0f} s",
                  file=sys.stderr, flush=True)
    (args.out_dir / "digits_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    write_readme(args, summary, rows)


def write_readme(args, summary, rows) -> None:
    lines = [
        "# Sequential (anytime-valid) against fixed-n certification, bundled digits models\n",
        f"Command: `{summary['command']}` (torch.set_num_threads(1), shared 2-core CPU).\n",
        f"Every {args.skip}rd digits test image ({summary['images']} images), n0 = 100, alpha = 0.001, batch 1000,",
        f"seed {args.seed}. Fixed: CERTIFY with n = {args.n:,} (samples per image = n0 + n). Sequential:",
        "SEQUENTIAL-CERTIFY, target-radius mode at r, n_max = n, checkpoints 1000, 2000, ..., 64000, 100000,",
        "stitched Clopper-Pearson lower sequence at alpha/8 per checkpoint (the certificate) and the matching",
        "upper sequence (stopping only). Same per-input noise streams for both (paired). Certified accuracy",
        "at r: correct and radius >= r over all images (abstentions count as wrong).\n",
        "| model (sigma) | r | certified acc., fixed n | certified acc., sequential | difference (pp) "
        "| images certified only by fixed / only by sequential | mean samples per image, fixed | mean samples, sequential "
        "| median samples, sequential | fewer samples |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} ({r['sigma']}) | {r['target_radius']} | {100 * r['fixed_certified_accuracy']:.2f}% "
            f"| {100 * r['sequential_certified_accuracy']:.2f}% "
            f"| {100 * (r['sequential_certified_accuracy'] - r['fixed_certified_accuracy']):+.2f} "
            f"| {len(r['certified_by_fixed_only'])} / {len(r['certified_by_sequential_only'])} "
            f"| {r['fixed_mean_samples']:,.0f} | {r['sequential_mean_samples']:,.0f} "
            f"| {r['sequential_median_samples']:,.0f} | {r['sample_ratio']:.1f}x |")
    lines += ["", "Where the sequential samples go (stopping reason: images, mean samples per image):", ""]
    for r in rows:
        parts = ", ".join(f"{reason}: {v['inputs']} images, {v['mean_samples']:,.0f}" for reason, v in r["stops"].items())
        share = {reason: v["inputs"] * v["mean_samples"] / (summary["images"] * r["sequential_mean_samples"])
                 for reason, v in r["stops"].items()}
        top = max(share, key=share.get)
        lines.append(f"- {r['model']} r={r['target_radius']}: {parts}; '{top}' images use "
                     f"{100 * share[top]:.0f}% of all samples.")
    lines += ["", "Wall time (s): " + "; ".join(
        f"{r['model']} r={r['target_radius']}: fixed (all radii, one run) {r['fixed_seconds']:.0f}, "
        f"sequential {r['sequential_seconds']:.0f}" for r in rows) + ".", ""]
    (args.out_dir / "digits.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
