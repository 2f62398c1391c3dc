"""Cohen et al. (hard votes) against Lipschitz-variance-margin smoothing on the bundled digits models.

Same model, sigma, images, n0, n, alpha and seed for every method. Writes, under --out-dir:
``sigma_S/METHOD.tsv`` (reference certify format), ``sigma_S/METHOD.selection.tsv`` (what each
lvm certificate chose), ``sigma_S/selection.md`` (the held-out scores of every pair) and README.md.

One smoothed classifier per method (these are compared with cohen):

* cohen:              Smooth (Clopper-Pearson lower bound on the vote share, R = sigma Phi^-1(pA)).
* lvm:                LipschitzSmooth's default classifier (hardmax, i.e. cohen's g; per input only the
                      radius formula is chosen on the n0 selection samples: sigma Phi^-1(pA) or the
                      runner-up form sigma/2 (Phi^-1(pA) - Phi^-1(pB)) with union upper bounds).
* lvm-selected:       one (map, t) of the grid (softmax and sparsemax at t in 0.25..2, hardmax) chosen by
                      select_lvm on --held-out train images (ACR; own noise streams), then certified.
* lvm-soft-selected:  the same with softmax and sparsemax only: the best single soft classifier.
* lvm-soft-hoeffding: lvm-soft-selected's pair with Hoeffding instead of empirical Bernstein bounds.

Not one classifier (a different (map, t) per input, chosen from that input's own noise; shown for
reference, never compared with cohen):

* per-input-grid:       the grid, pair and formula chosen per input on the n0 selection samples
                        (the old LipschitzSmooth default).
* per-input-union-grid: every (pair, formula) on the estimation samples at alpha/M, the largest kept.

Usage (about 15 minutes on one CPU core)::

    python experiments/lvm/compare_lvm.py --out-dir results/lvm
"""
from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np
import torch

from robustcert import LipschitzSmooth, Smooth, load_dataset, load_model, select_lvm
from robustcert.methods.lipschitz import GRID_MAPS, GRID_TEMPERATURES
from robustcert.radius import gaussian_radius
from robustcert.results import certify_row, read_results, render_table, results_table
from robustcert.stats import bernstein_lower, clopper_pearson_lower, hoeffding_lower

SOFT_MAPS = ("softmax", "sparsemax")
ONE_CLASSIFIER = ("cohen", "lvm", "lvm-selected", "lvm-soft-selected", "lvm-soft-hoeffding")
PER_INPUT = ("per-input-grid", "per-input-union-grid")


