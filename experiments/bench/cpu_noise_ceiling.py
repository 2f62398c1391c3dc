"""How far the CPU loop can go while its samples stay those of every earlier version (issue 26).

On CPU each input's noise comes from its own torch.Generator (mt19937 + Box-Muller, serial), and
issue 26 keeps those samples bit for bit, so the draw costs what it costs. This script measures,
in one process with interleaved repetitions (process CPU time, one thread):

    a        the forward pass alone on pre-made batches (robustcert.runs.bench.forward_limit)
    b        Smooth.certify
    c2       the published loop with the same model and options (robustcert.runs.bench)
    b-free   b with Tensor.normal_ made a no-op (the draw removed; the rest of the loop kept)
    c2-free  c2 with torch.randn_like made torch.empty_like (the same)
    draw     the draws alone: normal_ on the buffer for the batches of one certification

and prints (b)/(a), (b)/(c2) and what they would be with a free draw, i.e. the loop's own cost
against the part no loop can remove without changing the samples.

    python experiments/bench/cpu_noise_ceiling.py --model digits --reps 25 --out results/bench/cpu-noise-ceiling.md
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

import robustcert.runs.bench as bench
from robustcert import Smooth
from robustcert.engine import tune_cpu_allocator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits", choices=sorted(bench.MODELS))
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    torch.set_num_threads(1)
    tune_cpu_allocator()
    device = torch.device("cpu")
    shape, num_classes = bench.MODELS[args.model]
    setting = bench.Setting(args.n0, args.n, args.batch, args.reps)
    smoothed = Smooth(bench.make_model(args.model, device), num_classes, bench.SIGMA, device=device, input_shape=shape)
    engine = smoothed.engine(args.batch)
    batches = bench.premade_batches(shape, setting, device, engine.channels_last)
    x = torch.rand(shape)
    generator = torch.Generator().manual_seed(0)
    buffer = torch.empty((args.batch, *shape))
    flat = buffer.view(-1)
    sizes = [len(b) for b in batches]

    def certify():
        smoothed.certify(x, args.n0, args.n, bench.ALPHA, args.batch, seed=0)

    def published():
        bench.baseline_certify(None, x.unsqueeze(0), args.n0, args.n, bench.SIGMA, bench.ALPHA, args.batch,
                               num_classes, device, engine)

    def free_draw(loop, name, replacement):
        def run():
            saved = getattr(torch.Tensor if name == "normal_" else torch, name)
            setattr(torch.Tensor if name == "normal_" else torch, name, replacement)
            try:
                loop()
            finally:
                setattr(torch.Tensor if name == "normal_" else torch, name, saved)
        return run

    def draws():
        for size in sizes:
            flat[: size * buffer[0].numel()].normal_(0, bench.SIGMA, generator=generator)

    loops = {"a": lambda: bench.forward_limit(engine, batches, device), "b": certify, "c2": published,
             "b-free": free_draw(certify, "normal_", lambda self, *a, **k: self),
             "c2-free": free_draw(published, "randn_like", lambda t, **k: torch.empty_like(t)),
             "draw": draws}
    bench._clock = bench.CLOCKS["cpu"]
    seconds = bench.interleave(loops, args.reps)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    fastest = {k: min(v) for k, v in seconds.items()}
    load = os.getloadavg()
    lines = [f"# CPU loop against the draw it cannot remove: {args.model}", "",
             f"Command: `python {' '.join(sys.argv)}`  ",
             f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, process CPU time, "
             f"n0 + n = {args.n0} + {args.n}, batch {args.batch}, {args.reps} interleaved repetitions; "
             f"load average at the end {load[0]:.2f}.", "",
             "| loop | median ms | fastest ms |", "|---|---:|---:|"]
    lines += [f"| {k} | {1e3 * median[k]:.2f} | {1e3 * fastest[k]:.2f} |" for k in loops]
    ratio = lambda t, p, q: t[q] / t[p]  # noqa: E731  (rates: time of q over time of p)
    lines += ["", "| ratio | medians | fastest |", "|---|---:|---:|"]
    for label, p, q in (("(b)/(a)", "b", "a"), ("(b)/(c2)", "b", "c2"), ("(b)/(a) with a free draw", "b-free", "a"),
                        ("(b)/(c2) with free draws in both", "b-free", "c2-free"), ("(c2)/(a)", "c2", "a")):
        lines.append(f"| {label} | {ratio(median, p, q):.3f} | {ratio(fastest, p, q):.3f} |")
    share = median["draw"] / median["a"]
    lines += ["", f"The draw alone is {100 * share:.1f}% of the forward pass (medians)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
