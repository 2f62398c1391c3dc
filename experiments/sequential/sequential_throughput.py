"""Wall-clock time of sequential against fixed-n certify_batch over many inputs, batch 1000 and 10000.

    python experiments/sequential/sequential_throughput.py --device cpu  --out results/sequential/throughput_cpu.md
    python experiments/sequential/sequential_throughput.py --device cuda --out results/sequential/throughput_cuda.md

bundled:digits-0.25 (sigma 0.25), the first IMAGES digits test images (default 60), n0 = 100,
alpha = 0.001, seed 0. Fixed: CERTIFY with n = N (default 100000). Sequential: SEQUENTIAL-CERTIFY at
target radius 0.25 with n_max = N. Inputs go to certify_batch in the groups a dataset run uses
(``certify_inputs_per_call``). Each configuration is timed REPS times, interleaved (fixed 1000,
sequential 1000, fixed 10000, sequential 10000, then again), so that a change of machine load hits
all of them; reported: the median wall time (CUDA synchronised), the process CPU time, samples per
second and the time ratio fixed / sequential. Also records the samples: time should follow them,
not the batch granularity.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from robustcert import Smooth, load_model
from robustcert.data import digits_arrays

BATCHES = (1000, 10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    x_all, _ = digits_arrays("test")
    xs = torch.from_numpy(x_all[:args.images])
    smoothed = Smooth(load_model("bundled:digits-0.25", device=device), 10, sigma=0.25)
    modes = {"fixed": {}, "sequential": {"sequential": True, "target_radius": 0.25, "n_max": args.n}}

    def run(batch, options):
        per_call = smoothed.certify_inputs_per_call(100, args.n, batch, **options)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu, samples = time.perf_counter(), time.process_time(), 0
        for start in range(0, args.images, per_call):
            certs = smoothed.certify_batch(xs[start:start + per_call], n0=100, n=args.n, alpha=0.001, batch_size=batch,
                                           seed=0, indices=list(range(start, min(start + per_call, args.images))),
                                           **options)
            samples += sum(c.samples_used for c in certs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - wall, time.process_time() - cpu, samples

    run(BATCHES[0], modes["sequential"])  # warm-up (kernels, allocator)
    times = {(mode, batch): [] for mode in modes for batch in BATCHES}
    samples = {}
    load_before = os.getloadavg()[0]
    for _ in range(args.reps):
        for batch in BATCHES:
            for mode, options in modes.items():
                wall, cpu, drawn = run(batch, options)
                times[mode, batch].append((wall, cpu))
                samples[mode, batch] = drawn
                print(f"{mode} batch {batch}: {wall:.1f} s wall, {cpu:.1f} s CPU, {drawn} samples", file=sys.stderr,
                      flush=True)
    lines = [
        "# Sequential against fixed-n certify_batch: wall-clock time\n",
        f"Command: `python {' '.join(sys.argv)}` on {device} "
        f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'one torch thread'}; "
        f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after).\n",
        f"bundled:digits-0.25, sigma 0.25, the first {args.images} digits test images, n0 = 100, alpha = 0.001, "
        f"seed 0; fixed n = {args.n:,}; sequential: target radius 0.25, n_max = {args.n:,}. Median of {args.reps} "
        "interleaved repetitions.\n",
        "| batch | mode | samples | wall s | CPU s | samples per wall s | fixed / sequential wall time |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch in BATCHES:
        median = {mode: statistics.median(w for w, _ in times[mode, batch]) for mode in modes}
        for mode in modes:
            cpu = statistics.median(c for _, c in times[mode, batch])
            ratio = f"{median['fixed'] / median['sequential']:.0f}x" if mode == "sequential" else ""
            lines.append(f"| {batch} | {mode} | {samples[mode, batch]:,} | {median[mode]:.2f} | {cpu:.2f} "
                         f"| {samples[mode, batch] / median[mode]:,.0f} | {ratio} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
