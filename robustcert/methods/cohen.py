"""Randomized smoothing: PREDICT and CERTIFY (Cohen, Rosenfeld and Kolter, ICML 2019).

Smoothed classifier g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I).

CERTIFY(f, sigma, x, n0, n, alpha):
    counts0 <- SampleUnderNoise(f, x, n0, sigma)          # selection samples
    cA      <- top index in counts0
    counts  <- SampleUnderNoise(f, x, n, sigma)           # fresh estimation samples
    pA      <- LowerConfBound(counts[cA], n, 1 - alpha)   # one-sided Clopper-Pearson
    if pA <= 1/2: ABSTAIN  else: return cA, R = sigma * Phi^-1(pA)

PREDICT(f, sigma, x, n, alpha):
    counts <- SampleUnderNoise(f, x, n, sigma); nA >= nB the top two counts
    if BinomPValue(nA, nA + nB, 1/2) > alpha: ABSTAIN  else: return cA

Abstention at pA = 1/2 exactly: pA_lower = 1/2 does not make cA the smoothed classifier's class
(another class may also have probability 1/2), so CERTIFY abstains at pA_lower <= 1/2, not only
below it (the published pseudocode's "pA < 1/2" would return cA with radius 0 there). Sequential
CERTIFY, dual and LVM use the same rule (LVM's two-sided forms: pA_lower <= pB_upper).

alpha is spent on a single bound in each: the Clopper-Pearson bound (CERTIFY) or the binomial
test (PREDICT). With probability >= 1 - alpha, a returned class is g's class and, for CERTIFY,
g is constant on the l2 ball of radius R.

Other noises (``noise="laplace"`` or ``"uniform"``, :mod:`robustcert.methods.noises`) run the same
two algorithms with delta drawn from that noise; CERTIFY then returns the l1 radius of pA_lower
(Teng et al. 2020: R = -b ln(2 (1 - pA)); Yang et al. 2020: R = 2 lambda (pA - 1/2)), spending
alpha on the same single Clopper-Pearson bound.

Floating-point-sound mode (``sound_float=True, quantization=L``, Gaussian noise; Voracek and Hein
2023, :mod:`robustcert.engine.sound`): inputs on the grid k/L, discretized Gaussian noise from fair
coins added in integers, one forward shape. The sampler's law is within eps (total variation) of
the exact one, so CERTIFY uses pA_lower - eps (a deterministic correction, no share of alpha) and
PREDICT tests at alpha - n eps (the n samples' joint law is within n eps: that share of alpha is
recorded). Certificates hold for every grid point within R.

Example::

    from robustcert import Smooth, load_model
    model = load_model("bundled:digits-0.25")
    smoothed = Smooth(model, num_classes=10, sigma=0.25)
    cert = smoothed.certify(x, n0=100, n=10_000, alpha=0.001, seed=0)
    cert.prediction, cert.radius
    l1 = Smooth(model, num_classes=10, sigma=0.25, noise="laplace").certify(x, n=10_000)  # l1 radius
"""
from __future__ import annotations

import abc

import numpy as np

from ..certificate import ABSTAIN, Certificate, Prediction
from ..engine import VoteCounter, as_levels
from ..errors import InvalidArgumentError
from ..stats import binomial_test_pvalue, clopper_pearson_lower
from .base import DEFAULT_ALPHA, DEFAULT_BATCH, DEFAULT_N, DEFAULT_N0, SmoothedClassifier
from .noises import noise_model
from .sequential import SEQUENCE_BOUND, SequentialCertification, certify_sequential

CERTIFY_BOUND = "Clopper-Pearson one-sided lower bound on pA"
PREDICT_TEST = "two-sided binomial test of nA against nA + nB"
SAMPLER_SLACK = "total variation n*eps between the sound mode's fair-coin sampler and the exact discretized Gaussian"
DEFAULT_QUANTIZATION = 255  # 8-bit images


def top_two(counts: np.ndarray) -> tuple[int, int]:
    """Indices of the largest and second-largest counts (ties: lowest index first)."""
    order = np.argsort(-counts, kind="stable")
    return int(order[0]), int(order[1])


def predict_from_counts(counts: np.ndarray, alpha: float) -> tuple[int, float]:
    """PREDICT's decision from vote counts.

    Args:
        counts: the votes of each class.
        alpha: the test's level.

    Returns:
        (the top class, or ABSTAIN when the two-sided binomial test of nA against nA + nB has
        p-value > alpha; the p-value).
    """
    c_a, c_b = top_two(counts)
    n_a, n_b = int(counts[c_a]), int(counts[c_b])
    p_value = binomial_test_pvalue(n_a, n_a + n_b, 0.5)
    return (ABSTAIN if p_value > alpha else c_a), p_value


