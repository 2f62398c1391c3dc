"""How much of the digits CNN's (b)/(a) gap is the Gaussian draw (results/bench/README.md).

Process CPU time, one thread, 15 interleaved repetitions, minimum and median in ms per
certification (n0 = 100, n = 20000, batch 1000): (a) the forward pass alone on pre-made batches,
run = the engine's two sampling runs, b = Smooth.certify; then the same with Tensor.normal_
replaced by a no-op (the noise draw removed).

    python experiments/bench/noise_share.py
"""
from __future__ import annotations

import argparse
import time

import torch

import robustcert.runs.bench as bench
from robustcert import Smooth
from robustcert.engine import VoteCounter, tune_cpu_allocator


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    torch.set_num_threads(1)
    tune_cpu_allocator()
    device, shape = torch.device("cpu"), (1, 8, 8)
    smoothed = Smooth(bench.make_model("digits", device), 10, 0.25, device=device, input_shape=shape)
    engine = smoothed.engine(1000)
    x = torch.rand(shape)
    batches = bench.premade_batches(shape, bench.Setting(100, 20000, 1000, 0), device, engine.channels_last)

    def forward_only():
        bench.forward_limit(engine, batches, device)

    def engine_runs():
        with torch.inference_mode():
            for stage, n in (("selection", 100), ("estimation", 20000)):
                engine.run(x.unsqueeze(0), n, VoteCounter(1, 10, device), [engine.generator(0, 0, stage)])

    def certify():
        smoothed.certify(x, 100, 20000, 0.001, 1000, seed=0)

    def measure(reps=15):
        loops = {"a": forward_only, "run": engine_runs, "b": certify}
        for loop in loops.values():
            loop()
        seconds = {name: [] for name in loops}
        for _ in range(reps):
            for name, loop in loops.items():
                start = time.process_time()
                loop()
                seconds[name].append(time.process_time() - start)
        return {name: (round(min(v) * 1e3, 2), round(sorted(v)[len(v) // 2] * 1e3, 2)) for name, v in seconds.items()}


    print("with the noise draw (min, median ms):", measure())
    torch.Tensor.normal_ = lambda self, *args, **kwargs: self
    print("noise draw removed (min, median ms):", measure())


if __name__ == "__main__":
    main()
