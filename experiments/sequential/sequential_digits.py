"""Sequential against fixed-n certification on the bundled digits models, at batch 1000 and 10000.

    python experiments/sequential/sequential_digits.py --out-dir results/sequential

For each model (bundled:digits-0.25 at sigma 0.25, bundled:digits-0.50 at sigma 0.5), every
SKIP-th digits test image (default 3: 120 of the 360 images), n0 = 100, alpha = 0.001, seed 0,
and each batch size (1000 and 10000):

* fixed n = 100000 CERTIFY (Cohen et al.), once; certified accuracy read off at each radius;
* SEQUENTIAL-CERTIFY in target-radius mode at r = 0.25 and r = 0.5, n_max = 100000, default
  design (robustcert.methods.sequential: checkpoints 64, 128, ..., 65536, 100000; half of alpha
  at the last look; stop_alpha 0.05; sequential selection).

Inputs are given to certify_batch in the groups a dataset run uses
(``smoothed.certify_inputs_per_call``: one per call for fixed n = 100000, ceil(batch / 64) for
sequential runs), so the sequential rounds of many inputs share batches. Certified accuracy at r =
fraction of ALL images with a correct prediction and radius >= r as written in the TSV (abstentions
count as wrong). Oracle floor of an image: the estimation samples a Clopper-Pearson bound at alpha
needs to decide "pA >= Phi(r/sigma)?" when pA is known (robustcert.stats.oracle_sample_size), with
pA = the fixed run's vote share of its top class at n = 100000, capped at n_max. Timing: process CPU
time (one torch thread) and wall time, on a shared 2-core machine (see the load in the output).
Writes one reference-format TSV per run, per-input samples, floors and stopping reasons (JSON),
and digits.md with the tables.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

from robustcert import Smooth, load_model
from robustcert.data import digits_arrays
from robustcert.methods.sequential import SequentialDesign, TargetRadius
from robustcert.results import CERTIFY_COLUMNS, certify_row, format_radius
from robustcert.stats import oracle_sample_size

MODELS = (("digits-0.25", 0.25), ("digits-0.50", 0.5))
RADII = (0.25, 0.5)
BATCHES = (1000, 10_000)
N0, ALPHA = 100, 0.001


def certified(certs, labels, radius: float) -> np.ndarray:
    """Per image: correct and radius >= r, with the radius as written in the TSV (rounded down)."""
    return np.array([c.prediction == y and float(format_radius(c.radius)) >= radius for c, y in zip(certs, labels)])


def write_tsv(path: Path, certs, labels) -> None:
    lines = ["\t".join(CERTIFY_COLUMNS)] + [certify_row(c.index, y, c.prediction, c.radius, c.time)
                                            for c, y in zip(certs, labels)]
    path.write_text("\n".join(lines) + "\n")


def suffix(batch: int) -> str:
    return "" if batch == 1000 else f"_batch{batch}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("results/sequential"))
    parser.add_argument("--skip", type=int, default=3)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    x_all, y_all = digits_arrays("test")
    indices = list(range(0, len(y_all), args.skip))
    xs, labels = torch.from_numpy(x_all[indices]), [int(y) for y in y_all[indices]]
    summary = {"command": "python " + " ".join(sys.argv), "images": len(indices), "skip": args.skip, "n": args.n,
               "n0": N0, "alpha": ALPHA, "seed": args.seed, "load_average_at_start": os.getloadavg(), "runs": []}

    def run(smoothed, batch, **options):
        per_call = smoothed.certify_inputs_per_call(N0, args.n, batch, **options)
        wall, cpu, certs = time.perf_counter(), time.process_time(), []
        for start in range(0, len(indices), per_call):
            certs += smoothed.certify_batch(xs[start:start + per_call], n0=N0, n=args.n, alpha=ALPHA, batch_size=batch,
                                            seed=args.seed, indices=indices[start:start + per_call], **options)
        return certs, {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                       "inputs_per_call": per_call}

    for name, sigma in MODELS:
        smoothed = Smooth(load_model(f"bundled:{name}"), num_classes=10, sigma=sigma)
        fixed_runs = {}
        for batch in BATCHES:
            fixed, fixed_time = run(smoothed, batch)
            fixed_runs[batch] = fixed
            write_tsv(args.out_dir / f"{name}_fixed_n{args.n}{suffix(batch)}.tsv", fixed, labels)
            print(f"{name}: fixed n={args.n} batch {batch}: {fixed_time}", file=sys.stderr, flush=True)
            for radius in RADII:
                seq, seq_time = run(smoothed, batch, sequential=True, target_radius=radius, n_max=args.n)
                write_tsv(args.out_dir / f"{name}_sequential_r{radius}{suffix(batch)}.tsv", seq, labels)
                record = compare(name, sigma, radius, batch, fixed, fixed_time, seq, seq_time, labels, args.n)
                summary["runs"].append(record)
                print(f"{name} r={radius} batch {batch}: fixed {100 * record['fixed_certified_accuracy']:.2f}% "
                      f"sequential {100 * record['sequential_certified_accuracy']:.2f}% samples "
                      f"{record['sequential_mean_samples']:.0f} ({record['sample_ratio']:.1f}x, "
                      f"{record['floor_ratio']:.2f}x the floor)", file=sys.stderr, flush=True)
        summary.setdefault("fixed_same_at_both_batches", {})[name] = all(
            a.counts == b.counts and a.details == b.details for a, b in zip(*fixed_runs.values()))
    summary["load_average_at_end"] = os.getloadavg()
    (args.out_dir / "digits_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    write_readme(args, summary)


def compare(name, sigma, radius, batch, fixed, fixed_time, seq, seq_time, labels, n_max) -> dict:
    p_target = float(norm.cdf(radius / sigma))
    fixed_ok, seq_ok = certified(fixed, labels, radius), certified(seq, labels, radius)
    fixed_samples = np.array([c.samples_used for c in fixed])
    seq_samples = np.array([c.samples_used for c in seq])
    seq_estimation = np.array([c.n for c in seq])
    top_share = [max(f.counts) / sum(f.counts) for f in fixed]
    floors = np.array([oracle_sample_size(p, p_target, ALPHA, n_max) for p in top_share])
    reasons = [c.details["sequential"]["stop"] for c in seq]
    by_reason = {reason: {"inputs": int(sum(r == reason for r in reasons)),
                          "mean_samples": float(np.mean([s for s, r in zip(seq_samples, reasons) if r == reason]))}
                 for reason in sorted(set(reasons))}
    return {
        "model": name, "sigma": sigma, "target_radius": radius, "batch_size": batch, "p_target": p_target,
        "fixed_certified_accuracy": float(fixed_ok.mean()), "sequential_certified_accuracy": float(seq_ok.mean()),
        "certified_by_fixed_only": [c.index for c, a, b in zip(seq, fixed_ok, seq_ok) if a and not b],
        "certified_by_sequential_only": [c.index for c, a, b in zip(seq, fixed_ok, seq_ok) if b and not a],
        "fixed_mean_samples": float(fixed_samples.mean()), "sequential_mean_samples": float(seq_samples.mean()),
        "sequential_median_samples": float(np.median(seq_samples)),
        "sequential_mean_selection": float(np.mean([c.n0 for c in seq])),
        "sequential_mean_estimation": float(seq_estimation.mean()),
        "sample_ratio": float(fixed_samples.mean() / seq_samples.mean()),
        "floor_mean": float(floors.mean()), "floor_ratio": float(seq_samples.mean() / floors.mean()),
        "estimation_floor_ratio": float(seq_estimation.mean() / floors.mean()),
        "fixed_time": fixed_time, "sequential_time": seq_time, "stops": by_reason,
        "per_input": [{"index": c.index, "label": y, "prediction": c.prediction, "radius": c.radius,
                       "samples_used": c.samples_used, "selection": c.n0, "stop": c.details["sequential"]["stop"],
                       "p_lower": c.p_lower, "p_upper": c.details["sequential"]["p_upper"],
                       "fixed_radius": f.radius, "fixed_p_lower": f.p_lower, "p_hat": p, "floor": int(floor)}
                      for c, y, f, p, floor in zip(seq, labels, fixed, top_share, floors)],
    }


def write_readme(args, summary) -> None:
    rows = summary["runs"]
    design = SequentialDesign.build(TargetRadius(0.25, 0.25), args.n, ALPHA)
    checkpoints, levels = design.checkpoints, design.levels
    lines = [
        "# Sequential (anytime-valid) against fixed-n certification, bundled digits models\n",
        f"Command: `{summary['command']}` (torch.set_num_threads(1), shared 2-core CPU; 1-minute load average "
        f"{summary['load_average_at_start'][0]:.1f} at the start, {summary['load_average_at_end'][0]:.1f} at the end).\n",
        f"Every {args.skip}rd digits test image ({summary['images']} images), n0 = {N0}, alpha = {ALPHA}, seed "
        f"{args.seed}. Fixed: CERTIFY with n = {args.n:,} (samples per image = n0 + n). Sequential: SEQUENTIAL-CERTIFY,",
        f"target-radius mode at r, n_max = n, default design: checkpoints {checkpoints[0]}, {checkpoints[1]}, ..., "
        f"{checkpoints[-2]}, {checkpoints[-1]} (K = {len(checkpoints)},",
        f"whatever the batch size), alpha_K = {levels[-1]:.3g} at the last checkpoint and {levels[0]:.3g} at each other "
        "one for the",
        f"certificate's stitched Clopper-Pearson lower sequence, stop_alpha = {design.stop_alpha} for the stopping "
        "decisions, sequential",
        "selection (at most n0). Certified accuracy at r: correct and radius >= r over all images (abstentions count as",
        "wrong). Samples = selection + estimation. Floor: the oracle's estimation samples (Clopper-Pearson at alpha,",
        "pA known: the fixed run's top vote share), capped at n_max; 'x floor' = our mean samples / mean floor.",
        f"On this CPU the fixed-n runs at batch 1000 and 10000 drew the same samples (identical certificates: "
        f"{summary['fixed_same_at_both_batches']}), and each sequential stream is a prefix of the fixed run's",
        "(tests/test_sequential.py), so the comparison is paired.\n",
        "| model (sigma) | r | batch | certified acc., fixed n | certified acc., sequential | images certified only by "
        "fixed / only by sequential | mean samples, fixed | mean samples, sequential (selection + estimation) "
        "| median, sequential | fewer samples | mean floor | x floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} ({r['sigma']}) | {r['target_radius']} | {r['batch_size']} "
            f"| {100 * r['fixed_certified_accuracy']:.2f}% | {100 * r['sequential_certified_accuracy']:.2f}% "
            f"| {len(r['certified_by_fixed_only'])} / {len(r['certified_by_sequential_only'])} "
            f"| {r['fixed_mean_samples']:,.0f} | {r['sequential_mean_samples']:,.0f} "
            f"({r['sequential_mean_selection']:,.0f} + {r['sequential_mean_estimation']:,.0f}) "
            f"| {r['sequential_median_samples']:,.0f} | {r['sample_ratio']:.0f}x | {r['floor_mean']:,.0f} "
            f"| {r['floor_ratio']:.2f}x |")
    lines += ["", "Where the sequential samples go at batch 1000 (stopping reason: images, mean samples per image):", ""]
    for r in rows:
        if r["batch_size"] != 1000:
            continue
        parts = ", ".join(f"{reason}: {v['inputs']}, {v['mean_samples']:,.0f}" for reason, v in r["stops"].items())
        lines.append(f"- {r['model']} r={r['target_radius']}: {parts}.")
    lines += ["", "Time over the 120 images (process CPU seconds / wall seconds; fixed: one run serves both radii):", "",
              "| model | batch | fixed n | sequential r=0.25 | sequential r=0.5 | CPU time ratio fixed / sequential |",
              "|---|---|---|---|---|---|"]
    for name, _ in MODELS:
        for batch in BATCHES:
            runs = [r for r in rows if r["model"] == name and r["batch_size"] == batch]
            fixed = runs[0]["fixed_time"]
            seq = [r["sequential_time"] for r in runs]
            ratios = " / ".join(f"{fixed['cpu_s'] / s['cpu_s']:.0f}x" for s in seq)
            lines.append(f"| {name} | {batch} | {fixed['cpu_s']:.0f} / {fixed['wall_s']:.0f} | "
                         + " | ".join(f"{s['cpu_s']:.1f} / {s['wall_s']:.1f}" for s in seq) + f" | {ratios} |")
    lines.append("")
    (args.out_dir / "digits.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
