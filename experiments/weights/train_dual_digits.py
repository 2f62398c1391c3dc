"""Train the bundled dual-smoothing branch models on sub-images of the digits (Xia et al. 2024).

Each image of the digits train split is cut by a split (default: the checkerboard of 2x2-block
diagonals, two 1x8x4 sub-images); branch a is trained on sub-image a and branch b on sub-image b,
each with Gaussian noise augmentation N(0, sigma^2 I) on its sub-image (fresh noise every
epoch), the recipe of randomized smoothing applied per branch. (The paper adds consistency
regularisation and other refinements; this is the plain recipe.) Uses the training loop of
experiments/weights/train_digits.py. Writes reference-format checkpoints
({'epoch', 'arch', 'state_dict', ...}, plus 'dual_split' and 'dual_branch') to
robustcert/models/weights/digits-dual-{a,b}-SIGMA.pt (``bundled:digits-dual-a-0.25``).

    python experiments/weights/train_dual_digits.py                       # sigma 0.25, checkerboard (about 1 min)
    python experiments/weights/train_dual_digits.py --sigmas 0.18 --split rows --out-dir /tmp/w
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from robustcert.models.checkpoint import WEIGHTS_DIR
from robustcert.splits import SPLITS, get_split

ARCH_FOR_SHAPE = {(1, 8, 4): "digits_sub_8x4", (1, 4, 8): "digits_sub_4x8"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", default="0.25")
    parser.add_argument("--split", default="checkerboard", choices=sorted(SPLITS))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    from train_digits import train  # the training loop of the bundled digits models (this script's folder)

    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    split = get_split(args.split)
    shapes = split.sub_shapes((1, 8, 8))
    for sigma_text in args.sigmas.split(","):
        sigma = float(sigma_text)
        for position, branch in enumerate(("a", "b")):
            arch = ARCH_FOR_SHAPE[shapes[position]]
            model, _, clean, noisy = train(sigma, args.epochs, args.seed + position, arch=arch,
                                           view=lambda x: split.split(x)[position])
            suffix = "" if args.split == "checkerboard" else f"-{args.split}"
            path = args.out_dir / f"digits-dual-{branch}{suffix}-{sigma:.2f}.pt"
            torch.save({
                "epoch": args.epochs, "arch": arch, "state_dict": model.state_dict(),
                "noise_sd": sigma, "seed": args.seed + position, "dual_split": split.name, "dual_branch": branch,
                "recipe": f"experiments/weights/train_dual_digits.py --sigmas {sigma:.2f} --split {args.split} "
                          f"--epochs {args.epochs} --seed {args.seed}",
            }, path)
            print(f"sigma={sigma:.2f} split={split.name} branch {branch}: clean sub-image test acc={clean:.4f}  "
                  f"noisy test acc={noisy:.4f}  -> {path}")


if __name__ == "__main__":
    main()
