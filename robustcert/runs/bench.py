"""Benchmark of the certification loop against its limit and against the published loop.

Three loops run side by side, on the same device, model, input, sample counts (n0 selection + n
estimation samples per image) and batch size, with their repetitions interleaved (a, b, c, a, b,
c, ...) so that a busy machine slows all three alike; medians are reported:

(a) **limit**: the base model's forward pass alone on pre-made noisy batches of the sizes the
    certification uses (n0, then n in chunks of ``batch``), through the engine's own forward
    (same precision, layout and compiled model), synchronised once at the end; on CUDA, when (b)
    replays its steady-state batches as CUDA graphs, each forward pass of (a) is a CUDA graph too
    (the limit raised by the same technique, so that (b)/(a) still measures the loop's overhead);
(b) **robustcert**: ``Smooth.certify(x, n0, n, alpha, batch)`` with the engine options given;
(c) **baseline** written the way the published code samples (Cohen et al. 2019,
    locuslab/smoothing ``Smooth._sample_noise``): per batch ``x.repeat``, ``randn_like`` noise,
    ``argmax``, predictions copied to the host and counted there; always fp32, contiguous layout,
    no compilation (the published code has no such options);
(c2) the same published loop on (b)'s model with (b)'s options (layout, autocast, compiled
    model): it separates the loop's own cost from the gain of the engine options.

With ``--sound``, (b) also runs in the floating-point-sound mode (``sound_float=True`` on a grid
input) in the same interleaving: the sound mode's cost is the ratio of the two.

Samples/s count the n0 + n samples of one certification. (b)/(a) is the fraction of the hardware
limit the engine reaches; (b)/(c) the speed-up over the published loop. Ratios of the fastest
repetitions ("min" columns in the JSON) are given too: on a shared machine they are less
disturbed by other processes than medians. A second table measures
cross-input packing: PREDICT at n = 100 on many inputs, packed as the CLI packs them
(``robustcert.engine.inputs_per_call``) against one input per call. ``--sweep`` adds (b) under each engine
option (the measurements behind the defaults): per option the samples/s, the seconds per image at
n = 100000, and whether its votes are those of the default options (same seed: the same noise).

Run it with ``robustcert bench`` (``--quick`` for a short run); results go to
``robustcert-bench/bench-<device>-<options>.json`` and ``.md`` (``--out-dir``; the committed
figures in ``results/bench`` are replaced only with an explicit ``--out-dir results/bench``).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..engine import PRECISIONS, inputs_per_call, tune_cpu_allocator
from ..engine.device import first_line
from ..engine.step import capture
from ..errors import ModelOutputError
from ..files import check_derived_output, output_lock, register_recogniser, write_derived_file
from ..methods.cohen import Smooth
from ..models import build_model, load_model
from ..models.preprocess import with_preprocessing
from ..models.zoo import random_zoo_model
from ..stats import clopper_pearson_lower
from .provenance import device_name


@dataclass(frozen=True)
class Setting:
    """Sample counts, batch and repetitions of one model in one profile."""

    n0: int
    n: int
    batch: int
    reps: int


MODELS = {
    "digits": ((1, 8, 8), 10),
    "mnist_cnn": ((1, 28, 28), 10),
    "cifar_resnet110": ((3, 32, 32), 10),
    "resnet50": ((3, 224, 224), 1000),
}
#: Pretrained-model sources also benchmarked, with random weights, at their own input size and with their
#: preprocessing inside the model (``torchvision:resnet50``, ``timm:convnext_tiny``); resnet50's settings.
ZOO_PREFIXES = ("torchvision:", "timm:")
#: The input grid of the sound mode's input (``--sound``): the digits data are k/16, images k/255.
SOUND_LEVELS = {"digits": 16}


def unknown_models(names: list[str]) -> list[str]:
    """The names that are neither in :data:`MODELS` nor a torchvision:/timm: specification."""
    return [name for name in names if name not in MODELS and not name.startswith(ZOO_PREFIXES)]


def shape_and_classes(name: str) -> tuple[tuple[int, ...], int]:
    """(input shape, class count) of a benchmarked model (a zoo model built on the meta device to read them)."""
    if name in MODELS:
        return MODELS[name]
    with torch.device("meta"):
        found = random_zoo_model(name)
    return tuple(found.preprocessing.input_size), found.num_classes


def setting_for(profile: dict, name: str) -> "Setting":
    return profile.get(name, profile["resnet50"])  # zoo models are ImageNet-size

# (device type, quick?) -> model -> Setting. CPU sizes keep the full run to a few minutes on 2 cores.
PROFILES = {
    ("cpu", False): {"digits": Setting(100, 20_000, 1000, 7), "mnist_cnn": Setting(100, 4_000, 1000, 5),
                     "cifar_resnet110": Setting(100, 400, 250, 5), "resnet50": Setting(8, 24, 16, 3)},
    ("cpu", True): {"digits": Setting(100, 5_000, 1000, 3), "mnist_cnn": Setting(100, 1_000, 500, 3),
                    "cifar_resnet110": Setting(50, 150, 100, 3), "resnet50": Setting(4, 8, 8, 2)},
    ("cuda", False): {"digits": Setting(100, 100_000, 10_000, 5), "mnist_cnn": Setting(100, 100_000, 10_000, 5),
                      "cifar_resnet110": Setting(100, 100_000, 1000, 5), "resnet50": Setting(100, 10_000, 400, 3)},
    ("cuda", True): {"digits": Setting(100, 10_000, 10_000, 3), "mnist_cnn": Setting(100, 10_000, 10_000, 3),
                     "cifar_resnet110": Setting(100, 10_000, 1000, 3), "resnet50": Setting(100, 2_000, 400, 2)},
}
PACKING = {"cpu": {"digits": 200}, "cuda": {"digits": 2000, "cifar_resnet110": 200}}  # inputs for PREDICT n=100
SIGMA, ALPHA = 0.25, 0.001


def make_model(name: str, device: torch.device) -> torch.nn.Module:
    """The bundled digits CNN (trained), or a registered architecture or zoo model with random weights, the
    same at every call (seed 0; mnist_cnn: its batch-norm layers in eval mode with their initial statistics)."""
    if name == "digits":
        return load_model("bundled:digits-0.25").to(device).eval()
    with torch.random.fork_rng(devices=[]):  # the same weights every call: options compared on one model
        torch.manual_seed(0)
        if name.startswith(ZOO_PREFIXES):
            found = random_zoo_model(name)
            model = with_preprocessing(found.net, found.preprocessing)
        else:
            model = build_model(name)
    return model.to(device).eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- the three loops
def baseline_counts(model, x, num, sigma, batch, num_classes, device, engine=None) -> np.ndarray:
    """Votes the way the published code samples: repeat, randn_like, argmax, host-side count.

    With ``engine`` (loop c2) the noisy batch goes through the engine's forward (its layout,
    autocast and compiled model) instead of ``model``.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    remaining = num
    with torch.no_grad():
        while remaining > 0:
            size = min(batch, remaining)
            remaining -= size
            repeated = x.repeat((size, 1, 1, 1))
            noise = torch.randn_like(repeated, device=device) * sigma
            if engine is None:
                predictions = model(repeated + noise).argmax(1)
            else:
                noisy = engine.runner.layout(repeated + noise)
                predictions = engine.forward(noisy).argmax(1)
            counts += np.bincount(predictions.cpu().numpy(), minlength=num_classes)
    return counts


