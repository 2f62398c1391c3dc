"""Anytime-valid sequential CERTIFY: stop sampling as soon as the answer is decided.

Cohen et al.'s CERTIFY spends the same n (100000) estimation samples on every input, although a
few thousand often already show that an input is certified at the radius of interest, or that it
never will be. Here the estimation samples are drawn in growing rounds and the votes are looked at
after each round (a *checkpoint*); sampling stops when the question is answered.

Looking again and again at a fixed-n Clopper-Pearson bound is NOT valid: the chance that some
look errs grows with the number of looks (tests/test_sequential.py shows it). The bound on pA is a
confidence sequence that holds at every checkpoint at once, the stitched Clopper-Pearson sequence
(:func:`robustcert.stats.stitched_clopper_pearson_lower`): with K checkpoints declared before
sampling, L_j = CP_lower(nA, n_j, alpha / K), and P(exists j: L_j > pA) <= alpha (union bound).
It was chosen by measurement over Robbins' beta-binomial mixture and a betting sequence
(results/sequential/cs_widths.md): about 1.2x the width of the fixed-n bound at every n, against
1.5-1.9x.

SEQUENTIAL-CERTIFY(f, sigma, x, n0, alpha, n_max; a target radius r or a tolerance t):
    counts0 <- SampleUnderNoise(f, x, n0, sigma); cA <- top index in counts0     # selection stage
    n_1 < ... < n_K = n_max: n_1 = n_first, then x growth, rounded up to whole batches
    L <- 0; U <- 1
    for j = 1..K:
        draw n_j - n_{j-1} more estimation samples (the same per-input stream); nA <- votes for cA
        L <- max(L, CP_lower(nA, n_j, alpha/K));   U <- min(U, CP_upper(nA, n_j, alpha/K))
        ceiling <- CP_lower(nA + n_max - n_j, n_max, alpha/K)   # the largest L any continuation reaches
        target radius r, p* = Phi(r / sigma):
            stop "certified"        if L >= p* and L > 1/2    (the radius sigma Phi^-1(L) is >= r)
            stop "not certifiable"  if U < p* or U <= 1/2     (no number of samples certifies r)
            stop "unreachable"      if ceiling < p* or ceiling <= 1/2   (not even n_max - n_j more votes for cA do)
        tolerance t, R(p) = sigma Phi^-1(p) if p > 1/2 else 0:
            stop "within tolerance" if R(min(U, ceiling)) - R(L) <= t
        stop "n_max" at j = K
    if L <= 1/2: ABSTAIN  else: return cA, R = sigma Phi^-1(L)

Soundness. The certificate uses only L, a lower confidence sequence at level alpha: on an event of
probability >= 1 - alpha every L_j <= pA, so the L at the stopping checkpoint is <= pA whatever
rule chose to stop there; that is Cohen et al.'s Theorem 1 with a bound valid at a stopping time.
alpha is spent on that one sequence (alpha / K per checkpoint). U and the ceiling only decide when
to stop. The verdicts "not certifiable" and "within tolerance" are claims about further sampling;
they hold on the event that the upper sequence U (also alpha / K per checkpoint) covers as well.
The ceiling is exact: one more sample that votes cA never lowers a Clopper-Pearson lower bound.
In the floating-point-sound mode (``Smooth(sound_float=True)``) the sequence bounds the pA of the
fair-coin sampler, within eps of the exact discretized Gaussian's (:mod:`robustcert.engine.sound`):
L - eps, U + eps and ceiling - eps are used instead (deterministic, no alpha).

Sampling goes through the engine with the same per-input generators as CERTIFY's estimation
stage; rounds after the first are whole batches, so when n_first is a multiple of batch_size an
input's first n_j samples are exactly the samples a fixed-n CERTIFY with n = n_j would draw.

Example::

    from robustcert import Smooth, load_model
    smoothed = Smooth(load_model("bundled:digits-0.25"), num_classes=10, sigma=0.25)
    cert = smoothed.certify(x, n0=100, alpha=0.001, seed=0, sequential=True, target_radius=0.5,
                            n_max=100_000)
    cert.radius, cert.samples_used, cert.details["sequential"]["stop"]
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from ..certificate import ABSTAIN, Certificate
from ..engine import VoteCounter
from ..errors import InvalidArgumentError, check_count
from ..radius import gaussian_radius
from ..stats import stitched_alpha, stitched_clopper_pearson_lower, stitched_clopper_pearson_upper

SEQUENCE_BOUND = "stitched Clopper-Pearson lower confidence sequence on pA (alpha/K at each of K checkpoints)"
STOPPING_BOUND = "stitched Clopper-Pearson upper confidence sequence on pA (alpha/K per checkpoint; stops only)"


def checkpoint_schedule(n_max: int, batch_size: int, growth: float = 2.0, n_first: int | None = None) -> list[int]:
    """The checkpoints n_1 < n_2 < ... < n_K = n_max at which the votes are looked at.

    n_1 = min(n_first, n_max) (default n_first = batch_size); then n_{j+1} = growth * n_j rounded up
    to a whole number of batches once that exceeds one batch, and capped at n_max. Geometric growth
    keeps K ~ log_growth(n_max / n_1) small, and K is what the confidence sequence pays for.
    """
    n_max = check_count(n_max, "n_max")
    batch_size = check_count(batch_size, "batch_size")
    n_first = batch_size if n_first is None else check_count(n_first, "n_first")
    if not (isinstance(growth, (int, float)) and math.isfinite(growth) and growth > 1.0):
        raise InvalidArgumentError(f"growth must be a finite number > 1, got {growth!r}")
    checkpoints = [min(n_first, n_max)]
    while checkpoints[-1] < n_max:
        following = math.ceil(checkpoints[-1] * growth)
        if following > batch_size:
            following = -(-following // batch_size) * batch_size
        checkpoints.append(min(max(following, checkpoints[-1] + 1), n_max))
    return checkpoints


def sigma_radius(sigma: float, p_lower: float) -> float:
    """R(p) = sigma Phi^-1(p) for p > 1/2, else 0 (the radius a lower bound p on pA certifies)."""
    return gaussian_radius(sigma, p_lower)


@dataclass(frozen=True)
class TargetRadius:
    """Mode 1: "is x certified at radius r?" Decided once L >= Phi(r/sigma) or U < Phi(r/sigma).

    A certificate needs L > 1/2 (CERTIFY abstains at L = 1/2), which matters for r = 0 only:
    p* = Phi(0) = 1/2 is then reached but not enough, and U <= 1/2 already rules it out.
    """

    sigma: float
    radius: float

    name = "target-radius"

    def __post_init__(self):
        object.__setattr__(self, "p_target", float(norm.cdf(self.radius / self.sigma)))

    def stop(self, lower: float, upper: float, ceiling: float) -> str | None:
        if lower >= self.p_target and lower > 0.5:
            return "certified"
        if upper < self.p_target or upper <= 0.5:
            return "not certifiable"
        if ceiling < self.p_target or ceiling <= 0.5:
            return "unreachable"
        return None

    def describe(self) -> dict:
        return {"mode": self.name, "target_radius": self.radius, "p_target": self.p_target}


@dataclass(frozen=True)
class RadiusTolerance:
    """Mode 2: stop when further samples cannot raise the certified radius by more than ``tolerance``.

    Further samples can raise the lower bound L at most to min(U, ceiling): to U on the event that
    the confidence sequences cover (pA <= U), and to the ceiling CP_lower(nA + n_max - n_j, n_max,
    alpha/K) in any case. So stop when R(min(U, ceiling)) - R(L) <= tolerance.
    """

    sigma: float
    tolerance: float

    name = "tolerance"

    def stop(self, lower: float, upper: float, ceiling: float) -> str | None:
        reachable = sigma_radius(self.sigma, min(upper, ceiling))
        return "within tolerance" if reachable - sigma_radius(self.sigma, lower) <= self.tolerance else None

    def describe(self) -> dict:
        return {"mode": self.name, "tolerance": self.tolerance}


def stopping_rule(sigma: float, target_radius: float | None, tolerance: float | None):
    """The stopping rule for exactly one of ``target_radius`` (>= 0) and ``tolerance`` (> 0)."""
    if (target_radius is None) == (tolerance is None):
        raise InvalidArgumentError("sequential certification needs exactly one of target_radius and tolerance")
    if target_radius is not None:
        if not (isinstance(target_radius, (int, float)) and math.isfinite(target_radius) and target_radius >= 0):
            raise InvalidArgumentError(f"target_radius must be a finite number >= 0, got {target_radius!r}")
        return TargetRadius(sigma, float(target_radius))
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance > 0):
        raise InvalidArgumentError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    return RadiusTolerance(sigma, float(tolerance))


def checkpoint_bounds(votes, n: int, checkpoints: list[int], alpha: float):
    """For each input's votes for cA at checkpoint n: (L_j, U_j, ceiling) as three arrays.

    L_j, U_j: the stitched Clopper-Pearson bounds at alpha/K; ceiling: the L at n_max if all the
    remaining n_max - n samples voted cA (1.0 at n_max itself: nothing remains). Computed once per
    distinct vote count.
    """
    n_max = checkpoints[-1]
    distinct, inverse = np.unique(np.asarray(votes, dtype=np.int64), return_inverse=True)
    bounds = np.array([
        (stitched_clopper_pearson_lower(k, n, checkpoints, alpha),
         stitched_clopper_pearson_upper(k, n, checkpoints, alpha),
         stitched_clopper_pearson_lower(k + n_max - n, n_max, checkpoints, alpha) if n < n_max else 1.0)
        for k in distinct.tolist()
    ]).reshape(-1, 3)
    return bounds[inverse, 0], bounds[inverse, 1], bounds[inverse, 2]


@dataclass
class SequenceState:
    """One input's running bounds: L and U over the checkpoints visited so far."""

    selected: int
    lower: float = 0.0
    upper: float = 1.0
    n: int = 0
    reason: str | None = None
    seconds: float = 0.0

    def look(self, n: int, lower: float, upper: float, ceiling: float, last: bool, rule) -> bool:
        """Take checkpoint n's bounds (running max of L, min of U); True when the input stops here."""
        self.n = n
        self.lower, self.upper = max(self.lower, float(lower)), min(self.upper, float(upper))
        self.reason = rule.stop(self.lower, self.upper, float(ceiling))
        if last and self.reason is None:
            self.reason = "n_max"
        return self.reason is not None


