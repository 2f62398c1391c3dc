"""Speed of the denoised base classifier classifier(denoise(x + delta)) in the engine, on CPU.

Side by side in one process, interleaved over repetitions (median): the same 1000 noisy samples of
Fashion-MNIST test images go through the engine's model runner (:class:`robustcert.engine.ModelRunner`,
what ``robustcert certify`` uses) in every variant:

* layout: contiguous (NCHW) or channels-last (the engine's default on CPU);
* precision: fp32 or bf16 autocast (``--precision bf16``: a different base classifier, so its
  predictions are compared with fp32's: agreement = share of the samples with the same class);
* forward batch: 1000 samples in one call, or in chunks of 250 and 64 (what a sequential round
  that is not full sends), to see whether packing more inputs into a batch would pay on CPU.

Process CPU time per sample (one torch thread); the denoiser alone and the classifier alone too.

    python experiments/fashion-mnist/denoiser_speed.py --out results/fashion-mnist/denoiser_speed.md
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers is imported: never reach a model hub

import torch

from robustcert import load_dataset
from robustcert.models.checkpoint import load_checkpoint
from robustcert.engine import ModelRunner
from robustcert.methods.diffusion import with_denoiser

DATA = "fashion-mnist:/usr/share/datasets/fashion-mnist"
MODELS = Path("results/fashion-mnist/models")


def cpu_seconds_per_sample(runner: ModelRunner, samples: torch.Tensor, chunk: int) -> tuple[float, torch.Tensor]:
    """Process CPU seconds per sample of running ``samples`` through ``runner`` in chunks; the outputs."""
    outputs = []
    start = time.process_time()
    with torch.inference_mode():
        for part in samples.split(chunk):
            outputs.append(runner.forward(runner.layout(part)).float())
    return (time.process_time() - start) / len(samples), torch.cat(outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--denoiser", default=str(MODELS / "ddpm"))
    parser.add_argument("--model", default=str(MODELS / "clean.pt"))
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_dataset(DATA, "test").batch(range(0, 10000, 1000))[0]  # 10 test images, 100 draws each
    generator = torch.Generator().manual_seed(0)
    clean = images.repeat_interleave(args.samples // len(images), 0)
    noisy = clean + args.sigma * torch.randn(clean.shape, generator=generator)
    classifier = load_checkpoint(args.model)
    composed = with_denoiser(classifier, args.denoiser, args.sigma, (1, 28, 28)).module
    variants = {}
    for precision in ("fp32", "bf16"):
        for channels_last in (False, True):
            for chunk in ((1000, 250, 64) if precision == "fp32" else (1000,)):
                name = f"{precision}, {'channels-last' if channels_last else 'contiguous'}, batch {chunk}"
                runner = ModelRunner(copy.deepcopy(composed), "cpu", precision, channels_last, sigma=args.sigma)
                variants[name] = (runner, chunk)
    parts = {"denoiser alone (fp32, channels-last, batch 1000)":
             (ModelRunner(copy.deepcopy(composed.denoiser), "cpu", "fp32", True), 1000),
             "classifier alone (fp32, channels-last, batch 1000)":
             (ModelRunner(copy.deepcopy(composed.classifier), "cpu", "fp32", True), 1000)}
    times = {name: [] for name in [*variants, *parts]}
    predictions = {}
    for name, (runner, chunk) in {**variants, **parts}.items():  # warm-up
        cpu_seconds_per_sample(runner, noisy[:chunk], chunk)
    for _ in range(args.reps):
        for name, (runner, chunk) in {**variants, **parts}.items():
            seconds, outputs = cpu_seconds_per_sample(runner, noisy, chunk)
            times[name].append(seconds)
            if name in variants:
                predictions[name] = outputs.argmax(1)
    reference = "fp32, channels-last, batch 1000"  # the engine's default
    base = statistics.median(times[reference])
    lines = [
        "# Denoised base classifier: CPU time per noisy sample, measured side by side\n",
        f"Command: `python experiments/fashion-mnist/denoiser_speed.py --out {args.out}` (one torch thread, "
        f"process CPU time, median of {args.reps} interleaved repetitions over the same {len(noisy)} noisy samples "
        f"of 10 test images at sigma {args.sigma}; load average {os.getloadavg()[0]:.1f} on the shared 2-core "
        f"machine).\n",
        f"Denoiser `{args.denoiser}`, classifier `{args.model}`; `agreement`: share of samples whose class equals "
        "the engine default's (fp32, channels-last, batch 1000) on the same samples.\n",
        "| variant | ms per sample | time / engine default | agreement |", "|---|---:|---:|---:|",
    ]
    for name in variants:
        median = statistics.median(times[name])
        agreement = (predictions[name] == predictions[reference]).float().mean().item()
        lines.append(f"| {name} | {median * 1e3:.2f} | {median / base:.2f} | {agreement:.4f} |")
    for name in parts:
        median = statistics.median(times[name])
        lines.append(f"| {name} | {median * 1e3:.3f} | {median / base:.3f} | |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
