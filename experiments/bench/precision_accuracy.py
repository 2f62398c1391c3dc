"""Accuracy of the base classifier under reduced precision, on clean and on noisy inputs.

--precision bf16/fp16 (autocast) makes a *different* base classifier: certificates stay sound,
but they certify that classifier. This script reports, beside the speed figures of
``robustcert bench``, how different it is:

* trained bundled digits CNNs (sigma 0.12 / 0.25 / 0.50) on the 360 digits test images: accuracy
  at each precision on clean inputs and on noisy inputs (``--draws`` Gaussian draws per image at
  the model's sigma), and the share of noisy inputs on which the vote differs from fp32;
* cifar_resnet110 (32x32) and resnet50 (224x224) with random weights on random inputs (no trained
  weights can be downloaded here): only the agreement with fp32, clean and noisy;
* optionally a real checkpoint and dataset (``--model SPEC --data SPEC --sigma S``);
* with ``--zoo torchvision:resnet50,timm:convnext_tiny,...``: only those pretrained-model
  architectures, random weights, their preprocessing inside the model, on random 224x224 inputs
  (written as ``precision-accuracy-<device>-zoo``).

Each forward pass goes through MonteCarloEngine.forward, i.e. the engine's own autocast and
memory layout (channels-last as in the engine's default for that precision and device).

    python experiments/bench/precision_accuracy.py --device cuda              # GPU check (gpu_check.sh)
    python experiments/bench/precision_accuracy.py --device cpu --quick       # CPU dry run
    python experiments/bench/precision_accuracy.py --device cpu --zoo torchvision:resnet50,timm:vit_small_patch16_224
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from robustcert.runs.bench import slug
from robustcert.runs.provenance import device_name
from robustcert.data import load_dataset
from robustcert.engine import MonteCarloEngine
from robustcert.models import build_model, load_checkpoint
from robustcert.models.preprocess import with_preprocessing
from robustcert.models.zoo import random_zoo_model

PRECISIONS = ("fp32", "bf16", "fp16")


def predictions(model, xs, sigma, precision, device, draws, batch, seed):
    """Top-1 on clean inputs (N,), on ``draws`` noisy copies of each (N, draws), and the share of
    outputs with NaN/inf (the engine would refuse to certify with such outputs)."""
    engine = MonteCarloEngine(model, sigma, batch, device, precision)
    generator = torch.Generator(device=device).manual_seed(seed)
    clean, noisy, nonfinite = [], [], []
    with torch.inference_mode():
        for start in range(0, len(xs), batch):
            outputs = engine.forward(xs[start:start + batch].to(device))
            clean.append(outputs.argmax(1).cpu())
            nonfinite.append((~torch.isfinite(outputs).all(1)).cpu())
        for start in range(0, len(xs), max(1, batch // draws)):
            chunk = xs[start:start + max(1, batch // draws)].to(device)
            repeated = chunk.repeat_interleave(draws, 0)
            noise = torch.randn(repeated.shape, device=device, generator=generator) * sigma
            outputs = engine.forward(repeated + noise)
            noisy.append(outputs.argmax(1).cpu().reshape(len(chunk), draws))
            nonfinite.append((~torch.isfinite(outputs).all(1)).cpu())
    return torch.cat(clean).numpy(), torch.cat(noisy).numpy(), float(torch.cat(nonfinite).float().mean())


def evaluate(name, model_factory, xs, labels, sigma, device, draws, batch, precisions) -> dict:
    rows = {}
    reference = None
    for precision in precisions:
        clean, noisy, nonfinite = predictions(model_factory(), xs, sigma, precision, device, draws, batch, seed=0)
        if reference is None:
            reference = (clean, noisy)
        row = {"agreement_clean_vs_fp32": float(np.mean(clean == reference[0])),
               "agreement_noisy_vs_fp32": float(np.mean(noisy == reference[1])), "nonfinite_outputs": nonfinite}
        if labels is not None:
            row["accuracy_clean"] = float(np.mean(clean == labels))
            row["accuracy_noisy"] = float(np.mean(noisy == labels[:, None]))
        rows[precision] = row
    return {"model": name, "inputs": int(len(xs)), "sigma": sigma, "draws": draws, "precisions": rows}


def supported(precision: str, device: torch.device) -> bool:
    if precision == "fp32":
        return True
    try:
        with torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision]):
            torch.nn.Linear(2, 2).to(device)(torch.zeros(1, 2, device=device))
        return True
    except (RuntimeError, AssertionError):
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer images and draws (CPU dry run)")
    parser.add_argument("--draws", type=int, default=None)
    parser.add_argument("--model", default=None, help="optional real checkpoint (with --data and --sigma)")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--data", default=None)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--max", type=int, default=500, help="images of --data (every len/max-th)")
    parser.add_argument("--zoo", default=None, help="comma-separated torchvision:NAME / timm:NAME (random weights) "
                        "to evaluate instead of the default models")
    parser.add_argument("--inputs", type=int, default=32, help="random inputs per --zoo model")
    parser.add_argument("--out-dir", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    draws = args.draws or (4 if args.quick else 32)
    precisions = [p for p in PRECISIONS if supported(p, device)]
    results = []

    if args.zoo:
        for spec in [name.strip() for name in args.zoo.split(",") if name.strip()]:
            def factory(spec=spec):  # the same random weights for every precision
                torch.manual_seed(0)
                found = random_zoo_model(spec)
                return with_preprocessing(found.net, found.preprocessing).to(device).eval()
            inputs = torch.rand((args.inputs, 3, 224, 224))
            results.append(evaluate(f"{spec} (random weights)", factory, inputs, None, 0.25, device,
                                    max(2, draws // 8), 16, precisions))
            print(json.dumps(results[-1]), flush=True)
        write(args, device, results, argv, suffix="-zoo")
        return

    digits = load_dataset("digits", "test")
    count = 60 if args.quick else len(digits)
    xs = torch.stack([digits[i][0] for i in range(count)])
    labels = np.array([digits[i][1] for i in range(count)])
    for sigma_name, sigma in (("0.12", 0.12), ("0.25", 0.25), ("0.50", 0.5)):
        factory = lambda s=sigma_name: load_checkpoint(f"bundled:digits-{s}", device=device).module  # noqa: E731
        results.append(evaluate(f"digits-{sigma_name}", factory, xs, labels, sigma, device, draws, 2048, precisions))
        print(json.dumps(results[-1]))
    for arch, shape, count, batch in (("cifar_resnet110", (3, 32, 32), 200, 400), ("resnet50", (3, 224, 224), 32, 64)):
        if args.quick:
            count, batch = max(4, count // 25), 16
        inputs = torch.rand((count, *shape))
        def factory(a=arch):  # the same random weights for every precision
            torch.manual_seed(0)
            return build_model(a).to(device).eval()
        results.append(evaluate(f"{arch} (random weights)", factory, inputs, None, 0.25, device,
                                max(2, draws // 8), batch, precisions))
        print(json.dumps(results[-1]))
    if args.model:
        dataset = load_dataset(args.data or "digits", "test")
        step = max(1, len(dataset) // args.max)
        items = [dataset[i] for i in range(0, len(dataset), step)][:args.max]
        xs = torch.stack([x for x, _ in items])
        labels = np.array([y for _, y in items])
        factory = lambda: load_checkpoint(args.model, arch=args.arch, device=device).module  # noqa: E731
        results.append(evaluate(args.model, factory, xs, labels, args.sigma, device, draws, 256, precisions))
        print(json.dumps(results[-1]))

    write(args, device, results, argv)


def write(args, device, results, argv, suffix: str = "") -> None:
    record = {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
              "command": "python experiments/bench/precision_accuracy.py " + " ".join(argv or __import__("sys").argv[1:]),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"precision-accuracy-{slug(device.type if device.type == 'cpu' else record['device'])}" \
           f"{'-quick' if args.quick else ''}{suffix}"
    (args.out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out_dir / f"{stem}.md").write_text(markdown(record))
    print(f"wrote {args.out_dir / stem}.json and .md")


def markdown(record: dict) -> str:
    lines = [f"# Base-classifier accuracy by precision: {record['device']}", "",
             f"Command: `{record['command']}`; torch {record['torch']}.", "",
             "Noisy = Gaussian noise at the model's sigma, several draws per input; agreement = share of "
             "(noisy) inputs whose top-1 equals the fp32 top-1. Random-weight models have no accuracy.", "",
             "| model | inputs x draws | sigma | precision | clean acc. | noisy acc. | agree clean | agree noisy "
             "| NaN/inf outputs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in record["results"]:
        for precision, row in r["precisions"].items():
            acc = lambda key: f"{row[key]:.4f}" if key in row else "-"  # noqa: E731
            lines.append(f"| {r['model']} | {r['inputs']} x {r['draws']} | {r['sigma']} | {precision} | "
                         f"{acc('accuracy_clean')} | {acc('accuracy_noisy')} | {row['agreement_clean_vs_fp32']:.4f} | "
                         f"{row['agreement_noisy_vs_fp32']:.4f} | {row['nonfinite_outputs']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
