"""Cohen et al. (hard votes) against Lipschitz-variance-margin smoothing on the bundled digits models.

Same model, sigma, images, n0, n, alpha and seed for every method. Writes, under --out-dir:
``sigma_S/METHOD.tsv`` (reference certify format), ``sigma_S/METHOD.selection.tsv`` (what each
lvm certificate chose) and README.md (tables: certified accuracy at each radius, ACR, per-image
comparison with cohen, how often each map / temperature / formula was selected, wall times).

Methods (all lvm variants use the default formulas: probit-simplex and probit-union):

* cohen:          Smooth (Clopper-Pearson lower bound on the vote share, R = sigma Phi^-1(pA)).
* lvm:            LipschitzSmooth default grid (softmax and sparsemax at t in 0.25..2, hardmax),
                  map/temperature/formula chosen on the n0 selection samples.
* lvm-votes:      hardmax only (Clopper-Pearson on votes): isolates the runner-up (union) formula.
* lvm-soft:       softmax and sparsemax only (Bernstein bounds): isolates the soft outputs.
* lvm-union-grid: default grid paid for by a union bound over the (map, t, formula) pairs.
* lvm-soft-hoeffding: lvm-soft with Hoeffding instead of empirical Bernstein bounds.

Usage (about 7 minutes on one CPU core)::

    python experiments/compare_lvm.py --out-dir results/lvm
"""
from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np
import torch

from robustcert import LipschitzSmooth, Smooth, load_dataset, load_model
from robustcert.methods.lipschitz import DEFAULT_TEMPERATURES
from robustcert.radius import gaussian_radius
from robustcert.results import certify_row, read_results, render_table, results_table
from robustcert.stats import bernstein_lower, clopper_pearson_lower, hoeffding_lower

METHODS = {
    "cohen": lambda model, sigma: Smooth(model, 10, sigma),
    "lvm": lambda model, sigma: LipschitzSmooth(model, 10, sigma),
    "lvm-votes": lambda model, sigma: LipschitzSmooth(model, 10, sigma, maps=["hardmax"]),
    "lvm-soft": lambda model, sigma: LipschitzSmooth(model, 10, sigma, maps=["softmax", "sparsemax"]),
    "lvm-union-grid": lambda model, sigma: LipschitzSmooth(model, 10, sigma, selection="union"),
    "lvm-soft-hoeffding": lambda model, sigma: LipschitzSmooth(model, 10, sigma, maps=["softmax", "sparsemax"],
                                                               bound="hoeffding"),
}


def certify_all(smoothed, xs, labels, indices, args):
    """Certify in chunks (as the CLI does); returns the certificates and the wall time."""
    started, certificates = time.perf_counter(), []
    for start in range(0, len(indices), args.chunk):
        part = slice(start, start + args.chunk)
        certificates += smoothed.certify_batch(xs[part], n0=args.n0, n=args.n, alpha=args.alpha,
                                               batch_size=args.batch, seed=args.seed, indices=indices[part])
    return certificates, time.perf_counter() - started


def write_tsv(path: Path, certificates, labels) -> None:
    lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
    lines += [certify_row(c.index, int(y), c.prediction, c.radius, c.time) for c, y in zip(certificates, labels)]
    path.write_text("\n".join(lines) + "\n")