def baseline_certify(model, x, n0, n, sigma, alpha, batch, num_classes, device, engine=None):
    """(c): CERTIFY with the published sampling loop (same bound as robustcert)."""
    selection = baseline_counts(model, x, n0, sigma, batch, num_classes, device, engine)
    c_a = int(selection.argmax())
    counts = baseline_counts(model, x, n, sigma, batch, num_classes, device, engine)
    return c_a, clopper_pearson_lower(int(counts[c_a]), n, alpha)


def forward_limit(engine, batches: list[torch.Tensor], device) -> None:
    """(a): the engine's forward pass alone on pre-made batches."""
    with torch.inference_mode():
        for batch in batches:
            engine.forward(batch)
    synchronize(device)


class GraphedForwardLimit:
    """(a) on CUDA when (b) uses CUDA graphs: each pre-made batch's forward pass recorded once as a
    CUDA graph (:func:`robustcert.engine.step.capture`) and replayed. ``status`` says whether it
    could be captured (if not, (a) is the eager :func:`forward_limit`)."""

    def __init__(self, engine, batches: list[torch.Tensor], device):
        self.engine, self.batches, self.device = engine, batches, device
        self.graphs: dict[int, torch.cuda.CUDAGraph] | None = None
        self.status = "not captured yet"

    def __call__(self) -> None:
        if self.graphs is None:
            self.graphs = {}
            try:
                with torch.inference_mode():
                    for batch in self.batches:
                        if id(batch) not in self.graphs:
                            self.graphs[id(batch)] = capture(lambda b=batch: self.engine.forward(b), self.device)
                self.status = "CUDA graphs"
            except Exception as exc:  # (a) falls back to eager like the engine does
                self.graphs, self.status = {}, f"eager (capture failed: {first_line(exc)})"
        if not self.graphs:
            return forward_limit(self.engine, self.batches, self.device)
        for batch in self.batches:
            self.graphs[id(batch)].replay()
        synchronize(self.device)


