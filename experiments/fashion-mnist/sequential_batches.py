"""How full are the forward passes of a sequential certification with an expensive base model?

Sequential CERTIFY (robustcert/methods/sequential.py) draws growing rounds and stops each input
when its answer is decided; the engine already packs the rounds of all active inputs of a
``certify_batch`` call into shared batches (:func:`robustcert.engine.plan_blocks`; a dataset run
calls it with ``sequential_inputs_per_call`` = batch / 64 inputs). What is left unpacked: the last,
partly filled batch of each round. This records the size of every forward pass of the denoised
base classifier on the first images of the benchmark (the options of ``denoised-0.50``), and
weighs them with the CPU cost per sample measured at forward batches of 64, 250 and 1000
(``denoiser_speed.md``) to bound what packing more inputs together could save on this CPU.

    python experiments/fashion-mnist/sequential_batches.py --images 32 --out results/fashion-mnist/sequential_batches.md
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers is imported: never reach a model hub

import torch

from robustcert.runs.build import build_smoothed
from robustcert.runs.dataset import certify_dataset

DATA = "fashion-mnist:/usr/share/datasets/fashion-mnist"
MODELS = Path("results/fashion-mnist/models")
BINS = [(1000, 1000), (250, 999), (64, 249), (1, 63)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--target-radius", type=float, default=0.5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    smoothed, dataset, _ = build_smoothed("cohen", str(MODELS / "clean.pt"), sigma=0.5, data=DATA, device="cpu",
                              denoiser=str(MODELS / "ddpm"))
    sizes: list[int] = []
    smoothed.model.register_forward_pre_hook(lambda module, inputs: sizes.append(len(inputs[0])))
    frame = certify_dataset(smoothed, dataset, None, n0=100, n=100_000, alpha=0.001, batch_size=1000, seed=0, skip=20,
                            max_inputs=args.images, progress=False, threads=1, sequential=True,
                            target_radius=args.target_radius)
    total = sum(sizes)
    counts = Counter(sizes)
    lines = [
        "# Forward passes of a sequential run with the denoised base classifier\n",
        f"Command: `python experiments/fashion-mnist/sequential_batches.py --images {args.images} --out {args.out}` "
        f"(the first {len(frame)} images of the benchmark, the options of `denoised-0.50`: sequential, target "
        f"radius {args.target_radius}, batch 1000, {len(sizes)} forward passes, {total:,} samples).\n",
        "| forward batch | passes | samples | share of samples |", "|---|---:|---:|---:|",
    ]
    for low, high in BINS:
        passes = sum(c for s, c in counts.items() if low <= s <= high)
        samples = sum(s * c for s, c in counts.items() if low <= s <= high)
        lines.append(f"| {low}-{high} | {passes} | {samples:,} | {samples / total:.3f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
