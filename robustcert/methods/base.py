"""The contract every smoothing method implements, and the plumbing they share.

:class:`SmoothedClassifier` is an abstract base class: a method subclasses it and writes its
algorithm box (``certify_batch``, ``predict_batch``, ``alpha_spending``); the rest of what the
runs layer calls (argument checks, devices, seeds, batch sizes, the engine, the run record) has a
default here. Sampling always goes through :class:`robustcert.engine.MonteCarloEngine`.
This module imports no specific method.
"""
from __future__ import annotations

import abc
import time
from typing import Callable, ClassVar, Sequence

import numpy as np
import torch

from ..certificate import Certificate, Prediction
from ..engine import (
    AUTO, DiscreteGaussianNoise, GaussianNoise, ModelRunner, MonteCarloEngine, as_device, auto_batch_size, fresh_seed,
    grid_indices, grid_rounding, inputs_per_call, model_device,
)
from ..errors import InvalidArgumentError, ShapeError, check_alpha, check_count, check_sigma


#: Defaults shared by every method's certify/predict and the dataset runs (Cohen et al.'s settings:
#: n0 = 100 selection samples, n = 100,000 estimation samples, alpha = 0.001).
DEFAULT_N0, DEFAULT_N, DEFAULT_ALPHA, DEFAULT_BATCH = 100, 100_000, 0.001, 1000


def as_input_batch(xs, device: torch.device, input_shape: tuple[int, ...] | None) -> torch.Tensor:
    """Inputs as a float32 tensor (num_inputs, *input_shape) on ``device``; checks shape and values."""
    tensor = torch.as_tensor(np.asarray(xs) if not isinstance(xs, torch.Tensor) else xs)
    tensor = tensor.float()  # pixel-space inputs are float32 whatever the caller passed
    if tensor.ndim < 2:
        raise ShapeError(f"expected a batch of inputs (num_inputs, *input_shape), got shape {tuple(tensor.shape)}")
    if input_shape is not None and tuple(tensor.shape[1:]) != tuple(input_shape):
        raise ShapeError(
            f"input shape {tuple(tensor.shape[1:])} does not match the model's input shape {tuple(input_shape)}"
        )
    if not bool(torch.isfinite(tensor).all()):
        raise InvalidArgumentError("inputs contain NaN or infinite values")
    return tensor.to(device)