class VoteSmoothing(SmoothedClassifier):
    """Cohen et al.'s CERTIFY and PREDICT (module docstring) on the votes of any noise.

    A subclass says what is sampled (:meth:`make_noise`) and what radius a lower bound pA_lower
    certifies (:meth:`certified_radius`, in :attr:`norm`): :class:`Smooth` for additive noises,
    :class:`robustcert.AblationSmooth` for randomized ablation. alpha is spent on one
    Clopper-Pearson bound (CERTIFY) or one binomial test (PREDICT).
    """

    @abc.abstractmethod
    def certified_radius(self, p_a_lower: float, input_shape) -> float:
        """The radius (in :attr:`norm`) that a lower bound ``p_a_lower`` > 1/2 on pA certifies for
        inputs of ``input_shape``."""

    def certificate_details(self, input_shape) -> dict:
        """Method details every certificate of inputs of ``input_shape`` records (default none)."""
        return {}

    def alpha_spending(self, alpha, **certify_options):
        return {CERTIFY_BOUND: alpha}

    def predict_spending(self, alpha: float, n: int, input_shape) -> dict[str, float]:
        """PREDICT's test at alpha (sound mode: at alpha - n eps, the rest on the sampler's slack)."""
        slack = n * self.float_correction(input_shape)
        if slack >= alpha:
            raise InvalidArgumentError(f"n = {n} samples carry a sampler slack n*eps = {slack:.3g} >= alpha")
        return {PREDICT_TEST: alpha - slack, SAMPLER_SLACK: slack} if slack else {PREDICT_TEST: alpha}

    def certify_batch(self, xs, n0=DEFAULT_N0, n=DEFAULT_N, alpha=DEFAULT_ALPHA, batch_size=DEFAULT_BATCH, seed=0,
                      indices=None, **certify_options):
        """CERTIFY (module docstring); arguments as for :meth:`SmoothedClassifier.certify_batch`.
        This method has no certify options: ``sequential=True`` is refused (one clear error)."""
        if certify_options.get("sequential"):
            raise InvalidArgumentError(f"sequential certification uses the Gaussian l2 radius; it does not support "
                                       f"{self.describe_noise()}")
        certify_options.pop("sequential", None)
        if certify_options:
            raise InvalidArgumentError(f"{', '.join(sorted(certify_options))}: only with sequential=True")
        n0, n, alpha, batch_size = self.check_certify_args(n0, n, alpha, batch_size)
        xs, seed, indices, clock = self.begin(xs, seed, indices)
        common = dict(seed=seed, indices=indices, batch_size=batch_size)
        selection = self.sample(xs, n0, VoteCounter(len(xs), self.num_classes, self.device), "selection", **common,
                                bounded=False)
        estimation = self.sample(xs, n, VoteCounter(len(xs), self.num_classes, self.device), "estimation", **common)
        selection_counts, counts = selection.result(), estimation.result()
        seconds = clock.per_input(len(xs))
        sound = self.sound_records(xs) or [None] * len(xs)
        return [
            self._certificate(selection_counts[i], counts[i], n0, n, alpha, seed, index, seconds, xs.shape[1:],
                              sound[i])
            for i, index in enumerate(indices)
        ]

    def describe_noise(self) -> str:
        """The noise in words, for messages (``randomized ablation``, ``noise='laplace'``)."""
        return self.method

    def _certificate(self, selection_counts, counts, n0, n, alpha, seed, index, seconds, input_shape,
                     sound=None) -> Certificate:
        c_a = int(np.argmax(selection_counts))
        p_raw = clopper_pearson_lower(int(counts[c_a]), n, alpha)
        # sound mode: a bound on the sampler's pA, moved by at most eps to the exact discretized Gaussian's
        p_a_lower = max(0.0, p_raw - sound["correction"]) if sound else p_raw
        abstain = p_a_lower <= 0.5  # at 1/2 another class may tie with cA: no class is certified
        details = {"selected_class": c_a, "selection_counts": [int(c) for c in selection_counts]}
        if sound:
            details["sound_float"] = {**sound, "p_lower_sampler": p_raw}
        return Certificate(
            prediction=ABSTAIN if abstain else c_a,
            radius=0.0 if abstain else self.certified_radius(p_a_lower, input_shape),
            p_lower=p_a_lower,
            counts=[int(c) for c in counts],
            n0=n0, n=n, alpha=alpha, sigma=self.sigma, method=self.method, seed=seed, index=index,
            alpha_spending={CERTIFY_BOUND: alpha},  # not self.alpha_spending: SequentialSmooth(sequential=False) lands here
            samples_used=n0 + n,
            time=seconds,
            details={**details, **self.certificate_details(input_shape)},
            norm=self.norm,
        )

    def predict_batch(self, xs, n=DEFAULT_N, alpha=DEFAULT_ALPHA, batch_size=DEFAULT_BATCH, seed=0, indices=None):
        """PREDICT (module docstring); arguments as for :meth:`SmoothedClassifier.predict_batch`."""
        _, n, alpha, batch_size = self.check_certify_args(1, n, alpha, batch_size)
        xs, seed, indices, clock = self.begin(xs, seed, indices)
        spending = self.predict_spending(alpha, n, xs.shape[1:])
        counts = self.sample(
            xs, n, VoteCounter(len(xs), self.num_classes, self.device), "prediction", seed, indices, batch_size
        ).result()
        seconds = clock.per_input(len(xs))
        sound = self.sound_records(xs)
        predictions = []
        for row, index in enumerate(indices):
            prediction, p_value = predict_from_counts(counts[row], spending[PREDICT_TEST])
            predictions.append(Prediction(
                prediction=prediction,
                counts=[int(c) for c in counts[row]],
                n=n, alpha=alpha, sigma=self.sigma, method=self.method, seed=seed, index=index,
                p_value=p_value, alpha_spending=spending, samples_used=n, time=seconds,
                details={"sound_float": sound[row]} if sound else {},
            ))
        return predictions


