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

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..certificate import ABSTAIN, Certificate
from ..engine import VoteCounter
from ..errors import check_count
from ..radius import gaussian_radius
from .sequential_design import (  # noqa: F401  (the design's names, re-exported: one import for users)
    BETTING_TEST, DEFAULT_FINAL_SHARE, DEFAULT_GROWTH, DEFAULT_N_FIRST, DEFAULT_STOP_ALPHA, DEFAULT_STOP_TEST,
    ESTIMATION_BLOCK, SELECTION_ERROR, SELECTION_FIRST_LOOK, SEQUENCE_BOUND, STOP_TESTS, STOPPING_BOUND,
    RadiusTolerance, SequenceStates, SequentialDesign, TargetRadius, check_sequential_options, checkpoint_schedule,
    probit_sum, radius_scale, reach_share, round_blocks, selection_lead, selection_looks, sequential_inputs_per_call,
    sigma_radius, stopping_rule,
)

__all__ = [  # the run, and the design's names (one import for users of either)
    "BETTING_TEST", "Branch", "DEFAULT_FINAL_SHARE", "DEFAULT_GROWTH", "DEFAULT_N_FIRST", "DEFAULT_STOP_ALPHA",
    "DEFAULT_STOP_TEST", "ESTIMATION_BLOCK", "RadiusTolerance", "SELECTION_ERROR", "SELECTION_FIRST_LOOK",
    "SEQUENCE_BOUND", "STOPPING_BOUND", "STOP_TESTS", "SequenceStates", "SequentialCertification", "SequentialDesign",
    "SequentialRun", "TargetRadius", "certify_sequential", "check_sequential_options", "checkpoint_schedule",
    "probit_sum", "radius_scale", "reach_share", "round_blocks", "run_sequential", "select_classes",
    "selection_lead", "selection_looks", "sequential_inputs_per_call", "sigma_radius", "stopping_rule",
]


# --------------------------------------------------------------------------- methods that certify sequentially
class SequentialCertification:
    """What a method adds to the :class:`robustcert.methods.base.SmoothedClassifier` contract when
    its ``certify_batch(..., sequential=True, ...)`` runs SEQUENTIAL-CERTIFY (Smooth, DualSmooth).

    A mixin listed before the method's base class: ``class Smooth(SequentialCertification, ...)``.
    """

    def check_sequential(self) -> None:
        """Refuse (InvalidArgumentError) a configuration the sequential rules do not cover (the
        Gaussian l2 radius only); called before anything is sampled. Default: every one is covered."""

    def certify_inputs_per_call(self, n0: int, n: int, batch_size: int, **certify_options) -> int:
        """In sequential mode enough inputs per call that the first rounds of many inputs fill the
        batches (:func:`sequential_inputs_per_call`); otherwise the contract's default."""
        if certify_options.get("sequential"):
            return sequential_inputs_per_call(batch_size, certify_options.get("n_first"))
        return super().certify_inputs_per_call(n0, n, batch_size, **certify_options)


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
    sound = smoothed.sound_records(xs) or [None] * len(indices)
    return [_certificate(smoothed, run, row, sound[row]) for row in range(len(indices))]


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