def certify_sequential(smoothed, xs, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                       batch_size: int = 1000, seed: int | None = 0, indices=None, *,
                       target_radius: float | None = None, tolerance: float | None = None,
                       n_max: int | None = None, growth: float = 2.0, n_first: int | None = None) -> list[Certificate]:
    """SEQUENTIAL-CERTIFY (module docstring) for a batch of inputs of a hard-vote smoothed classifier.

    Args (beyond CERTIFY's): exactly one of ``target_radius`` (mode 1) and ``tolerance`` (mode 2);
    ``n_max`` the most estimation samples per input (default ``n``); ``growth`` > 1 the factor between
    checkpoints; ``n_first`` the first checkpoint (default ``batch_size``). Every certificate records
    ``samples_used`` = n0 + the estimation samples drawn, ``n`` = the latter, and in
    ``details["sequential"]`` the mode, the stopping reason, the checkpoints and the bounds.
    """
    n0, n, alpha, batch_size = smoothed.check_certify_args(n0, n, alpha, batch_size)
    rule = stopping_rule(smoothed.sigma, target_radius, tolerance)
    n_max = check_count(n if n_max is None else n_max, "n_max")
    checkpoint_schedule(n_max, 1, growth, n_first)  # refuse bad growth / n_first before sampling
    xs, seed, indices, clock = smoothed.begin(xs, seed, indices)
    if len(xs) == 0:
        return []
    started = clock.start
    batch_size = smoothed.batch_size_for(batch_size, xs.shape[1:])  # "auto": resolved once, before sampling
    selection = smoothed.sample(xs, n0, VoteCounter(len(xs), smoothed.num_classes, smoothed.device), "selection",
                                seed, indices, batch_size, bounded=False).result()
    selection_seconds = (time.perf_counter() - started) / len(xs)
    states = [SequenceState(int(np.argmax(row)), seconds=selection_seconds) for row in selection]
    counts = np.zeros((len(xs), smoothed.num_classes), dtype=np.int64)
    engine = smoothed.engine(batch_size)
    checkpoints = checkpoint_schedule(n_max, batch_size, growth, n_first)
    generators = [engine.generator(seed, index, "estimation") for index in indices]  # one stream per input
    # sound mode: the sequence bounds the sampler's pA, within eps of the exact discretized Gaussian's
    correction = smoothed.float_correction(xs.shape[1:])
    active, drawn = list(range(len(xs))), 0
    for checkpoint in checkpoints:
        round_started = time.perf_counter()
        votes = VoteCounter(len(active), smoothed.num_classes, smoothed.device)
        engine.run(xs[active], checkpoint - drawn, votes, [generators[row] for row in active])
        counts[active] += votes.result()
        drawn = checkpoint
        share = (time.perf_counter() - round_started) / len(active)
        for row in active:
            states[row].seconds += share
        votes_for_selected = [counts[row, states[row].selected] for row in active]
        lowers, uppers, ceilings = checkpoint_bounds(votes_for_selected, checkpoint, checkpoints, alpha)
        bounds = zip(np.maximum(lowers - correction, 0.0), np.minimum(uppers + correction, 1.0),
                     np.maximum(ceilings - correction, 0.0))
        last = checkpoint == checkpoints[-1]
        active = [row for row, (lower, upper, ceiling) in zip(active, bounds)
                  if not states[row].look(checkpoint, lower, upper, ceiling, last, rule)]
        if not active:
            break
    sound = smoothed.sound_record(xs.shape[1:]) if smoothed.sound_float else None
    return [
        _certificate(smoothed, states[row], selection[row], counts[row], n0, alpha, seed, index, checkpoints, rule,
                     sound)
        for row, index in enumerate(indices)
    ]


