"""CUDA checks of the threat-model samplers (Laplace, uniform, randomized ablation); needs a GPU.

The CPU test suite (tests/test_threat_models.py) checks the laws, the ablation encoding and the
coverage on CPU generators; this runs the same kinds of checks with CUDA generators and buffers,
and times each noise's sampling against Gaussian noise's:

1. the law of 10^6 Laplace / uniform draws (Kolmogorov-Smirnov) and their standard deviation;
2. randomized ablation: every 2-subset of 6 pixels equally likely and every sample encoded exactly
   ((x, 1 - x) where kept, zeros elsewhere), channels 1 and 3, contiguous and channels-last;
3. the l1 certificate of f(x) = 1[x_0 > 0] at x_0 = a, n = 10^6: at most a, close to a;
4. coverage at alpha = 0.05 over 20000 certifications (n = 500), and with a loosened formula;
5. sampling time per sample (CUDA events, medians of interleaved repetitions) of each noise,
   perturb only, for CIFAR-10 (3x32x32) and ImageNet (3x224x224) chunks.

    python experiments/threat-models/gpu_threat_models_check.py OUT.json
"""
from __future__ import annotations

import dataclasses
import json
import math
import argparse
import statistics

import numpy as np
import torch
from scipy import stats

import robustcert.methods.noises as noises
from robustcert import AblationSmooth, Smooth
from robustcert.engine import AblationNoise, GaussianNoise, LaplaceNoise, UniformNoise
from robustcert.radius import laplace_l1_radius, uniform_l1_radius

from robustcert.models.closed_form import SubsetIndex  # the model of the CPU test (test_threat_models), on CUDA here

DEVICE = torch.device("cuda")


class Threshold(torch.nn.Module):
    def forward(self, x):
        score = x[:, 0]
        return torch.stack([-score, score], dim=1)


def laws(report):
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    for noise, law in ((LaplaceNoise(0.5), stats.laplace(scale=0.5 / math.sqrt(2))),
                       (UniformNoise(0.5), stats.uniform(-0.5 * math.sqrt(3), math.sqrt(3)))):
        out = torch.empty(10 ** 6, device=DEVICE)
        noise.draw(out, generator)
        values = out.double().cpu().numpy()
        report[f"law_{noise.name}"] = {"ks_pvalue": float(stats.kstest(values, law.cdf).pvalue),
                                       "std": float(values.std()), "finite": bool(np.isfinite(values).all())}


def ablation_subsets(report):
    for channels, channels_last in ((1, False), (1, True), (3, False), (3, True)):
        clean = (torch.rand(channels, 2, 3, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1).to(DEVICE)
        model = SubsetIndex(clean, 2)
        smoothed = AblationSmooth(model, 16, keep=2, channels_last=channels_last, device=DEVICE)
        counts = np.array(smoothed.certify(clean, n0=10, n=150_000, alpha=0.01, batch_size=50_000, seed=5).counts)
        report[f"ablation_C{channels}_{'channels_last' if channels_last else 'contiguous'}"] = {
            "bad_encodings": int(counts[15]), "chi2_pvalue": float(stats.chisquare(counts[:15]).pvalue),
            "min_max_share": [float(counts[:15].min() / counts.sum()), float(counts[:15].max() / counts.sum())]}


def threshold_certificates(report):
    sigma, a = 0.5, 0.4
    for noise in ("laplace", "uniform"):
        smoothed = Smooth(Threshold(), 2, sigma=sigma, noise=noise, device=DEVICE)
        cert = smoothed.certify(torch.tensor([a, 0.3, -0.2]), n0=100, n=10 ** 6, alpha=0.001,
                                batch_size=200_000, seed=2)
        report[f"threshold_{noise}"] = {"radius": cert.radius, "exact": a, "ratio": cert.radius / a,
                                        "prediction": cert.prediction}


def coverage(report):
    sigma, alpha, reps, n = 0.5, 0.05, 20_000, 500
    loosened = {"uniform": lambda s, p: 2 * s * (2 * p - 1) if p > 0.5 else 0.0,
                "laplace": lambda s, p: -s * math.log(2 * (1 - p)) if p > 0.5 else 0.0}
    for noise in ("laplace", "uniform"):
        a = uniform_l1_radius(sigma, 0.8) if noise == "uniform" else laplace_l1_radius(sigma, 0.8)
        xs = torch.tensor([[a, 0.0, 0.0]]).repeat(reps, 1)
        rates, sound = {}, noises.NOISES[noise]
        for name, model in (("sound", sound), ("loosened", dataclasses.replace(sound, radius=loosened[noise]))):
            noises.NOISES[noise] = model
            certs = Smooth(Threshold(), 2, sigma=sigma, noise=noise, device=DEVICE).certify_batch(
                xs, n0=30, n=n, alpha=alpha, batch_size=500_000, seed=13)
            rates[name] = float(np.mean([c.prediction != -1 and (c.prediction != 1 or c.radius > a) for c in certs]))
        noises.NOISES[noise] = sound
        report[f"coverage_{noise}"] = {"alpha": alpha, "reps": reps, "n": n, **rates}


def timing(report, reps=20):
    for name, shape, count in (("cifar10", (3, 32, 32), 1000), ("imagenet", (3, 224, 224), 256)):
        clean = torch.rand(math.prod(shape), device=DEVICE)
        samplers = {"gaussian": GaussianNoise(0.5), "laplace": LaplaceNoise(0.5), "uniform": UniformNoise(0.5),
                    "ablation": AblationNoise(75 if name == "cifar10" else 1000).laid_out(shape, False)}
        buffers = {k: torch.empty(count, math.prod(s.sample_shape(shape)), device=DEVICE) for k, s in samplers.items()}
        generator = torch.Generator(device=DEVICE).manual_seed(0)
        times = {k: [] for k in samplers}
        for _ in range(reps + 3):
            for key, sampler in samplers.items():  # interleaved
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                sampler.perturb(buffers[key], clean, generator)
                end.record()
                torch.cuda.synchronize()
                times[key].append(start.elapsed_time(end) / count * 1e3)  # microseconds per sample
        medians = {k: statistics.median(v[3:]) for k, v in times.items()}
        report[f"timing_us_per_sample_{name}"] = {**medians, **{f"{k}_vs_gaussian": medians[k] / medians["gaussian"]
                                                               for k in medians}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default=None, help="also write the JSON report to this file")
    args = parser.parse_args()
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0)}
    for check in (laws, ablation_subsets, threshold_certificates, coverage, timing):
        check(report)
        print(check.__name__, "done", flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
