"""What diffusion denoise-then-classify (Carlini et al. 2023) would cost on Fashion-MNIST on this CPU.

No 28x28 denoiser ships with robustcert and none can be downloaded, so one would have to be
trained here. This measures, on one CPU thread and with an untrained DDPM UNet of the size a
28x28 grey model needs (diffusers UNet2DModel, 3 levels 32/64/64 channels, attention at 14x14,
about 1.1M parameters; the bundled digits denoiser is the same design at 8x8), the process CPU
time of one training step (batch 64) and of one denoising pass per noisy sample (the one-shot
denoiser: one UNet call per sample), and extrapolates to the benchmark's certification setting.

    python experiments/fashion-mnist/fashion_mnist_ddpm_cost.py --out results/fashion-mnist/diffusion_cost.md
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers is imported: never reach a model hub

import torch


def unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(32, 64, 64), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


def cpu_seconds(step, repeats: int) -> float:
    step()  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        step()
    return (time.process_time() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-steps", type=int, default=20_000,
                        help="training steps assumed for a usable denoiser (DDPM papers train 10^5 and more)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = unet()
    parameters = sum(p.numel() for p in model.parameters())
    x, t = torch.randn(200, 1, 28, 28), torch.full((200,), 100)
    model.eval()
    with torch.inference_mode():
        per_sample = cpu_seconds(lambda: model(x, t), 2) / len(x)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    batch, steps_t = torch.randn(64, 1, 28, 28), torch.randint(0, 1000, (64,))

    def train_step():
        loss = (model(batch, steps_t).sample - batch).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    per_step = cpu_seconds(train_step, 3)
    images, n = 500, 100_100
    lines = [
        "# Diffusion denoise-then-classify on Fashion-MNIST: cost on this CPU\n",
        f"Command: `python experiments/fashion-mnist/fashion_mnist_ddpm_cost.py --out {args.out}` (one torch thread, process "
        f"CPU time, shared 2-core machine; load average {os.getloadavg()[0]:.1f}).\n",
        f"Untrained DDPM UNet for 1x28x28 ({parameters:,} parameters; the design of the bundled digits denoiser, "
        "one level more).\n",
        "| quantity | CPU seconds |", "|---|---:|",
        f"| one training step, batch 64 | {per_step:.2f} |",
        f"| {args.train_steps:,} training steps | {per_step * args.train_steps:,.0f} "
        f"({per_step * args.train_steps / 3600:.1f} h) |",
        f"| one denoised noisy sample (one UNet call) | {per_sample:.4f} |",
        f"| the benchmark's certification: {images} images x {n:,} samples | "
        f"{per_sample * images * n:,.0f} ({per_sample * images * n / 3600:,.0f} h) |",
        f"| a reduced run: 100 images x 1,100 samples (n0 100, n 1000) | {per_sample * 100 * 1100:,.0f} |",
        "",
        "So the diffusion row of the benchmark is not run on this CPU: the denoiser alone would take hours "
        "to train and the certification at n = 100000 about six CPU-days. On a GPU the same commands apply "
        "(`robustcert certify --denoiser PATH` with a DDPMPipeline folder trained on Fashion-MNIST).",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
