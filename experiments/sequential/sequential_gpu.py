"""Sequential vs fixed-n CERTIFY at a GPU batch size (the gpu_check step for issue 17's question).

Certifies the first IMAGES digits test images with bundled:digits-0.25 (sigma 0.25) on one device,
fixed n = 100000 against sequential (target radius 0.5, n_max = 100000), both at --batch, and
prints samples per image, wall time and certified accuracy at the target radius.

    python experiments/sequential/sequential_gpu.py --device cuda --batch 10000 --images 60
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from robustcert import Smooth, load_model
from robustcert.data import digits_arrays


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    x, y = digits_arrays("test")
    xs, ys = torch.from_numpy(x[: args.images]), y[: args.images]
    smoothed = Smooth(load_model("bundled:digits-0.25", device=args.device), 10, 0.25, device=args.device)
    smoothed.certify_batch(xs[:2], n0=100, n=args.batch, batch_size=args.batch)  # warm-up
    record = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "batch": args.batch, "images": args.images}
    for name, options in (("fixed n=100000", {}), ("sequential r=0.5", {"sequential": True, "target_radius": 0.5})):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        certs = smoothed.certify_batch(xs, n0=100, n=100_000, alpha=0.001, batch_size=args.batch, seed=0, **options)
        seconds = time.perf_counter() - started
        accuracy = sum(c.prediction == int(label) and c.radius >= 0.5 for c, label in zip(certs, ys)) / len(certs)
        record[name] = {"seconds": round(seconds, 3), "mean_samples": sum(c.samples_used for c in certs) / len(certs),
                        "certified_accuracy_r0.5": accuracy}
        print(name, record[name], flush=True)
    print(json.dumps(record))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(record, handle, indent=2)


if __name__ == "__main__":
    main()
