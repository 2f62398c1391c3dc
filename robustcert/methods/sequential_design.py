"""SEQUENTIAL-CERTIFY's design: everything fixed before sampling, and the running bounds.

Pure functions of votes, alpha and sigma (no model, no engine, no sampling), shared by the
engine-driving run (:mod:`robustcert.methods.sequential`, whose docstring is the algorithm box and
the soundness argument) and by the simulations that chose the defaults
(experiments/sequential/sequential_design.py, results/sequential/design.md):

* the checkpoints n_1 < ... < n_K = n_max (:func:`checkpoint_schedule`), each round's draw sizes
  (:func:`round_blocks`), the selection looks and lead (:func:`selection_looks`,
  :func:`selection_lead`);
* the stopping rules (:class:`TargetRadius`, :class:`RadiusTolerance`) and the levels of the
  confidence sequences (:class:`SequentialDesign`);
* the running bounds of many inputs, updated at each checkpoint from their votes
  (:class:`SequenceStates`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

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
#: (experiments/sequential/sequential_design.py, results/sequential/design.md).
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
        raise InvalidArgumentError("sequential certification needs exactly one of a target radius and a tolerance "
                                   "(--target-radius R or --tolerance T; in Python target_radius= or tolerance=)")
    if target_radius is not None:
        if not (isinstance(target_radius, (int, float)) and math.isfinite(target_radius) and target_radius >= 0):
            raise InvalidArgumentError(f"the target radius (--target-radius, target_radius) must be a finite number "
                                       f">= 0, got {target_radius!r}")
        return TargetRadius(sigma, float(target_radius))
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance > 0):
        raise InvalidArgumentError(f"the tolerance (--tolerance, tolerance) must be a finite number > 0, got "
                                   f"{tolerance!r}")
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
    (experiments/sequential/sequential_design.py).
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