def write_selection(path: Path, certificates) -> None:
    lines = ["idx\tpredict\tmap\ttemperature\tformula\tbound\tp_a_lower\tp_b_upper"]
    for c in certificates:
        d = c.details
        lines.append(f"{c.index}\t{c.prediction}\t{d['map']}\t{d['temperature']}\t{d['formula']}\t{d['bound']}\t"
                     f"{c.p_lower:.6f}\t{d['p_b_upper']:.6f}")
    path.write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("results/lvm"))
    parser.add_argument("--sigmas", default="0.25,0.50")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--skip", type=int, default=3, help="certify every SKIP-th test image")
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=20, help="images per certify_batch call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    dataset = load_dataset("digits")
    indices = list(range(0, len(dataset), args.skip))
    xs = torch.stack([dataset[i][0] for i in indices])
    labels = np.array([dataset[i][1] for i in indices])

    report = [
        "# Cohen et al. against Lipschitz-variance-margin smoothing (bundled digits models)",
        "",
        "Produced by `python experiments/compare_lvm.py --out-dir results/lvm "
        f"--sigmas {args.sigmas} --skip {args.skip} --n {args.n}` "
        f"(torch threads: {args.threads}, CPU).",
        "",
        f"Digits test split, one image in every {args.skip} ({len(indices)} images), n0 = {args.n0}, n = {args.n}, "
        f"alpha = {args.alpha}, seed = {args.seed}; each sigma uses the bundled model trained at that sigma. "
        "Every method sees the same images with the same seed (so cohen and lvm-votes draw the same noise).",
        "",
        "Methods: `cohen` = Smooth (Clopper-Pearson, R = sigma Phi^-1(pA)); `lvm` = LipschitzSmooth with "
        f"its default grid (softmax and sparsemax at t in {list(DEFAULT_TEMPERATURES)}, and hardmax), "
        "map/temperature/formula chosen on the n0 selection samples; `lvm-votes` = hardmax only "
        "(Clopper-Pearson votes, choice between R = sigma Phi^-1(pA) and the runner-up form "
        "sigma/2 (Phi^-1(pA) - Phi^-1(pB)) with union bounds on all other classes); `lvm-soft` = softmax "
        "and sparsemax only (empirical Bernstein bounds); `lvm-union-grid` = default grid, every "
        "(map, t, formula) certified at alpha/M on the estimation samples and the best kept; "
        "`lvm-soft-hoeffding` = lvm-soft with Hoeffding bounds. "
        "No Lipschitz constant is known for these CNNs, so the Lipschitz-margin formulas are not used "
        "(without one they never beat the probit forms). `linear_margin.md` "
        "(`experiments/lvm_linear_margin.py`) shows the regime where they win: a base model with a known "
        "Lipschitz constant. Wall times come from a 2-core machine shared with other jobs: indicative only.",
        "",
        "Largest radius each bound can give at this n and alpha (every sample at 1 for class A), in units "
        f"of sigma: Clopper-Pearson {gaussian_radius(1.0, clopper_pearson_lower(args.n, args.n, args.alpha)):.3f}, "
        f"empirical Bernstein {gaussian_radius(1.0, bernstein_lower(1.0, 0.0, args.n, args.alpha)):.3f}, "
        f"Hoeffding {gaussian_radius(1.0, hoeffding_lower(1.0, args.n, args.alpha)):.3f} "
        "(R = sigma Phi^-1(pA_lower)).",
        "",
    ]
    for sigma_text in args.sigmas.split(","):
        sigma = float(sigma_text)
        folder = args.out_dir / f"sigma_{sigma:.2f}"
        folder.mkdir(parents=True, exist_ok=True)
        model = load_model(f"bundled:digits-{sigma:.2f}")
        results, times = {}, {}
        for name in methods:
            certificates, seconds = certify_all(METHODS[name](model, sigma), xs, labels, indices, args)
            results[name], times[name] = certificates, seconds
            write_tsv(folder / f"{name}.tsv", certificates, labels)
            if name != "cohen":
                write_selection(folder / f"{name}.selection.tsv", certificates)
            print(f"sigma {sigma}: {name} done in {seconds:.1f} s", flush=True)
        frames = [(name, read_results(folder / f"{name}.tsv")) for name in methods]
        radii = [round(r, 3) for r in np.arange(0, 3.2 * sigma + 1e-9, sigma / 2)]
        table = results_table(frames, radii)
        report += [f"## sigma = {sigma} (bundled:digits-{sigma:.2f})", "",
                   "Certified accuracy at radius r (abstentions count as wrong), ACR; best per column in bold.", "",
                   render_table(table, "markdown", decimals=3), ""]
        if "cohen" in results:
            cohen = np.array([c.radius * c.correct(y) for c, y in zip(results["cohen"], labels)])
            report += ["Per image against cohen (certified radius of the correct class, 0 if wrong or abstained):", "",
                       "| method | images with a larger radius | smaller | mean radius difference | wall time (s) |",
                       "|---|---:|---:|---:|---:|",
                       f"| cohen | - | - | - | {times['cohen']:.1f} |"]
            for name in methods:
                if name == "cohen":
                    continue
                ours = np.array([c.radius * c.correct(y) for c, y in zip(results[name], labels)])
                report.append(f"| {name} | {np.mean(ours > cohen + 1e-12):.3f} | {np.mean(ours < cohen - 1e-12):.3f} "
                              f"| {np.mean(ours - cohen):+.4f} | {times[name]:.1f} |")
            report.append("")
        for name in methods:
            if name == "cohen" or name not in results:
                continue
            counts = collections.Counter(
                (c.details["map"], c.details["temperature"], c.details["formula"]) for c in results[name])
            chosen = ", ".join(f"{m}{'' if t is None else f'(t={t:g})'} {f}: {k}" for (m, t, f), k in counts.most_common())
            report.append(f"- `{name}` chose: {chosen}")
        report.append("")
    (args.out_dir / "README.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))


if __name__ == "__main__":
    main()