class Smooth(SequentialCertification, VoteSmoothing):
    """Randomized smoothing of a hard classifier (Cohen et al. 2019). See the module docstring.

    Args:
        model: as for :class:`~robustcert.SmoothedClassifier` (so are the keyword arguments
            ``device``, ``input_shape``, ``precision``, ``channels_last``, ``compile``).
        num_classes: as for :class:`~robustcert.SmoothedClassifier`.
        sigma: as for :class:`~robustcert.SmoothedClassifier`.
        noise: a name in :data:`robustcert.methods.noises.NOISES`: "gaussian" (l2 radii),
            "laplace" or "uniform" (l1 radii); ``sigma`` is the noise's per-coordinate standard
            deviation whichever it is.
        sound_float: the floating-point-sound mode (Gaussian noise only) for inputs on the grid
            k / ``quantization``.
        quantization: the input grid of the sound mode: levels L (default 255) or the step 1/L.
    """

    method = "cohen"

    def __init__(self, model, num_classes, sigma, *args, noise: str = "gaussian", sound_float: bool = False,
                 quantization=None, **options):
        super().__init__(model, num_classes, sigma, *args, **options)
        self.noise_model = noise_model(noise)
        if not isinstance(sound_float, bool):
            raise InvalidArgumentError(f"sound_float must be True or False, got {sound_float!r}")
        if quantization is not None and not sound_float:
            raise InvalidArgumentError("quantization is the input grid of the sound mode: give sound_float=True")
        if sound_float and self.noise_model.name != "gaussian":
            raise InvalidArgumentError(f"sound_float discretizes Gaussian noise; it does not support "
                                       f"noise={self.noise_model.name!r}")
        self.sound_float = sound_float
        self.quantization = as_levels(DEFAULT_QUANTIZATION if quantization is None else quantization) \
            if sound_float else None

    @property
    def norm(self) -> str:
        return self.noise_model.norm

    def make_noise(self, sigma):
        if self.noise_model.name == "gaussian":
            return super().make_noise(sigma)  # the discretized Gaussian in the sound mode
        return self.noise_model.sampler(sigma)

    def describe_noise(self) -> str:
        return f"noise={self.noise_model.name!r}"

    def settings(self):
        settings = {} if self.noise_model.name == "gaussian" else {"noise": self.noise_model.name}
        if self.sound_float:
            settings.update(sound_float=True, quantization=self.quantization,
                            sound_noise_table_sha256=self.make_noise(self.sigma).table.digest)
        return settings

    def certified_radius(self, p_a_lower: float, input_shape) -> float:
        """The radius that pA_lower certifies (in :attr:`norm`) for inputs of ``input_shape``."""
        return self.noise_model.radius(self.sigma, p_a_lower)

    def certificate_details(self, input_shape) -> dict:
        return {} if self.noise_model.name == "gaussian" else {"noise": self.noise_model.name}

    def check_sequential(self) -> None:
        if self.noise_model.name != "gaussian":
            raise InvalidArgumentError(f"sequential certification uses the Gaussian l2 radius; it does not support "
                                       f"{self.describe_noise()}")

    def alpha_spending(self, alpha, sequential=False, **certify_options):
        return {SEQUENCE_BOUND if sequential else CERTIFY_BOUND: alpha}

    def certify_batch(self, xs, n0=DEFAULT_N0, n=DEFAULT_N, alpha=DEFAULT_ALPHA, batch_size=DEFAULT_BATCH, seed=0,
                      indices=None, sequential=False, **sequential_options):
        """CERTIFY; ``sequential=True`` stops each input early instead (methods/sequential.py): pass
        ``target_radius=`` or ``tolerance=``, optionally ``n_max=`` (default n), ``growth=``, ``n_first=``,
        ``final_share=``, ``stop_alpha=``, ``stop_test=``, ``selection_lead_votes=``
        (:func:`robustcert.methods.sequential.certify_sequential`)."""
        if sequential:
            self.check_sequential()
            return certify_sequential(self, xs, n0, n, alpha, batch_size, seed, indices, **sequential_options)
        return super().certify_batch(xs, n0, n, alpha, batch_size, seed, indices, **sequential_options)

