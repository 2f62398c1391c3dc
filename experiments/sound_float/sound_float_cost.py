"""Cost of the floating-point-sound mode (``Smooth(..., sound_float=True)``) against the standard mode.

Two measurements, written under --out-dir as markdown (and certify TSVs with sidecars):

* ``time``: seconds per image of CERTIFY (n0 = 100, n = --n) in both modes on the same images,
  interleaved repetitions (standard, sound, standard, sound, ...) so that machine load hits both
  alike; CPU time of the process on CPU, wall time (synchronised) on CUDA. Models: the bundled
  digits CNN (sigma 0.25, grid k/16) and cifar_resnet110 with random weights (no trained CIFAR
  weights are available here; speed does not depend on the weights) on random 8-bit images
  (grid k/255, sigma 0.25). The first repetition of each mode is a warm-up and is not counted.
* ``residual``: how much the standard mode's base outputs change with the forward batch size (the
  same noisy rows in batches of different sizes): the residual the sound mode's one shape removes.
* ``accuracy``: certified accuracy of the bundled digits models on the 360 test images, standard
  mode against the sound mode on the data's own grid k/16 and on the finer k/256, through
  ``certify_dataset`` (same seed, so the selection and estimation streams are the same per input).

    python experiments/sound_float/sound_float_cost.py --part time --models digits --n 10000 --reps 3
    python experiments/sound_float/sound_float_cost.py --part time --models resnet110 --images 1 --n 2000 --reps 3
    python experiments/sound_float/sound_float_cost.py --part accuracy --sigmas 0.25,0.50 --n 10000
    python experiments/sound_float/sound_float_cost.py --part residual
    python experiments/sound_float/sound_float_cost.py --part time --device cuda --n 100000 --reps 3   # GPU
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robustcert import Smooth, certify_dataset, load_dataset, load_model, results_table
from robustcert.models import build_model
from robustcert.results import render_table
from robustcert.runs.provenance import device_name


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def component_seconds(smoothed, xs, args, device, reps: int = 30) -> dict:
    """Median seconds of the two parts of one batch of ``args.batch`` samples: drawing the noisy
    copies of one input (engine.perturb: the noise stream the engine samples from) and one forward pass (the runner), each repeated ``reps`` times."""
    engine = smoothed.engine(args.batch)
    buffer = engine._noise_buffer(xs.shape[1:], torch.float32)
    flat = buffer.as_strided((buffer.numel(),), (1,)).view(args.batch, -1)
    clean = engine.runner.layout(xs[:1].to(device)).reshape(-1)
    generator = engine.generator(0, 0, "timing")
    medians = {}
    with torch.inference_mode():
        for part, work in (("noise", lambda: engine.perturb(flat, clean, generator)),
                           ("forward", lambda: engine.runner.outputs(buffer, 10))):
            work()
            times = []
            for _ in range(reps):
                start = clock(device)
                work()
                times.append(clock(device) - start)
            medians[part] = float(np.median(times))
    return medians


def time_modes(name, model, xs, sigma, levels, args, device) -> dict:
    """Seconds per image of CERTIFY in each mode (interleaved repetitions, the first one a warm-up)."""
    modes = {"standard": Smooth(model, 10, sigma, device=device),
             "sound": Smooth(model, 10, sigma, device=device, sound_float=True, quantization=levels)}
    seconds = {mode: [] for mode in modes}
    radii = {}
    for rep in range(args.reps + 1):
        for mode, smoothed in modes.items():
            start = clock(device)
            certificates = smoothed.certify_batch(xs, n0=100, n=args.n, alpha=0.001, batch_size=args.batch, seed=rep)
            elapsed = (clock(device) - start) / len(xs)
            if rep:
                seconds[mode].append(elapsed)
            radii[mode] = [c.radius for c in certificates]
            print(f"{name} rep {rep} {mode}: {elapsed:.4f} s/image", flush=True)
    parts = {mode: component_seconds(smoothed, xs, args, device) for mode, smoothed in modes.items()}
    return {"model": name, "images": len(xs), "n": args.n, "batch": args.batch, "levels": levels,
            "standard": seconds["standard"], "sound": seconds["sound"], "parts": parts,
            "ratio": float(np.median(np.array(seconds["sound"]) / np.array(seconds["standard"])))}


def part_time(args, device, lines):
    torch.manual_seed(0)
    digits = load_dataset("digits")
    digit_xs = torch.stack([digits[i][0] for i in range(args.images)])
    cifar_xs = torch.randint(0, 256, (args.images, 3, 32, 32), generator=torch.Generator().manual_seed(0)) / 255.0
    rows = []
    if "digits" in args.models:
        rows.append(time_modes("digits-0.25 (trained)", load_model("bundled:digits-0.25", device=device), digit_xs,
                               0.25, 16, args, device))
    if "resnet110" in args.models:
        resnet = build_model("cifar_resnet110").to(device).eval()
        rows.append(time_modes("cifar_resnet110 (random weights)", resnet, cifar_xs, 0.25, 255, args, device))
    unit = "wall time, synchronised" if device.type == "cuda" else "process CPU time"
    lines += [f"## Time per image ({device_name(device)}, {unit})", "",
              f"CERTIFY with n0 = 100, n = {args.n}, batch {args.batch}, {args.reps} interleaved repetitions after "
              "one warm-up each; ratio = median over repetitions of sound / standard.", "",
              "| model | grid | images | standard s/image | sound s/image | sound / standard |",
              "|---|---|---:|---|---|---:|"]
    for row in rows:
        fmt = lambda values: ", ".join(f"{v:.4f}" for v in values)  # noqa: E731
        lines.append(f"| {row['model']} | k/{row['levels']} | {row['images']} | {fmt(row['standard'])} | "
                     f"{fmt(row['sound'])} | {row['ratio']:.3f} |")
    lines += ["", f"Parts of one batch of {args.batch} samples (median of 30, same unit): the noise (standard: "
              "normal_ + add; sound: 62-bit draws, alias table, integer sum, division) and one forward pass. "
              "Predicted ratio = (forward + sound noise) / (forward + standard noise), which leaves out the "
              "sound mode's padding of a short last batch (none here: n is a multiple of the batch) and its "
              "one-off probe. Forward = the mean of the two modes' medians (the same shape and model).", "",
              "| model | standard noise (ms) | sound noise (ms) | forward (ms): standard, sound "
              "| predicted sound / standard |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        standard, sound = row["parts"]["standard"], row["parts"]["sound"]
        forward = (standard["forward"] + sound["forward"]) / 2
        predicted = (forward + sound["noise"]) / (forward + standard["noise"])
        lines.append(f"| {row['model']} | {1e3 * standard['noise']:.2f} | {1e3 * sound['noise']:.2f} | "
                     f"{1e3 * standard['forward']:.1f}, {1e3 * sound['forward']:.1f} | {predicted:.3f} |")
    lines.append("")


def part_accuracy(args, device, lines):
    radii = None
    for sigma_text in args.sigmas.split(","):
        sigma = float(sigma_text)
        model = load_model(f"bundled:digits-{sigma:.2f}", device=device)
        folder = args.out_dir / f"sigma_{sigma:.2f}"
        folder.mkdir(parents=True, exist_ok=True)
        # "standard, seed 1": the same standard run on other noise draws, the yardstick of Monte Carlo variation
        runs = {"standard": (Smooth(model, 10, sigma, device=device), 0),
                "standard, seed 1": (Smooth(model, 10, sigma, device=device), 1)}
        for levels in (16, 256):
            runs[f"sound k/{levels}"] = (Smooth(model, 10, sigma, device=device, sound_float=True, quantization=levels),
                                         0)
        frames, seconds, cpu = {}, {}, {}
        for name, (smoothed, seed) in runs.items():
            out = folder / f"{name.replace(', ', '-').replace(' ', '-').replace('/', '')}.tsv"
            for stale in (out, out.with_name(out.name + ".json")):
                stale.unlink(missing_ok=True)
            start, cpu_start = time.perf_counter(), time.process_time()
            frames[name] = certify_dataset(smoothed, "digits", out, n0=100, n=args.n, alpha=0.001,
                                           batch_size=args.batch, seed=seed, skip=args.skip, progress=False,
                                           threads=args.threads if device.type == "cpu" else None,
                                           command=" ".join(["python", *sys.argv]))
            seconds[name], cpu[name] = time.perf_counter() - start, time.process_time() - cpu_start
            print(f"sigma {sigma} {name}: {seconds[name]:.1f} s", flush=True)
        radii = [round(r, 3) for r in np.arange(0, 3.2 * sigma + 1e-9, sigma / 2)]
        table = results_table(frames, radii)
        standard = frames["standard"]
        lines += [f"## Certified accuracy, digits, sigma = {sigma} (bundled:digits-{sigma:.2f})", "",
                  f"{len(standard)} test images, n0 = 100, n = {args.n}, alpha = 0.001, seed 0 (and 1 for the "
                  "yardstick row); TSVs and sidecars in "
                  f"`sigma_{sigma:.2f}/`.", "", render_table(table, "markdown", decimals=3), "",
                  "| run | wall time (s, shared machine) | process CPU time (s) | mean certified radius (correct class) "
                  "minus standard's | largest certified-accuracy gap to standard (points, over the radii above) |",
                  "|---|---:|---:|---:|---:|"]
        certified = lambda frame: frame["radius"].to_numpy() * frame["correct"].to_numpy()  # noqa: E731
        for name, frame in frames.items():
            gap = 100 * np.max(np.abs(table.loc[name].iloc[:len(radii)].to_numpy(dtype=float)
                                      - table.loc["standard"].iloc[:len(radii)].to_numpy(dtype=float)))
            lines.append(f"| {name} | {seconds[name]:.1f} | {cpu[name]:.1f} | "
                         f"{np.mean(certified(frame) - certified(standard)):+.4f} | {gap:.1f} |")
        lines.append("")


def part_residual(args, device, lines):
    """How much the standard mode's base classifier depends on the forward batch shape: the same noisy
    rows through the model in batches of different sizes (what packing and out-of-memory splits do)."""
    torch.manual_seed(0)
    digits = load_dataset("digits")
    cases = [("digits-0.25 (trained)", load_model("bundled:digits-0.25", device=device),
              digits[0][0].to(device), 0.25, 1000),
             ("cifar_resnet110 (random weights)", build_model("cifar_resnet110").to(device).eval(),
              torch.rand(3, 32, 32, device=device), 0.25, 200)]
    lines += [f"## The residual: outputs by forward batch size ({device_name(device)})", "",
              "The same noisy copies of one input through the model at the largest batch and in smaller "
              "batches; rows whose outputs differ in any bit, the largest difference, and votes (argmax) that "
              "change. The standard mode's forward shape follows packing and out-of-memory retries.", "",
              "| model | rows | batch vs. full batch | rows differing | largest abs. difference "
              "| relative to the largest output | votes changed |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, model, x, sigma, rows in cases:
        engine = Smooth(model, 10, sigma, device=device).engine(rows)
        noisy = x + torch.randn((rows, *x.shape), device=device, generator=torch.Generator(device).manual_seed(0)) * sigma
        noisy = engine.runner.layout(noisy)
        with torch.inference_mode():
            full = engine.runner.forward(noisy)
            for size in (rows // 2, 64, 7, 1):
                parts = torch.cat([engine.runner.forward(piece) for piece in noisy.split(size)])
                differ = (parts != full).any(dim=1).float().mean().item()
                largest = (parts - full).abs().max().item()
                flips = int((parts.argmax(1) != full.argmax(1)).sum())
                relative = largest / full.abs().max().item()
                lines.append(f"| {name} | {rows} | {size} vs {rows} | {differ:.3f} | {largest:.2e} | {relative:.1e} "
                             f"| {flips} |")
    lines.append("")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["time", "accuracy", "residual"], required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--images", type=int, default=4, help="time: images per certify_batch call")
    parser.add_argument("--models", default="digits,resnet110", help="time: digits and/or resnet110")
    parser.add_argument("--sigmas", default="0.25,0.50")
    parser.add_argument("--skip", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("results/sound_float"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"Produced by `python {' '.join(sys.argv)}` on {device_name(device)}, torch {torch.__version__}, "
             f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}.", ""]
    {"time": part_time, "accuracy": part_accuracy, "residual": part_residual}[args.part](args, device, lines)
    suffix = ("" if device.type == "cpu" else "-cuda") + ("-" + args.models.replace(",", "-")
                                                          if args.part == "time" else "")
    out = args.out_dir / f"{args.part}{suffix}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
