"""Where the time goes when certifying the tiny digits CNN on a GPU (robustcert (b) vs the published loop (c)).

    python experiments/bench/gpu_profile_digits.py --device cuda

Prints: the per-certification time of (b) Smooth.certify, (c) the published loop, the cost of
creating and seeding one CUDA generator, the engine's estimation stage alone, and the
torch.profiler top operators of one certification (CPU and device time).
"""
from __future__ import annotations

import argparse
import time

import torch

from robustcert import Smooth, load_model
from robustcert.engine import VoteCounter
from robustcert.runs.bench import baseline_certify


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = load_model("bundled:digits-0.25", device=device)
    smoothed = Smooth(model, 10, 0.25, device=device)
    x = torch.rand(1, 8, 8, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(label, fn, reps=args.reps):
        fn()
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        print(f"{label}: {(time.perf_counter() - start) / reps * 1e3:.3f} ms", flush=True)


    timed("(b) Smooth.certify n0=100 n=10000 batch 10000", lambda: smoothed.certify(x, 100, 10_000, 0.001, 10_000, seed=0))
    timed("(c) published loop, same sizes", lambda: baseline_certify(model, x.unsqueeze(0), 100, 10_000, 0.25, 0.001, 10_000,
                                                                     10, device))
    engine = smoothed.engine(10_000)
    timed("one generator created and seeded", lambda: engine.generator(0, 0, "estimation"), reps=200)
    generators = [engine.generator(0, 0, "estimation")]
    timed("engine.run estimation n=10000 (generator made once)",
          lambda: engine.run(x.unsqueeze(0), 10_000, VoteCounter(1, 10, device), generators))
    buffer = torch.empty(10_000, 1, 8, 8, device=device)
    timed("normal_ of 10000x64 with a generator", lambda: buffer.normal_(0, 0.25, generator=generators[0]))
    timed("forward of 10000 noisy digits", lambda: engine.forward(buffer))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])) as prof:
        for _ in range(5):
            smoothed.certify(x, 100, 10_000, 0.001, 10_000, seed=0)
        sync()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
    if device.type == "cuda":
        print(prof.key_averages().table(sort_by=sort, row_limit=12))


if __name__ == "__main__":
    main()
