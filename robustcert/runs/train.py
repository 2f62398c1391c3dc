"""Train a base classifier for randomized smoothing: what ``robustcert train`` calls.

    from robustcert import Smooth, load_model
    from robustcert.runs.train import train_model
    result = train_model("digits", "digits-0.25.pt", sigma=0.25, epochs=30, lr=0.05)
    result.history[["epoch", "loss", "val_clean_accuracy", "val_noisy_accuracy"]]
    smoothed = Smooth(load_model("digits-0.25.pt"), num_classes=10, sigma=0.25)

The recipe (Cohen et al. 2019; :mod:`robustcert.losses` has the objectives): every step takes
``batch_size`` training images, adds ``noise_copies`` independent draws of the certification
noise N(0, sigma^2 I) to each (in [0,1] pixel space, so the model's first layer normalises noisy
pixels exactly as at certification time), and minimises the cross-entropy on them (Gaussian
augmentation) or, with ``consistency=lambda``, the consistency-regularized objective of Jeong and
Shin (2020). With ``adversarial=eps`` (SmoothAdv, Salman et al. 2019) each clean batch is first
replaced by the PGD adversarial example of the soft smoothed classifier of the current model
(:mod:`robustcert.methods.attack`), on the same noise draws the loss then uses. SGD with momentum
and weight decay; the learning rate is multiplied by ``lr_gamma`` every ``lr_step`` epochs (default: a third of the epochs, so 90 epochs step at 30 and 60 as in
Cohen et al.'s CIFAR-10 recipe). Dual smoothing branch models (``dual_split``, ``branch``) train on
the compact sub-image of their branch (:mod:`robustcert.splits`).

Files: ``out`` is a reference checkpoint (``{'epoch', 'arch', 'state_dict', 'optimizer', ...}``,
state_dict keys ``1.`` for ``Sequential(NormalizeLayer, net)``) that ``robustcert certify``
loads without ``--arch``; it is rewritten atomically after every epoch, with the epoch history,
so an interrupted run keeps its last finished epoch and ``resume=True`` continues from it. The
JSON sidecar ``out.json`` records the command, parameters, data, device, package versions and,
per epoch, the losses, the accuracy on the noisy training batches, the clean and noisy accuracy
on the validation split and the time taken.

Reproducibility: the initial weights depend on ``seed`` only, and epoch e's order, augmentation
and noise on (seed, e) only (:func:`robustcert.engine.derive_seed`), so a resumed run trains the
same model as an uninterrupted one (same device and threads).

Plugging in another perturbation: ``noise`` takes any engine noise (an object with
``sample_shape`` and ``perturb``, like :class:`robustcert.engine.GaussianNoise`), so a method
that certifies with another distribution trains its base model with the same object it samples
with.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from ..augment import AUGMENTATIONS
from ..data import CertDataset, load_dataset
from ..engine import PRECISIONS, AblationNoise, AdditiveNoise, as_device, configure_cpu, derive_seed, input_generator
from ..errors import (
    CheckpointError, InvalidArgumentError, RunError, ShapeError, check_count, check_sigma, note_interruption,
    renamed_argument,
)
from ..losses import consistency_loss, gaussian_augmentation_loss
from ..methods.attack import check_eps, pgd_on_smoothed
from ..methods.noises import noise_model
from ..models import ARCHITECTURES, build_model, default_architecture
from ..models.checkpoint import torch_load_safely
from ..splits import get_split
from .dataset import as_dataset
from .progress import progress_bar
from ..files import (
    atomic_write, check_output, ending_fields, output_lock, previous_runs, read_sidecar, sidecar_path, timestamp,
    write_json_atomically,
)
from .provenance import device_name, package_versions, python_command


DEFAULT_ATTACK_STEPS = 2  # SmoothAdv's PGD steps per training step (Salman et al. train with 1 to 10)


class NoNoise:
    """sigma = 0: the clean images themselves (the engine noise interface, adding nothing).

    The off-the-shelf classifier of denoised smoothing (Carlini et al. 2023) is trained without
    noise; ``train_model(sigma=0)`` (``robustcert train --sigma 0``) trains it on the clean batch.
    """

    name = "none"
    sigma = 0.0

    def sample_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def draw(self, out: torch.Tensor, generator: torch.Generator) -> None:
        out.zero_()

    def perturb(self, out: torch.Tensor, clean: torch.Tensor, generator: torch.Generator) -> None:
        out.copy_(clean.expand_as(out))


@dataclass
class TrainingResult:
    """What :func:`train_model` returns: the trained model (eval mode) and its history."""

    model: torch.nn.Module
    history: pd.DataFrame          # one row per epoch (the sidecar's "epochs")
    checkpoint: Path | None        # the checkpoint written, or None for an in-memory run
    arch: str
    parameters: dict
    epochs_trained: int = 0        # epochs this call trained (0: the checkpoint already held them all)


def _in_range(value, name: str, low: float, high: float, high_open: bool = True) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}") from None
    inside = low <= number < high if high_open else low <= number <= high
    if not inside:
        raise InvalidArgumentError(f"{name} must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value!r}")
    return number


def recipe_parameters(*, sigma, arch, epochs, batch_size, lr, momentum, weight_decay, lr_step, lr_gamma, seed,
                      consistency, eta, noise_copies, split, branch, augment, precision, noise_name,
                      adversarial=None, attack_steps=None) -> dict:
    """The parameters that determine the trained model (checked, normalised; compared on resume)."""
    epochs = check_count(epochs, "epochs")
    if attack_steps is not None and adversarial is None:
        raise InvalidArgumentError("attack_steps (--attack-steps) is the PGD of SmoothAdv training: give adversarial "
                                   "(--adversarial EPS)")
    if adversarial is not None:
        adversarial = check_eps(adversarial)
        attack_steps = check_count(DEFAULT_ATTACK_STEPS if attack_steps is None else attack_steps, "attack_steps")
    copies = 2 if noise_copies is None and consistency is not None else (1 if noise_copies is None else noise_copies)
    copies = check_count(copies, "noise_copies")
    if consistency is not None:
        consistency = _in_range(consistency, "consistency (lambda)", 0.0, math.inf)
        if copies < 2:
            raise InvalidArgumentError(f"consistency regularization needs noise_copies >= 2, got {copies}")
    if branch is not None and branch not in ("a", "b"):
        raise InvalidArgumentError(f"branch must be 'a' or 'b', got {branch!r}")
    if (split is None) != (branch is None):
        raise InvalidArgumentError("a dual smoothing branch model needs both the split (--dual-split) and the branch "
                                   "(--branch a|b)")
    if augment not in (*AUGMENTATIONS, "auto"):
        raise InvalidArgumentError(f"augment must be one of {', '.join([*AUGMENTATIONS, 'auto'])}, got {augment!r}")
    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return {
        "sigma": None if sigma is None else 0.0 if _is_zero(sigma) else check_sigma(sigma), "noise": noise_name,
        "arch": arch, "epochs": epochs,
        "batch": check_count(batch_size, "batch_size"), "noise_copies": copies,
        "loss": "gaussian" if consistency is None else "consistency",
        "consistency_lambda": consistency, "consistency_eta": None if consistency is None else
        _in_range(eta, "eta", 0.0, math.inf),
        "optimizer": "sgd", "lr": check_sigma(lr, "lr"), "momentum": _in_range(momentum, "momentum", 0.0, 1.0),
        "weight_decay": _in_range(weight_decay, "weight_decay", 0.0, math.inf),
        "lr_step": check_count(lr_step if lr_step is not None else max(1, epochs // 3), "lr_step"),
        "lr_gamma": _in_range(lr_gamma, "lr_gamma", 0.0, 1.0, high_open=False),
        "seed": check_count(seed, "seed", minimum=0), "dual_split": None if split is None else get_split(split).name,
        "dual_branch": branch, "augment": augment, "precision": precision,
        "adversarial_eps": adversarial, "attack_steps": attack_steps,
        "adversarial_attack": None if adversarial is None else
        f"SmoothAdv PGD (Salman et al. 2019): {attack_steps} steps of 2*eps/steps on the soft smoothed classifier of "
        f"the current model (eval mode), the batch's noise_copies draws fixed over the steps and reused for the loss",
    }


def _is_zero(sigma) -> bool:
    """sigma == 0 (clean training), without raising on what check_sigma rejects with a clear error."""
    try:
        return float(sigma) == 0.0
    except (TypeError, ValueError):
        return False


def _autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


@dataclass
class _Setup:
    """Everything one training run needs, resolved from the arguments."""

    train: CertDataset
    validation: CertDataset | None
    view: Callable | None          # clean images -> what the model sees (a dual branch's sub-image)
    augment: Callable | None       # seeded clean-batch augmentation (crop + flip)
    noise: object                  # engine noise: perturb(out, clean, generator)
    input_shape: tuple[int, ...]   # the model's input shape
    parameters: dict
    device: torch.device


class _Trainer:
    """One training run: the model, optimizer, epoch loop, validation and files."""

    def __init__(self, setup: _Setup, out: Path | None, progress: bool, log: Callable[[str], None] | None,
                 command: str):
        self.setup, self.out, self.progress, self.log, self.command = setup, out, progress, log, command
        p = setup.parameters
        self.device = setup.device
        with torch.random.fork_rng(devices=[]):  # initial weights from the seed, without touching global RNG
            torch.manual_seed(derive_seed(p["seed"], 0, "init"))
            self.model = build_model(p["arch"], setup.train.num_classes)
        self.model.to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=p["lr"], momentum=p["momentum"],
                                         weight_decay=p["weight_decay"])
        self.scaler = torch.amp.GradScaler("cuda") if p["precision"] == "fp16" and self.device.type == "cuda" else None
        self.history: list[dict] = []
        self.record = self._record()
        self.wrote_files = False

    # ------------------------------------------------------------------ files
    def _record(self) -> dict:
        s = self.setup
        data = {"spec": s.train.name, "split": s.train.split, "inputs": len(s.train),
                "num_classes": s.train.num_classes, "input_shape": list(s.train.input_shape)}
        if s.validation is not None:
            data["validation"] = {"spec": s.validation.name, "split": s.validation.split, "inputs": len(s.validation)}
        return {"command": self.command, "kind": "train", "parameters": s.parameters,
                "model": {"arch": s.parameters["arch"], "num_classes": s.train.num_classes,
                          "input_shape": list(s.input_shape), "sha256": None},
                "data": data, "epochs": [],
                "runs": [{"started": timestamp(), "command": self.command, "device": device_name(self.device),
                          "versions": package_versions()}]}

    def resume_from(self, payload: dict, earlier_runs: list) -> None:
        """Continue from a checkpoint written by an earlier run of the same parameters."""
        try:
            self.model.load_state_dict(payload["state_dict"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"cannot resume {self.out}: its weights or optimizer state do not fit "
                                  f"({' '.join(str(exc).split())[:200]})") from None
        self.history = list(payload.get("history", []))
        self.record["runs"] = earlier_runs + self.record["runs"]

    def save(self, epochs_done: int) -> None:
        """The checkpoint (atomically, :func:`robustcert.files.atomic_write`), then the sidecar."""
        p = self.setup.parameters
        payload = {"epoch": epochs_done, "epochs": p["epochs"], "arch": p["arch"],
                   "state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                   "noise_sd": p["sigma"], "seed": p["seed"], "num_classes": self.setup.train.num_classes,
                   "input_shape": list(self.setup.input_shape), "training": p, "history": self.history}
        if p["dual_split"] is not None:
            payload.update(dual_split=p["dual_split"], dual_branch=p["dual_branch"])
        atomic_write(self.out, lambda temporary: torch.save(payload, temporary))
        self.record["epochs"] = self.history
        self.record["runs"][-1]["epochs_done"] = epochs_done
        self._write_sidecar()
        self.wrote_files = True

    def _write_sidecar(self) -> None:
        write_json_atomically(sidecar_path(self.out), self.record)

    def finish(self, ending: BaseException | None = None) -> None:
        """Record how this run ended in the sidecar (if this run wrote one), as every command does
        (:func:`robustcert.files.ending_fields`: ``status`` finished, interrupted or failed)."""
        if self.out is not None and self.wrote_files:
            self.record["runs"][-1].update(ending_fields(ending))
            try:
                self._write_sidecar()
            except OSError:
                pass

    def saved_note(self) -> str:
        """What an interruption leaves: the last epoch saved in the checkpoint, or nothing."""
        if self.out is None:
            return "training in memory: nothing was written"
        done, epochs = len(self.history), self.setup.parameters["epochs"]
        if done == 0 or not self.out.is_file():
            return "no epoch finished: nothing was written"
        return (f"epoch {done} of {epochs} is saved in {self.out} and {sidecar_path(self.out).name}; --resume "
                f"continues from epoch {done + 1}")

    # ------------------------------------------------------------------ training
    def noisy_batch(self, clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``noise_copies`` noisy copies of a clean batch, copy-major: (M * B, *sample shape)."""
        copies = self.setup.parameters["noise_copies"]
        repeated = clean.repeat(copies, *([1] * (clean.ndim - 1)))
        shape = self.setup.noise.sample_shape(tuple(clean.shape[1:]))
        noisy = torch.empty((len(repeated), *shape), device=clean.device, dtype=clean.dtype)
        self.setup.noise.perturb(noisy.view(len(repeated), -1), repeated.reshape(len(repeated), -1), generator)
        return noisy

    def adversarial_noisy_batch(self, clean: torch.Tensor, labels: torch.Tensor,
                                generator: torch.Generator) -> torch.Tensor:
        """SmoothAdv (Salman et al. 2019): draw the ``noise_copies`` noise copies delta_i of the batch,
        replace the clean batch by the PGD adversarial example of the soft smoothed classifier of the
        current model (eval mode, so batch norm uses its running statistics and is not updated; the
        draws fixed over the steps, :func:`robustcert.methods.attack.pgd_on_smoothed`), and return
        x_adv + delta_i, copy-major like :meth:`noisy_batch` (the same draws from the same generator)."""
        p = self.setup.parameters
        copies = p["noise_copies"]
        delta = torch.empty((copies, *clean.shape), device=clean.device, dtype=clean.dtype)
        self.setup.noise.draw(delta.view(copies * len(clean), -1), generator)
        self.model.eval()
        try:
            adversarial = pgd_on_smoothed(self.model, clean, labels, delta, p["adversarial_eps"], p["attack_steps"])
        finally:
            self.model.train()
        return (adversarial.unsqueeze(0) + delta).reshape(copies * len(clean), *clean.shape[1:])

    def objective(self, logits: torch.Tensor, labels: torch.Tensor):
        p = self.setup.parameters
        if p["loss"] == "consistency":
            return consistency_loss(logits, labels, p["consistency_lambda"], p["consistency_eta"])
        return gaussian_augmentation_loss(logits, labels)

    def prepare(self, indices: torch.Tensor, dataset: CertDataset, generator: torch.Generator | None):
        x, y = dataset.batch(indices)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.setup.augment is not None and generator is not None:
            x = self.setup.augment(x, generator)
        if self.setup.view is not None:
            x = self.setup.view(x)
        return x, y

    def train_epoch(self, epoch: int, bar) -> dict:
        p, train = self.setup.parameters, self.setup.train
        lr = p["lr"] * p["lr_gamma"] ** (epoch // p["lr_step"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(len(train), generator=input_generator(torch.device("cpu"), p["seed"], epoch, "order"))
        noise_generator = input_generator(self.device, p["seed"], epoch, "noise")
        augment_generator = input_generator(self.device, p["seed"], epoch, "augment")
        copies = p["noise_copies"]
        sums = torch.zeros(5, device=self.device, dtype=torch.float64)  # loss, ce, kl, entropy, correct
        seen = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        self.model.train()
        for batch in order.split(p["batch"]):
            if len(batch) * copies < 2:  # batch norm cannot train on a single sample
                bar.update(1)
                continue
            x, y = self.prepare(batch, train, augment_generator)
            if p["adversarial_eps"] is not None:
                noisy = self.adversarial_noisy_batch(x, y, noise_generator)
            else:
                noisy = self.noisy_batch(x, noise_generator)
            with _autocast(self.device, p["precision"]):
                logits = self.model(noisy)
            logits = logits.float().view(copies, len(batch), -1)
            loss = self.objective(logits, y)
            if not torch.isfinite(loss.total):
                raise RunError(f"the training loss became {loss.total.item()} in epoch {epoch + 1}: lower the "
                               f"learning rate (lr={lr:g})")
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss.total).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.total.backward()
                self.optimizer.step()
            with torch.no_grad():
                correct = (logits.argmax(-1) == y).sum() / copies
                sums += torch.stack([loss.total.detach(), loss.cross_entropy.detach(), loss.consistency.detach(),
                                     loss.entropy.detach(), correct.double()]).double() * \
                    torch.tensor([len(batch)] * 4 + [1], device=self.device, dtype=torch.float64)
            seen += len(batch)
            bar.update(1)
        totals = (sums / max(seen, 1)).tolist()
        row = {"epoch": epoch + 1, "lr": lr, "loss": totals[0], "cross_entropy": totals[1],
               "consistency_kl": totals[2], "entropy": totals[3], "train_noisy_accuracy": totals[4],
               "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}
        bar.set_postfix(epoch=epoch + 1, loss=f"{totals[0]:.3f}", refresh=False)
        return row

    @torch.no_grad()
    def validate(self) -> dict:
        """Clean and noisy accuracy on the validation split (the same noise every epoch). The clean
        accuracy is None when the noise changes the input shape (the model cannot take clean inputs)."""
        validation, p, noise = self.setup.validation, self.setup.parameters, self.setup.noise
        if validation is None:
            return {"val_clean_accuracy": None, "val_noisy_accuracy": None}
        takes_clean = tuple(noise.sample_shape(self.setup.input_shape)) == tuple(self.setup.input_shape)
        generator = input_generator(self.device, p["seed"], 0, "validation")
        self.model.eval()
        clean_correct = noisy_correct = 0
        for batch in torch.arange(len(validation)).split(max(p["batch"] * p["noise_copies"], 256)):
            x, y = self.prepare(batch, validation, None)
            noisy = torch.empty((len(x), *noise.sample_shape(tuple(x.shape[1:]))), device=x.device)
            noise.perturb(noisy.view(len(x), -1), x.reshape(len(x), -1), generator)
            with _autocast(self.device, p["precision"]):
                noisy_correct += (self.model(noisy).argmax(-1) == y).sum().item()
                if takes_clean:
                    clean_correct += (self.model(x).argmax(-1) == y).sum().item()
        return {"val_clean_accuracy": clean_correct / len(validation) if takes_clean else None,
                "val_noisy_accuracy": noisy_correct / len(validation)}

    def run(self) -> None:
        p = self.setup.parameters
        start = len(self.history)
        steps = math.ceil(len(self.setup.train) / p["batch"])
        with progress_bar(p["epochs"] * steps, self.progress, unit="step", initial=start * steps, what="train") as bar:
            for epoch in range(start, p["epochs"]):
                row = self.train_epoch(epoch, bar)
                row.update(self.validate())
                row["finished"] = timestamp()
                self.history.append(row)
                if self.out is not None:
                    self.save(epoch + 1)
                if self.log is not None:
                    self.log(epoch_line(row, p["epochs"]))


def epoch_line(row: dict, epochs: int) -> str:
    """One line per finished epoch, for the console."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['loss']:.4f}",
             f"train acc (noisy) {row['train_noisy_accuracy']:.4f}"]
    if row.get("val_noisy_accuracy") is not None:
        clean = row.get("val_clean_accuracy")
        parts.append(f"val acc clean {clean:.4f} noisy {row['val_noisy_accuracy']:.4f}" if clean is not None
                     else f"val acc noisy {row['val_noisy_accuracy']:.4f}")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)


def _resolve(data, validation, *, sigma, arch, split, branch, augment, noise, device, parameters_in) -> _Setup:
    """Load the data, pick the view, noise and architecture, and check that they fit."""
    train = as_dataset(data, "train")
    if validation == "auto":
        validation = load_dataset(str(data), "val") if isinstance(data, (str, Path)) else None
    elif validation is not None:
        validation = as_dataset(validation, "val")
    if validation is not None and (validation.num_classes > train.num_classes
                                   or tuple(validation.input_shape) != tuple(train.input_shape)):
        raise ShapeError(f"the validation data {validation.name} ({validation.num_classes} classes, inputs "
                         f"{tuple(validation.input_shape)}) does not match the training data {train.name} "
                         f"({train.num_classes} classes, inputs {tuple(train.input_shape)})")
    view, input_shape = None, tuple(train.input_shape)
    if split is not None:
        chosen, position = get_split(split), "ab".index(branch)
        input_shape = chosen.sub_shapes(input_shape)[position]
        view = lambda x: chosen.split(x)[position]  # noqa: E731
    if hasattr(noise, "laid_out"):  # a noise that must know where each value sits (ablation)
        noise = noise.laid_out(input_shape, False)
    if parameters_in.get("adversarial") is not None and not isinstance(noise, AdditiveNoise):
        raise InvalidArgumentError(f"SmoothAdv training attacks through additive noise (gaussian, laplace, uniform), "
                                   f"not {getattr(noise, 'name', type(noise).__name__)}")
    arch = arch or default_architecture(noise.sample_shape(input_shape))
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    model_shape = tuple(noise.sample_shape(input_shape))
    if tuple(ARCHITECTURES[arch].input_shape) != model_shape:
        raise ShapeError(f"architecture {arch} takes inputs {tuple(ARCHITECTURES[arch].input_shape)}, but the data "
                         f"{train.name}{' (' + split + ' branch ' + branch + ')' if split else ''} gives {model_shape}")
    if augment == "auto":
        augment = "crop-flip" if input_shape == (3, 32, 32) else "none"
    parameters = recipe_parameters(**{**parameters_in, "arch": arch, "augment": augment, "noise_name": noise.name})
    if isinstance(noise, AblationNoise):
        parameters["keep"] = noise.keep
    return _Setup(train, validation, view, AUGMENTATIONS[augment], noise, model_shape, parameters, device)


def train_model(data="digits", out: str | Path | None = None, *, sigma: float | None, arch: str | None = None,
                epochs: int = 90, batch_size: int = 256, lr: float = 0.1, momentum: float = 0.9,
                weight_decay: float = 1e-4, lr_step: int | None = None, lr_gamma: float = 0.1, seed: int = 0,
                consistency: float | None = None, eta: float = 0.5, noise_copies: int | None = None,
                dual_split: str | None = None, branch: str | None = None, augment: str = "auto", validation="auto",
                adversarial: float | None = None, attack_steps: int | None = None,
                device="auto", threads: int | None = None, precision: str = "fp32", resume: bool = False,
                progress: bool = True, log: Callable[[str], None] | None = None, command: str | None = None,
                noise=None, keep: int | None = None, split: str | None = None) -> TrainingResult:
    """Train a base classifier on noisy inputs (see the module docstring).

    Args:
        data: the training data: a specification (``"digits"``, ``"fashion-mnist:ROOT"``, ...; its
            ``train`` split is used) or a dataset from :func:`robustcert.load_dataset`.
        out: the checkpoint to write (and ``out.json``), or None to train in memory only.
        sigma: the noise level (pixel units), the one the model will be certified at; 0 trains on
            the clean images (:class:`NoNoise`: the off-the-shelf classifier that denoised
            smoothing puts behind a denoiser, ``certify --denoiser``).
        arch: a registered architecture; default: the one for the input shape
            (:data:`robustcert.models.DEFAULT_ARCHITECTURES`).
        epochs: epochs of SGD.
        batch_size: images per step (each with ``noise_copies`` noisy copies).
        lr: the learning rate.
        momentum: SGD's momentum.
        weight_decay: SGD's weight decay.
        lr_step: epochs between learning-rate decays.
        lr_gamma: the decay factor.
        seed: initial weights, order, augmentation and noise (see the module docstring).
        consistency: lambda of consistency regularization (None: Gaussian augmentation);
            ``eta`` its entropy weight; ``noise_copies`` M (default 2 with consistency, else 1).
        adversarial: SmoothAdv (Salman et al. 2019): train on the PGD adversarial example within l2
            radius ``adversarial`` (eps) of each image instead of the image (see
            :meth:`_Trainer.adversarial_noisy_batch`); ``attack_steps`` PGD steps (default 2), on
            the ``noise_copies`` draws the loss then uses (default 1; Salman et al. use 1 to 8).
        dual_split: train a dual smoothing branch model of this split (checkerboard, rows, columns);
            recorded as ``dual_split``.
        branch: which branch ("a" or "b"); recorded as ``dual_branch``.
        augment: "none", "crop-flip" (random 4-pixel crop and flip) or "auto" (crop-flip for
            3x32x32 inputs, the CIFAR-10 recipe; none otherwise).
        validation: data for the per-epoch clean and noisy accuracy; "auto": the ``val`` split of
            ``data`` when it is a specification; None: no validation.
        device: where to run.
        threads: CPU threads.
        precision: fp32, or bf16/fp16 (autocast).
        resume: continue the interrupted run that wrote ``out`` (same parameters and data).
        progress: a progress bar with ETA on stderr (when it is a terminal); ``log`` receives one
            line per finished epoch.
        command: recorded in the sidecar (default: this Python process's arguments).
        noise: the noise to train with: a name of :data:`robustcert.methods.noises.NOISES`
            ("gaussian", "laplace", "uniform": the per-coordinate standard deviation is ``sigma``,
            as for ``certify --noise``) or an engine noise object; None: N(0, sigma^2 I).
        keep: randomized ablation (Levine and Feizi 2020) instead of noise: every copy keeps
            ``keep`` random pixels, encoded as ``certify --method ablation --keep K`` feeds the
            model (:class:`robustcert.engine.AblationNoise`: (C, H, W) -> (2C, H, W)); no sigma. The
            default architecture then follows the ablated shape (``digits_cnn_ablation``,
            ``mnist_cnn_ablation``).
        split: the deprecated name of ``dual_split`` (a FutureWarning; ``split`` elsewhere is the
            dataset split).

    Returns:
        A :class:`TrainingResult` (model in eval mode, history as a DataFrame).
    """
    split = renamed_argument(dual_split, split, "split", "dual_split", "train_model")
    out = None if out is None else Path(out)
    if resume and out is None:
        raise InvalidArgumentError("resume needs the checkpoint to continue (out)")
    if keep is not None:
        if sigma is not None or noise is not None:
            raise InvalidArgumentError("randomized ablation (keep, --keep) adds no noise: give it without sigma or "
                                       "noise (--sigma, --noise)")
        noise = AblationNoise(keep)
    elif sigma is None and (noise is None or isinstance(noise, str)):
        raise InvalidArgumentError("training needs a noise level (sigma, --sigma) or, for randomized ablation, "
                                   "keep (--keep)")
    elif _is_zero(sigma) and noise in (None, "gaussian"):
        noise = NoNoise()  # the off-the-shelf classifier: trained on clean images
    elif noise is None or isinstance(noise, str):
        noise = noise_model(noise or "gaussian").sampler(check_sigma(sigma))
    parameters_in = dict(sigma=sigma, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, lr_step=lr_step, lr_gamma=lr_gamma, seed=seed,
                         consistency=consistency, eta=eta, noise_copies=noise_copies, split=split, branch=branch,
                         precision=precision, adversarial=adversarial, attack_steps=attack_steps)
    recipe_parameters(**{**parameters_in, "arch": arch, "augment": augment, "noise_name": None})  # fail fast
    device = as_device(device)
    with contextlib.ExitStack() as hold:
        if out is not None:
            hold.enter_context(output_lock(out, "checkpoint"))  # one writer per checkpoint, for the whole run
        resuming = check_output(out, resume, "train") if out is not None else False  # before loading anything
        setup = _resolve(data, validation, sigma=sigma, arch=arch, split=split, branch=branch, augment=augment,
                         noise=noise, device=device, parameters_in=parameters_in)
        threads_before = torch.get_num_threads()
        try:
            cpu = configure_cpu(threads) if device.type == "cpu" else {}
            trainer = _Trainer(setup, out, progress, log, command or python_command())
            if cpu:
                trainer.record["runs"][-1]["cpu"] = cpu
            if resuming:
                _resume(trainer, out, lr_step_given=lr_step is not None)
            epochs_before = len(trainer.history)
            try:
                trainer.run()
            except BaseException as exc:
                trainer.finish(exc)
                note_interruption(exc, trainer.saved_note())
                raise
            trainer.finish()
        finally:
            torch.set_num_threads(threads_before)
    trainer.model.eval()
    return TrainingResult(trainer.model, pd.DataFrame(trainer.history), out, setup.parameters["arch"],
                          setup.parameters, len(trainer.history) - epochs_before)


def _resume(trainer: "_Trainer", out: Path, lr_step_given: bool) -> None:
    """Continue ``out``: the same recipe and data as the run that wrote it (else RunError), or the
    same with more epochs (the run is extended: the learning-rate schedule keeps the recorded
    lr_step unless one is given, and the sidecar records the extension)."""
    if not sidecar_path(out).is_file():
        raise RunError(f"cannot resume {out}: its sidecar {sidecar_path(out).name} is missing, so the "
                       "run that wrote it is unknown")
    checkpoint = _training_checkpoint(out)
    done, parameters = len(checkpoint["history"]), trainer.setup.parameters
    recorded = (read_sidecar(out).get("parameters") or {})
    asked, before = parameters["epochs"], recorded.get("epochs", parameters["epochs"])
    if asked != before:
        if asked < done:
            raise RunError(f"cannot resume {out} with {asked} epochs: it already holds {done} (a run cannot be "
                           f"shortened; its epoch-{asked} model was not kept)")
        if not lr_step_given and "lr_step" in recorded:
            parameters["lr_step"] = recorded["lr_step"]  # the schedule the earlier epochs followed
        as_recorded = {**trainer.record, "parameters": {**parameters, "epochs": before}}
        earlier = previous_runs(out, as_recorded)  # all else the same, else RunError
        trainer.record["runs"][-1]["extended"] = {"from_epochs": before, "to_epochs": asked,
                                                  "lr_step": parameters["lr_step"]}
        if trainer.log is not None:
            trainer.log(f"extending {out} from {before} to {asked} epochs (lr x{parameters['lr_gamma']:g} every "
                        f"{parameters['lr_step']} epochs, as recorded)")
    else:
        earlier = previous_runs(out, trainer.record)  # same parameters and data, else RunError
    trainer.resume_from(checkpoint, earlier)


def _training_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`train_model` (weights, optimizer state, history)."""
    payload = torch_load_safely(path, trust_checkpoint=False)
    needed = ("epoch", "state_dict", "optimizer", "history")
    if not isinstance(payload, dict) or any(key not in payload for key in needed):
        raise CheckpointError(f"cannot resume {path}: it is not a checkpoint written by robustcert train "
                              f"(needs {', '.join(needed)})")
    if payload["epoch"] != len(payload["history"]):
        raise CheckpointError(f"cannot resume {path}: it records {payload['epoch']} epochs but "
                              f"{len(payload['history'])} history entries")
    return payload
