"""Train the bundled digits models: DigitsCNN with Gaussian noise augmentation (Cohen et al. 2019).

Each model sees every training image with fresh noise N(0, sigma^2 I) added in [0,1] pixel
space at every epoch, the training recipe of randomized smoothing. Writes reference-format
checkpoints ({'epoch', 'arch', 'state_dict', 'optimizer', ...}) to
robustcert/models/weights/digits-SIGMA.pt (usable as ``bundled:digits-SIGMA``).

``robustcert train`` (robustcert.runs.train) is the general tool; this script keeps the recipe the
bundled weights were made with (Adam, cosine schedule, 4 noisy copies, the global torch RNG);
moving it onto train_model (SGD, step schedule, per-epoch seeded streams) would change that recipe.

    python experiments/weights/train_digits.py                  # sigma 0.12, 0.25, 0.50 (about 1 min on 2 cores)
    python experiments/weights/train_digits.py --sigmas 0.25 --epochs 100
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from robustcert.data import digits_arrays
from robustcert.models import build_model
from robustcert.models.checkpoint import WEIGHTS_DIR


def train(sigma: float, epochs: int, seed: int, batch_size: int = 64, lr: float = 2e-3, noise_copies: int = 4,
          arch: str = "digits_cnn", view=None):
    """Train one DigitsCNN at noise level sigma; returns the model and its clean test accuracy.

    ``arch`` and ``view`` (a function applied to the (N, 1, 8, 8) images before noise, e.g. one
    half of a dual-smoothing split) let other recipes reuse this loop.
    """
    torch.manual_seed(seed)
    x_train, y_train = (torch.from_numpy(a) for a in digits_arrays("train+val"))
    x_test, y_test = (torch.from_numpy(a) for a in digits_arrays("test"))
    if view is not None:
        x_train, x_test = view(x_train), view(x_test)
    model = build_model(arch)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x_train)).split(batch_size):
            x = x_train[batch].repeat(noise_copies, 1, 1, 1)
            y = y_train[batch].repeat(noise_copies)
            loss = F.cross_entropy(model(x + sigma * torch.randn_like(x)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    model.eval()
    with torch.no_grad():
        clean = (model(x_test).argmax(1) == y_test).float().mean().item()
        noisy = (model(x_test + sigma * torch.randn_like(x_test)).argmax(1) == y_test).float().mean().item()
    return model, optimizer, clean, noisy


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", default="0.12,0.25,0.50")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for sigma_text in args.sigmas.split(","):
        sigma = float(sigma_text)
        model, optimizer, clean, noisy = train(sigma, args.epochs, args.seed)
        path = args.out_dir / f"digits-{sigma:.2f}.pt"
        torch.save({
            "epoch": args.epochs, "arch": "digits_cnn", "state_dict": model.state_dict(),
            "noise_sd": sigma, "seed": args.seed,
            "recipe": f"experiments/weights/train_digits.py --sigmas {sigma:.2f} --epochs {args.epochs} --seed {args.seed}",
        }, path)
        print(f"sigma={sigma:.2f}  clean test acc={clean:.4f}  noisy test acc={noisy:.4f}  -> {path}")


if __name__ == "__main__":
    main()
