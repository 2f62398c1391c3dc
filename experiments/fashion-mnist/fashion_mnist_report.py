"""Summaries for results/fashion-mnist/ from the files that experiments/fashion-mnist/fashion_mnist.sh wrote.

    python experiments/fashion-mnist/fashion_mnist_report.py            # writes training.md and runs.md

training.md: one row per trained model (from each checkpoint's JSON sidecar, which is copied into
results/fashion-mnist/training/ so that it is kept when the checkpoints are not): recipe, final
validation accuracy (clean and under the training noise), mean time per epoch (training pass,
wall and process CPU). runs.md: one row per certify run: images, samples per image (sequential
runs stop early), certified accuracy at r = 0 and ACR, and the process CPU time from times.txt
(/usr/bin/time) and the wall time from the sidecars; then paired comparisons on the same images:
the mean difference of the per-image certified radius (radius if correct, else 0; its mean is the ACR) with a 95% normal
interval (1.96 standard errors of the paired differences), and how many images gain or lose; then
the sequential target-radius runs against the fixed-n run of the same model (certified accuracy at
r, mean samples, CPU time).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd

from robustcert.results import read_results


def training_table(out_dir: Path) -> str:
    keep = out_dir / "training"
    keep.mkdir(exist_ok=True)
    for sidecar in sorted((out_dir / "models").glob("*.pt.json")):
        shutil.copyfile(sidecar, keep / sidecar.name)
    lines = ["| model | loss | M | images/step | epochs | val clean acc | val noisy acc | s/epoch (wall) "
             "| s/epoch (CPU) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for sidecar in sorted(keep.glob("*.pt.json")):
        record = json.loads(sidecar.read_text())
        p, epochs = record["parameters"], record["epochs"]
        if not p["sigma"]:
            loss = "clean images (no noise)"
        elif p["loss"] == "gaussian":
            loss = "gaussian"
        else:
            loss = f"consistency (lambda {p['consistency_lambda']:g}, eta {p['consistency_eta']:g})"
        if p.get("adversarial_eps"):
            loss += f" + SmoothAdv (eps {p['adversarial_eps']:g}, {p['attack_steps']} PGD steps)"
        if p.get("dual_split"):
            loss += f", {p['dual_split']} branch {p['dual_branch']}"
        last = epochs[-1]
        wall = sum(e["seconds"] for e in epochs) / len(epochs)
        cpu = sum(e["cpu_seconds"] for e in epochs) / len(epochs)
        lines.append(f"| {sidecar.name[:-len('.pt.json')]} (sigma {p['sigma']:g}, {p['arch']}) | {loss} | "
                     f"{p['noise_copies']} | {p['batch']} | {len(epochs)} | {last['val_clean_accuracy']:.4f} | "
                     f"{last['val_noisy_accuracy']:.4f} | {wall:.1f} | {cpu:.1f} |")
    return "\n".join(lines) + "\n"


def cpu_times(out_dir: Path) -> dict[str, tuple[float, float]]:
    """job -> (user + system CPU seconds, wall seconds), the last entry per job in times.txt."""
    times = {}
    path = out_dir / "times.txt"
    if path.is_file():
        for line in path.read_text().splitlines():
            match = re.match(r"(\S+): ([\d.]+) s user, ([\d.]+) s system, ([\d.]+) s wall", line)
            if match:
                times[match[1]] = (float(match[2]) + float(match[3]), float(match[4]))
    return times


def sidecar_wall_seconds(record: dict) -> float:
    """Wall seconds of a run from its sidecar: the sum over its (resumed) runs of end - start."""
    total = 0.0
    for run in record["runs"]:
        end = run.get("finished") or run.get("interrupted")
        if end and run.get("started"):
            total += (datetime.fromisoformat(end) - datetime.fromisoformat(run["started"])).total_seconds()
    return total


def runs_table(out_dir: Path) -> str:
    """CPU seconds from times.txt (/usr/bin/time; "-" where it was not recorded, e.g. for the part of a
    run before an interruption), wall seconds from the sidecars (every part of a resumed run)."""
    times = cpu_times(out_dir)
    lines = ["| run | method | images | n | samples per image (mean) | certified acc r=0 | ACR | CPU s | wall s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for tsv in sorted(out_dir.glob("*.tsv")):
        record = json.loads(Path(f"{tsv}.json").read_text())
        if record.get("kind") != "certify":  # attack TSVs: attack-table.md
            continue
        frame = read_results(tsv)
        used = record["runs"][-1].get("samples_used", {})
        cpu = f"{times[tsv.stem][0]:.0f}" if tsv.stem in times else "-"
        acr = float((frame["radius"] * frame["correct"]).mean())
        method = record["method"] + (" sequential" if record["parameters"].get("sequential") else "")
        lines.append(f"| {tsv.stem} | {method} | {len(frame)} | {record['parameters']['n']} | "
                     f"{used.get('mean_per_input', float('nan')):.0f} | {frame['correct'].mean():.3f} | {acr:.3f} | "
                     f"{cpu} | {sidecar_wall_seconds(record):.0f} |")
    return "\n".join(lines) + "\n"


PAIRS = [("cohen-consistency-0.25", "cohen-gaussian-0.25"), ("cohen-consistency-0.50", "cohen-gaussian-0.50"),
         ("cohen-consistency-0.50", "cohen-gaussian2-0.50"), ("cohen-gaussian2-0.50", "cohen-gaussian-0.50"),
         ("sequential-gaussian-0.50", "cohen-gaussian-0.50"), ("sequential-consistency-0.50", "cohen-consistency-0.50"),
         ("lvm-gaussian-0.50", "cohen-gaussian-0.50"), ("dual-0.50", "cohen-gaussian-0.50"),
         ("cohen-smoothadv-0.50", "cohen-gaussian-0.50"), ("cohen-smoothadv-0.50", "cohen-consistency-0.50")]


def paired_table(out_dir: Path) -> str:
    lines = ["| run A | run B | images | ACR A - ACR B (95% interval) | A larger | B larger |",
             "|---|---|---:|---|---:|---:|"]
    for first, second in PAIRS:
        paths = [out_dir / f"{name}.tsv" for name in (first, second)]
        if not all(p.is_file() for p in paths):
            continue
        a, b = (read_results(p) for p in paths)
        both = a.merge(b, on="idx", suffixes=("_a", "_b"))
        delta = both["radius_a"] * both["correct_a"] - both["radius_b"] * both["correct_b"]
        half = 1.96 * delta.std(ddof=1) / len(delta) ** 0.5
        lines.append(f"| {first} | {second} | {len(both)} | {delta.mean():+.3f} ({delta.mean() - half:+.3f}, "
                     f"{delta.mean() + half:+.3f}) | {(delta > 0).sum()} | {(delta < 0).sum()} |")
    return "\n".join(lines) + "\n"


def target_table(out_dir: Path) -> str:
    """Sequential target-radius runs against the fixed-n run of the same model on the same images:
    certified accuracy at r (correct and radius >= r), images certified by only one of them, mean
    samples per image, CPU time."""
    times = cpu_times(out_dir)
    lines = ["| run | r | certified acc., fixed n | certified acc., sequential | only fixed / only sequential "
             "| mean samples, fixed / sequential | fewer samples | CPU s, fixed / sequential |",
             "|---|---:|---:|---:|---|---|---:|---|"]
    for tsv in sorted(out_dir.glob("target-*.tsv")):
        record = json.loads(Path(f"{tsv}.json").read_text())
        r = record["parameters"]["target_radius"]
        model = tsv.stem[len("target-"):].rsplit("-r", 1)[0]
        fixed_path = out_dir / f"cohen-{model}.tsv"
        fixed_record = json.loads(Path(f"{fixed_path}.json").read_text())
        both = read_results(fixed_path).merge(read_results(tsv), on="idx", suffixes=("_f", "_s"))
        certified_f = (both["correct_f"] == 1) & (both["radius_f"] >= r)
        certified_s = (both["correct_s"] == 1) & (both["radius_s"] >= r)
        samples_f = fixed_record["runs"][-1]["samples_used"]["mean_per_input"]
        samples_s = record["runs"][-1]["samples_used"]["mean_per_input"]
        cpu_f, cpu_s = (f"{times[name][0]:.0f}" if name in times else "-" for name in (fixed_path.stem, tsv.stem))
        lines.append(f"| {tsv.stem} | {r:g} | {certified_f.mean():.3f} | {certified_s.mean():.3f} | "
                     f"{(certified_f & ~certified_s).sum()} / {(certified_s & ~certified_f).sum()} | "
                     f"{samples_f:,.0f} / {samples_s:,.0f} | {samples_f / samples_s:.0f}x | {cpu_f} / {cpu_s} |")
    return "\n".join(lines) + "\n"


#: Denoised smoothing against the noise-trained models at the same radii: (label, {r: TSV stem}); a
#: fixed-n run answers every radius, a sequential target-radius run only its own. The denoised r = 1
#: run covers the first 100 images only (the whole run did not fit the shared CPU).
AT_RADII = [
    ("denoised (DDPM + clean classifier), sequential", {0.5: "denoised-0.50", 1.0: "denoised-0.50-r1.0-first100"}),
    ("clean classifier alone, sequential", {0.5: "noiseless-0.50", 1.0: "noiseless-0.50-r1.0"}),
    ("gaussian, sequential", {0.5: "target-gaussian-0.50-r0.5", 1.0: "target-gaussian-0.50-r1.0"}),
    ("gaussian, fixed n", {0.5: "cohen-gaussian-0.50", 1.0: "cohen-gaussian-0.50"}),
    ("consistency, sequential", {0.5: "target-consistency-0.50-r0.5", 1.0: "target-consistency-0.50-r1.0"}),
    ("consistency, fixed n", {0.5: "cohen-consistency-0.50", 1.0: "cohen-consistency-0.50"}),
    ("smoothadv, fixed n", {0.5: "cohen-smoothadv-0.50", 1.0: "cohen-smoothadv-0.50"}),
]


def mean_samples(record: dict, images: int) -> str:
    """The mean samples per image of a run's sidecar (its last run: a resumed run counts only the
    images it certified, said in brackets)."""
    used = record["runs"][-1].get("samples_used")
    if used is None:
        return "-"
    return f"{used['mean_per_input']:,.0f}" + ("" if used["inputs"] == images else f" (last {used['inputs']} images)")


def radii_table(out_dir: Path) -> str:
    """Certified accuracy at r = 0.5 and 1 (correct and radius >= r) at sigma 0.5, with the mean samples
    per image and the CPU time of each run (times.txt), for the rows of AT_RADII whose files exist.

    At each radius every row is scored on the images of the denoised run at that radius (the first
    row of AT_RADII), so that all rows compare on the same images; the samples and CPU time are
    those of each whole run."""
    times = cpu_times(out_dir)
    scope = {r: set(read_results(out_dir / f"{stem}.tsv")["idx"]) for r, stem in AT_RADII[0][1].items()
             if (out_dir / f"{stem}.tsv").is_file()}
    radii = list(AT_RADII[0][1])
    lines = ["| model, certification | images (whole run) | "
             + " | ".join(f"certified acc. r={r:g}, {len(scope[r]) if r in scope else 'all'} images" for r in radii)
             + " | mean samples per image r=0.5 / r=1 | CPU s r=0.5 / r=1 |",
             "|---|---:|" + "---:|" * len(radii) + "---|---|"]
    for label, files in AT_RADII:
        cells, samples, cpu, images = [], [], [], set()
        for r, stem in files.items():
            tsv = out_dir / f"{stem}.tsv"
            if not tsv.is_file():
                cells.append("-"), samples.append("-"), cpu.append("-")
                continue
            frame = read_results(tsv)
            images.add(len(frame))
            record = json.loads(Path(f"{tsv}.json").read_text())
            samples.append(mean_samples(record, len(frame)))
            cpu.append(f"{times[stem][0]:.0f}" if stem in times else "-")
            if r in scope:
                frame = frame[frame["idx"].isin(scope[r])]
            cells.append(f"{((frame['correct'] == 1) & (frame['radius'] >= r)).mean():.3f}"
                         + ("" if r not in scope or len(frame) == len(scope[r]) else f" ({len(frame)} images)"))
        if images:
            lines.append(f"| {label} | {'/'.join(str(i) for i in sorted(images))} | {' | '.join(cells)} | "
                         f"{' / '.join(samples)} | {' / '.join(cpu)} |")
    return "\n".join(lines) + "\n"


def denoised_cost_table(out_dir: Path, images: int = 500, n: int = 100_100) -> str:
    """The CPU cost of certifying the denoised classifier on the benchmark: fixed n (n0 + n = 100100
    samples per image) against the sequential target-radius mode, measured on subsets and
    extrapolated to 500 images: fixed n by its CPU seconds per sample (the work per sample does not
    depend on n: batches of 1000), sequential by its CPU seconds per image. Sequential is measured
    twice: the subset job (the first 20 images, start-up included) and the resumed part of the main
    run (``denoised-0.50-resumed-308-images`` in times.txt: the first part's time was not recorded)."""
    times, cost = cpu_times(out_dir), out_dir / "denoised-cost"
    runs = {"cost-fixed": cost / "fixed-n10000-first4.tsv", "cost-sequential": cost / "sequential-r0.5-first20.tsv",
            "denoised-0.50-resumed-308-images": out_dir / "denoised-0.50.tsv"}
    if not all(path.is_file() for path in runs.values()) or not all(job in times for job in runs):
        return ""
    used = {job: json.loads(Path(f"{path}.json").read_text())["runs"][-1]["samples_used"] for job, path in runs.items()}
    per_sample = times["cost-fixed"][0] / used["cost-fixed"]["total"]
    fixed = per_sample * images * n
    lines = ["| certification of the denoised classifier, 500 images | measured on | CPU s measured | "
             "extrapolated CPU s (h) | fixed n / this |", "|---|---|---:|---:|---:|",
             f"| fixed n: n0 + n = {n:,} samples per image | {used['cost-fixed']['inputs']} images x "
             f"{used['cost-fixed']['total'] // used['cost-fixed']['inputs']:,} samples ({per_sample * 1e3:.2f} ms "
             f"per sample) | {times['cost-fixed'][0]:,.0f} | {fixed:,.0f} ({fixed / 3600:.1f}) | 1 |"]
    for job, what in (("cost-sequential", "the first 20 images (`cost-sequential`)"),
                      ("denoised-0.50-resumed-308-images", "the main run's last 308 images (resumed part)")):
        sequential = times[job][0] / used[job]["inputs"] * images
        lines.append(f"| sequential, target r = 0.5: {what} | {used[job]['inputs']} images "
                     f"({used[job]['mean_per_input']:,.0f} samples per image, {used[job]['total']:,} in all) | "
                     f"{times[job][0]:,.0f} | {sequential:,.0f} ({sequential / 3600:.2f}) | "
                     f"{fixed / sequential:.0f}x |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("results/fashion-mnist"))
    args = parser.parse_args()
    (args.out_dir / "training.md").write_text(training_table(args.out_dir))
    (args.out_dir / "runs.md").write_text(runs_table(args.out_dir) + "\n" + paired_table(args.out_dir) + "\n"
                                          + target_table(args.out_dir) + "\n" + radii_table(args.out_dir)
                                          + "\n" + denoised_cost_table(args.out_dir))
    print((args.out_dir / "training.md").read_text())
    print((args.out_dir / "runs.md").read_text())


if __name__ == "__main__":
    main()
