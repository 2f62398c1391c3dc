"""Speed-up of a multi-process certify run (torchrun, gloo on CPU) over one process.

Runs the same ``robustcert certify`` command (a) in one process with torch's default threads,
(b) in one process with one thread, (c) under ``torchrun --nproc_per_node=K`` (one thread per
process, torchrun's default), repetitions interleaved; checks that every output equals the first
single-process one except for the time column; writes results/bench/distributed-<device>.json/.md.

    python experiments/bench/distributed_speedup.py --nproc 2 --n 10000 --max 40

Wall time includes process start-up (Python and torch imports in every process), so it is the
time a user waits.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def strip_time(path: Path) -> list[list[str]]:
    return [line.split("\t")[:-1] for line in path.read_text().splitlines()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--model", default="bundled:digits-0.25")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--max", type=int, default=40)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--synthetic", default=None, metavar="ARCH",
                        help="a random-weight ARCH (e.g. cifar_resnet20) on random 3x32x32 images "
                             "(replaces --model/--data)")
    parser.add_argument("--out-dir", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    workdir = tempfile.TemporaryDirectory()
    if args.synthetic:
        import numpy as np
        import torch

        from robustcert import build_model

        torch.manual_seed(0)
        args.model = str(Path(workdir.name) / f"{args.synthetic}.pth.tar")
        torch.save({"arch": args.synthetic, "state_dict": build_model(args.synthetic).state_dict()}, args.model)
        images = np.random.default_rng(0).random((max(args.max, 1), 3, 32, 32), dtype=np.float32)
        np.savez(Path(workdir.name) / "images.npz", x=images, y=np.arange(len(images)) % 10)
        args.data = f"npz:{Path(workdir.name) / 'images.npz'}"

    certify = ["certify", "--model", args.model, "--data", args.data, "--sigma", str(args.sigma), "--n", str(args.n),
               "--batch", str(args.batch), "--max", str(args.max), "--seed", "0", "--quiet", "--device", "cpu"]
    if args.arch:
        certify += ["--arch", args.arch]
    launchers = {
        "one process, default threads": ([sys.executable, "-m", "robustcert"], {}),
        "one process, 1 thread": ([sys.executable, "-m", "robustcert"], {"OMP_NUM_THREADS": "1"}),
        f"torchrun {args.nproc} processes, 1 thread each": (
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
             "-m", "robustcert", "--"], {"OMP_NUM_THREADS": "1"}),
    }
    seconds: dict[str, list[float]] = {name: [] for name in launchers}
    reference = None
    identical = True
    with tempfile.TemporaryDirectory() as folder:
        for rep in range(args.reps):
            for index, (name, (launcher, env)) in enumerate(launchers.items()):
                out = Path(folder) / f"run{rep}-{index}.tsv"
                start = time.perf_counter()
                done = subprocess.run(launcher + certify + ["--out", str(out)], capture_output=True, text=True,
                                      env=dict(os.environ, **env))
                if done.returncode != 0:
                    sys.exit(f"{name} failed:\n{done.stderr[-2000:]}")
                seconds[name].append(time.perf_counter() - start)
                rows = strip_time(out)
                reference = reference or rows
                if rows != reference:
                    identical = False
                    differing = [(a, b) for a, b in zip(reference, rows) if a != b]
                    print(f"{name}: {len(differing)} rows differ from the first run, e.g. {differing[:2]}")
                print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    base = median["one process, default threads"]
    record = {
        "command": "python experiments/bench/distributed_speedup.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "certify": certify, "cpu_count": os.cpu_count(), "load_average_end": list(os.getloadavg()),
        "seconds": seconds, "median_seconds": median,
        "speedup_vs_one_process": {name: round(base / m, 2) for name, m in median.items()},
        "outputs_identical_except_time": identical,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"distributed-cpu-{args.nproc}proc{'-' + args.synthetic if args.synthetic else ''}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    what = f"{args.synthetic} (random weights) on random images" if args.synthetic else f"{args.model} on {args.data}"
    lines = [f"# Multi-process certify on CPU ({os.cpu_count()} cores)", "",
             f"Command: `{record['command']}`; certify {args.max} inputs, {what}, n = {args.n}, batch {args.batch}; "
             f"load average at the end {record['load_average_end']}.", "",
             "| launcher | median wall s | runs | speed-up vs one process |", "|---|---|---|---|"]
    for name in launchers:
        lines.append(f"| {name} | {median[name]:.1f} | {', '.join(f'{s:.1f}' for s in seconds[name])} | "
                     f"{record['speedup_vs_one_process'][name]:.2f} |")
    lines += ["", f"All outputs identical except the time column: {identical}."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not identical:
        sys.exit("outputs differ")


if __name__ == "__main__":
    main()
