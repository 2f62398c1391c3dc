"""Train a DDPM noise predictor for denoised smoothing: what ``robustcert train-denoiser`` calls.

    from robustcert.runs.denoiser import train_denoiser
    result = train_denoiser("fashion-mnist:/usr/share/datasets/fashion-mnist", "my-ddpm", sigmas=(0.25, 0.5),
                            steps=4000)
    # then: robustcert certify --denoiser my-ddpm --model clean.pt --sigma 0.5 ...

The objective is DDPM's (Ho et al. 2020): with x_0 a training image mapped to [-1, 1], t a
timestep, eps ~ N(0, I) and x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, minimise
|| eps_theta(x_t, t) - eps ||^2 (linear schedule, T = 1000).

Which timesteps. One-shot denoised smoothing (Carlini et al. 2023, :mod:`robustcert.methods.diffusion`)
queries the model at one timestep only, t* of the certification sigma
((1 - abar_t*) / abar_t* >= 4 sigma^2), so a model that serves only denoised smoothing needs to
be good only there. ``timesteps="around"`` (the default) draws t uniformly from
[t*(1 - window), t*(1 + window)] for each certification sigma (one sigma chosen uniformly per
sample): all of the model's capacity and steps go to the noise levels it will be asked about,
with a margin. ``timesteps="full"`` draws t from all T timesteps (a general-purpose DDPM, the
one multi-step DDIM denoising from t* down to 0, ``--denoiser-steps``, needs). Any choice keeps
certificates sound: the denoiser is a fixed function of x + delta; only accuracy depends on it.

The saved model is an exponential moving average of the weights (decay ``ema``, warmed up as
min(ema, (1 + s) / (10 + s)) at step s), the usual practice for diffusion models.

Files: ``out`` is a folder in the layout ``--denoiser DIR`` reads (``DDPMPipeline.save_pretrained``:
``unet/``, ``scheduler/``, ``model_index.json``), rewritten every ``save_every`` steps, with the
record ``training.json`` (command, parameters, data, and per save the mean training loss and the
denoising error on validation images at each sigma's t*). While training, ``training_state.pt``
(weights, moving average, optimizer, step; written atomically) lets ``resume=True`` continue an
interrupted run; it is removed when the run finishes. Every step's images, timesteps and noise
come from a generator seeded by (seed, step) (:func:`robustcert.engine.derive_seed`), so a
resumed run trains the same model as an uninterrupted one (same device and threads).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from ..data import CertDataset, load_dataset
from ..engine import as_device, configure_cpu, input_generator
from ..errors import CheckpointError, InvalidArgumentError, RunError, check_count, check_sigma, note_interruption
from ..methods.diffusion import (
    DEFAULT_CHANNELS, DiffusionDenoiser, as_alphas_cumprod, import_diffusers, new_ddpm, select_timestep,
)
from ..files import atomic_write, ending_fields, output_lock, timestamp, write_json_atomically
from ..models.checkpoint import torch_load_safely
from .dataset import as_dataset
from .progress import progress_bar
from .provenance import device_name, package_versions, python_command

TIMESTEP_MODES = ("around", "full")
RECORD_NAME = "training.json"
STATE_NAME = "training_state.pt"


@dataclass
class DenoiserTrainingResult:
    """What :func:`train_denoiser` returns: the noise predictor (moving average, eval mode), its
    scheduler, one history row per save, the folder written (or None) and the parameters."""

    unet: torch.nn.Module
    scheduler: object
    history: pd.DataFrame
    out: Path | None
    parameters: dict


# ----------------------------------------------------------------------------- timesteps
def training_ranges(alphas_cumprod, sigmas: Sequence[float], mode: str = "around",
                    window: float = 0.25) -> list[tuple[int, int]]:
    """The timestep ranges [lo, hi] (inclusive) training draws from (module docstring).

    ``around``: one range [floor(t*(1 - window)), ceil(t*(1 + window))] per sigma, clipped to
    [0, T - 1]; ``full``: [0, T - 1].
    """
    last = len(as_alphas_cumprod(alphas_cumprod)) - 1
    if mode == "full":
        return [(0, last)]
    if mode != "around":
        raise InvalidArgumentError(f"timesteps must be one of {', '.join(TIMESTEP_MODES)}, got {mode!r}")
    if isinstance(window, bool) or not (isinstance(window, (int, float)) and 0 <= window < 1):
        raise InvalidArgumentError(f"window must be a number in [0, 1), got {window!r}")
    ranges = []
    for sigma in sigmas:
        t_star = select_timestep(alphas_cumprod, sigma)
        ranges.append((max(0, math.floor(t_star * (1 - window))), min(last, math.ceil(t_star * (1 + window)))))
    return ranges


def draw_timesteps(ranges: Sequence[tuple[int, int]], count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` timesteps: a range chosen uniformly for each, then t uniform in it."""
    which = torch.randint(len(ranges), (count,), generator=generator)
    lows = torch.tensor([lo for lo, _ in ranges])[which]
    widths = torch.tensor([hi - lo + 1 for lo, hi in ranges])[which]
    return lows + (torch.rand(count, generator=generator) * widths).long().clamp(max=widths - 1)


