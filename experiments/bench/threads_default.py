"""How many torch threads should a CPU certification use by default? 1 vs 2 threads, idle vs busy.

For each base model (the bundled digits CNN, cifar_resnet20 and cifar_resnet110 with random
weights on random CIFAR-sized inputs), certify one input with ``Smooth.certify`` at 1 and at 2
torch threads, interleaved within every repetition, in three machine conditions per repetition:
no extra load, one CPU hog (``python -c "while True: pass"``) and two hogs, started before and
killed after each block. Wall time per certification, median over repetitions, and the ratio
(2 threads / 1 thread). Each block also records the CPU use of the *other* processes, measured
with :func:`robustcert.engine.device.busy_cores` (the quantity the default rule reads).

On a machine shared with other jobs there is no idle condition. A high priority (``nice -n -15``,
as root; the hogs inherit it) gives the measurement and its hogs the CPUs on a machine whose
kernel schedules them, so that the conditions become idle, one busy core and two busy cores; on
the shared VM of results/bench/threads_default.md it did not (the host shares the virtual CPUs
and does not see guest priorities), which that file reports.

    OMP_NUM_THREADS=1 nice -n -15 python experiments/bench/threads_default.py --reps 5 --out results/bench/threads_default.md
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from robustcert import Smooth
from robustcert.data import load_dataset
from robustcert.engine.device import busy_cores
from robustcert.models import build_model, load_model

# name: (model factory, input shape, n0, n, batch)
MODELS = {
    "digits CNN (bundled, 1x8x8)": (lambda: load_model("bundled:digits-0.25"), None, 100, 10_000, 1000),
    "cifar_resnet20 (random weights, 3x32x32)": (lambda: build_model("cifar_resnet20"), (3, 32, 32), 10, 190, 100),
    "cifar_resnet110 (random weights, 3x32x32)": (lambda: build_model("cifar_resnet110"), (3, 32, 32), 10, 90, 100),
}
CONDITIONS = {"no extra load": 0, "1 CPU hog": 1, "2 CPU hogs": 2}


def start_hogs(count: int) -> list[subprocess.Popen]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    time.sleep(0.5 if count else 0.0)
    return hogs


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.kill()
        hog.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    smoothed, inputs = {}, {}
    for name, (factory, shape, *_rest) in MODELS.items():
        model = factory().eval()
        smoothed[name] = Smooth(model, 10, 0.25, device="cpu")
        inputs[name] = load_dataset("digits")[0][0] if shape is None else torch.rand(shape)
    seconds = {(c, m, t): [] for c in CONDITIONS for m in MODELS for t in (1, 2)}
    others = {c: [] for c in CONDITIONS}
    load_start = os.getloadavg()[0]
    for name in MODELS:  # warm-up: oneDNN primitives for each model, both thread counts
        for threads in (1, 2):
            torch.set_num_threads(threads)
            n0, n, batch = MODELS[name][2:]
            smoothed[name].certify(inputs[name], n0=n0, n=n, batch_size=batch, seed=0)
    for rep in range(args.reps):
        for condition, count in CONDITIONS.items():
            hogs = start_hogs(count)
            try:
                others[condition].append(busy_cores())
                for name in MODELS:
                    n0, n, batch = MODELS[name][2:]
                    for threads in ((1, 2) if rep % 2 == 0 else (2, 1)):
                        torch.set_num_threads(threads)
                        started = time.perf_counter()
                        smoothed[name].certify(inputs[name], n0=n0, n=n, batch_size=batch, seed=rep)
                        seconds[(condition, name, threads)].append(time.perf_counter() - started)
            finally:
                stop_hogs(hogs)
            print(f"rep {rep} {condition}: busy cores of other processes {others[condition][-1]:.2f}", flush=True)
    lines = ["# Default torch threads on CPU: 1 vs 2 threads, idle and busy", "",
             f"Command: `OMP_NUM_THREADS=1 nice -n {os.nice(0)} python experiments/bench/threads_default.py --reps "
             f"{args.reps}`; torch {torch.__version__}, {os.cpu_count()} CPU cores ({platform.machine()}); "
             f"1-minute load average at start {load_start:.2f} (other jobs, at nice 0, share the machine). Seconds per "
             "certification of one input (wall time), median over interleaved repetitions; a CPU hog is "
             "`python -c \"while True: pass\"`. `busy cores` is the CPU use of the other processes measured "
             "just before the block (robustcert.engine.device.busy_cores, median over repetitions).", "",
             "| condition | busy cores | model | n0 + n | batch | 1 thread (s) | 2 threads (s) | 2 threads / 1 thread |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for condition in CONDITIONS:
        for name in MODELS:
            n0, n, batch = MODELS[name][2:]
            one = statistics.median(seconds[(condition, name, 1)])
            two = statistics.median(seconds[(condition, name, 2)])
            lines.append(f"| {condition} | {statistics.median(others[condition]):.2f} | {name} | {n0 + n} | {batch} | "
                         f"{one:.3f} | {two:.3f} | {two / one:.2f} |")
    lines += ["", "All repetitions (seconds, in order):", ""]
    for key, values in seconds.items():
        lines.append(f"- {key[0]}, {key[1]}, {key[2]} thread(s): " + ", ".join(f"{v:.3f}" for v in values))
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
