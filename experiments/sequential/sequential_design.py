"""Choosing SEQUENTIAL-CERTIFY's defaults by simulation on held-out digits images.

    python experiments/sequential/sequential_design.py --out results/sequential/design.md

Input: results/sequential/vote_rates.json (experiments/sequential/sequential_vote_rates.py): each digits test
image's vote counts at n = 100000 under bundled:digits-0.25 (sigma 0.25) and digits-0.50 (sigma
0.5). Only the images with index % 3 != 0 are used (240 per model): the evaluation images of
experiments/sequential/sequential_digits.py (index % 3 == 0) play no part in choosing the defaults.

Each image's class probabilities are taken to be its vote shares. For every candidate design and
every setting (model, target radius r in {0.25, 0.5}), REPS replicate runs are simulated, paired
with a fixed-n CERTIFY (n0 = 100, n = 100000) on the same random votes, as on a CPU where the
sequential streams are prefixes of the fixed-n ones: selection votes drawn look by look
(multinomial; fixed-n uses the first 100), then the votes for the selected class round by round
(binomial) through the library's own decision code (robustcert.methods.sequential.SequenceStates),
the fixed-n decision read from the same path at n = 100000. Reported per design: mean samples per
image over all settings' images (selection + estimation), the ratio to n0 + n = 100100, and the
change in the number of images certified at r per 120 images (mean, and the share of replicate
runs of 120 images that lose more than one image against fixed-n).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.stats import betabinom

from robustcert.methods.sequential import (
    SequenceStates, SequentialDesign, TargetRadius, selection_lead, selection_looks,
)
from robustcert.stats import clopper_pearson_lower_many, oracle_sample_size

ALPHA, N0, N = 0.001, 100, 100_000
RADII = (0.25, 0.5)


@dataclass(frozen=True)
class Candidate:
    n_first: int = 64
    growth: float = 2.0
    final_share: float | None = 0.5
    stop_alpha: float = 0.05
    stop_test: str = "clopper-pearson"
    sequential_selection: bool = True
    futility: float | None = None  # predictive futility (not in the library): stop when P(certified at n_max) < this

    def label(self) -> str:
        share = "alpha/K" if self.final_share is None else f"{self.final_share:g}"
        futility = "" if self.futility is None else f", predictive futility {self.futility:g}"
        return (f"n_first {self.n_first}, growth {self.growth:g}, final share {share}, stop_alpha {self.stop_alpha:g}, "
                f"{self.stop_test}, selection {'sequential' if self.sequential_selection else 'n0 = 100'}{futility}")


class FutileStates(SequenceStates):
    """A candidate that was measured and NOT adopted: stochastic curtailment (Lan, Simon and
    Halperin 1982). Also stop ("futile") when the predictive probability that the votes at n_max
    reach the vote share that certifies there is below ``futility`` (Jeffreys posterior on pA, a
    beta-binomial for the remaining votes). It never affects the certificate (a stop decision)."""

    futility = 0.01

    def look(self, j, rows, votes):
        stopped = super().look(j, rows, votes)
        design = self.design
        if design.reach is None or j == len(design.checkpoints) - 1:
            return stopped
        votes, n = np.asarray(votes).reshape(len(rows)), design.checkpoints[j]
        needed = round(design.reach * design.n_max) - votes  # votes for cA needed among the remaining draws
        chance = betabinom.sf(needed - 1, design.n_max - n, votes + 0.5, n - votes + 0.5)
        futile = ~stopped & (chance < self.futility)
        reasons = self.reason[rows]
        reasons[futile] = "futile"
        self.reason[rows] = reasons
        return stopped | futile


def simulate(candidate: Candidate, probabilities: np.ndarray, labels: np.ndarray, sigma: float, radius: float,
             reps: int, rng: np.random.Generator) -> dict:
    """REPS replicate runs over the images: samples and certified-at-r, sequential and fixed-n (paired)."""
    rule = TargetRadius(sigma, radius)
    design = SequentialDesign.build(rule, N, ALPHA, candidate.growth, candidate.n_first, candidate.final_share,
                                    candidate.stop_alpha, candidate.stop_test)
    images = len(labels)
    q = np.repeat(probabilities, reps, axis=0)  # path = (image, rep), image-major
    truth = np.repeat(labels, reps)
    paths = len(q)
    # selection: the same stream for both; fixed-n reads all N0 votes, sequential stops at the lead
    lead = selection_lead(rule.p_target) if candidate.sequential_selection else None
    counts = np.zeros_like(q, dtype=np.int64)
    seq_selected, seq_used = np.full(paths, -1), np.zeros(paths, dtype=np.int64)
    drawn = 0
    for look in selection_looks(N0):
        counts += rng.multinomial(look - drawn, q)
        drawn = look
        top_two = np.sort(counts, axis=1)[:, -2:]
        stop = (seq_selected < 0) & (((lead is not None) & (top_two[:, 1] - top_two[:, 0] >= (lead or 0)))
                                     | (look == N0))
        seq_selected[stop], seq_used[stop] = np.argmax(counts[stop], axis=1), look
    fixed_selected = np.argmax(counts, axis=1)
    # estimation: one Bernoulli path per (path, class choice); the two choices differ only on misselection
    states = SequenceStates(design, paths) if candidate.futility is None else FutileStates(design, paths)
    states.futility = candidate.futility
    p_seq = q[np.arange(paths), seq_selected]
    p_fixed = q[np.arange(paths), fixed_selected]
    same = seq_selected == fixed_selected
    votes_seq = np.zeros(paths, dtype=np.int64)
    active, drawn = np.arange(paths), 0
    for j, checkpoint in enumerate(design.checkpoints):
        votes_seq[active] += rng.binomial(checkpoint - drawn, p_seq[active])
        drawn = checkpoint
        stopped = states.look(j, active, votes_seq[active])
        active = active[~stopped]
        if len(active) == 0:
            break
    # fixed-n: continue each path to N (the same votes up to where the sequential run stopped)
    votes_fixed = np.where(same, votes_seq + rng.binomial(N - states.n, p_fixed), rng.binomial(N, p_fixed))
    fixed_ok = (clopper_pearson_lower_many(votes_fixed, N, ALPHA) >= rule.p_target) & (fixed_selected == truth)
    seq_ok = (states.reason == "certified") & (seq_selected == truth)
    samples = seq_used + states.n
    difference = (seq_ok.astype(int) - fixed_ok.astype(int)).reshape(images, reps)
    return {"samples": samples.reshape(images, reps), "difference": difference,
            "fixed_certified": fixed_ok.reshape(images, reps).sum(axis=0).mean(),
            "seq_certified": seq_ok.reshape(images, reps).sum(axis=0).mean(), "K": len(design.checkpoints)}


def evaluate(candidate, settings, reps, seed) -> dict:
    rng = np.random.default_rng(seed)
    per_setting, all_samples, losses = [], [], []
    for name, sigma, radius, probabilities, labels in settings:
        result = simulate(candidate, probabilities, labels, sigma, radius, reps, rng)
        images = len(labels)
        # replicate runs of 120 images: split the images into groups of 120 (per rep)
        groups = result["difference"][: images // 120 * 120].reshape(images // 120, 120, reps).sum(axis=1)
        losses.append((groups <= -2).mean())
        mean_samples = result["samples"].mean()
        all_samples.append(mean_samples)
        per_setting.append({"setting": f"{name} r={radius}", "mean_samples": mean_samples,
                            "ratio": (N0 + N) / mean_samples, "certified_change_per_120": 120 * result["difference"].sum(axis=0).mean() / images,
                            "loses_2_or_more": float((groups <= -2).mean()), "K": result["K"]})
    return {"candidate": candidate, "per_setting": per_setting,
            "worst_ratio": min(s["ratio"] for s in per_setting),
            "mean_ratio": float(np.exp(np.mean(np.log([s["ratio"] for s in per_setting])))),
            "mean_change": float(np.mean([s["certified_change_per_120"] for s in per_setting])),
            "loses_2_or_more": float(np.mean(losses))}


def candidates() -> list[tuple[str, Candidate]]:
    base = Candidate()
    grid = [("schedule", replace(base, n_first=f, growth=g)) for f in (16, 32, 64, 128) for g in (1.5, 2.0, 3.0)]
    grid += [("alpha at the last look", replace(base, final_share=s)) for s in (None, 0.25, 0.75)]
    grid += [("stopping level", replace(base, stop_alpha=a)) for a in (0.001, 0.01, 0.1, 0.2)]
    grid += [("stopping test", replace(base, stop_test="betting", stop_alpha=a)) for a in (0.001, 0.01, 0.05, 0.1)]
    grid += [("selection", replace(base, sequential_selection=False))]
    grid += [("predictive futility (not adopted)", replace(base, futility=g)) for g in (0.001, 0.01, 0.05)]
    grid += [("previous default", Candidate(n_first=1000, growth=2.0, final_share=None, stop_alpha=0.001,
                                            sequential_selection=False))]
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=Path, default=Path("results/sequential/vote_rates.json"))
    parser.add_argument("--out", type=Path, default=Path("results/sequential/design.md"))
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rates = json.loads(args.rates.read_text())
    settings = []
    for name, model in rates["models"].items():
        held_out = [image for image in model["images"] if image["index"] % 3 != 0]
        probabilities = np.array([image["counts"] for image in held_out], dtype=float)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        labels = np.array([image["label"] for image in held_out])
        settings += [(name, model["sigma"], radius, probabilities, labels) for radius in RADII]
    floors = [float(np.mean([oracle_sample_size(p, TargetRadius(sigma, radius).p_target, ALPHA, N)
                             for p in probabilities.max(axis=1)]))
              for name, sigma, radius, probabilities, labels in settings]
    rows = []
    for group, candidate in candidates():
        started = time.perf_counter()
        rows.append((group, evaluate(candidate, settings, args.reps, args.seed)))
        print(f"{group}: {candidate.label()}: worst {rows[-1][1]['worst_ratio']:.0f}x "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    write(args, settings, rows, floors)


def write(args, settings, rows, floors) -> None:
    images = len(settings[0][4])
    lines = [
        "# Choosing SEQUENTIAL-CERTIFY's defaults: simulation on held-out digits images\n",
        f"Command: `python {' '.join(sys.argv)}`\n",
        f"Vote shares of the {images} digits test images with index % 3 != 0 (held out from the evaluation",
        "images of digits.md), from results/sequential/vote_rates.json (n = 100000 per image and model).",
        f"Settings: digits-0.25 and digits-0.50 at r = 0.25 and 0.5 (four); {args.reps} replicate runs per",
        "image, each paired with fixed-n CERTIFY (n0 = 100, n = 100000, alpha = 0.001) on the same votes.",
        "Samples = selection + estimation per image; ratio = 100100 / mean samples; certified change =",
        "images certified at r by the sequential run minus by fixed-n, per 120 images; 'loses >= 2' =",
        "share of replicate runs of 120 images in which the sequential run certifies at least two images",
        "fewer than fixed-n. Oracle floor: the mean over the images of the estimation samples one",
        "Clopper-Pearson bound at alpha needs to decide 'pA >= Phi(r/sigma)?' when pA (the vote share) is known,",
        "capped at n_max (robustcert.stats.oracle_sample_size); it bounds the ratio any method deciding at alpha",
        "can reach: " + ", ".join(f"{name} r={radius}: {floor:,.0f} samples ({(N0 + N) / floor:.0f}x)"
                                  for (name, sigma, radius, _, _), floor in zip(settings, floors)) + ".\n",
        "| group | design | K | ratio per setting (0.25/0.25, 0.25/0.5, 0.50/0.25, 0.50/0.5) | worst ratio "
        "| geometric mean ratio | certified change per 120 (mean over settings) | loses >= 2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group, row in rows:
        ratios = " / ".join(f"{s['ratio']:.0f}x" for s in row["per_setting"])
        lines.append(f"| {group} | {row['candidate'].label()} | {row['per_setting'][0]['K']} | {ratios} "
                     f"| {row['worst_ratio']:.0f}x | {row['mean_ratio']:.0f}x | {row['mean_change']:+.2f} "
                     f"| {100 * row['loses_2_or_more']:.0f}% |")
    lines.append("")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
