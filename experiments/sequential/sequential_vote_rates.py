"""Per-image vote counts of the bundled digits models at n = 100000 (fixed-n CERTIFY's estimation stage).

    python experiments/sequential/sequential_vote_rates.py --out results/sequential/vote_rates.json

For bundled:digits-0.25 (sigma 0.25) and bundled:digits-0.50 (sigma 0.5), every digits test image
(360), n0 = 100, n = 100000, alpha = 0.001, batch 1000, seed 0: the selection counts and the
estimation counts of each image (what fixed-n CERTIFY draws). The estimation counts / n estimate
each image's class probabilities; experiments/sequential/sequential_design.py simulates sequential schedules on
them (the images with index % 3 != 0, disjoint from the evaluation images of sequential_digits.py)
and experiments/sequential/sequential_digits.py reads the oracle floor of the evaluation images from them.
torch.set_num_threads(1): the CPU is shared.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from robustcert import Smooth, load_model
from robustcert.data import digits_arrays

MODELS = (("digits-0.25", 0.25), ("digits-0.50", 0.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/sequential/vote_rates.json"))
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=20, help="images per certify_batch call")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x_all, y_all = digits_arrays("test")
    record = {"command": "python " + " ".join(sys.argv), "n0": 100, "n": args.n, "alpha": 0.001, "batch_size": 1000,
              "seed": 0, "models": {}}
    for name, sigma in MODELS:
        smoothed = Smooth(load_model(f"bundled:{name}"), num_classes=10, sigma=sigma)
        started, images = time.perf_counter(), []
        for start in range(0, len(y_all), args.chunk):
            indices = list(range(start, min(start + args.chunk, len(y_all))))
            certs = smoothed.certify_batch(torch.from_numpy(x_all[indices]), n0=100, n=args.n, alpha=0.001,
                                           batch_size=1000, seed=0, indices=indices)
            images += [{"index": c.index, "label": int(y_all[c.index]), "selection_counts": c.details["selection_counts"],
                        "counts": c.counts, "selected_class": c.details["selected_class"], "radius": c.radius,
                        "p_lower": c.p_lower} for c in certs]
            print(f"{name}: {len(images)} images, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        record["models"][name] = {"sigma": sigma, "seconds": time.perf_counter() - started, "images": images}
        args.out.write_text(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
