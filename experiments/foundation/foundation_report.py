"""Figures for the foundation: bundled models' accuracy, linear ground truth, coverage.

    python experiments/foundation/foundation_report.py > results/foundation/README.md

1. Bundled digits models: base-classifier accuracy on the digits test split (clean, and under
   one draw of Gaussian noise at the training sigma).
2. Linear ground truth: f(x) = 1[w.x + b > 0] in 16 dimensions; the exact smoothed radius is the
   distance |w.x + b| / ||w|| to the boundary. Certified radius at n = 100000, alpha = 0.001.
3. Coverage: 3000 certifications of an input with pA = 0.8 (n = 500, alpha = 0.05); failure =
   a certified radius above the exact one. Also with a loosened bound (Clopper-Pearson at 2 alpha).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import norm

import robustcert.methods.cohen as cohen
from robustcert import ABSTAIN, Smooth, load_checkpoint
from robustcert.data import digits_arrays
from robustcert.models.closed_form import LinearBinary, point_at_distance
from robustcert.stats import clopper_pearson_lower


def bundled_accuracy():
    x, y = (torch.from_numpy(a) for a in digits_arrays("test"))
    print("## Bundled digits models (base classifiers, digits test split, 360 images)\n")
    print("| model | training sigma | clean accuracy | accuracy under N(0, sigma^2) noise (one draw, seed 0) |")
    print("|---|---|---|---|")
    for name, sigma in (("digits-0.12", 0.12), ("digits-0.25", 0.25), ("digits-0.50", 0.50)):
        model = load_checkpoint(f"bundled:{name}").module
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
            noisy = (model(x + sigma * torch.randn(x.shape, generator=generator)).argmax(1) == y).float().mean().item()
        print(f"| bundled:{name} | {sigma} | {clean:.4f} | {noisy:.4f} |")
    print()


def linear_ground_truth():
    model = LinearBinary(torch.randn(16, generator=torch.Generator().manual_seed(1)), b=0.3)
    sigma = 0.5
    smoothed = Smooth(model, 2, sigma)
    print("## Linear ground truth (16-d linear classifier, sigma = 0.5, n0 = 100, n = 100000, alpha = 0.001, seed 3)\n")
    print("| pA | exact radius | certified radius | certified / exact |")
    print("|---|---|---|---|")
    for p_top in (0.6, 0.8, 0.95, 0.99, 0.999):
        distance = sigma * norm.ppf(p_top)
        cert = smoothed.certify(point_at_distance(model, distance, (16,)), n0=100, n=100_000, alpha=0.001,
                                batch_size=10_000, seed=3)
        print(f"| {p_top} | {distance:.4f} | {cert.radius:.4f} | {cert.radius / distance:.4f} |")
    print()


def coverage():
    model = LinearBinary(torch.tensor([1.0]))
    x = torch.tensor([norm.ppf(0.8)])
    reps, n, alpha = 3000, 500, 0.05
    xs = x.unsqueeze(0).repeat(reps, 1)
    smoothed = Smooth(model, 2, 1.0)

    def failure_rate():
        certs = smoothed.certify_batch(xs, n0=50, n=n, alpha=alpha, batch_size=20_000, seed=11)
        return np.mean([c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > model.distance(x))
                        for c in certs])

    sound = failure_rate()
    original = cohen.clopper_pearson_lower
    cohen.clopper_pearson_lower = lambda k, n_, a: original(k, n_, 2 * a)
    try:
        loosened = failure_rate()
    finally:
        cohen.clopper_pearson_lower = original
    print(f"## Coverage (pA = 0.8, n = {n}, alpha = {alpha}, {reps} certifications)\n")
    print("| bound | failure rate | exact miscoverage (binomial sum) |")
    print("|---|---|---|")
    from scipy.stats import binom
    ks = np.arange(n + 1)
    for label, rate, a in (("Clopper-Pearson at alpha (robustcert)", sound, alpha),
                           ("loosened: Clopper-Pearson at 2 alpha", loosened, 2 * alpha)):
        lower = np.array([clopper_pearson_lower(int(k), n, a) for k in ks])
        exact = binom.pmf(ks, n, 0.8)[lower > 0.8].sum()
        print(f"| {label} | {rate:.4f} | {exact:.4f} |")
    print(f"\nThe test suite (tests/test_cohen.py) rejects a failure rate above alpha + 3.5 sd = "
          f"{alpha + 3.5 * np.sqrt(alpha * (1 - alpha) / reps):.4f}.\n")


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)
    print("# Foundation figures\n")
    print("Made by `python experiments/foundation/foundation_report.py > results/foundation/README.md` (CPU).\n")
    bundled_accuracy()
    linear_ground_truth()
    coverage()


if __name__ == "__main__":
    main()
