"""Dual randomized smoothing (Xia et al., ICLR 2024, "Mitigating the Curse of Dimensionality for
Certified Robustness via Dual Randomized Smoothing").

A split (:mod:`robustcert.splits`, default: the checkerboard of 2x2-block diagonals) cuts the
image x into two compact sub-images x_a, x_b holding disjoint pixel sets. Each has its own base
classifier f_a, f_b and noise level sigma_a, sigma_b:

    p_a,c(x_a) = P(f_a(x_a + sigma_a Z_a) = c),   p_b,c(x_b) = P(f_b(x_b + sigma_b Z_b) = c)
    G(x) = argmax_c  p_a,c(x_a) + p_b,c(x_b)          (the dual smoothed classifier)

CERTIFY(f_a, f_b, sigma_a, sigma_b, x, n0, n, alpha):
    cA  <- argmax of the summed votes of both branches on n0 selection samples each
    k_i <- votes for cA among n fresh estimation samples of branch i (i = a, b)
    p_i <- one-sided Clopper-Pearson lower bound on p_i,cA at level 1 - alpha/2 each
    a, b <- Phi^-1(p_a), Phi^-1(p_b)      (negative values kept; Phi^-1(0) = -inf)
    if a + b <= 0: ABSTAIN  else: return cA, R = (a + b) / sqrt(1/sigma_a^2 + 1/sigma_b^2)

Why R is sound (derivation). With probability >= 1 - alpha (union bound over the two bounds,
alpha/2 each) p_a <= p_a,cA(x_a) and p_b <= p_b,cA(x_b). Let x' = x + delta, delta = (delta_a,
delta_b) in split coordinates; the split is a partition of the pixels, so ||delta||^2 =
||delta_a||^2 + ||delta_b||^2.
  1. For any classifier f_i, u -> Phi^-1(P(f_i(u + sigma_i Z) = c)) is (1/sigma_i)-Lipschitz
     (Salman et al. 2019, Lemma 2; the Neyman-Pearson argument of Cohen et al. 2019), hence
     Phi^-1(p_i,cA(x_i + delta_i)) >= Phi^-1(p_i) - t_i with t_i = ||delta_i|| / sigma_i.
  2. If p_a,cA(x'_a) + p_b,cA(x'_b) > 1 then G(x') = cA: every other class c has
     p_a,c + p_b,c <= (1 - p_a,cA) + (1 - p_b,cA) < 1 < p_a,cA + p_b,cA.
  3. Phi(u) + Phi(v) > 1  <=>  Phi(u) > Phi(-v)  <=>  u + v > 0. With 1., the sum exceeds 1
     whenever (a - t_a) + (b - t_b) > 0, i.e. t_a + t_b < a + b.
  4. Over all delta with ||delta|| = r, max (t_a + t_b) = max ||delta_a||/sigma_a + ||delta_b||/sigma_b
     = r sqrt(1/sigma_a^2 + 1/sigma_b^2) (Cauchy-Schwarz; equality when ||delta_i|| is
     proportional to 1/sigma_i). So G(x') = cA for every ||delta|| < (a + b) / sqrt(1/sigma_a^2 + 1/sigma_b^2).
The bound is tight: for linear branch classifiers f_i(u) = [w_i.u + c_i > 0] step 1 is an
equality, G is itself a linear classifier, and R (with exact p) is its distance to the boundary.
Equal sigmas give R = sigma (a + b) / sqrt(2): at most sqrt(2) sigma Phi^-1(p_max), i.e. the
radius ceiling of plain smoothing at the same per-pixel noise times sqrt(2).

Not done here (over-claims in the public code, REFERENCE.md section 4): combining the branch
radii as sqrt(R_a^2 + R_b^2) (p_a = 0.999, p_b = 0.6: 3.10 sigma against the sound 2.36 sigma);
bounding each branch at alpha instead of alpha/2; rescaling vote counts to pretend a larger n.

PREDICT(f_a, f_b, x, n, alpha): 2n draws, each sent to branch a or b by a fair coin (the number
for branch a is Binomial(2n, 1/2), drawn from its own generator stage). The pooled votes are then
exactly Multinomial(2n, q) with q_c = (p_a,c + p_b,c) / 2, whose mode is G(x); Cohen's test
applies unchanged: with top-two pooled counts nA >= nB, abstain when the two-sided binomial test
of nA out of nA + nB against 1/2 has p-value > alpha (alpha spent on that one test; Hung and
Fithian 2019). A fixed n per branch would make the pooled counts a stratified sample, for which
the test's exact level is not established.

Sampling: both branches go through the same engine (``SmoothedClassifier.sample``), each branch
and stage with its own generator stage name (``sel-a``, ``est-b``, ...), so no two streams are
shared and selection samples are never reused for estimation.

SEQUENTIAL-CERTIFY (``sequential=True``, methods/sequential.py) applies unchanged to the two
branches: each round draws the same number of samples in both, and each branch has its own
stitched Clopper-Pearson lower sequence at alpha/2 (levels alpha_j / 2 per checkpoint: a union
bound over the branches and the looks). On the event of probability >= 1 - alpha where both hold,
(a + b) / sqrt(1/sigma_a^2 + 1/sigma_b^2) with a, b the probits of the lower bounds at the stopping
time is a valid radius (the derivation above holds for any p_a <= p_a,cA and p_b <= p_b,cA). The
target r is certified once a + b >= r sqrt(1/sigma_a^2 + 1/sigma_b^2), and "not certifiable" once
the same sum of the upper sequences' probits (stop_alpha/2 per branch) falls below it.

Example::

    from robustcert import DualSmooth, load_model
    smoothed = DualSmooth(load_model("bundled:digits-dual-a-0.25"), load_model("bundled:digits-dual-b-0.25"),
                          num_classes=10, sigma=0.25)      # model, model2: branches a and b
    cert = smoothed.certify(x, n0=100, n=10_000, alpha=0.001, seed=0)   # x: 1x8x8 image in [0,1]
    cert.prediction, cert.radius, cert.details["a"], cert.details["b"]
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..certificate import ABSTAIN, Certificate, Prediction
from ..engine import VoteCounter, derive_seed
from ..errors import InvalidArgumentError, check_sigma, renamed_argument
from ..radius import _probit as probit
from ..radius import dual_gaussian_radius
from ..splits import Split, get_split
from ..stats import clopper_pearson_lower
from .base import DEFAULT_ALPHA, DEFAULT_BATCH, DEFAULT_N, DEFAULT_N0, SmoothedClassifier
from .cohen import predict_from_counts
from .sequential import (
    SEQUENCE_BOUND, Branch, SequentialCertification, SequentialRun, check_sequential_options, run_sequential,
)

BRANCHES = ("a", "b")
PREDICT_TEST = "two-sided binomial test of nA against nA + nB on the pooled votes of 2n coin-allocated draws"


def branch_bound(branch: str) -> str:
    return f"Clopper-Pearson one-sided lower bound on P(f_{branch}(x_{branch} + noise) = cA), branch {branch}"


def branch_sequence(branch: str) -> str:
    return f"{SEQUENCE_BOUND}, on P(f_{branch}(x_{branch} + noise) = cA), branch {branch}"


class DualSmooth(SequentialCertification, SmoothedClassifier):
    """Dual randomized smoothing (Xia et al. 2024): two sub-images, two smoothed branches, one radius.

    The arguments are named as the command line names them (``--model``/``--model2``,
    ``--sigma``/``--sigma2``); the earlier names ``model_a``, ``model_b``, ``sigma_a``,
    ``sigma_b`` are accepted with a FutureWarning.

    Args:
        model: base classifier of sub-image a (compact sub-images of the shape
            ``split.sub_shapes(image_shape)``, in [0,1] pixel space) -> (B, num_classes) scores.
        model2: base classifier of sub-image b, likewise.
        num_classes: number of classes (both branches).
        sigma: noise level of branch a (pixel units).
        sigma2: noise level of branch b (default sigma).
        split: a name in :data:`robustcert.splits.SPLITS` ("checkerboard", "rows", "columns") or a Split.
        device: as for SmoothedClassifier.
        input_shape: of the full image, as for SmoothedClassifier.
        precision: as for SmoothedClassifier.
        channels_last: as for SmoothedClassifier.

    Certificates: ``n`` is the number of estimation samples *per branch* (2n forward passes in
    all, plus 2 n0 for selection); ``sigma`` records sigma_a; ``p_lower`` records
    min(p_a_lower, p_b_lower); ``counts`` are the summed estimation votes of both branches;
    ``details`` holds p_a_lower, p_b_lower, a, b, sigma_a, sigma_b, the split and per-branch counts.
    Predictions: ``n`` draws per branch on average, 2n in all (``Prediction.n`` records 2n and
    ``details["draws_a"]`` the coin allocation).
    """

    method = "dual"

    def __init__(self, model: Callable | None = None, model2: Callable | None = None, num_classes: int | None = None,
                 sigma: float | None = None, sigma2: float | None = None, split: str | Split = "checkerboard",
                 device: torch.device | str | None = None, input_shape: Sequence[int] | None = None,
                 precision: str = "fp32", channels_last: bool = False, *, model_a: Callable | None = None,
                 model_b: Callable | None = None, sigma_a: float | None = None, sigma_b: float | None = None):
        model = renamed_argument(model, model_a, "model_a", "model", "DualSmooth")
        model2 = renamed_argument(model2, model_b, "model_b", "model2", "DualSmooth")
        sigma = renamed_argument(sigma, sigma_a, "sigma_a", "sigma", "DualSmooth")
        sigma2 = renamed_argument(sigma2, sigma_b, "sigma_b", "sigma2", "DualSmooth")
        super().__init__(model, num_classes, sigma, device, input_shape, precision, channels_last)
        if not callable(model2):
            raise InvalidArgumentError("model2 (branch b's model) must be a callable (e.g. a torch.nn.Module)")
        self.model_a, self.model_b = model, model2
        self.sigma_a = self.sigma
        self.sigma_b = check_sigma(sigma if sigma2 is None else sigma2, "sigma2 (branch b's noise level)")
        self.split = get_split(split)
        if self.input_shape is not None:
            self.split.sub_shapes(self.input_shape)  # fail early on a shape the split cannot cut

    # ----------------------------------------------------------------- plumbing
    def branches(self, xs: torch.Tensor):
        """[(name, sub-images, model, sigma)] for branches a and b of a batch of images."""
        sub_a, sub_b = self.split.split(xs)
        return [("a", sub_a, self.model_a, self.sigma_a), ("b", sub_b, self.model_b, self.sigma_b)]

    def settings(self) -> dict:
        return {"dual_split": self.split.name, "sigma2": self.sigma_b}

    def base_models(self) -> dict:
        return {"model": self.model_a, "model2": self.model_b}

    def resolve_batch_size(self, batch_size, input_shape) -> int:
        shapes = self.split.sub_shapes(tuple(input_shape))
        return min(self.batch_size_for(batch_size, shape, model)
                   for shape, model in zip(shapes, (self.model_a, self.model_b)))

    def _votes(self, branch, n: int, stage: str, seed: int, indices, batch_size: int) -> np.ndarray:
        name, sub, model, sigma = branch
        counter = VoteCounter(len(sub), self.num_classes, self.device)
        return self.sample(sub, n, counter, f"{stage}-{name}", seed, indices, batch_size,
                           model=model, sigma=sigma).result()

    def branch_alpha(self, alpha: float) -> float:
        """Each branch's Clopper-Pearson bound gets alpha/2 (union bound over the two bounds)."""
        return alpha / 2

    def alpha_spending(self, alpha, sequential=False, **certify_options):
        bound = branch_sequence if sequential else branch_bound
        return {bound(name): self.branch_alpha(alpha) for name in BRANCHES}

    # ----------------------------------------------------------------- CERTIFY
    def certify_batch(self, xs, n0=DEFAULT_N0, n=DEFAULT_N, alpha=DEFAULT_ALPHA, batch_size=DEFAULT_BATCH, seed=0,
                      indices=None, sequential=False, **sequential_options):
        """CERTIFY; ``sequential=True`` stops each input early instead (see the module docstring and
        :func:`robustcert.methods.sequential.certify_sequential` for the options; no betting test)."""
        n0, n, alpha, batch_size = self.check_certify_args(n0, n, alpha, batch_size)
        if sequential:
            return self._certify_sequential(xs, n0, n, alpha, batch_size, seed, indices, **sequential_options)
        if sequential_options:
            raise InvalidArgumentError(f"{', '.join(sorted(sequential_options))}: only with sequential=True")
        xs, seed, indices, clock = self.begin(xs, seed, indices)
        common = dict(seed=seed, indices=indices, batch_size=batch_size)
        branches = self.branches(xs)
        selection = [self._votes(branch, n0, "sel", **common) for branch in branches]
        estimation = [self._votes(branch, n, "est", **common) for branch in branches]
        seconds = clock.per_input(len(xs))
        return [
            self._certificate([s[i] for s in selection], [e[i] for e in estimation], n0, n, alpha, seed, index,
                              seconds)
            for i, index in enumerate(indices)
        ]

    def _certificate(self, selection, estimation, n0, n, alpha, seed, index, seconds) -> Certificate:
        c_a = int(np.argmax(selection[0] + selection[1]))
        share = self.branch_alpha(alpha)
        p_a_lower, p_b_lower = (clopper_pearson_lower(int(counts[c_a]), n, share) for counts in estimation)
        a, b = probit(p_a_lower), probit(p_b_lower)
        radius = dual_gaussian_radius(self.sigma_a, self.sigma_b, p_a_lower, p_b_lower)
        abstain = not a + b > 0
        as_list = lambda counts: [int(c) for c in counts]  # noqa: E731
        return Certificate(
            prediction=ABSTAIN if abstain else c_a,
            radius=0.0 if abstain else radius,
            p_lower=min(p_a_lower, p_b_lower),
            counts=as_list(estimation[0] + estimation[1]),
            n0=n0, n=n, alpha=alpha, sigma=self.sigma_a, method=self.method, seed=seed, index=index,
            alpha_spending=self.alpha_spending(alpha),
            samples_used=2 * (n0 + n),
            time=seconds,
            details={
                "selected_class": c_a, "p_a_lower": p_a_lower, "p_b_lower": p_b_lower, "a": a, "b": b,
                "sigma_a": self.sigma_a, "sigma_b": self.sigma_b, "split": self.split.name,
                "counts_a": as_list(estimation[0]), "counts_b": as_list(estimation[1]),
                "selection_counts_a": as_list(selection[0]), "selection_counts_b": as_list(selection[1]),
            },
        )

    def _certify_sequential(self, xs, n0, n, alpha, batch_size, seed, indices, **options) -> list[Certificate]:
        check_sequential_options((self.sigma_a, self.sigma_b), **options)
        xs, seed, indices, clock = self.begin(xs, seed, indices)
        if len(xs) == 0:
            return []
        batch_size = self.resolve_batch_size(batch_size, xs.shape[1:])  # "auto": resolved once, before sampling
        branches = [Branch(sub, model, sigma, f"sel-{name}", f"est-{name}")
                    for name, sub, model, sigma in self.branches(xs)]
        run = run_sequential(self, branches, n0, n, alpha, batch_size, seed, indices, **options)
        return [self._sequential_certificate(run, row) for row in range(len(indices))]

    def _sequential_certificate(self, run: SequentialRun, row: int) -> Certificate:
        c_a = int(run.selected[row])
        p_a_lower, p_b_lower = (float(p) for p in run.states.lower[row])
        a, b = probit(p_a_lower), probit(p_b_lower)
        radius = dual_gaussian_radius(self.sigma_a, self.sigma_b, p_a_lower, p_b_lower)
        abstain = not a + b > 0
        selection_used, n = run.samples(row)
        as_list = lambda counts: [int(c) for c in counts]  # noqa: E731
        return Certificate(
            prediction=ABSTAIN if abstain else c_a,
            radius=0.0 if abstain else radius,
            p_lower=min(p_a_lower, p_b_lower),
            counts=as_list(run.counts[row].sum(axis=0)),
            n0=selection_used, n=n, alpha=run.design.alpha, sigma=self.sigma_a, method=self.method, seed=run.seed,
            index=run.indices[row],
            alpha_spending=self.alpha_spending(run.design.alpha, sequential=True),
            samples_used=2 * (selection_used + n),
            time=float(run.seconds[row]),
            details={
                "selected_class": c_a, "p_a_lower": p_a_lower, "p_b_lower": p_b_lower, "a": a, "b": b,
                "sigma_a": self.sigma_a, "sigma_b": self.sigma_b, "split": self.split.name,
                "counts_a": as_list(run.counts[row, 0]), "counts_b": as_list(run.counts[row, 1]),
                "selection_counts": as_list(run.selection[row]), "sequential": run.details(row),
            },
        )

    # ----------------------------------------------------------------- PREDICT
    @staticmethod
    def allocation(n: int, seed: int, index: int) -> int:
        """Draws of branch a among 2n fair-coin allocated draws: Binomial(2n, 1/2), own stage."""
        return int(np.random.default_rng(derive_seed(seed, index, "mix")).binomial(2 * n, 0.5))

    def predict_batch(self, xs, n=DEFAULT_N, alpha=DEFAULT_ALPHA, batch_size=DEFAULT_BATCH, seed=0, indices=None):
        _, n, alpha, batch_size = self.check_certify_args(1, n, alpha, batch_size)
        xs, seed, indices, clock = self.begin(xs, seed, indices)
        pooled = np.zeros((len(xs), self.num_classes), dtype=np.int64)
        for row, index in enumerate(indices):  # each input draws its own allocation, hence its own n per branch
            n_a = self.allocation(n, seed, index)
            for branch, draws in zip(self.branches(xs[row:row + 1]), (n_a, 2 * n - n_a)):
                if draws > 0:
                    pooled[row] += self._votes(branch, draws, "pred", seed, [index], batch_size)[0]
        seconds = clock.per_input(len(xs))
        predictions = []
        for row, index in enumerate(indices):
            prediction, p_value = predict_from_counts(pooled[row], alpha)
            predictions.append(Prediction(
                prediction=prediction,
                counts=[int(c) for c in pooled[row]],
                n=2 * n, alpha=alpha, sigma=self.sigma_a, method=self.method, seed=seed, index=index,
                p_value=p_value, alpha_spending={PREDICT_TEST: alpha}, samples_used=2 * n, time=seconds,
                details={"draws_a": self.allocation(n, seed, index), "sigma_a": self.sigma_a,
                         "sigma_b": self.sigma_b, "split": self.split.name},
            ))
        return predictions