def premade_batches(shape, setting: Setting, device, channels_last: bool) -> list[torch.Tensor]:
    """Noisy batches of the sizes one certification uses (distinct sizes allocated once)."""
    sizes = [setting.n0] + [min(setting.batch, setting.n - start) for start in range(0, setting.n, setting.batch)]
    made: dict[int, torch.Tensor] = {}
    for size in set(sizes):
        batch = (torch.rand((size, *shape), device=device) + SIGMA * torch.randn((size, *shape), device=device))
        made[size] = batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.ndim == 4 else batch
    return [made[size] for size in sizes]


#: ``wall``: elapsed time (what a user waits for). ``cpu``: this process's CPU time, for a CPU run
#: with one thread on a machine shared with other jobs: it counts the work done, not the waits
#: for a core (meaningless on CUDA, where the work is on the device).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def interleave(loops: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Seconds of each loop, repetitions interleaved (one warm-up call each first)."""
    for loop in loops.values():
        loop()
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(reps):
        for name, loop in loops.items():
            start = _clock()
            loop()
            seconds[name].append(_clock() - start)
    return seconds


def bench_model(name: str, setting: Setting, device: torch.device, precision: str, channels_last: bool | None,
                compile: bool, graphs: bool | None = None, sound: bool = False) -> dict:
    shape, num_classes = shape_and_classes(name)
    model = make_model(name, device)
    baseline_model = copy.deepcopy(model)  # (c) runs the model as published: fp32, contiguous, eager
    options = dict(device=device, input_shape=shape, precision=precision, channels_last=channels_last,
                   compile=compile, graphs=graphs)
    smoothed = Smooth(model, num_classes, SIGMA, **options)
    x = torch.rand(shape, device=device)
    x_batch = x.unsqueeze(0)
    engine = smoothed.engine(setting.batch)
    batches = premade_batches(shape, setting, device, engine.channels_last)
    graphed = device.type == "cuda" and graphs is not False and engine.stream == "counter"
    limit = GraphedForwardLimit(engine, batches, device) if graphed else \
        (lambda: forward_limit(engine, batches, device))
    loops = {
        "a": limit,
        "b": lambda: smoothed.certify(x, setting.n0, setting.n, ALPHA, setting.batch, seed=0),
        "c": lambda: baseline_certify(baseline_model, x_batch, setting.n0, setting.n, SIGMA, ALPHA, setting.batch,
                                      num_classes, device),
        "c2": lambda: baseline_certify(None, x_batch, setting.n0, setting.n, SIGMA, ALPHA, setting.batch,
                                       num_classes, device, engine),
    }
    if sound:
        levels = SOUND_LEVELS.get(name, 255)
        sound_smoothed = Smooth(model, num_classes, SIGMA, sound_float=True, quantization=levels, **options)
        x_grid = torch.round(x * levels) / levels
        loops["b_sound"] = lambda: sound_smoothed.certify(x_grid, setting.n0, setting.n, ALPHA, setting.batch, seed=0)
    seconds = interleave(loops, setting.reps)
    samples = setting.n0 + setting.n
    rate = {k: samples / statistics.median(v) for k, v in seconds.items()}
    fastest = {k: samples / min(v) for k, v in seconds.items()}
    result = {
        "model": name, "input_shape": list(shape), "n0": setting.n0, "n": setting.n, "batch": setting.batch,
        "reps": setting.reps, "samples_per_s": {k: round(v, 1) for k, v in rate.items()},
        "seconds": {k: [round(s, 4) for s in v] for k, v in seconds.items()},
        "b/a": round(rate["b"] / rate["a"], 3), "b/c": round(rate["b"] / rate["c"], 3),
        "b/c2": round(rate["b"] / rate["c2"], 3),
        "min": {"b/a": round(fastest["b"] / fastest["a"], 3), "b/c": round(fastest["b"] / fastest["c"], 3),
                "b/c2": round(fastest["b"] / fastest["c2"], 3)},
        "s_per_image_b": round(samples / rate["b"], 4),
        "s_per_image_b_at_n100000": round((100 + 100_000) / rate["b"], 3),
        "limit": limit.status if graphed else "eager forward passes",
        "engine": smoothed.engine_report(),
    }
    if sound:
        result["sound_over_standard_time"] = round(rate["b"] / rate["b_sound"], 3)
        result["sound_engine"] = sound_smoothed.engine_report()
    return result


