"""Runtime per image of `robustcert certify` on pretrained models of each source, end to end (CPU).

Builds the models with random weights (the runtime does not depend on the weights) and saves them
the way users have them: torchvision resnet50 as a state_dict (.pth), timm vit_small_patch16_224
and convnext_tiny as .safetensors, a transformers ViT-B/16 (google/vit-base-patch16-224's
configuration) as a save_pretrained folder. It writes an npz of random 224x224 images and runs
``robustcert certify --model SPEC [--weights FILE] --data npz:... --n0 N0 --n N`` in a fresh process
for each, one after the other. Per image: the TSV's time column (sampling and bounds, the model
already loaded), its median over the images; per run: the process's wall time (start-up and model
loading included).

    python experiments/bench/zoo_runtime.py --n0 16 --n 128 --images 2 --threads 1 --out results/bench/zoo
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def save_models(folder: Path) -> list[tuple[str, list[str]]]:
    """(label, --model/--weights arguments) of each source's model, saved in ``folder``."""
    import timm
    import torchvision
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), folder / "resnet50.pth")
    runs = [("torchvision:resnet50", ["--model", "torchvision:resnet50", "--weights", str(folder / "resnet50.pth")])]
    for name in ("vit_small_patch16_224", "convnext_tiny"):
        save_file(timm.create_model(name, pretrained=False).state_dict(), str(folder / f"{name}.safetensors"))
        runs.append((f"timm:{name}", ["--model", f"timm:{name}", "--weights", str(folder / f"{name}.safetensors")]))
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000))
    vit.save_pretrained(folder / "vit-base")
    transformers.ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                   size={"height": 224, "width": 224}).save_pretrained(folder / "vit-base")
    runs.append(("hf:vit-base-patch16-224 (random)", ["--model", f"hf:{folder / 'vit-base'}"]))
    return runs


def seconds(value: str) -> float:
    hours, minutes, secs = value.split(":")
    return 3600 * int(hours) + 60 * int(minutes) + float(secs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n0", type=int, default=16)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/bench/zoo"))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.savez(folder / "imgs.npz", x=np.random.default_rng(0).random((args.images, 3, 224, 224), np.float32),
                 y=np.zeros(args.images, dtype=np.int64))
        for label, model in save_models(folder):
            out = folder / f"{len(rows)}.tsv"
            command = [sys.executable, "-m", "robustcert", "certify", *model, "--data", f"npz:{folder / 'imgs.npz'}",
                       "--sigma", "0.25", "--n0", str(args.n0), "--n", str(args.n), "--batch", str(args.batch),
                       "--threads", str(args.threads), "--device", "cpu", "--quiet", "--out", str(out)]
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env={**os.environ,
                                                                         "OMP_NUM_THREADS": str(args.threads)})
            wall = time.perf_counter() - started
            times = [seconds(line.split("\t")[5]) for line in out.read_text().splitlines()[1:]]
            per_image = statistics.median(times)
            rows.append({"model": label, "images": args.images, "n0": args.n0, "n": args.n, "batch": args.batch,
                         "threads": args.threads, "s_per_image": round(per_image, 2),
                         "samples_per_s": round((args.n0 + args.n) / per_image, 1),
                         "s_per_image_at_n_100000": round((100 + 100_000) * per_image / (args.n0 + args.n)),
                         "process_wall_s": round(wall, 1),
                         "command": shlex.join(["robustcert", *command[3:]]).replace(str(folder), "$TMP")})
            print(json.dumps(rows[-1]), flush=True)
    record = {"command": "python experiments/bench/zoo_runtime.py " + " ".join(argv or sys.argv[1:]),
              "torch": torch.__version__, "load_average": [round(v, 2) for v in os.getloadavg()],
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cli-runtime.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# `robustcert certify` per image, pretrained models of each source (random weights), CPU", "",
             f"Command: `{record['command']}`; torch {record['torch']}; load average at the end "
             f"{record['load_average']} (2-core VM shared with other jobs).", "",
             "s/image: median of the TSV's time column (the model already loaded); at n = 100000: that time "
             "scaled by (100 + 100000) / (n0 + n), an extrapolation, not a run.", "",
             "| model | n0 + n | batch | threads | s/image | samples/s | s/image at n0=100, n=100000 (scaled) "
             "| process wall s (load included) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['n0']} + {r['n']} | {r['batch']} | {r['threads']} | {r['s_per_image']} | "
                     f"{r['samples_per_s']} | {r['s_per_image_at_n_100000']} | {r['process_wall_s']} |")
    (args.out / "cli-runtime.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'cli-runtime.md'} and .json")


if __name__ == "__main__":
    main()
