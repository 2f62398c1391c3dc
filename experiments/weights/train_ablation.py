"""Train base models for the other threat models: randomized ablation (l0) and noise-matched l1 models.

This script made the bundled `digits-ablation-k16` model and the models of results/threat-models
before `robustcert train` existed; it is kept to reproduce them exactly. For new models use
`robustcert train --keep K` (ablation) or `robustcert train --noise laplace|uniform --sigma S`,
which feed the model the same inputs. Like those, it trains with the engine's own samplers, so that
training sees exactly the inputs certification feeds the model:

* ``--ablation K``: inputs ablated by :func:`robustcert.engine.ablate` (Levine and Feizi 2020: keep K
  pixels, (x, 1 - x) where kept, zeros where absent; one fresh kept set per copy and step);
* ``--noise laplace|uniform|gaussian --sigma S``: inputs plus the noise that
  ``Smooth(..., noise=...)`` samples (:mod:`robustcert.engine.sampling`), at per-coordinate
  standard deviation S.

Data: ``digits`` (the bundled 8x8 digits, DigitsCNN; ablation models may go into the package as
``bundled:digits-ablation-kK``) or ``fashion-mnist:ROOT`` (the four IDX .gz files in ROOT, e.g.
/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist; a small CNN saved as
TorchScript, so that ``certify`` loads it without an architecture name). ``--export-test PATH``
writes the test split as an npz for ``robustcert certify --data npz:PATH``.

    python experiments/weights/train_ablation.py --data digits --ablation 16 --bundle          # ~1 min
    python experiments/weights/train_ablation.py --data digits --noise laplace --sigma 0.5 --out tmp/threat-models/digits-laplace-0.50.pt
    python experiments/weights/train_ablation.py --data fashion-mnist:/usr/share/datasets/fashion-mnist --ablation 45 \\
        --epochs 10 --out tmp/threat-models/fashion-ablation-k45.pt --export-test tmp/threat-models/fashion-test.npz
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustcert.data import digits_arrays
from robustcert.engine import ablate
from robustcert.methods.noises import noise_model
from robustcert.models import NormalizeLayer, build_model
from robustcert.models.checkpoint import WEIGHTS_DIR

FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array (the MNIST / Fashion-MNIST format)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_arrays(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as float32 (N, 1, 28, 28) in [0,1] and int64 labels."""
    prefix = "train" if split == "train" else "t10k"
    folder = Path(root)
    images = read_idx(next(folder.glob(f"{prefix}-images-idx3-ubyte*")))
    labels = read_idx(next(folder.glob(f"{prefix}-labels-idx1-ubyte*")))
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)