def bench_packing(name: str, inputs: int, device, precision, channels_last, compile, reps: int,
                  n: int = 100, batch: int = 1000) -> dict:
    """PREDICT at small n on many inputs: packed like the CLI vs one input per call."""
    shape, num_classes = shape_and_classes(name)
    smoothed = Smooth(make_model(name, device), num_classes, SIGMA, device=device, input_shape=shape,
                      precision=precision, channels_last=channels_last, compile=compile)
    xs = torch.rand((inputs, *shape), device=device)
    per_call = inputs_per_call(n, batch)

    def packed():
        for start in range(0, inputs, per_call):
            smoothed.predict_batch(xs[start:start + per_call], n, ALPHA, batch, 0, list(range(start, start + per_call)))

    def single():
        for i in range(inputs):
            smoothed.predict_batch(xs[i:i + 1], n, ALPHA, batch, 0, [i])

    seconds = interleave({"packed": packed, "one_per_call": single}, reps)
    rate = {k: inputs / statistics.median(v) for k, v in seconds.items()}
    return {"model": name, "inputs": inputs, "n": n, "batch": batch, "inputs_per_call": per_call, "reps": reps,
            "inputs_per_s": {k: round(v, 1) for k, v in rate.items()},
            "speedup": round(rate["packed"] / rate["one_per_call"], 2)}


#: The sweep's options: (precision, channels_last, compile, graphs); graphs None is automatic (on for
#: CUDA), False the eager loop. The CUDA-only rows are skipped on CPU; compile rows with ``with_compile``.
SWEEP = [("fp32", False, False, None), ("fp32", True, False, None), ("bf16", False, False, None),
         ("bf16", True, False, None), ("fp16", True, False, None), ("fp32", None, True, None),
         ("fp32", None, False, False), ("bf16", True, True, None)]
CUDA_ONLY = {("fp32", None, False, False), ("bf16", True, True, None)}


def sweep_label(precision: str, channels_last: bool | None, compile: bool, graphs: bool | None) -> str:
    label = f"{precision}{'' if channels_last is None else ('+channels_last' if channels_last else '+contiguous')}"
    return label + ("+compile" if compile else "") + ("+no_graphs" if graphs is False else "")


