"""Certify throughput (process CPU time, one thread) with glibc's default allocator settings
against robustcert.engine.tune_cpu_allocator(), and the page faults per certification.

    for i in 1 2; do for mode in default tuned; do for m in digits cifar_resnet110; do
      python experiments/bench/allocator_check.py $mode $m; done; done; done

Each call is a fresh process (allocator settings cannot be undone within one).
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from robustcert import Smooth, build_model
from robustcert.engine import tune_cpu_allocator
from robustcert.models import load_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["default", "tuned"], help="glibc's allocator settings or tune_cpu_allocator()")
    parser.add_argument("name", help="digits (the bundled CNN) or an architecture such as cifar_resnet110")
    args = parser.parse_args()
    mode, name = args.mode, args.name
    torch.set_num_threads(1)
    if mode == "tuned":
        tune_cpu_allocator()
    model = load_model("bundled:digits-0.25") if name == "digits" else build_model(name).eval()
    shape, n, batch = ((1, 8, 8), 20000, 1000) if name == "digits" else ((3, 32, 32), 400, 250)
    smoothed, x = Smooth(model, 10, 0.25), torch.rand(shape)
    smoothed.certify(x, 100, n, batch_size=batch)  # warm-up
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    for _ in range(3):
        smoothed.certify(x, 100, n, batch_size=batch)
    seconds, after = time.process_time() - start, resource.getrusage(resource.RUSAGE_SELF)
    print(f"{mode} {name}: {3 * (n + 100) / seconds:.0f} samples/s (CPU time), "
          f"{(after.ru_minflt - before.ru_minflt) // 3} page faults per certification")


if __name__ == "__main__":
    main()