def _certificate(smoothed, state: SequenceState, selection_counts, counts, n0, alpha, seed, index, checkpoints,
                 rule, sound=None) -> Certificate:
    abstain = state.lower <= 0.5  # as CERTIFY: at 1/2 another class may tie with cA
    return Certificate(
        prediction=ABSTAIN if abstain else state.selected,
        radius=0.0 if abstain else gaussian_radius(smoothed.sigma, state.lower),
        p_lower=state.lower,
        counts=[int(c) for c in counts],
        n0=n0, n=state.n, alpha=alpha, sigma=smoothed.sigma, method=smoothed.method, seed=seed, index=index,
        alpha_spending={SEQUENCE_BOUND: alpha},
        samples_used=n0 + state.n,
        time=state.seconds,
        details={
            "selected_class": state.selected,
            "selection_counts": [int(c) for c in selection_counts],
            "sequential": {
                **rule.describe(),
                "stop": state.reason,
                "p_upper": state.upper,
                "n_max": checkpoints[-1],
                "checkpoints": checkpoints,
                "alpha_per_checkpoint": stitched_alpha(checkpoints, alpha),
                "confidence_sequence": SEQUENCE_BOUND,
                "stopping_bound": STOPPING_BOUND,
            },
            **({"sound_float": sound} if sound else {}),
        },
    )