def bench_sweep(name: str, setting: Setting, device, reps: int, with_compile: bool) -> dict:
    """(b) under each engine option, interleaved: the measurements behind the defaults. Each option's
    first certification (same seed, so the same noise) is compared with the default options' votes:
    ``votes_vs_default`` is the number of votes that differ (0: the same base classifier on these
    samples, e.g. compiled or graphed; bf16 is a different one)."""
    shape, num_classes = shape_and_classes(name)
    x = torch.rand(shape, device=device)
    loops, failed, counts, sweep_options = {}, {}, {}, []
    for precision, channels_last, compile, graphs in SWEEP:
        if (compile and not with_compile) or (device.type != "cuda" and (precision, channels_last, compile, graphs)
                                              in CUDA_ONLY):
            continue
        if compile:  # compile each model afresh: dynamo's shape history from other models would make it dynamic
            torch._dynamo.reset()
        smoothed = Smooth(make_model(name, device), num_classes, SIGMA, device=device, input_shape=shape,
                          precision=precision, channels_last=channels_last, compile=compile, graphs=graphs)
        label = sweep_label(precision, channels_last, compile, graphs)
        try:  # e.g. fp16 overflows to inf on deep random-weight networks: the engine refuses such outputs
            first = smoothed.certify(x, setting.n0, setting.n, ALPHA, setting.batch, seed=0)
        except ModelOutputError as exc:
            failed[label] = str(exc)
            continue
        counts[label] = np.asarray(first.counts)
        sweep_options.append((label, smoothed))
        loops[label] = (lambda s=smoothed: s.certify(x, setting.n0, setting.n, ALPHA, setting.batch, seed=0))
    seconds = interleave(loops, reps)
    samples = setting.n0 + setting.n
    rate = {k: samples / statistics.median(v) for k, v in seconds.items()}
    base = rate["fp32+contiguous"]
    default = _default_counts(name, x, setting, device, num_classes)
    return {"model": name, "n0": setting.n0, "n": setting.n, "batch": setting.batch, "reps": reps,
            "samples_per_s": {k: round(v, 1) for k, v in rate.items()},
            "vs_fp32_contiguous": {k: round(v / base, 2) for k, v in rate.items()},
            "s_per_image_at_n100000": {k: round((100 + 100_000) / v, 3) for k, v in rate.items()},
            "votes_vs_default": {k: int(np.abs(c - default).sum() // 2) for k, c in counts.items()},
            "engines": {label: smoothed.engine_report() for label, smoothed in sweep_options},
            "failed": failed}


def _default_counts(name, x, setting, device, num_classes) -> np.ndarray:
    """The votes of one certification with the default engine options (the sweep's reference)."""
    smoothed = Smooth(make_model(name, device), num_classes, SIGMA, device=device, input_shape=MODELS[name][0])
    return np.asarray(smoothed.certify(x, setting.n0, setting.n, ALPHA, setting.batch, seed=0).counts)


# --------------------------------------------------------------------------- the run
def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def options_label(precision: str, channels_last: bool | None, compile: bool, graphs: bool | None = None) -> str:
    layout = {None: "", True: "-cl", False: "-contiguous"}[channels_last]
    return f"{precision}{layout}{'-compile' if compile else ''}{'-no-graphs' if graphs is False else ''}"


def run_bench(models: list[str], device: torch.device, precision: str = "fp32", channels_last: bool | None = None,
              compile: bool = False, quick: bool = False, out_dir: Path | None = Path("robustcert-bench"),
              threads: int | None = None, sweep: bool = False, packing: bool = True, n: int | None = None,
              reps: int | None = None, clock: str = "wall", tune_allocator: bool = True, log=print,
              graphs: bool | None = None, sound: bool = False, sweep_compile: bool = False) -> dict:
    """Run the benchmark, print a table, write JSON + markdown into ``out_dir`` (None: don't write).

    The two files are checked before measuring (they replace only an earlier bench record,
    :func:`robustcert.files.check_derived_output`) and locked for the whole run (a second bench
    writing the same files is refused)."""
    with contextlib.ExitStack() as hold:
        return _run_bench(models, device, precision, channels_last, compile, quick, out_dir, threads, sweep,
                          packing, n, reps, clock, tune_allocator, log, graphs, sound, sweep_compile, hold)


def _run_bench(models, device, precision, channels_last, compile, quick, out_dir, threads, sweep, packing, n, reps,
               clock, tune_allocator, log, graphs, sound, sweep_compile, hold: contextlib.ExitStack) -> dict:
    global _clock
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}")
    if clock == "cpu" and device.type != "cpu":
        raise ValueError("--clock cpu measures CPU time: use it with --device cpu only")
    _clock = CLOCKS[clock]
    if threads:
        torch.set_num_threads(threads)
    allocator_tuned = tune_cpu_allocator() if device.type == "cpu" and tune_allocator else False
    profile = PROFILES[(device.type, quick)]
    record = {
        "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "options": {"precision": precision, "channels_last": channels_last, "compile": compile, "quick": quick,
                    "clock": clock, "cpu_allocator_tuned": allocator_tuned, "graphs": graphs, "sound": sound},
        "command": "robustcert " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name in ("robustcert", "__main__.py")
        else " ".join(sys.argv),
        "load_average_start": _load_average(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "models": [], "packing": [], "sweep": [],
    }
    targets = []
    if out_dir is not None:  # checked and locked before measuring: a refusal at the end would lose the run
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"bench-{slug(device.type if device.type == 'cpu' else record['device'])}-" \
               f"{options_label(precision, channels_last, compile, graphs)}{'-quick' if quick else ''}" \
               f"{'-sound' if sound else ''}" \
               f"{'-cpuclock' if clock == 'cpu' else ''}{'-malloc-default' if device.type == 'cpu' and not allocator_tuned else ''}"
        targets = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
        for target in targets:
            check_derived_output(target, [], "bench record", "bench")
            hold.enter_context(output_lock(target, "bench record"))
    settings = {}
    for name in models:
        setting = setting_for(profile, name)
        if n is not None:
            setting = Setting(setting.n0, n, setting.batch, setting.reps)
        if reps is not None:
            setting = Setting(setting.n0, setting.n, setting.batch, reps)
        settings[name] = setting
        result = bench_model(name, setting, device, precision, channels_last, compile, graphs, sound)
        record["models"].append(result)
        log(_model_line(result))
    if packing:
        for name, inputs in PACKING[device.type].items():
            if name in models:
                result = bench_packing(name, inputs // (4 if quick else 1), device, precision, channels_last,
                                       compile, 3 if quick else 5)
                record["packing"].append(result)
                log(f"packing {name}: PREDICT n={result['n']} on {result['inputs']} inputs, "
                    f"{result['inputs_per_call']} per call: {result['inputs_per_s']['packed']:.1f} inputs/s vs "
                    f"{result['inputs_per_s']['one_per_call']:.1f} one per call ({result['speedup']}x)")
    if sweep:
        for name in models:
            if device.type == "cpu" and (name.startswith(ZOO_PREFIXES) or (name == "resnet50" and not quick)):
                continue  # minutes per option on CPU at ImageNet sizes (resnet50 with --quick: a few)
            result = bench_sweep(name, settings[name], device, min(3, settings[name].reps),
                                 with_compile=sweep_compile or name == "digits")  # resnets: minutes to compile
            record["sweep"].append(result)
            log(f"sweep {name}: " + ", ".join(f"{k} {v}x" for k, v in result["vs_fp32_contiguous"].items())
                + "".join(f"; {k}: {v}" for k, v in result["failed"].items()))
    record["load_average_end"] = _load_average()
    if out_dir is not None:
        for target, text in zip(targets, (json.dumps(record, indent=2) + "\n", markdown(record))):
            write_derived_file(target, text, [], "bench record", kind="bench")
        record["written"] = [str(target) for target in targets]
        log(f"wrote {targets[0].with_suffix('')}.json and .md")
    return record


def is_bench_record(path: Path) -> bool:
    """A JSON record or markdown report that run_bench wrote (also before folders had a record)."""
    if path.suffix == ".json":
        record = json.loads(path.read_text(encoding="utf-8"))
        return isinstance(record, dict) and {"device", "models", "options", "torch"} <= set(record)
    with open(path, encoding="utf-8") as handle:
        return handle.readline().startswith("# Certification loop benchmark: ")


register_recogniser("bench", is_bench_record)


def _load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _model_line(r: dict) -> str:
    rate = r["samples_per_s"]
    return (f"{r['model']:>16} n0={r['n0']} n={r['n']} batch={r['batch']}: (a) limit {rate['a']:.4g}/s  "
            f"(b) robustcert {rate['b']:.4g}/s  (c) baseline {rate['c']:.4g}/s  "
            f"(c2) same options {rate['c2']:.4g}/s  (b)/(a) {r['b/a']:.3f} [min {r['min']['b/a']:.3f}]  "
            f"(b)/(c) {r['b/c']:.2f}  (b)/(c2) {r['b/c2']:.2f}  {r['s_per_image_b']:.3g} s/image"
            + (f"  sound/standard time {r['sound_over_standard_time']:.3f}" if "sound_over_standard_time" in r else ""))


def markdown(record: dict) -> str:
    """The record as a markdown report."""
    options = record["options"]
    lines = [
        f"# Certification loop benchmark: {record['device']}",
        "",
        f"Command: `{record['command']}`  ",
        f"torch {record['torch']}, {record['threads']} threads, precision {options['precision']}, "
        f"channels_last {options['channels_last'] if options['channels_last'] is not None else 'default'}, "
        f"compile {options['compile']}, CPU allocator tuned {options.get('cpu_allocator_tuned')}, "
        f"clock {options['clock']} "
        f"({'process CPU time' if options['clock'] == 'cpu' else 'elapsed time'}); "
        f"load average {record['load_average_start']} -> {record['load_average_end']}.",
        "",
        "(a) forward pass alone on pre-made batches (the limit), (b) robustcert `Smooth.certify`, "
        "(c) the published sampling loop (repeat, randn_like, argmax, host-side count; fp32, contiguous), "
        "(c2) the published loop with (b)'s model and options. "
        "Samples/s over the n0 + n samples of one certification; medians of interleaved repetitions "
        "(in brackets: the ratio of the fastest repetitions, less disturbed by other processes).",
        "",
        "| model | n0 | n | batch | (a) limit /s | (b) robustcert /s | (c) baseline /s | (c2) baseline, same options /s "
        "| (b)/(a) | (b)/(c) | (b)/(c2) | s/image (b) | s/image (b) at n=100000 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["models"]:
        rate = r["samples_per_s"]
        lines.append(f"| {r['model']} | {r['n0']} | {r['n']} | {r['batch']} | {rate['a']:.5g} | {rate['b']:.5g} | "
                     f"{rate['c']:.5g} | {rate['c2']:.5g} | {r['b/a']:.3f} [{r['min']['b/a']:.3f}] | "
                     f"{r['b/c']:.2f} [{r['min']['b/c']:.2f}] | {r['b/c2']:.2f} [{r['min']['b/c2']:.2f}] | "
                     f"{r['s_per_image_b']:.4g} | {r['s_per_image_b_at_n100000']:.4g} |")
    lines.append("")
    for r in record["models"]:
        engine = r.get("engine", {})
        lines.append(f"- {r['model']}: noise stream {engine.get('noise_stream', 'torch.Generator per input')}; "
                     f"CUDA graphs {engine.get('cuda_graphs', 'off')}; (a) {r.get('limit', 'eager forward passes')}"
                     + (f"; sound mode / standard mode time {r['sound_over_standard_time']:.3f}"
                        if "sound_over_standard_time" in r else ""))
    if record["packing"]:
        lines += ["", "Cross-input packing: PREDICT (n = 100 samples per input) over many inputs, inputs packed "
                  "into shared batches as the CLI does, against one input per call.", "",
                  "| model | inputs | batch | inputs/call | packed inputs/s | one per call inputs/s | speed-up |",
                  "|---|---|---|---|---|---|---|"]
        for r in record["packing"]:
            lines.append(f"| {r['model']} | {r['inputs']} | {r['batch']} | {r['inputs_per_call']} | "
                         f"{r['inputs_per_s']['packed']:.5g} | {r['inputs_per_s']['one_per_call']:.5g} | "
                         f"{r['speedup']:.2f} |")
    if record["sweep"]:
        lines += ["", "Engine options, (b) samples/s relative to fp32 + contiguous layout "
                  "(fp32 with no layout given = the measured default layout):", ""]
        for r in record["sweep"]:
            votes = r.get("votes_vs_default", {})
            per_image = r.get("s_per_image_at_n100000", {})
            lines.append(f"- {r['model']} (n0={r['n0']}, n={r['n']}, batch {r['batch']}): " +
                         ", ".join(f"{k} {v}x ({r['samples_per_s'][k]:.4g}/s"
                                   + (f", {per_image[k]:.3g} s/image at n=1e5" if k in per_image else "")
                                   + (f", votes {'equal to' if votes[k] == 0 else f'{votes[k]} different from'}"
                                      " the default" if k in votes else "") + ")"
                                   for k, v in r["vs_fp32_contiguous"].items())
                         + "".join(f"; {k}: {v}" for k, v in r.get("failed", {}).items()))
    return "\n".join(lines) + "\n"