def build_methods(model, sigma, args, log):
    """The smoothed classifiers, with the held-out selections made first (and logged)."""
    def chosen(maps):
        selection = select_lvm(model, 10, sigma, "digits", split="train+val", maps=maps, temperatures=GRID_TEMPERATURES,
                               max_inputs=args.held_out, n0=args.n0, n=args.n, alpha=args.alpha,
                               batch_size=args.batch, seed=args.seed)
        log.append((maps, selection))
        return selection

    methods = {"cohen": lambda: Smooth(model, 10, sigma), "lvm": lambda: LipschitzSmooth(model, 10, sigma),
               "lvm-selected": lambda: chosen(GRID_MAPS).smoothed}
    soft = {}

    def soft_selection():
        if "selection" not in soft:
            soft["selection"] = chosen(SOFT_MAPS)
        return soft["selection"]

    methods["lvm-soft-selected"] = lambda: soft_selection().smoothed
    methods["lvm-soft-hoeffding"] = lambda: LipschitzSmooth(
        model, 10, sigma, maps=[soft_selection().chosen.map], temperatures=[soft_selection().chosen.temperature],
        bound="hoeffding")
    methods["per-input-grid"] = lambda: LipschitzSmooth(model, 10, sigma, maps=GRID_MAPS,
                                                        temperatures=GRID_TEMPERATURES, per_input_grid=True)
    methods["per-input-union-grid"] = lambda: LipschitzSmooth(model, 10, sigma, maps=GRID_MAPS,
                                                              temperatures=GRID_TEMPERATURES, selection="union",
                                                              per_input_grid=True)
    return methods


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
    parser.add_argument("--methods", default=",".join(ONE_CLASSIFIER + PER_INPUT))
    parser.add_argument("--skip", type=int, default=3, help="certify every SKIP-th test image")
    parser.add_argument("--held-out", type=int, default=100, help="train images select_lvm chooses on")
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
        "Produced by `python experiments/lvm/compare_lvm.py --out-dir results/lvm "
        f"--sigmas {args.sigmas} --skip {args.skip} --held-out {args.held_out} --n {args.n}` "
        f"(torch threads: {args.threads}, CPU).",
        "",
        f"Digits test split, one image in every {args.skip} ({len(indices)} images), n0 = {args.n0}, n = {args.n}, "
        f"alpha = {args.alpha}, seed = {args.seed}; each sigma uses the bundled model trained at that sigma. "
        "Every method sees the same images with the same seed (so cohen and lvm draw the same noise).",
        "",
        "**One smoothed classifier per method** (the first table of each sigma, compared with cohen): "
        "`cohen` = Smooth (Clopper-Pearson, R = sigma Phi^-1(pA)); `lvm` = LipschitzSmooth's default, "
        "hardmax (cohen's smoothed classifier; per input only the radius formula is chosen on the n0 selection "
        "samples: sigma Phi^-1(pA) or the runner-up form sigma/2 (Phi^-1(pA) - Phi^-1(pB)) with union upper "
        "bounds on the other classes); `lvm-selected` = the one (map, t) of the grid "
        f"({', '.join(GRID_MAPS)} at t in {list(GRID_TEMPERATURES)}) with the best ACR on {args.held_out} train "
        "images (`select_lvm`, same n0, n, alpha, own noise streams; costs no alpha: independent of the "
        "certified images); `lvm-soft-selected` = the same choice among the soft maps only (empirical Bernstein "
        "bounds); `lvm-soft-hoeffding` = that soft pair with Hoeffding bounds.",
        "",
        "**Not one classifier** (second table, for reference only): `per-input-grid` chooses the (map, t) per "
        "input from that input's own n0 selection samples (the previous LipschitzSmooth default, which the "
        "earlier version of this page compared with cohen as `lvm`); `per-input-union-grid` certifies every "
        "(map, t, formula) on the estimation samples at alpha/M and keeps the largest radius. Each of their "
        "certificates holds for the pair it records, but a nearby input may record another pair, so together they "
        "do not certify any one deployable classifier (Sukenik et al. 2022); their numbers are not comparable with "
        "cohen's.",
        "",
        "No Lipschitz constant is known for these CNNs, so the Lipschitz-margin formulas are not used "
        "(without one they never beat the probit forms). `linear_margin.md` (`experiments/lvm/lvm_linear_margin.py`) "
        "shows the regime where they win: a base model with a known Lipschitz constant. Wall times come from a "
        "2-core machine shared with other jobs: indicative only.",
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
        for stale in folder.glob("*.tsv"):
            stale.unlink()
        model = load_model(f"bundled:digits-{sigma:.2f}")
        log: list = []
        builders = build_methods(model, sigma, args, log)
        results, times = {}, {}
        for name in methods:
            started = time.perf_counter()
            smoothed = builders[name]()
            selection_seconds = time.perf_counter() - started
            certificates, seconds = certify_all(smoothed, xs, labels, indices, args)
            results[name], times[name] = certificates, (seconds, selection_seconds)
            write_tsv(folder / f"{name}.tsv", certificates, labels)
            if name != "cohen":
                write_selection(folder / f"{name}.selection.tsv", certificates)
            print(f"sigma {sigma}: {name} done in {seconds:.1f} s (+{selection_seconds:.1f} s building)", flush=True)
        selection_lines = [f"# Held-out choice of the LVM classifier, sigma = {sigma}", ""]
        for maps, selection in log:
            selection_lines += [f"Grid {', '.join(maps)} at t in {list(GRID_TEMPERATURES)}; "
                                f"{selection.record['inputs']} train images; chosen: {selection.chosen.label}", "",
                                "| pair | ACR | certified accuracy at 0 |", "|---|---:|---:|",
                                *(f"| {row.classifier} | {row.ACR:.4f} | {row[3]:.3f} |"
                                  for row in selection.scores.itertuples()), ""]
        (folder / "selection.md").write_text("\n".join(selection_lines) + "\n")
        radii = [round(r, 3) for r in np.arange(0, 3.2 * sigma + 1e-9, sigma / 2)]
        report += [f"## sigma = {sigma} (bundled:digits-{sigma:.2f})", ""]
        for title, group in (("One smoothed classifier per method", ONE_CLASSIFIER),
                             ("Not one classifier: a (map, t) per input (reference only, not comparable with cohen)",
                              PER_INPUT)):
            names = [name for name in group if name in results]
            if not names:
                continue
            frames = [(name, read_results(folder / f"{name}.tsv")) for name in names]
            report += [f"### {title}", "",
                       "Certified accuracy at radius r (abstentions count as wrong), ACR; best per column in bold.", "",
                       render_table(results_table(frames, radii), "markdown", decimals=3), ""]
            if group is ONE_CLASSIFIER and "cohen" in results:
                cohen = np.array([c.radius * c.correct(y) for c, y in zip(results["cohen"], labels)])
                report += ["Per image against cohen (certified radius of the correct class, 0 if wrong or abstained):",
                           "", "| method | images with a larger radius | smaller | mean radius difference | "
                           "wall time (s) | held-out selection (s) |", "|---|---:|---:|---:|---:|---:|",
                           f"| cohen | - | - | - | {times['cohen'][0]:.1f} | - |"]
                for name in names:
                    if name == "cohen":
                        continue
                    ours = np.array([c.radius * c.correct(y) for c, y in zip(results[name], labels)])
                    report.append(f"| {name} | {np.mean(ours > cohen + 1e-12):.3f} | "
                                  f"{np.mean(ours < cohen - 1e-12):.3f} | {np.mean(ours - cohen):+.4f} | "
                                  f"{times[name][0]:.1f} | {times[name][1]:.1f} |")
                report.append("")
        for name in methods:
            if name == "cohen":
                continue
            counts = collections.Counter(
                (c.details["map"], c.details["temperature"], c.details["formula"]) for c in results[name])
            chosen = ", ".join(f"{m}{'' if t is None else f'(t={t:g})'} {f}: {k}" for (m, t, f), k in counts.most_common())
            report.append(f"- `{name}` certified with: {chosen}")
        report += ["", f"Held-out scores of every pair: `sigma_{sigma:.2f}/selection.md`.", ""]
    (args.out_dir / "README.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))


if __name__ == "__main__":
    main()