class SmoothedClassifier(abc.ABC):
    """A base model smoothed by a noise (by default isotropic Gaussian noise of level ``sigma``).

    The contract with the runs layer (:mod:`robustcert.runs`: dataset runs, attacks, LVM
    selection, the sidecar). A method must implement:

    * :meth:`certify_batch` and :meth:`predict_batch`: its CERTIFY and PREDICT algorithm boxes;
    * :meth:`alpha_spending`: how CERTIFY spends alpha (the shares sum to alpha).

    and may override (each has a default here):

    * :attr:`method` (its name in results), :attr:`norm` (of its radii), :attr:`needs_sigma`;
    * :meth:`make_noise` (the engine noise it samples), :meth:`threat_model` (noise and norm, for
      the sidecar), :meth:`settings` (options a run records and compares on resume),
      :meth:`base_models` (by role, for provenance), :meth:`resolve_batch_size` (``"auto"``),
      :meth:`certify_inputs_per_call` (inputs per ``certify_batch`` call of a dataset run),
      :meth:`engine_report` (what the engines did).

    Args:
        model: base classifier, any callable mapping (B, *input_shape) in [0,1] pixel space to
            (B, num_classes) scores. Normalisation belongs inside the model (first layer), so
            noise is added in pixel space and radii are in pixel units.
        num_classes: number of classes the model scores.
        sigma: noise standard deviation (pixel units), > 0; None for a method without a noise
            level (:attr:`needs_sigma` False, e.g. randomized ablation).
        device: where to sample; None means the model's device.
        input_shape: optional shape of one input, checked on every call.
        precision: autocast precision of the base model, "fp32" | "bf16" | "fp16".
        channels_last: channels-last layout of 4-D batches (None: the measured default).
        compile: torch.compile the base model, with an eager fallback.
        graphs: CUDA graphs of the sampling loop's steady-state batches (None: automatic, on for
            CUDA; False: the eager loop). Change the engine options later with :meth:`set_engine_options`.
    """

    #: The method's name, recorded in every certificate and run.
    method: ClassVar[str] = "base"
    #: The norm of the certified radius (Gaussian noise: l2); a property where the noise decides.
    norm = "l2"
    #: Whether the method has a noise level ``sigma`` (randomized ablation has none).
    needs_sigma: ClassVar[bool] = True
    #: Floating-point-sound mode (methods that support it set these; :mod:`robustcert.engine.sound`):
    #: discretized Gaussian noise on the input grid k / quantization, one forward shape.
    sound_float = False
    quantization: int | None = None

    def __init__(
        self,
        model: Callable,
        num_classes: int,
        sigma: float | None,
        device: torch.device | str | None = None,
        input_shape: Sequence[int] | None = None,
        precision: str = "fp32",
        channels_last: bool | None = None,
        compile: bool = False,
        graphs: bool | None = None,
    ):
        if not callable(model):
            raise InvalidArgumentError("model must be a callable (e.g. a torch.nn.Module)")
        self.model = model
        self.num_classes = check_count(num_classes, "num_classes", minimum=2)
        if self.needs_sigma:
            self.sigma = check_sigma(sigma)
        elif sigma is not None:
            raise InvalidArgumentError(f"{type(self).__name__} has no noise level: sigma must be None, got {sigma!r}")
        else:
            self.sigma = None
        self.device = as_device(device, model_device(model))
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.precision = precision
        self.channels_last = channels_last
        self.compile = compile
        self.graphs = graphs
        self._engines: dict[tuple, MonteCarloEngine] = {}
        self._auto_batches: dict[tuple, tuple[int, dict]] = {}

    # ----------------------------------------------------------------- plumbing
    def engine(self, batch_size: int, model: Callable | None = None, sigma: float | None = None) -> MonteCarloEngine:
        """The (cached) engine for a batch size; ``model``/``sigma`` override for multi-branch methods.
        ``batch_size`` is a whole number: resolve ``"auto"`` first with :meth:`batch_size_for`."""
        model = self.model if model is None else model
        sigma = self.sigma if sigma is None else sigma
        key = (id(model), sigma, batch_size)
        if key not in self._engines:
            self._engines[key] = MonteCarloEngine(
                model, sigma, batch_size, self.device, self.precision, self.channels_last, self.compile,
                noise=self.make_noise(sigma), sound=self.sound_float, graphs=self.graphs,
            )
        return self._engines[key]

    def make_noise(self, sigma: float):
        """The engine's noise distribution at level ``sigma`` (default: isotropic Gaussian; in the
        floating-point-sound mode the discretized Gaussian on the input grid)."""
        if self.sound_float:
            return DiscreteGaussianNoise(sigma, self.quantization)
        return GaussianNoise(sigma)

    def float_correction(self, input_shape: Sequence[int]) -> float:
        """eps: how far any event's probability under the sound mode's fair-coin sampler can be from
        the exact discretized Gaussian's, for inputs of ``input_shape`` (0 in the standard mode)."""
        if not self.sound_float:
            return 0.0
        return self.make_noise(self.sigma).correction(int(np.prod(input_shape)))

    def sound_record(self, input_shape: Sequence[int]) -> dict:
        """What a certificate of the sound mode records: the sampler and the correction eps."""
        return {**self.make_noise(self.sigma).describe(), "correction": self.float_correction(input_shape),
                "claim": f"every x' on the grid k/{self.quantization} within the radius (l2, pixel units)"}

    def sound_records(self, xs: torch.Tensor) -> list[dict] | None:
        """Per input, what a certificate of the sound mode records (:meth:`sound_record`) and how far
        the input is from the grid point K/L it is certified as (``rounding_l2``, pixel units: at most
        the float32 rounding of k/L, the most :meth:`prepare` accepts); None in the standard mode."""
        if not self.sound_float:
            return None
        common = self.sound_record(xs.shape[1:])
        return [{**common, "rounding_l2": distance} for distance in grid_rounding(xs, self.quantization)]

    def batch_size_for(self, batch_size: int | str, input_shape: Sequence[int], model: Callable | None = None) -> int:
        """``batch_size`` as a whole number: ``"auto"`` is resolved once per model and input shape
        (:func:`robustcert.engine.auto_batch_size`: free CUDA memory, or a short CPU measurement),
        before any sample is drawn; the probe is kept for :meth:`engine_report`."""
        if batch_size != AUTO:
            return check_count(batch_size, "batch_size")
        model = self.model if model is None else model
        key = (id(model), tuple(int(v) for v in input_shape))
        if key not in self._auto_batches:
            runner = ModelRunner(model, self.device, self.precision, self.channels_last, sigma=self.sigma)
            sample_shape = self.make_noise(self.sigma).sample_shape(key[1])  # what the model receives
            self._auto_batches[key] = auto_batch_size(runner, sample_shape, self.num_classes)
        return self._auto_batches[key][0]

    def resolve_batch_size(self, batch_size: int | str, input_shape: Sequence[int]) -> int:
        """The batch size of a run on inputs of ``input_shape`` (``"auto"`` resolved for the base
        model; multi-branch methods take the smallest over their branches)."""
        return self.batch_size_for(batch_size, input_shape)

    def set_engine_options(self, precision: str | None = None, channels_last: bool | None = None,
                           compile: bool | None = None, graphs: bool | None = None) -> None:
        """Change engine options (None keeps the current value); engines are rebuilt on next use."""
        if precision is not None:
            self.precision = precision
        if channels_last is not None:
            self.channels_last = channels_last
        if compile is not None:
            self.compile = compile
        if graphs is not None:
            self.graphs = graphs
        self._engines.clear()
        self._auto_batches.clear()

    def engine_report(self) -> dict:
        """What the engines did so far (batch sizes after out-of-memory retries, precision, layout,
        compile status, the automatic batch probe), merged over the engines this classifier used."""
        reports = [engine.report() for engine in self._engines.values()]
        if not reports:
            return {}
        merged = dict(reports[-1])
        merged["oom_retries"] = sum(r["oom_retries"] for r in reports)
        merged["forward_batch"] = min(r["forward_batch"] for r in reports)
        merged["batch_size"] = sorted({r["batch_size"] for r in reports}, key=str)
        if len(merged["batch_size"]) == 1:
            merged["batch_size"] = merged["batch_size"][0]
        if self._auto_batches:
            probes = [probe for _, probe in self._auto_batches.values()]
            merged["auto_batch"] = probes[0] if len(probes) == 1 else probes
        return merged

    def threat_model(self) -> dict:
        """What the certificates are about: the noise sampled and the norm of the radius (recorded in
        every run's sidecar; ``robustcert table`` and ``plot`` read the norm back)."""
        return {"noise": self.make_noise(self.sigma).name, "norm": self.norm}

    def settings(self) -> dict:
        """The method's configuration beyond sigma (e.g. dual's split, LVM's grid): recorded with
        every dataset run, and compared when a run is resumed. Plain data only."""
        return {}

    def base_models(self) -> dict[str, Callable]:
        """The base models by role: ``{"model": f}``, or ``{"model": f_a, "model2": f_b}`` for dual."""
        return {"model": self.model}

    def prepare(self, xs) -> torch.Tensor:
        """Check and move a batch of inputs to the sampling device (sound mode: on the input grid)."""
        tensor = as_input_batch(xs, self.device, self.input_shape)
        if self.sound_float:
            grid_indices(tensor, self.quantization)  # refuses off-grid inputs: g is computed on the grid only
        return tensor

    def prepare_one(self, x) -> torch.Tensor:
        """Check one input (no batch dimension) and return it as a batch of one."""
        tensor = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if self.input_shape is not None and tuple(tensor.shape) != self.input_shape:
            raise ShapeError(
                f"expected one input of shape {self.input_shape} (no batch dimension), got {tuple(tensor.shape)}"
            )
        return self.prepare(tensor.unsqueeze(0))

    @staticmethod
    def resolve_seed(seed: int | None) -> int:
        """The seed to record: the user's, or a fresh random one when ``seed`` is None."""
        if seed is None:
            return fresh_seed()
        return check_count(seed, "seed", minimum=0)

    @staticmethod
    def resolve_indices(indices: Sequence[int] | None, num_inputs: int) -> list[int]:
        if indices is None:
            return list(range(num_inputs))
        indices = [int(i) for i in indices]
        if len(indices) != num_inputs:
            raise InvalidArgumentError(f"got {len(indices)} indices for {num_inputs} inputs")
        return indices

    def begin(self, xs, seed: int | None, indices: Sequence[int] | None):
        """The common start of every ``*_batch`` call: the checked inputs on the sampling device,
        the seed to record, the input indices and a stopwatch."""
        xs = self.prepare(xs)
        return xs, self.resolve_seed(seed), self.resolve_indices(indices, len(xs)), Stopwatch()

    def sample(
        self,
        xs: torch.Tensor,
        n: int,
        accumulator,
        stage: str,
        seed: int,
        indices: Sequence[int],
        batch_size: int,
        model: Callable | None = None,
        sigma: float | None = None,
        bounded: bool = True,
    ):
        """Run the engine for ``n`` samples per input with per-(seed, index, stage) generators.
        ``bounded=False`` for a selection stage, whose statistics enter no bound (in the sound mode
        it runs without the fixed forward shape)."""
        engine = self.engine(self.batch_size_for(batch_size, xs.shape[1:], model), model, sigma)
        generators = [engine.generator(seed, index, stage) for index in indices]
        return engine.run(xs, n, accumulator, generators, bounded)

    @staticmethod
    def check_certify_args(n0: int, n: int, alpha: float, batch_size: int) -> tuple[int, int, float, int]:
        return (
            check_count(n0, "n0"),
            check_count(n, "n"),
            check_alpha(alpha),
            batch_size if batch_size == "auto" else check_count(batch_size, "batch_size"),
        )

    def certify_inputs_per_call(self, n0: int, n: int, batch_size: int, **certify_options) -> int:
        """How many inputs a dataset run gives each ``certify_batch`` call: several when all their
        samples fit in one batch (:func:`robustcert.engine.inputs_per_call`).

        Args:
            n0: selection samples per input.
            n: estimation samples per input.
            batch_size: the resolved batch size.
            certify_options: the call's method options (``sequential=True``, ...).

        Returns:
            The number of inputs per call (>= 1).
        """
        return inputs_per_call(n0 + n, batch_size)

    @abc.abstractmethod
    def alpha_spending(self, alpha: float, **certify_options) -> dict[str, float]:
        """How CERTIFY spends alpha.

        Args:
            alpha: the certificate's failure probability.
            certify_options: the options of the ``certify_batch`` call (e.g. ``sequential=True``):
                what a dataset run records is the spending of the calls it makes.

        Returns:
            Each bound CERTIFY uses and its share of alpha (the shares sum to alpha).
        """

    # ------------------------------------------------------------------ the API
    def certify(self, x, n0: int = DEFAULT_N0, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA,
                batch_size: int = DEFAULT_BATCH, seed: int | None = 0, index: int = 0, **options) -> Certificate:
        """Certify one input.

        Args:
            x: one input (no batch dimension, [0,1] pixel space).
            n0: as for :meth:`certify_batch`.
            n: as for :meth:`certify_batch`.
            alpha: as for :meth:`certify_batch`.
            batch_size: as for :meth:`certify_batch`.
            seed: as for :meth:`certify_batch`.
            index: the input's index for seeding.
            options: the method's certify options (e.g. ``sequential=True``).

        Returns:
            Its :class:`~robustcert.Certificate`.
        """
        return self.certify_batch(self.prepare_one(x), n0, n, alpha, batch_size, seed, [index], **options)[0]

    def predict(self, x, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA, batch_size: int = DEFAULT_BATCH,
                seed: int | None = 0, index: int = 0) -> Prediction:
        """Predict at one input (may abstain).

        Args:
            x: one input (no batch dimension).
            n: as for :meth:`predict_batch`.
            alpha: as for :meth:`predict_batch`.
            batch_size: as for :meth:`predict_batch`.
            seed: as for :meth:`predict_batch`.
            index: the input's index for seeding.

        Returns:
            Its :class:`~robustcert.Prediction`.
        """
        return self.predict_batch(self.prepare_one(x), n, alpha, batch_size, seed, [index])[0]

    @abc.abstractmethod
    def certify_batch(self, xs, n0: int = DEFAULT_N0, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA,
                      batch_size: int = DEFAULT_BATCH, seed: int | None = 0, indices: Sequence[int] | None = None,
                      **certify_options) -> list[Certificate]:
        """CERTIFY a batch of inputs.

        Args:
            xs: inputs (num_inputs, *input_shape) in [0,1] pixel space.
            n0: selection samples per input.
            n: estimation samples per input.
            alpha: each certificate's failure probability.
            batch_size: noisy samples per forward pass, or ``"auto"``.
            seed: the noise seed (None: a fresh one, recorded).
            indices: the inputs' indices for seeding (default 0..num_inputs-1): an input
                certified with the same seed and index gives the same result whatever else is
                in the batch.
            certify_options: the method's own options (e.g. ``sequential=True``).

        Returns:
            One :class:`~robustcert.Certificate` per input.
        """

    @abc.abstractmethod
    def predict_batch(self, xs, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA, batch_size: int = DEFAULT_BATCH,
                      seed: int | None = 0, indices: Sequence[int] | None = None) -> list[Prediction]:
        """PREDICT at a batch of inputs (may abstain).

        Args:
            xs: as for :meth:`certify_batch`.
            n: samples per input.
            alpha: the probability of returning a class other than the smoothed classifier's.
            batch_size: as for :meth:`certify_batch`.
            seed: as for :meth:`certify_batch`.
            indices: as for :meth:`certify_batch`.

        Returns:
            One :class:`~robustcert.Prediction` per input.
        """


class Stopwatch:
    """Wall time of a batch call, shared equally by its inputs."""

    def __init__(self):
        self.start = time.perf_counter()

    def per_input(self, num_inputs: int) -> float:
        return (time.perf_counter() - self.start) / max(num_inputs, 1)
