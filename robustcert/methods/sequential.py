"""Anytime-valid sequential CERTIFY: stop sampling as soon as the answer is decided.

Cohen et al.'s CERTIFY spends the same n (100000) estimation samples on every input, although a
few dozen often already show that an input is certified at the radius of interest, and a few
hundred that it never will be. Here the samples are drawn in growing rounds and the votes are
looked at after each round (a *checkpoint*); sampling stops when the question is answered. On the
bundled digits models this comes within a small factor of the sample-complexity floor (the samples
an oracle that knew pA would need, :func:`robustcert.stats.oracle_sample_size`):
results/sequential/digits.md; the defaults were chosen by simulation on other images
(results/sequential/design.md).

Looking again and again at a fixed-n Clopper-Pearson bound is NOT valid: the chance that some
look errs grows with the number of looks (tests/test_sequential.py shows it). The certificate's
bound on pA is a confidence sequence that holds at every checkpoint at once, the stitched
Clopper-Pearson sequence (:func:`robustcert.stats.stitched_clopper_pearson_lower`): with K
checkpoints and levels alpha_1 + ... + alpha_K = alpha declared before sampling,
L_j = CP_lower(nA, n_j, alpha_j), and P(exists j: L_j > pA) <= alpha (union bound). It was chosen
by measurement over Robbins' beta-binomial mixture and a betting sequence
(results/sequential/cs_widths.md).

SEQUENTIAL-CERTIFY(f, sigma, x, n0, alpha, n_max; a target radius r or a tolerance t; stop_alpha):
    selection (own stream): draw 8, 16, 32, 64, ... up to n0 votes; after each look stop once the
        leading class is `lead` votes ahead of the runner-up; cA <- the leading class
    checkpoints n_1 < ... < n_K = n_max: n_1 = n_first, then x growth (never depends on batch_size)
    levels alpha_j: final_share * alpha at n_K, the rest split evenly over the other checkpoints
    L <- 0; U <- 1
    for j = 1..K:
        draw n_j - n_{j-1} more estimation samples (own stream, fixed draw sizes); nA <- votes for cA
        L <- max(L, CP_lower(nA, n_j, alpha_j))              # the certificate's sequence, level alpha
        U <- min(U, CP_upper(nA, n_j, stop_alpha / K))      # stopping only, level stop_alpha
        ceiling <- the largest L any continuation can reach (all further votes for cA)
        target radius r, p* = Phi(r / sigma), reach = the vote share that certifies r at n_K:
            stop "certified"                if L >= p* and L > 1/2   (the radius sigma Phi^-1(L) is >= r)
            stop "not certifiable"          if U < p* or U <= 1/2    (no number of samples certifies r)
            stop "not certifiable by n_max" if U < reach    (pA < reach: n_max samples would most likely not)
            stop "unreachable"              if ceiling < p* or ceiling <= 1/2
        tolerance t, R(p) = sigma Phi^-1(p) if p > 1/2 else 0:
            stop "within tolerance" if R(min(U, ceiling)) - R(L) <= t
        stop "n_max" at j = K
    if L <= 1/2: ABSTAIN  else: return cA, R = sigma Phi^-1(L)

Soundness. The certificate uses only L, a lower confidence sequence at level alpha: on an event of
probability >= 1 - alpha every L_j <= pA, so the L at the stopping checkpoint is <= pA whatever
rule chose to stop there; that is Cohen et al.'s Theorem 1 with a bound valid at a stopping time.
alpha is spent on that one sequence (``alpha_spending``). cA comes from selection samples of
their own stream, independent of the estimation samples, so any selection rule keeps L valid: the
early selection stop spends no alpha (a wrong cA can only lose a certificate, never make a false
one). U, the betting tests and the ceiling only decide when to stop, at the separate level
``stop_alpha`` (default larger than alpha: a wrong stop loses an input that more samples would
have certified, it never makes a false certificate): each "not certifiable" verdict, and "within
tolerance", is a claim that holds with probability >= 1 - stop_alpha. With
``stop_test="betting"`` the two "not certifiable" verdicts come instead from betting tests of
H0: pA >= p* and H0: pA >= reach (:func:`robustcert.stats.kelly_bet`), each at level stop_alpha
by Ville's inequality. The ceiling is exact: one more vote for cA never lowers a Clopper-Pearson
lower bound. A certificate needs L > 1/2 (CERTIFY abstains at L = 1/2: another class may tie),
which matters for r = 0 only.

In the floating-point-sound mode (``Smooth(sound_float=True)``) the sequences bound the pA of the
fair-coin sampler, within eps of the exact discretized Gaussian's (:mod:`robustcert.engine.sound`):
L - eps, U + eps and ceiling - eps are used instead (deterministic, no alpha), the betting tests
test the sampler's pA against p* - eps, and reach is the vote share whose L - eps certifies.
Only the Gaussian l2 radius is supported (the rules compare probits with r / sigma): other noises
and randomized ablation refuse ``sequential=True`` (``check_sequential`` of each method).

Sampling goes through the engine with per-input generators from (seed, index, stage); every
round draws fixed sizes (:func:`round_blocks`: the round's samples in draws of at most
``ESTIMATION_BLOCK``), so an input's samples depend on (seed, index, stage) and the schedule,
never on batch_size or on which inputs share a batch, and batches are filled with the rounds of
all active inputs.

Several branches (:class:`Branch`; dual smoothing's two, methods/dual.py): every branch draws the
same rounds from its own streams, has its own lower and upper sequences at level alpha_j / B and
stop_alpha / (K B) (a union bound over the B branches too), and the rules compare the certified
radius sum_b Phi^-1(p_b) / sqrt(sum_b 1/sigma_b^2) with r instead of pA with p*; one branch is
the algorithm above. The selection looks at the votes summed over the branches (all n0 by
default: the lead bound above is for one branch), and "not certifiable by n_max" and the betting
test are one-branch only.

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
from typing import Callable

import numpy as np
import torch
from scipy.stats import norm

from ..certificate import ABSTAIN, Certificate
from ..engine import VoteCounter
from ..errors import InvalidArgumentError, check_alpha, check_count
from ..radius import gaussian_radius
from ..stats import (
    betting_log_growth, checkpoint_levels, clopper_pearson_lower, clopper_pearson_lower_many,
    clopper_pearson_upper_many, kelly_bet,
)

SEQUENCE_BOUND = ("stitched Clopper-Pearson lower confidence sequence on pA "
                  "(levels alpha_j at K declared checkpoints, summing to alpha)")
STOPPING_BOUND = "stitched Clopper-Pearson upper confidence sequence on pA (stop_alpha/K per checkpoint; stops only)"
BETTING_TEST = "betting tests of pA >= p* and pA >= reach (Ville's inequality, stop_alpha each; stops only)"

#: The default schedule and levels, chosen by simulation on held-out digits images
#: (experiments/sequential_design.py, results/sequential/design.md).
DEFAULT_N_FIRST = 64
DEFAULT_GROWTH = 2.0
DEFAULT_FINAL_SHARE = 0.5
DEFAULT_STOP_ALPHA = 0.05
DEFAULT_STOP_TEST = "clopper-pearson"
STOP_TESTS = ("clopper-pearson", "betting")
#: Largest single draw of a round (samples): fixes each input's stream whatever the batch size,
#: and bounds the scratch memory of a draw that crosses a batch boundary.
ESTIMATION_BLOCK = 256
#: Selection looks: after 8, 16, 32, ... votes (capped at n0).
SELECTION_FIRST_LOOK = 8
#: Target of the default selection lead: an input with pA >= p* picks another class with
#: probability <= this (gambler's ruin; see :func:`selection_lead`).
SELECTION_ERROR = 0.001


# --------------------------------------------------------------------------- what is fixed before sampling
def checkpoint_schedule(n_max: int, growth: float = DEFAULT_GROWTH, n_first: int = DEFAULT_N_FIRST) -> list[int]:
    """The checkpoints n_1 < n_2 < ... < n_K = n_max at which the votes are looked at.

    n_1 = min(n_first, n_max); then n_{j+1} = ceil(growth * n_j), capped at n_max. Geometric growth
    keeps K ~ log_growth(n_max / n_1) small, and K is what the confidence sequence pays for. The
    schedule never depends on the batch size: batches are filled with the rounds of many inputs.
    """
    n_max = check_count(n_max, "n_max")
    n_first = check_count(n_first, "n_first")
    if isinstance(growth, bool) or not (isinstance(growth, (int, float)) and math.isfinite(growth) and growth > 1.0):
        raise InvalidArgumentError(f"growth must be a finite number > 1, got {growth!r}")
    checkpoints = [min(n_first, n_max)]
    while checkpoints[-1] < n_max:
        checkpoints.append(min(max(math.ceil(checkpoints[-1] * growth), checkpoints[-1] + 1), n_max))
    return checkpoints


def round_blocks(looks: list[int], block: int = ESTIMATION_BLOCK) -> list[list[int]]:
    """The draw sizes of each round: round j's n_j - n_{j-1} samples as draws of ``block`` (the
    last one smaller). They fix each input's stream (see :func:`robustcert.engine.plan_blocks`)."""
    rounds, drawn = [], 0
    for look in looks:
        size = look - drawn
        rounds.append([block] * (size // block) + ([size % block] if size % block else []))
        drawn = look
    return rounds


def selection_looks(n0: int) -> list[int]:
    """When the selection votes are looked at: 8, 16, 32, ... (doubling), and n0."""
    looks = [SELECTION_FIRST_LOOK]
    while looks[-1] < n0:
        looks.append(2 * looks[-1])
    return [look for look in looks if look < n0] + [n0]


def selection_lead(p_target: float, error: float = SELECTION_ERROR) -> int | None:
    """The lead (top votes minus runner-up votes) after which selection stops, for a target p*.

    For an input that can be certified at the target, pA >= p* and every other class c has
    p_c <= 1 - pA. The votes of cA and of c form a random walk that reaches a lead of d for c
    with probability <= (p_c / pA)^d (gambler's ruin), so some other class leads by d at some
    look with probability <= sum_c (p_c / pA)^d <= ((1 - p*) / p*)^d. The smallest d with
    ((1 - p*) / p*)^d <= ``error``; None (no early stop: all n0 votes) when p* <= 1/2.
    """
    if p_target <= 0.5:
        return None
    if p_target >= 1.0:
        return 1
    return max(1, math.ceil(math.log(error) / math.log((1.0 - p_target) / p_target)))


def probit_sum(p) -> np.ndarray:
    """sum over branches of Phi^-1(p_b) for an array of bounds (inputs, branches); Phi^-1(0) = -inf."""
    with np.errstate(invalid="ignore"):  # -inf + inf = nan: never certified, never decided
        return norm.ppf(np.asarray(p, dtype=np.float64)).sum(axis=-1)


def radius_scale(sigmas) -> float:
    """sqrt(sum_b 1 / sigma_b^2): R = (sum of probits) / scale is the certified radius, for one branch
    (Cohen et al.: sigma Phi^-1(pA)) and for dual smoothing's two (Xia et al.; methods/dual.py)."""
    return math.sqrt(sum(1.0 / sigma ** 2 for sigma in sigmas))


def _as_sigmas(sigma) -> tuple[float, ...]:
    return tuple(float(s) for s in sigma) if isinstance(sigma, (tuple, list)) else (float(sigma),)


def sigma_radius(sigma: float, p_lower: float) -> float:
    """R(p) = sigma Phi^-1(p) for p > 1/2, else 0 (the radius a lower bound p on pA certifies)."""
    return gaussian_radius(sigma, p_lower)


@dataclass(frozen=True)
class TargetRadius:
    """Mode 1: "is x certified at radius r?" With one branch: decided once L >= p* = Phi(r/sigma),
    or once pA is shown to lie below p* or below the vote share that would certify r at n_max.
    With several (dual smoothing): once sum_b Phi^-1(L_b) >= r sqrt(sum_b 1/sigma_b^2), or once the
    same sum of the upper bounds falls below it. ``sigma``: one noise level, or one per branch.

    A certificate also needs sum_b Phi^-1(L_b) > 0 (one branch: L > 1/2; CERTIFY abstains at
    L = 1/2), which matters for r = 0 only: the threshold 0 is then reached but not enough, and an
    upper (or ceiling) sum <= 0 already rules it out."""

    sigma: float | tuple[float, ...]
    radius: float

    name = "target-radius"

    def __post_init__(self):
        sigmas = _as_sigmas(self.sigma)
        threshold = self.radius * radius_scale(sigmas)
        object.__setattr__(self, "threshold", threshold)  # in probit-sum units
        object.__setattr__(self, "p_target", float(norm.cdf(threshold)) if len(sigmas) == 1 else None)

    def stop(self, lower, upper, ceiling, below_target, below_reach):
        """The stopping reason of each input (None: go on), from its running bounds (inputs, branches)."""
        reasons = np.full(len(lower), None, dtype=object)
        ceiling_sum, upper_sum, lower_sum = probit_sum(ceiling), probit_sum(upper), probit_sum(lower)
        reasons[(ceiling_sum < self.threshold) | (ceiling_sum <= 0)] = "unreachable"
        reasons[np.asarray(below_reach, dtype=bool)] = "not certifiable by n_max"
        reasons[np.asarray(below_target, dtype=bool) | (upper_sum <= 0)] = "not certifiable"
        reasons[(lower_sum >= self.threshold) & (lower_sum > 0)] = "certified"
        return reasons

    def describe(self) -> dict:
        return {"mode": self.name, "target_radius": self.radius,
                **({"p_target": self.p_target} if self.p_target is not None else {})}


@dataclass(frozen=True)
class RadiusTolerance:
    """Mode 2: stop when further samples cannot raise the certified radius by more than ``tolerance``.

    Further samples can raise each lower bound L at most to min(U, ceiling): to U on the event that
    the upper sequence covers (pA <= U, probability >= 1 - stop_alpha), and to the ceiling in any
    case. So stop when R(min(U, ceiling)) - R(L) <= tolerance, R the radius of the bounds.
    """

    sigma: float | tuple[float, ...]
    tolerance: float

    name = "tolerance"
    p_target = None

    def radius(self, p) -> np.ndarray:
        """The certified radius of bounds p (inputs, branches): sum of probits / scale, 0 if not > 0."""
        total = probit_sum(p)
        return np.where(total > 0, total, 0.0) / radius_scale(_as_sigmas(self.sigma))

    def stop(self, lower, upper, ceiling, below_target=None, below_reach=None):
        within = self.radius(np.minimum(upper, ceiling)) - self.radius(lower) <= self.tolerance
        return np.where(within, "within tolerance", None).astype(object)

    def describe(self) -> dict:
        return {"mode": self.name, "tolerance": self.tolerance}


def stopping_rule(sigma, target_radius: float | None, tolerance: float | None):
    """The stopping rule for exactly one of ``target_radius`` (>= 0) and ``tolerance`` (> 0);
    ``sigma``: the noise level, or one per branch."""
    if (target_radius is None) == (tolerance is None):
        raise InvalidArgumentError("sequential certification needs exactly one of target_radius and tolerance")
    if target_radius is not None:
        if not (isinstance(target_radius, (int, float)) and math.isfinite(target_radius) and target_radius >= 0):
            raise InvalidArgumentError(f"target_radius must be a finite number >= 0, got {target_radius!r}")
        return TargetRadius(sigma, float(target_radius))
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance > 0):
        raise InvalidArgumentError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    return RadiusTolerance(sigma, float(tolerance))


def check_sequential_options(sigma: float, target_radius: float | None = None, tolerance: float | None = None,
                             n_max: int | None = None, growth: float = DEFAULT_GROWTH,
                             n_first: int = DEFAULT_N_FIRST, final_share: float | None = DEFAULT_FINAL_SHARE,
                             stop_alpha: float = DEFAULT_STOP_ALPHA, stop_test: str = DEFAULT_STOP_TEST,
                             selection_lead_votes: int | None = None, **unknown) -> None:
    """Refuse bad sequential options before anything is sampled (InvalidArgumentError)."""
    if unknown:
        raise InvalidArgumentError(f"unknown sequential option(s): {', '.join(sorted(unknown))}")
    rule = stopping_rule(sigma, target_radius, tolerance)
    # alpha here is a placeholder (CERTIFY checks the real one): only the options are checked
    SequentialDesign.build(rule, check_count(1 if n_max is None else n_max, "n_max"), 0.001, growth, n_first,
                           final_share, stop_alpha, stop_test)
    if selection_lead_votes is not None:
        check_count(selection_lead_votes, "selection_lead_votes")


def reach_share(p_target: float, n_max: int, level: float, strict: bool = False) -> float | None:
    """The smallest vote share k / n_max with CP_lower(k, n_max, level) >= p* (``strict``: > p*): what
    certifies the target at the last checkpoint. None when even k = n_max does not."""
    reaches = (lambda bound: bound > p_target) if strict else (lambda bound: bound >= p_target)
    if not reaches(clopper_pearson_lower(n_max, n_max, level)):
        return None
    low, high = 0, n_max  # CP_lower(low) misses p*, CP_lower(high) reaches it; the bound grows with k
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if reaches(clopper_pearson_lower(middle, n_max, level)) else (middle, high)
    return high / n_max


@dataclass(frozen=True)
class SequentialDesign:
    """Everything SEQUENTIAL-CERTIFY fixes before sampling: the looks, the levels and the rule.

    With B branches (dual smoothing: 2) every branch has its own lower and upper sequence, each at
    the checkpoint's level / B (a union bound over the branches as well as over the looks).
    """

    rule: TargetRadius | RadiusTolerance
    checkpoints: tuple[int, ...]
    levels: tuple[float, ...]          # alpha_j of the certificate's lower sequence(s) (sum alpha)
    stop_levels: tuple[float, ...]     # of the stopping upper sequence(s) (sum stop_alpha)
    alpha: float
    stop_alpha: float
    stop_test: str
    reach: float | None                # one-branch target mode: the vote share that certifies at n_max
    branches: int = 1
    correction: float = 0.0            # sound mode's eps: the bounds hold for the sampler's pA, within eps

    @classmethod
    def build(cls, rule, n_max: int, alpha: float, growth: float = DEFAULT_GROWTH, n_first: int = DEFAULT_N_FIRST,
              final_share: float | None = DEFAULT_FINAL_SHARE, stop_alpha: float = DEFAULT_STOP_ALPHA,
              stop_test: str = DEFAULT_STOP_TEST, correction: float = 0.0) -> "SequentialDesign":
        checkpoints = checkpoint_schedule(n_max, growth, n_first)
        alpha, stop_alpha = check_alpha(alpha), check_alpha(stop_alpha, "stop_alpha")
        branches = len(_as_sigmas(rule.sigma))
        if stop_test not in STOP_TESTS:
            raise InvalidArgumentError(f"stop_test must be one of {', '.join(STOP_TESTS)}, got {stop_test!r}")
        if stop_test == "betting" and branches > 1:
            raise InvalidArgumentError("stop_test='betting' tests one branch's pA; use 'clopper-pearson' here")
        levels = checkpoint_levels(checkpoints, alpha, final_share)
        p_target = rule.p_target
        # the sampler's vote share whose L - eps certifies (needs L - eps > 1/2 as well)
        reach = None if p_target is None else reach_share(max(p_target, 0.5) + correction, checkpoints[-1], levels[-1],
                                                          strict=p_target <= 0.5)
        return cls(rule, tuple(checkpoints), tuple(levels), tuple(checkpoint_levels(checkpoints, stop_alpha)),
                   alpha, stop_alpha, stop_test, reach, branches, float(correction))

    @property
    def n_max(self) -> int:
        return self.checkpoints[-1]

    def ceiling(self, j: int, votes) -> np.ndarray:
        """The largest L (per branch) any continuation from checkpoint j can reach: every further
        sample votes cA. ``votes``: (inputs, branches)."""
        votes = np.asarray(votes, dtype=np.float64)
        best = np.zeros(votes.shape) if j + 1 < len(self.checkpoints) else np.ones(votes.shape)
        later_levels = self.levels[j + 1:]
        # more votes for cA raise a Clopper-Pearson bound, so with non-decreasing levels the last look is the max
        nondecreasing = all(a <= b for a, b in zip(later_levels, later_levels[1:]))
        for later in range(len(self.checkpoints) - 1 if nondecreasing else j + 1, len(self.checkpoints)):
            extra = self.checkpoints[later] - self.checkpoints[j]
            best = np.maximum(best, clopper_pearson_lower_many(votes + extra, self.checkpoints[later],
                                                               self.levels[later] / self.branches))
        return best

    def describe(self) -> dict:
        return {**self.rule.describe(), "n_max": self.n_max, "checkpoints": list(self.checkpoints),
                "alpha_per_checkpoint": list(self.levels),
                **({"branches": self.branches} if self.branches > 1 else {}),
                **({"sound_correction": self.correction} if self.correction else {}),
                "confidence_sequence": SEQUENCE_BOUND, "stop_alpha": self.stop_alpha, "stop_test": self.stop_test,
                "stopping_bound": BETTING_TEST if self.stop_test == "betting" else STOPPING_BOUND,
                **({"reach": self.reach} if self.rule.p_target is not None else {})}


class SequenceStates:
    """The running bounds of many inputs, updated at each checkpoint from their votes for cA.

    Arrays over (inputs, branches). A pure function of the votes (no model, no sampling), shared by
    certify_sequential and by the simulations that chose the defaults
    (experiments/sequential_design.py).
    """

    def __init__(self, design: SequentialDesign, num_inputs: int):
        self.design = design
        shape = (num_inputs, design.branches)
        self.lower = np.zeros(shape)
        self.upper = np.ones(shape)
        self.votes = np.zeros(shape, dtype=np.int64)
        self.n = np.zeros(num_inputs, dtype=np.int64)
        self.log_capital = np.zeros((num_inputs, 2))  # one branch: betting tests of pA >= p* and pA >= reach
        self.reason = np.full(num_inputs, None, dtype=object)

    def look(self, j: int, rows, votes) -> np.ndarray:
        """Checkpoint j's votes for cA (cumulative; (rows,) or (rows, branches)) of the inputs ``rows``;
        True where an input stops."""
        design = self.design
        rows = np.asarray(rows, dtype=np.int64)
        votes = np.asarray(votes, dtype=np.int64).reshape(len(rows), design.branches)
        n_j, last = design.checkpoints[j], j == len(design.checkpoints) - 1
        before_votes, before_n = self.votes[rows], self.n[rows]
        self.votes[rows], self.n[rows] = votes, n_j
        eps = design.correction  # sound mode: bounds on the exact pA from bounds on the sampler's
        lower = np.maximum(self.lower[rows], np.maximum(
            clopper_pearson_lower_many(votes, n_j, design.levels[j] / design.branches) - eps, 0.0))
        upper = np.minimum(self.upper[rows], np.minimum(
            clopper_pearson_upper_many(votes, n_j, design.stop_levels[j] / design.branches) + eps, 1.0))
        self.lower[rows], self.upper[rows] = lower, upper
        below_target = below_reach = np.zeros(len(rows), dtype=bool)
        rule = design.rule
        if isinstance(rule, TargetRadius):
            if design.stop_test == "betting":
                reach = 1.0 if design.reach is None else design.reach  # None: "unreachable" decides instead
                below_target, below_reach = self._bet(rows, votes[:, 0] - before_votes[:, 0], n_j - before_n,
                                                      before_votes[:, 0], before_n, (rule.p_target - eps, reach))
            else:
                below_target = probit_sum(upper) < rule.threshold
                if design.reach is not None:  # reach is a share of the sampler's votes; upper - eps bounds its pA
                    below_reach = upper[:, 0] - eps < design.reach
            if design.reach is None:
                below_reach = np.zeros(len(rows), dtype=bool)
        ceiling = np.maximum(design.ceiling(j, votes) - eps, 0.0)
        reasons = rule.stop(lower, upper, ceiling, below_target, below_reach)
        if last:
            reasons[np.equal(reasons, None)] = "n_max"
        self.reason[rows] = reasons
        return ~np.equal(reasons, None)

    def _bet(self, rows, successes, trials, before_votes, before_n, thresholds):
        """One round of the betting tests: bets from the earlier rounds only (predictable), none in the first."""
        estimate = np.where(before_n > 0, (before_votes + 0.5) / (before_n + 1.0), 0.5)
        rejected = []
        for test, m in enumerate(thresholds):
            if not 0.0 < m < 1.0:  # pA >= 0 always holds; pA >= 1 is rejected by any vote against cA
                rejected.append(np.full(len(rows), m >= 1.0) & (successes < trials))
                continue
            bet = np.where(before_n > 0, kelly_bet(estimate, m), 0.0)
            self.log_capital[rows, test] += betting_log_growth(successes, trials, m, bet)
            rejected.append(self.log_capital[rows, test] >= math.log(1.0 / self.design.stop_alpha))
        return rejected


def sequential_inputs_per_call(batch_size: int, n_first: int | None = None) -> int:
    """Inputs per certify_batch call of a sequential dataset run: enough that the first round
    (n_first samples each) fills a batch. Later rounds of the inputs still active share batches."""
    return max(1, math.ceil(batch_size / (DEFAULT_N_FIRST if n_first is None else n_first)))


# --------------------------------------------------------------------------- the algorithm
@dataclass
class Branch:
    """One smoothed base classifier of a sequential run: its inputs (already on the device), its
    model (None: the smoothed classifier's), its noise level and the names of its two streams."""

    inputs: torch.Tensor
    model: Callable | None
    sigma: float
    selection_stage: str = "selection"
    estimation_stage: str = "estimation"


@dataclass
class SequentialRun:
    """What a sequential run leaves for the method to turn into certificates, per input (row)."""

    design: SequentialDesign
    states: SequenceStates
    selected: np.ndarray          # cA
    selection: np.ndarray         # selection votes summed over the branches (inputs, classes)
    counts: np.ndarray            # estimation votes (inputs, branches, classes)
    lead: int | None
    n0: int
    seed: int
    indices: list[int]
    seconds: np.ndarray

    def samples(self, row: int) -> tuple[int, int]:
        """(selection, estimation) samples of one input, per branch."""
        return int(self.selection[row].sum()) // self.design.branches, int(self.states.n[row])

    def details(self, row: int) -> dict:
        """The ``details["sequential"]`` record of one input."""
        upper = self.states.upper[row]
        return {**self.design.describe(), "stop": self.states.reason[row],
                "p_upper": float(upper[0]) if len(upper) == 1 else [float(u) for u in upper],
                "selection": {"n0_max": self.n0, "used": self.samples(row)[0], "lead": self.lead}}


def select_classes(engines, branches, n0: int, lead: int | None, generators, num_classes: int, device):
    """Sequential selection: votes (summed over the branches) in the looks of :func:`selection_looks`,
    stopping an input once its leading class is ``lead`` votes ahead of the runner-up (None: all
    n0). Returns the selection counts and each input's seconds."""
    num_inputs = len(branches[0].inputs)
    counts = np.zeros((num_inputs, num_classes), dtype=np.int64)
    seconds = np.zeros(num_inputs)
    active, drawn = np.arange(num_inputs), 0
    looks = selection_looks(n0)
    for look, blocks in zip(looks, round_blocks(looks)):
        started = time.perf_counter()
        for engine, branch, streams in zip(engines, branches, generators):
            votes = VoteCounter(len(active), num_classes, device)
            engine.run(branch.inputs[active], look - drawn, votes, [streams[row] for row in active], bounded=False,
                       blocks=blocks)  # selection: enters no bound (sound mode: no fixed forward shape)
            counts[active] += votes.result()
        seconds[active] += (time.perf_counter() - started) / len(active)
        drawn = look
        if lead is not None:
            top_two = np.sort(counts[active], axis=1)[:, -2:]
            active = active[top_two[:, 1] - top_two[:, 0] < lead]
        if len(active) == 0:
            break
    return counts, seconds


def run_sequential(smoothed, branches: list[Branch], n0: int, n: int, alpha: float, batch_size: int, seed: int,
                   indices: list[int], *, target_radius: float | None = None, tolerance: float | None = None,
                   n_max: int | None = None, growth: float = DEFAULT_GROWTH, n_first: int = DEFAULT_N_FIRST,
                   final_share: float | None = DEFAULT_FINAL_SHARE, stop_alpha: float = DEFAULT_STOP_ALPHA,
                   stop_test: str = DEFAULT_STOP_TEST, selection_lead_votes: int | None = None) -> SequentialRun:
    """SEQUENTIAL-CERTIFY's sampling and stopping (module docstring) for the branches of a hard-vote
    smoothed classifier (one for Cohen et al., two for dual smoothing): checked arguments, inputs
    on the device, ``batch_size`` resolved. The method turns the run into certificates."""
    sigmas = tuple(branch.sigma for branch in branches)
    rule = stopping_rule(sigmas[0] if len(sigmas) == 1 else sigmas, target_radius, tolerance)
    # sound mode: the sequences bound the sampler's pA, within eps of the exact discretized Gaussian's
    correction = smoothed.float_correction(branches[0].inputs.shape[1:])
    design = SequentialDesign.build(rule, check_count(n if n_max is None else n_max, "n_max"), alpha, growth, n_first,
                                    final_share, stop_alpha, stop_test, correction)
    lead = selection_lead(rule.p_target) if rule.p_target is not None else None
    if selection_lead_votes is not None:
        lead = check_count(selection_lead_votes, "selection_lead_votes")
    engines = [smoothed.engine(batch_size, branch.model, branch.sigma) for branch in branches]
    streams = lambda stage: [[engine.generator(seed, index, getattr(branch, stage)) for index in indices]  # noqa: E731
                             for engine, branch in zip(engines, branches)]
    num_inputs, num_classes = len(indices), smoothed.num_classes
    selection, seconds = select_classes(engines, branches, n0, lead, streams("selection_stage"), num_classes,
                                        smoothed.device)
    selected = np.argmax(selection, axis=1)
    states = SequenceStates(design, num_inputs)
    counts = np.zeros((num_inputs, len(branches), num_classes), dtype=np.int64)
    generators = streams("estimation_stage")  # one stream per input and branch
    active, drawn = np.arange(num_inputs), 0
    for j, (checkpoint, blocks) in enumerate(zip(design.checkpoints, round_blocks(list(design.checkpoints)))):
        started = time.perf_counter()
        for b, (engine, branch) in enumerate(zip(engines, branches)):
            votes = VoteCounter(len(active), num_classes, smoothed.device)
            engine.run(branch.inputs[active], checkpoint - drawn, votes, [generators[b][row] for row in active],
                       blocks=blocks)
            counts[active, b] += votes.result()
        seconds[active] += (time.perf_counter() - started) / len(active)
        drawn = checkpoint
        stopped = states.look(j, active, counts[active, :, selected[active]])
        active = active[~stopped]
        if len(active) == 0:
            break
    return SequentialRun(design, states, selected, selection, counts, lead, n0, seed, indices, seconds)


def certify_sequential(smoothed, xs, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                       batch_size: int = 1000, seed: int | None = 0, indices=None, **options) -> list[Certificate]:
    """SEQUENTIAL-CERTIFY (module docstring) for a batch of inputs of Cohen et al.'s smoothed classifier.

    Options (beyond CERTIFY's arguments; n0 is the most selection samples):
        target_radius / tolerance: exactly one (mode 1 / mode 2).
        n_max: the most estimation samples per input (default ``n``).
        growth, n_first: the checkpoints (:func:`checkpoint_schedule`).
        final_share: the share of alpha given to the last checkpoint (None: alpha/K at each).
        stop_alpha: the level of the stopping decisions (never of the certificate).
        stop_test: "clopper-pearson" (the upper sequence) or "betting" for the "not certifiable" stops.
        selection_lead_votes: stop selecting once the leader is this many votes ahead (default
            :func:`selection_lead` of the target; in tolerance mode all n0 votes).
    Every certificate records ``samples_used`` = the selection and estimation samples drawn, ``n0``
    and ``n`` = each of them, and in ``details["sequential"]`` the design, the stopping reason and
    the bounds.
    """
    n0, n, alpha, batch_size = smoothed.check_certify_args(n0, n, alpha, batch_size)
    check_sequential_options(smoothed.sigma, **options)
    xs, seed, indices, clock = smoothed.begin(xs, seed, indices)
    if len(xs) == 0:
        return []
    batch_size = smoothed.batch_size_for(batch_size, xs.shape[1:])  # "auto": resolved once, before sampling
    run = run_sequential(smoothed, [Branch(xs, None, smoothed.sigma)], n0, n, alpha, batch_size, seed, indices,
                         **options)
    sound = smoothed.sound_record(xs.shape[1:]) if smoothed.sound_float else None
    return [_certificate(smoothed, run, row, sound) for row in range(len(indices))]


def _certificate(smoothed, run: SequentialRun, row: int, sound: dict | None = None) -> Certificate:
    lower = float(run.states.lower[row, 0])
    abstain = lower <= 0.5  # as CERTIFY: at 1/2 another class may tie with cA
    selection_used, n = run.samples(row)
    return Certificate(
        prediction=ABSTAIN if abstain else int(run.selected[row]),
        radius=0.0 if abstain else gaussian_radius(smoothed.sigma, lower),
        p_lower=lower,
        counts=[int(c) for c in run.counts[row, 0]],
        n0=selection_used, n=n, alpha=run.design.alpha, sigma=smoothed.sigma, method=smoothed.method, seed=run.seed,
        index=run.indices[row],
        alpha_spending={SEQUENCE_BOUND: run.design.alpha},
        samples_used=selection_used + n,
        time=float(run.seconds[row]),
        details={
            "selected_class": int(run.selected[row]),
            "selection_counts": [int(c) for c in run.selection[row]],
            "sequential": run.details(row),
            **({"sound_float": sound} if sound else {}),
        },
    )
