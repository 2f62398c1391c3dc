"""Denoise-then-classify (Carlini et al. 2023) against noise training, on the bundled digits.

For each sigma, certifies the same test images with the same n0, n, alpha and seed using three
base classifiers, all through ``robustcert.Smooth`` (Cohen et al. 2019):

  (a) noiseless        bundled:digits-0.00 alone (trained without noise)
  (b) ddpm+noiseless   bundled:digits-ddpm (one-shot denoising at t*) in front of (a)
  (c) noise-trained    bundled:digits-SIGMA (trained with Gaussian noise augmentation at SIGMA)
  (d) ddim-K+noiseless optional (--ddim-steps K): the deterministic K-step DDIM chain from t*

and writes reference-format TSVs, a markdown table and a JSON summary to results/diffusion/.
It also times one forward pass of a batch of noisy inputs through each base model, interleaved
in the same process (median over repetitions), to give the per-sample cost of denoising.

    python experiments/diffusion/compare_diffusion.py                                   # the committed run
    python experiments/diffusion/compare_diffusion.py --sigmas 0.25 --n 1000 --every 10  # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch

from robustcert import Smooth, load_dataset, load_denoiser, load_model
from robustcert.methods.diffusion import denoised_classifier
from robustcert.results import certify_row, read_results, render_table, results_table

RADII = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]


def base_models(sigma: float, ddim_steps: int | None) -> dict[str, torch.nn.Module]:
    noiseless = load_model("bundled:digits-0.00")
    models = {
        "noiseless": noiseless,
        "ddpm+noiseless": denoised_classifier(load_denoiser("bundled:digits-ddpm", sigma), noiseless),
        f"noise-trained ({sigma:.2f})": load_model(f"bundled:digits-{sigma:.2f}"),
    }
    if ddim_steps:
        chain = load_denoiser("bundled:digits-ddpm", sigma, multistep=True, steps=ddim_steps)
        models[f"ddim-{ddim_steps}+noiseless"] = denoised_classifier(chain, noiseless)
    return models


@torch.inference_mode()
def forward_seconds_per_sample(models: dict, sigma: float, batch: int, repeats: int) -> dict[str, float]:
    """Median wall time of one forward pass over ``batch`` noisy digits, per sample; the models
    take turns within each repetition so that they see the same machine load."""
    data = load_dataset("digits", "test")
    x = torch.stack([data[i % len(data)][0] for i in range(batch)])
    noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    times = {name: [] for name in models}
    for name, model in models.items():  # warm-up
        model.eval()(noisy)
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(noisy)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) / batch for name, values in times.items()}


def certify_all(model, sigma, indices, data, args, path: Path) -> float:
    """Certify the chosen test images; writes one TSV row each; returns total wall seconds."""
    smoothed = Smooth(model, num_classes=10, sigma=sigma, input_shape=(1, 8, 8))
    start = time.perf_counter()
    with open(path, "w") as handle:
        handle.write("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")
        for index in indices:
            x, label = data[index]
            cert = smoothed.certify(x, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch,
                                    seed=args.seed, index=index)
            handle.write(certify_row(index, label, cert.prediction, cert.radius, cert.time) + "\n")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", default="0.25,0.50")
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--every", type=int, default=4, help="certify every EVERY-th test image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ddim-steps", type=int, default=None)
    parser.add_argument("--timing-repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("results/diffusion"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    data = load_dataset("digits", "test")
    indices = list(range(0, len(data), args.every))
    summary = {
        "command": "python experiments/diffusion/compare_diffusion.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out_dir"),
        "parameters": {"n0": args.n0, "n": args.n, "alpha": args.alpha, "seed": args.seed, "batch": args.batch,
                       "images": len(indices), "test_indices": f"0..{len(data) - 1} step {args.every}"},
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": args.threads,
                    "cores": os.cpu_count(), "torch": torch.__version__},
        "sigmas": {},
    }
    markdown = []
    for sigma in (float(s) for s in args.sigmas.split(",")):
        models = base_models(sigma, args.ddim_steps)
        per_sample = forward_seconds_per_sample(models, sigma, args.batch, args.timing_repeats)
        frames, walls = {}, {}
        for name, model in models.items():
            path = args.out_dir / f"sigma_{sigma:.2f}" / (name.split(" ")[0].replace("+", "_") + ".tsv")
            path.parent.mkdir(parents=True, exist_ok=True)
            walls[name] = certify_all(model, sigma, indices, data, args, path)
            frames[name] = read_results(path)
            print(f"sigma={sigma:.2f} {name}: {walls[name]:.1f} s for {len(indices)} images", flush=True)
        table = results_table(frames, RADII)
        table.index.name = f"sigma={sigma:.2f}"
        baseline = per_sample["noiseless"]
        table["us/sample (fwd)"] = [per_sample[name] * 1e6 for name in models]
        table["x noiseless"] = [per_sample[name] / baseline for name in models]
        table["s/image (certify)"] = [walls[name] / len(indices) for name in models]
        markdown.append(render_table(table, decimals=3, mark_best=False))
        t_star = models["ddpm+noiseless"].denoiser.t_star
        summary["sigmas"][f"{sigma:.2f}"] = {
            "t_star": t_star,
            "table": json.loads(table.to_json(orient="index")),
            "forward_seconds_per_sample": per_sample,
            "certify_wall_seconds": walls,
        }
        print(markdown[-1], flush=True)
    (args.out_dir / "table.md").write_text(
        f"<!-- {summary['command']} -->\n\n"
        + "\n".join(markdown))
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