# ----------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def denoising_errors(unet, scheduler, images: torch.Tensor, sigmas: Sequence[float], seed: int = 0) -> dict:
    """Per sigma: t*, and the mean squared error (pixel units, images in [0, 1]) of the noisy images
    clipped to [0, 1] and of the one-shot denoiser's output, on the same noise draws.

    The noise of each sigma comes from its own CPU generator (seed, sigma), so models are compared
    on the same draws, on any device."""
    report = {}
    for sigma in sigmas:
        generator = torch.Generator().manual_seed(seed * 1000 + round(1000 * float(sigma)))
        noisy = images + float(sigma) * torch.randn(images.shape, generator=generator).to(images.device)
        denoiser = DiffusionDenoiser(unet, scheduler, sigma)
        denoised = torch.cat([denoiser(part) for part in noisy.split(500)])
        report[str(sigma)] = {"t_star": denoiser.t_star,
                              "mse_noisy_clipped": round(F.mse_loss(noisy.clamp(0, 1), images).item(), 6),
                              "mse_denoised": round(F.mse_loss(denoised, images).item(), 6)}
    return report


# ----------------------------------------------------------------------------- parameters
def denoiser_parameters(*, sigmas, timesteps, window, channels, steps, batch_size, lr, ema, seed, save_every,
                        validation_images) -> dict:
    """The parameters that determine the trained model (checked; compared on resume)."""
    if isinstance(sigmas, (int, float)):
        sigmas = (sigmas,)
    sigmas = sorted({check_sigma(s) for s in sigmas})
    if not sigmas:
        raise InvalidArgumentError("give at least one sigma to train the denoiser for")
    if timesteps not in TIMESTEP_MODES:
        raise InvalidArgumentError(f"timesteps must be one of {', '.join(TIMESTEP_MODES)}, got {timesteps!r}")
    if isinstance(ema, bool) or not (isinstance(ema, (int, float)) and 0 <= ema < 1):
        raise InvalidArgumentError(f"ema must be a number in [0, 1), got {ema!r}")
    return {"objective": "DDPM epsilon prediction (Ho et al. 2020), linear schedule T=1000",
            "sigmas": sigmas, "timesteps": timesteps, "window": float(window) if timesteps == "around" else None,
            "channels": [check_count(c, "channels") for c in channels], "steps": check_count(steps, "steps"),
            "batch": check_count(batch_size, "batch_size"), "optimizer": "adamw", "lr": check_sigma(lr, "lr"),
            "lr_schedule": "linear warm-up over min(100, steps/10) steps, then cosine to 0",
            "ema": float(ema), "seed": check_count(seed, "seed", minimum=0),
            "save_every": check_count(save_every, "save_every"),
            "validation_images": check_count(validation_images, "validation_images", minimum=0)}


def learning_rate_factor(step: int, steps: int) -> float:
    """Linear warm-up over min(100, steps/10) steps, then cosine decay to 0 at ``steps``."""
    warmup = max(1, min(100, steps // 10))
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))


