"""GPU check of ``robustcert train`` (issue 15): the CUDA paths CI cannot run, in about 3 minutes.

    python experiments/bench/gpu_train_check.py                      # on a CUDA machine
    python experiments/bench/gpu_train_check.py --device cpu --tiny  # dry run on CPU (tiny sizes)

1. digits at fp32, bf16 and fp16 (fp16 goes through the gradient scaler): 2 epochs each, the
   final validation accuracy (clean and noisy) must be above chance and the loss finite;
2. resume on the device: 1 epoch, stop, resume to 2, against 2 uninterrupted epochs (the largest
   weight difference is reported: cuDNN may choose non-deterministic kernels);
3. the trained digits checkpoint certified by ``robustcert certify`` on the device;
4. cifar_resnet110 training speed on a synthetic CIFAR-10 binary folder (random images, crop +
   flip, batch 256): images per second, and the projected time of Cohen et al.'s 90 epochs on the
   45000 training images.
Prints one JSON object (and writes it to --out if given).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robustcert.runs.train import train_model


def digits_runs(device: str, folder: Path, epochs: int) -> dict:
    report = {}
    for precision in ("fp32", "bf16", "fp16"):
        started = time.perf_counter()
        result = train_model("digits", folder / f"digits-{precision}.pt", sigma=0.25, epochs=epochs, lr=0.05,
                             batch_size=64, device=device, precision=precision, progress=False)
        last = result.history.iloc[-1]
        report[precision] = {"seconds": round(time.perf_counter() - started, 1), "loss": float(last["loss"]),
                             "val_clean": float(last["val_clean_accuracy"]),
                             "val_noisy": float(last["val_noisy_accuracy"])}
        assert np.isfinite(last["loss"]) and last["val_noisy_accuracy"] > 0.2, report
    return report


def resume_check(device: str, folder: Path) -> dict:
    settings = dict(sigma=0.25, epochs=2, lr=0.05, batch_size=64, device=device, progress=False)
    full = train_model("digits", folder / "full.pt", **settings)

    def stop(line):
        raise KeyboardInterrupt

    try:
        train_model("digits", folder / "part.pt", log=stop, **settings)
    except KeyboardInterrupt:
        pass
    resumed = train_model("digits", folder / "part.pt", resume=True, **settings)
    difference = max((a.float() - b.float()).abs().max().item() for a, b in
                     zip(full.model.state_dict().values(), resumed.model.state_dict().values()))
    return {"max_weight_difference": difference, "epochs": len(resumed.history)}


def certify_check(device: str, folder: Path) -> dict:
    out = folder / "digits.tsv"
    command = [sys.executable, "-m", "robustcert", "certify", "--model", str(folder / "digits-fp32.pt"),
               "--sigma", "0.25", "--n", "10000", "--max", "20", "--device", device, "--quiet", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    return {"rows": len(rows), "certified_accuracy_r0": sum(int(r[4]) for r in rows) / len(rows)}


def cifar_speed(device: str, folder: Path, images_per_batch_file: int, epochs: int) -> dict:
    bins = folder / "cifar" / "cifar-10-batches-bin"
    bins.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, count in [*((f"data_batch_{i}.bin", images_per_batch_file) for i in range(1, 6)), ("test_batch.bin", 10)]:
        block = rng.integers(0, 256, (count, 3073)).astype(np.uint8)
        block[:, 0] %= 10
        block.tofile(bins / name)
    result = train_model(f"cifar10:{folder / 'cifar'}", None, sigma=0.25, epochs=epochs, batch_size=256,
                         device=device, progress=False)
    train_images = int(5 * images_per_batch_file * 0.9)
    seconds = float(result.history["seconds"].iloc[-1])  # the last epoch: warm-up excluded
    return {"arch": result.arch, "augment": result.parameters["augment"], "train_images": train_images,
            "seconds_last_epoch": round(seconds, 2), "images_per_second": round(train_images / seconds),
            "projected_hours_90_epochs_45000_images": round(90 * 45000 / (train_images / seconds) / 3600, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="Tiny sizes (a CPU dry run).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    report = {"device": args.device, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report["digits"] = digits_runs(args.device, folder, 1 if args.tiny else 3)
        report["resume"] = resume_check(args.device, folder)
        report["certify"] = certify_check(args.device, folder)
        report["cifar_resnet110"] = cifar_speed(args.device, folder, 20 if args.tiny else 2000, 1 if args.tiny else 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