class SmallCNN(nn.Module):
    """conv3x3(c->16) - ReLU - maxpool2 - conv3x3(16->32) - ReLU - maxpool2 - fc(32*7*7 -> 64) - ReLU -
    fc(64 -> 10): about 1.2 MFLOP per 28x28 input, cheap enough to certify on a CPU."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes),
        )

    def forward(self, x):
        return self.net(x)


def augmenter(ablation: int | None, noise: str | None, sigma: float | None):
    """x -> the input the base model is trained on, drawn with the certification samplers."""
    if ablation is not None:
        return lambda x, generator: ablate(x, ablation, generator)
    sampler = noise_model(noise).sampler(sigma)

    def add_noise(x, generator):
        delta = torch.empty_like(x)
        sampler.draw(delta, generator)
        return x + delta
    return add_noise


def train(model, x_train, y_train, augment, epochs, batch_size, lr, copies, seed, log):
    generator = torch.Generator(device=x_train.device).manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    history = []
    for epoch in range(epochs):
        model.train()
        started, total = time.perf_counter(), 0.0
        for batch in torch.randperm(len(x_train), generator=generator, device=x_train.device).split(batch_size):
            x = x_train[batch].repeat(copies, 1, 1, 1)
            y = y_train[batch].repeat(copies)
            loss = F.cross_entropy(model(augment(x, generator)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        scheduler.step()
        history.append({"epoch": epoch + 1, "loss": total / len(x_train), "seconds": time.perf_counter() - started})
        log(f"epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f} ({history[-1]['seconds']:.1f} s)")
    model.eval()
    return history


def augmented_accuracy(model, x, y, augment, seed: int) -> float:
    """Accuracy of the base model on one augmented (ablated or noisy) copy of each test input."""
    generator = torch.Generator(device=x.device).manual_seed(seed + 1)
    with torch.no_grad():
        correct = sum(int((model(augment(xb, generator)).argmax(1) == yb).sum())
                      for xb, yb in zip(x.split(1000), y.split(1000)))
    return correct / len(y)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", help="digits or fashion-mnist:ROOT")
    parser.add_argument("--ablation", type=int, default=None, help="keep K pixels (randomized ablation)")
    parser.add_argument("--noise", choices=["gaussian", "laplace", "uniform"], default=None)
    parser.add_argument("--sigma", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="default: 60 (digits), 10 (fashion-mnist)")
    parser.add_argument("--copies", type=int, default=None, help="augmented copies per input and step "
                        "(default: 4 for digits, as experiments/weights/train_digits.py; 1 for fashion-mnist)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the model is saved for the CPU)")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint to write")
    parser.add_argument("--bundle", action="store_true",
                        help="digits ablation: write robustcert/models/weights/digits-ablation-kK.pt")
    parser.add_argument("--export-test", type=Path, default=None, help="write the test split as an npz")
    args = parser.parse_args()
    if (args.ablation is None) == (args.noise is None) or (args.noise is not None and args.sigma is None):
        parser.error("give --ablation K, or --noise NAME with --sigma S")
    torch.set_num_threads(args.threads)
    digits = args.data == "digits"
    if digits:
        (x_train, y_train), (x_test, y_test) = digits_arrays("train+val"), digits_arrays("test")
    elif args.data.startswith("fashion-mnist:"):
        root = args.data.split(":", 1)[1]
        (x_train, y_train), (x_test, y_test) = fashion_arrays(root, "train"), fashion_arrays(root, "test")
    else:
        parser.error(f"unknown --data {args.data!r}")
    if args.export_test is not None:
        args.export_test.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.export_test, x=x_test, y=y_test)
        print(f"wrote {args.export_test} ({len(y_test)} test images)")
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in (x_train, y_train, x_test, y_test))
    in_channels = 2 if args.ablation is not None else 1
    if digits:
        model = build_model("digits_cnn_ablation" if args.ablation is not None else "digits_cnn")
        epochs, batch_size, lr, copies = args.epochs or 60, 64, 2e-3, args.copies or 4
    else:
        norm = NormalizeLayer((0.0, 0.0), (1.0, 1.0)) if args.ablation is not None else \
            NormalizeLayer(FASHION_MEAN, FASHION_STD)
        model = nn.Sequential(norm, SmallCNN(in_channels))
        epochs, batch_size, lr, copies = args.epochs or 10, 128, 1e-3, args.copies or 1
    device = torch.device(args.device)
    model.to(device)
    x_train, y_train, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_test, y_test))
    augment = augmenter(args.ablation, args.noise, args.sigma)
    what = f"ablation k={args.ablation}" if args.ablation is not None else f"{args.noise} noise sigma={args.sigma}"
    print(f"training on {args.data} ({len(y_train)} images) with {what}, {epochs} epochs, on {device}"
          f"{f' ({args.threads} thread(s))' if device.type == 'cpu' else ''}")
    history = train(model, x_train, y_train, augment, epochs, batch_size, lr, copies, args.seed,
                    lambda line: print(line, flush=True))
    accuracy = augmented_accuracy(model, x_test, y_test, augment, args.seed)
    print(f"test accuracy on one {'ablated' if args.ablation is not None else 'noisy'} copy per image: {accuracy:.4f}")

    recipe = "python " + " ".join(["experiments/weights/train_ablation.py", *sys.argv[1:]])
    out = args.out
    if args.bundle:
        if not (digits and args.ablation is not None):
            parser.error("--bundle is for digits ablation models")
        out = WEIGHTS_DIR / f"digits-ablation-k{args.ablation}.pt"
    if out is None:
        parser.error("give --out PATH (or --bundle)")
    model.cpu()
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"recipe": recipe, "epochs": epochs, "seed": args.seed, "keep": args.ablation, "noise": args.noise,
              "noise_sd": args.sigma, "augmented_test_accuracy": accuracy, "history": history}
    if digits:
        arch = "digits_cnn_ablation" if args.ablation is not None else "digits_cnn"
        torch.save({"arch": arch, "state_dict": model.state_dict(),
                    **{k: v for k, v in record.items() if k != "history" and v is not None}}, out)
    else:
        torch.jit.save(torch.jit.script(model), str(out))
    out.with_name(out.name + ".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out} (+ {out.name}.json); {math.fsum(h['seconds'] for h in history):.0f} s of training")


if __name__ == "__main__":
    main()