# ----------------------------------------------------------------------------- the run
class _DenoiserTrainer:
    """One training run: model, moving average, optimizer, the step loop and the files."""

    def __init__(self, train: CertDataset, validation: torch.Tensor | None, parameters: dict, device: torch.device,
                 out: Path | None, record: dict):
        self.train, self.validation, self.p, self.device, self.out, self.record = (
            train, validation, parameters, device, out, record)
        self.unet, self.scheduler = new_ddpm(train.input_shape, parameters["channels"], parameters["seed"])
        self.unet.to(device)
        self.average = new_ddpm(train.input_shape, parameters["channels"], parameters["seed"])[0].to(device)
        self.average.load_state_dict(self.unet.state_dict())
        self.average.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=parameters["lr"], weight_decay=0.0)
        self.abar = self.scheduler.alphas_cumprod.to(device)
        self.ranges = training_ranges(self.scheduler.alphas_cumprod, parameters["sigmas"], parameters["timesteps"],
                                      parameters["window"] or 0.0)
        self.record["timestep_ranges"] = [list(r) for r in self.ranges]
        self.history: list[dict] = list(record.get("history", []))
        self.step = 0
        self.losses: list[float] = []

    def step_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step ``step``'s (x_0 in [-1, 1], t, eps), from a generator seeded by (seed, step)."""
        generator = input_generator(torch.device("cpu"), self.p["seed"], step, "denoiser")
        indices = torch.randint(len(self.train), (self.p["batch"],), generator=generator)
        images = self.train.batch(indices)[0].float() * 2 - 1
        t = draw_timesteps(self.ranges, len(indices), generator)
        eps = torch.randn(images.shape, generator=generator)
        return images.to(self.device), t.to(self.device), eps.to(self.device)

    def train_step(self, step: int) -> float:
        x0, t, eps = self.step_batch(step)
        abar = self.abar[t].view(-1, *([1] * (x0.ndim - 1)))
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        for group in self.optimizer.param_groups:
            group["lr"] = self.p["lr"] * learning_rate_factor(step, self.p["steps"])
        loss = F.mse_loss(self.unet(x_t, t).sample, eps)
        if not torch.isfinite(loss):
            raise RunError(f"the denoiser's training loss became {loss.item()} at step {step + 1}: lower the "
                           f"learning rate (lr={self.p['lr']:g})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        decay = min(self.p["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for mean, value in zip(self.average.parameters(), self.unet.parameters()):
                mean.lerp_(value, 1 - decay)
        return loss.item()

    def evaluate(self) -> dict:
        if self.validation is None or len(self.validation) == 0:
            return {}
        self.average.eval()
        return denoising_errors(self.average, self.scheduler, self.validation.to(self.device), self.p["sigmas"])

    # ------------------------------------------------------------------ files
    def save(self, cpu_seconds: float, seconds: float) -> None:
        row = {"step": self.step, "loss": sum(self.losses) / max(len(self.losses), 1),
               "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "finished": timestamp()}
        row["validation"] = self.evaluate()
        self.history.append(row)
        self.losses = []
        if self.out is None:
            return
        diffusers = import_diffusers()
        diffusers.DDPMPipeline(unet=self.average, scheduler=self.scheduler).save_pretrained(self.out)
        state = {"step": self.step, "unet": self.unet.state_dict(), "average": self.average.state_dict(),
                 "optimizer": self.optimizer.state_dict()}
        atomic_write(self.out / STATE_NAME, lambda temporary: torch.save(state, temporary))
        self.write_record()

    def write_record(self) -> None:
        self.record["history"] = self.history
        self.record["runs"][-1]["steps_done"] = self.step
        write_json_atomically(self.out / RECORD_NAME, self.record)

    def resume(self) -> None:
        state = torch_load_safely(self.out / STATE_NAME, trust_checkpoint=False)
        try:
            self.unet.load_state_dict(state["unet"])
            self.average.load_state_dict(state["average"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"cannot resume {self.out}: its {STATE_NAME} does not fit this model "
                                  f"({' '.join(str(exc).split())[:200]})") from None
        self.history = [row for row in self.history if row["step"] <= self.step]

    def run(self, progress: bool, log: Callable[[str], None] | None) -> None:
        steps, every = self.p["steps"], self.p["save_every"]
        self.unet.train()
        started, cpu_started = time.perf_counter(), time.process_time()
        with progress_bar(steps, progress, unit="step", initial=self.step) as bar:
            while self.step < steps:
                self.losses.append(self.train_step(self.step))
                self.step += 1
                bar.update(1)
                if self.step % every == 0 or self.step == steps:
                    self.save(time.process_time() - cpu_started, time.perf_counter() - started)
                    if log is not None:
                        log(save_line(self.history[-1], steps))


def save_line(row: dict, steps: int) -> str:
    """One line per save, for the console."""
    parts = [f"step {row['step']}/{steps}", f"loss {row['loss']:.4f}"]
    for sigma, errors in row.get("validation", {}).items():
        parts.append(f"val mse@{sigma} {errors['mse_denoised']:.4f} (noisy {errors['mse_noisy_clipped']:.4f})")
    parts.append(f"{row['cpu_seconds']:.0f} s cpu")
    return "  ".join(parts)


def _check_folder(out: Path, resume: bool) -> bool:
    """Whether ``out`` holds an interrupted run to resume; refuse to write over anything else."""
    if out.exists() and not out.is_dir():
        raise RunError(f"output {out} is a file: the denoiser is written as a folder")
    if not out.parent.is_dir():
        raise RunError(f"output folder does not exist: {out.parent}")
    busy = out.is_dir() and any(out.iterdir())
    if resume:
        if not (out / STATE_NAME).is_file() or not (out / RECORD_NAME).is_file():
            raise RunError(f"cannot resume {out}: it holds no interrupted training run ({STATE_NAME} and "
                           f"{RECORD_NAME}; a finished run removes the first)")
        return True
    if busy:
        raise RunError(f"{out} already exists and is not empty: resume it (--resume, resume=True), remove it or "
                       "choose another folder")
    return False


def train_denoiser(data, out: str | Path | None = None, *, sigmas: float | Sequence[float] = 0.5,
                   timesteps: str = "around", window: float = 0.25, channels: Sequence[int] = DEFAULT_CHANNELS,
                   steps: int = 4000, batch_size: int = 128, lr: float = 2e-3, ema: float = 0.999, seed: int = 0,
                   save_every: int = 250, validation="auto", validation_images: int = 1000, device="auto",
                   threads: int | None = None, resume: bool = False, progress: bool = True,
                   log: Callable[[str], None] | None = None, command: str | None = None) -> DenoiserTrainingResult:
    """Train a DDPM noise predictor for one-shot denoised smoothing (see the module docstring).

    Args:
        data: a dataset specification (its ``train`` split is used) or a dataset from
            :func:`robustcert.load_dataset`; images in [0, 1], any (C, H, W) whose sides are
            divisible by 2^(levels - 1).
        out: the folder to write (``--denoiser DIR`` reads it), or None to train in memory only.
        sigmas: the certification noise level(s) the denoiser is for (pixel units).
        timesteps: ``around`` (t within a factor 1 +- ``window`` of each sigma's t*) or ``full``.
        window: the relative half-width of ``around``'s timestep ranges.
        channels: the block widths of the UNet (:func:`robustcert.methods.diffusion.unet_config`).
        steps: AdamW steps.
        batch_size: images per step.
        lr: peak learning rate (:func:`learning_rate_factor`: warm-up, cosine decay).
        ema: decay of the saved moving average of the weights.
        seed: initial weights and every step's data, timesteps and noise.
        save_every: write the folder and the resume state every so many steps (and at the end).
        validation: images for the denoising error at each save ("auto": the ``val`` split of
            ``data`` when it is a specification; None: none).
        validation_images: how many of them (the first ones; 0: none).
        device: where to train.
        threads: CPU threads.
        resume: continue the interrupted run that wrote ``out`` (same parameters and data).
        progress: a progress bar on stderr (when it is a terminal).
        log: receives one line per save.
        command: recorded in ``training.json`` (default: this Python process's arguments).

    Returns:
        A :class:`DenoiserTrainingResult`.
    """
    parameters = denoiser_parameters(sigmas=sigmas, timesteps=timesteps, window=window, channels=channels,
                                     steps=steps, batch_size=batch_size, lr=lr, ema=ema, seed=seed,
                                     save_every=save_every, validation_images=validation_images)
    out = None if out is None else Path(out)
    if resume and out is None:
        raise InvalidArgumentError("resume needs the folder to continue (out)")
    with contextlib.ExitStack() as hold:
        if out is not None:
            hold.enter_context(output_lock(out, "denoiser folder"))  # one writer per folder, for the whole run
        resuming = _check_folder(out, resume) if out is not None else False  # before loading anything
        import_diffusers()  # fail fast without diffusers
        device = as_device(device)
        train = as_dataset(data, "train")
        validation_set = None
        if validation == "auto":
            validation_set = load_dataset(str(data), "val") if isinstance(data, (str, Path)) else None
        elif validation is not None:
            validation_set = as_dataset(validation, "val")
        images = None
        if validation_set is not None and parameters["validation_images"] > 0:
            count = min(len(validation_set), parameters["validation_images"])
            images = validation_set.batch(range(count))[0].float()
        record = _new_record(command, parameters, train, validation_set, images, device)
        if resuming:
            _continue_record(record, out)
        trainer = _train(train, images, parameters, device, out, record, resuming, threads, progress, log)
    trainer.average.eval()
    return DenoiserTrainingResult(trainer.average, trainer.scheduler, pd.DataFrame(trainer.history), out, parameters)


def _new_record(command, parameters, train, validation_set, images, device) -> dict:
    """training.json of a new run: command, parameters, data and this run's provenance."""
    return {"command": command or python_command(), "kind": "train-denoiser", "parameters": parameters,
            "data": {"spec": train.name, "split": train.split, "inputs": len(train),
                     "input_shape": list(train.input_shape),
                     **({"validation": {"spec": validation_set.name, "split": validation_set.split,
                                        "inputs": 0 if images is None else len(images)}}
                        if validation_set is not None else {})},
            "runs": [{"started": timestamp(), "command": command or python_command(), "device": device_name(device),
                      "versions": package_versions()}]}


def _continue_record(record: dict, out: Path) -> None:
    """Resume: the interrupted run's parameters and data must be this run's; its runs and history go on."""
    earlier = json.loads((out / RECORD_NAME).read_text())
    for key in ("parameters", "data"):
        if earlier.get(key) != json.loads(json.dumps(record[key], default=str)):
            raise RunError(f"cannot resume {out}: this run's {key} differ from the interrupted run's ({RECORD_NAME})")
    record["runs"] = earlier.get("runs", []) + record["runs"]
    record["history"] = earlier.get("history", [])


def _train(train, images, parameters, device, out, record, resuming, threads, progress, log) -> _DenoiserTrainer:
    """The step loop on the configured CPU threads; on an interruption the record says so (the last
    save and its resume state stay)."""
    threads_before = torch.get_num_threads()
    try:
        cpu = configure_cpu(threads) if device.type == "cpu" else {}
        if cpu:
            record["runs"][-1]["cpu"] = cpu
        trainer = _DenoiserTrainer(train, images, parameters, device, out, record)
        if out is not None:
            out.mkdir(exist_ok=True)
        if resuming:
            trainer.resume()
        try:
            trainer.run(progress, log)
        except BaseException as exc:
            if out is not None and (out / STATE_NAME).is_file():
                record["runs"][-1].update(ending_fields(exc))
                trainer.write_record()
                note_interruption(exc, f"{out} holds the save of step {trainer.history[-1]['step']} of "
                                       f"{parameters['steps']}; --resume continues")
            raise
        if out is not None:
            record["runs"][-1].update(ending_fields(None))
            trainer.write_record()
            (out / STATE_NAME).unlink(missing_ok=True)
    finally:
        torch.set_num_threads(threads_before)
    return trainer
