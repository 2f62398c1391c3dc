"""Train the bundled digits diffusion model: a small DDPM (Ho et al. 2020) on the 8x8 digits.

A diffusers UNet2DModel (about 0.7M parameters, 1x8x8 images in [-1,1]) learns to predict the
noise eps of x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps at a uniformly drawn t, with the
linear DDPMScheduler (T = 1000, betas 1e-4 .. 0.02), on the digits training split only (the test
split stays unseen for the certification experiments). Saved with ``DDPMPipeline.save_pretrained``
(unet/, scheduler/, model_index.json), which robustcert reads offline as
``--denoiser bundled:digits-ddpm``:

    python experiments/weights/train_digits_ddpm.py          # the bundled model: 2000 steps, 566 s on 1 busy CPU thread
    python experiments/weights/train_digits_ddpm.py --steps 300 --out-dir /tmp/ddpm   # the quick version

At the end it prints the one-shot denoising MSE on the test split at a few sigmas (pixel units).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers is imported: never reach a model hub

import torch
import torch.nn.functional as F

from robustcert.data import digits_arrays
from robustcert.methods.diffusion import BUNDLED_DIR, DiffusionDenoiser

UNET_CONFIG = dict(
    sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)


def build(seed: int):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**UNET_CONFIG), DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def train(steps: int, batch_size: int, lr: float, seed: int):
    """Standard epsilon-prediction DDPM training; returns (unet, scheduler, final mean loss)."""
    unet, scheduler = build(seed)
    x_train = torch.from_numpy(digits_arrays("train+val")[0]) * 2 - 1  # [0,1] -> [-1,1]
    abar = scheduler.alphas_cumprod
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    warmup = min(100, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    unet.train()
    recent = []
    for step in range(steps):
        batch = x_train[torch.randint(len(x_train), (batch_size,), generator=generator)]
        t = torch.randint(len(abar), (batch_size,), generator=generator)
        eps = torch.randn(batch.shape, generator=generator)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * batch + (1 - a).sqrt() * eps
        loss = F.mse_loss(unet(x_t, t).sample, eps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        recent = (recent + [loss.item()])[-100:]
        if (step + 1) % max(1, steps // 10) == 0:
            print(f"step {step + 1}/{steps}  loss (last 100) {sum(recent) / len(recent):.4f}", flush=True)
    return unet.eval(), scheduler, sum(recent) / len(recent)


@torch.inference_mode()
def denoising_mse(unet, scheduler, sigmas=(0.12, 0.25, 0.5, 1.0), seed: int = 1) -> dict:
    """Test-split MSE (pixel units) of x + delta clipped to [0,1] and of the one-shot denoiser."""
    x = torch.from_numpy(digits_arrays("test")[0])
    generator = torch.Generator().manual_seed(seed)
    report = {}
    for sigma in sigmas:
        noisy = x + sigma * torch.randn(x.shape, generator=generator)
        denoiser = DiffusionDenoiser(unet, scheduler, sigma)
        report[str(sigma)] = {
            "t_star": denoiser.t_star,
            "mse_noisy_clipped": F.mse_loss(noisy.clamp(0, 1), x).item(),
            "mse_denoised": F.mse_loss(denoiser(noisy), x).item(),
        }
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=BUNDLED_DIR / "digits-ddpm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import DDPMPipeline

    start = time.perf_counter()
    unet, scheduler, loss = train(args.steps, args.batch_size, args.lr, args.seed)
    seconds = time.perf_counter() - start
    mse = denoising_mse(unet, scheduler)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(args.out_dir)
    recipe = {
        "recipe": (f"experiments/weights/train_digits_ddpm.py --steps {args.steps} --batch-size {args.batch_size} "
                   f"--lr {args.lr} --seed {args.seed}"),
        "parameters": sum(p.numel() for p in unet.parameters()),
        "train_split": "digits train (1437 images, index % 5 != 0)",
        "final_loss_last_100_steps": round(loss, 5),
        "train_seconds": round(seconds, 1),
        "threads": args.threads,
        "test_denoising_mse": mse,
    }
    (args.out_dir / "training.json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(json.dumps(recipe, indent=2))
    print(f"saved to {args.out_dir}")


if __name__ == "__main__":
    main()
