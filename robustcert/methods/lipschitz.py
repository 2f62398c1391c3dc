"""Lipschitz-variance-margin smoothing (Delattre, Araujo, Barthelemy, Allauzen, ICLR 2024).

Smooth a soft output instead of hard votes: f_c(x) = E[S(t z(x + delta))_c], delta ~ N(0, sigma^2 I),
with z the base model's logits and S a simplex map (softmax, sparsemax, hardmax; see
:mod:`robustcert.simplex`). Every coordinate lies in [0,1], and g(x) = argmax_c f_c(x).

CERTIFY(z, sigma, x, n0, n, alpha):
    moments0 <- soft means and variances of every candidate (map, t) on n0 SELECTION samples
    (k, formula, cA) <- the candidate, radius formula and class with the largest radius predicted
                        from moments0 as if n samples gave the same means and variances
    moments  <- means and variances of candidate k only, on n FRESH estimation samples
    pA_lower <- lower bound on f_cA: empirical Bernstein (Maurer and Pontil 2009, Thm 4), or
                Clopper-Pearson for binary maps (hardmax), whose sums are vote counts
    pB_upper <- 1 - pA_lower                                 (formulas "*-simplex")
             or min(1 - pA_lower, max_{c != cA} upper_c)      (formulas "*-union")
    R <- sigma Phi^-1(pA_lower)                               probit-simplex
         sigma/2 (Phi^-1(pA_lower) - Phi^-1(pB_upper))        probit-union
         (2 pA_lower - 1) / Lip,  (pA_lower - pB_upper) / Lip margin-simplex / margin-union
    if R <= 0: ABSTAIN  else: return cA, R

Why the radii hold: Phi^-1(f_c) is (1/sigma)-Lipschitz for any f with values in [0,1] (Salman et
al. 2019), which gives the probit forms; the margin f_A - f_c takes values in [-1,1], so its
smoothing is Lip-Lipschitz with Lip = sqrt(2/pi)/sigma, or L_m erf(1/(sqrt(2) L_m sigma)) when
the base margin is L_m-Lipschitz (:func:`robustcert.radius.smoothed_lipschitz_constant`). With
``lipschitz`` = L, an l2 Lipschitz constant of the logits z, the base margin
S(t z)_a - S(t z)_b is L_m = t L kappa_S-Lipschitz (kappa_S = ``margin_lipschitz`` of the map).
Since pB_upper >= max_{c != A} f_c must hold for EVERY other class, "*-simplex" uses
f_c <= 1 - f_A (outputs lie on the simplex; one bound, all of alpha on it) and "*-union" adds
one-sided upper bounds on all C - 1 other classes (alpha/2 on f_A, alpha/(2(C-1)) on each
other class; 1 - pA_lower stays valid on the same event, so the minimum costs nothing).

One smoothed classifier. A (map, temperature) pair defines the smoothed classifier g; the
radius formula and cA do not (every formula bounds the same g). So a LipschitzSmooth certifies
ONE pair (default: ``DEFAULT_MAPS`` at ``DEFAULT_TEMPERATURES``) and chooses per input only the
formula and cA. Choosing the pair per input from that input's own noise would certify g_k at x
and maybe another g_k' at a nearby x' (the flaw of input-dependent smoothing, Sukenik et al.
2022, "Intriguing properties of input-dependent randomized smoothing"): no single deployable
classifier is certified, and two certified balls with different classes can overlap
(tests/test_lipschitz.py builds such a pair). A grid is chosen once per data set, on held-out
inputs disjoint from the certified ones and with noise streams of their own
(:func:`robustcert.runs.lvm_select.select_lvm`, CLI ``--lvm-select-on``); the old per-input
choice remains only behind ``per_input_grid=True``, and its method is named ``lvm-per-input``.

Alpha and selection. The formula and cA are chosen on the n0 selection samples, which are
independent of the n estimation samples; given them, exactly one certificate is computed at level
alpha (``selection="holdout"``, the default). The alternative ``selection="union"`` pays a union
bound: every (candidate, formula) pair is certified on the estimation samples at alpha / M (M
pairs) and the largest radius is reported. Taking the best of many radii computed at alpha from
the same samples (as the paper's public code does) is NOT a 1 - alpha certificate;
tests/test_lipschitz.py shows it breaking coverage. A pair chosen on held-out inputs costs no
alpha: the held-out samples are independent of every certified input's samples.

What a certificate certifies: with probability >= 1 - alpha, the smoothed classifier
g = argmax_c E[S(t z(x + delta))_c] with the map and temperature recorded in ``details``
(the same for every input unless ``per_input_grid``) predicts cA on the l2 ball of radius R.

Example::

    from robustcert import LipschitzSmooth, load_model
    model = load_model("bundled:digits-0.25")
    smoothed = LipschitzSmooth(model, num_classes=10, sigma=0.25, maps=["sparsemax"], temperatures=[1.0])
    cert = smoothed.certify(x, n0=100, n=10_000, alpha=0.001, seed=0)
    cert.prediction, cert.radius, cert.details["map"], cert.details["temperature"]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..certificate import ABSTAIN, Certificate, Prediction
from ..errors import InvalidArgumentError, check_sigma
from ..radius import (
    gaussian_radius, gaussian_radius_two_sided, lipschitz_margin_radius, smoothed_lipschitz_constant,
)
from ..simplex import Candidate, SoftMoments, candidate_grid, get_simplex_map
from ..stats import (
    bernstein_lower, bernstein_upper, clopper_pearson_lower, clopper_pearson_upper, hoeffding_lower,
    hoeffding_upper,
)
from .base import DEFAULT_ALPHA, DEFAULT_BATCH, DEFAULT_N, DEFAULT_N0, SmoothedClassifier


# ----------------------------------------------------------------------------- bounds on means
@dataclass(frozen=True)
class MeanBound:
    """One-sided confidence bounds on the mean of [0,1] samples: (mean, variance, n, alpha) -> bound,
    each holding with probability >= 1 - alpha. ``binary_only``: valid only for {0,1} samples."""

    name: str
    lower: Callable
    upper: Callable
    binary_only: bool = False


def _binomial(bound: Callable) -> Callable:
    def apply(mean, variance, n, alpha):
        counts = np.rint(np.asarray(mean, dtype=np.float64) * n).astype(int)
        return np.array([bound(int(k), n, alpha) for k in np.atleast_1d(counts)]).reshape(counts.shape)
    return apply


MEAN_BOUNDS = {
    "bernstein": MeanBound("empirical Bernstein (Maurer-Pontil)", bernstein_lower, bernstein_upper),
    "hoeffding": MeanBound("Hoeffding", lambda m, v, n, a: hoeffding_lower(m, n, a),
                           lambda m, v, n, a: hoeffding_upper(m, n, a)),
    "clopper-pearson": MeanBound("Clopper-Pearson", _binomial(clopper_pearson_lower),
                                 _binomial(clopper_pearson_upper), binary_only=True),
}

# ----------------------------------------------------------------------------- radius formulas
FORMULAS = {
    "probit-simplex": "R = sigma Phi^-1(pA_lower)   [pB <= 1 - pA]",
    "probit-union": "R = sigma/2 (Phi^-1(pA_lower) - Phi^-1(pB_upper))   [pB_upper = min(1 - pA_lower, max_c upper_c)]",
    "margin-simplex": "R = (2 pA_lower - 1) / Lip   [pB <= 1 - pA]",
    "margin-union": "R = (pA_lower - pB_upper) / Lip   [pB_upper = min(1 - pA_lower, max_c upper_c)]",
}
SELECTIONS = ("holdout", "union")
# The default classifier: one (map, temperature) pair. hardmax is Cohen et al.'s vote count (the
# same smoothed classifier g as Smooth), with the runner-up formula beside sigma Phi^-1(pA); on
# the bundled digits models no soft map beat it on held-out inputs (results/lvm/README.md).
DEFAULT_MAPS = ("hardmax",)
DEFAULT_TEMPERATURES = (1.0,)
# The grid select_lvm searches by default. t multiplies the logits, so useful values depend on the
# model's logit scale (the bundled digits models have top-two logit gaps of about 4 to 15).
GRID_MAPS = ("softmax", "sparsemax", "hardmax")
GRID_TEMPERATURES = (0.25, 0.5, 1.0, 2.0)
PER_INPUT_METHOD = "lvm-per-input"


def formula_spending(formula: str, bound: str, num_classes: int, alpha: float, label: str = "") -> dict[str, float]:
    """The bounds a formula uses and their shares of ``alpha`` (they sum to alpha)."""
    name = MEAN_BOUNDS[bound].name
    suffix = f" of {label}" if label else ""
    if formula.endswith("simplex"):
        return {f"{name} lower bound on f_A{suffix}": alpha}
    others = num_classes - 1
    return {
        f"{name} lower bound on f_A{suffix}": alpha / 2,
        f"{name} upper bounds on f_c{suffix} for the {others} classes c != A, alpha/(2*{others}) each": alpha / 2,
    }


@dataclass
class SoftCertificate:
    """A radius from soft bounds, before it becomes a Certificate."""

    radius: float
    p_a_lower: float
    p_b_upper: float
    lipschitz_constant: float | None


def soft_radius(means: np.ndarray, variances: np.ndarray, n: int, alpha: float, class_a: int, formula: str,
                bound: str, sigma: float, margin_lipschitz: float | None) -> SoftCertificate:
    """Apply one formula to the means and variances of one candidate's C coordinates from n samples.

    ``alpha`` is split as :func:`formula_spending` says. ``margin_lipschitz`` (L_m, base margin
    Lipschitz constant; None if unknown) only matters for the margin formulas.
    """
    bounds = MEAN_BOUNDS[bound]
    num_classes = len(means)
    if formula.endswith("simplex"):
        p_a_lower = float(bounds.lower(means[class_a], variances[class_a], n, alpha))
        p_b_upper = 1.0 - p_a_lower
    else:
        share = alpha / (2 * (num_classes - 1))
        p_a_lower = float(bounds.lower(means[class_a], variances[class_a], n, alpha / 2))
        others = np.delete(np.arange(num_classes), class_a)
        uppers = bounds.upper(means[others], variances[others], n, share)
        p_b_upper = min(1.0 - p_a_lower, float(np.max(uppers)))
    if formula.startswith("probit"):
        radius = gaussian_radius(sigma, p_a_lower) if formula == "probit-simplex" else \
            gaussian_radius_two_sided(sigma, p_a_lower, p_b_upper)
        return SoftCertificate(radius, p_a_lower, p_b_upper, None)
    lip = smoothed_lipschitz_constant(sigma, 2.0, margin_lipschitz)
    return SoftCertificate(lipschitz_margin_radius(p_a_lower - p_b_upper, lip), p_a_lower, p_b_upper, lip)


# ----------------------------------------------------------------------------- the method
class LipschitzSmooth(SmoothedClassifier):
    """Smoothing of soft outputs with Bernstein bounds (Delattre et al. 2024). See the module docstring.

    Args (beyond SmoothedClassifier's):
        maps, temperatures: the simplex map and the logit multiplier t > 0 of the ONE smoothed
            classifier certified (default hardmax; t is ignored by maps that do not use it). More
            than one (map, t) pair is a grid: choose one with
            :func:`robustcert.runs.lvm_select.select_lvm` on held-out inputs, or pass
            ``per_input_grid=True`` (see below).
        lipschitz: an l2 Lipschitz constant of the base model's logits (None: unknown). Enables
            the Lipschitz-margin formulas with the erf constant.
        formulas: radius formulas to choose from (default: the probit forms, plus the margin
            forms when ``lipschitz`` is given; without it they never beat the probit forms).
        bound: "auto" (default: Clopper-Pearson for binary maps such as hardmax, whose sums are vote
            counts, and empirical Bernstein for the others), "bernstein", "hoeffding", or
            "clopper-pearson" (binary maps only).
        selection: "holdout" (choose the formula on the n0 selection samples) or "union" (union
            bound over the (pair, formula) certificates on the estimation samples).
        per_input_grid: certify a grid by choosing the (map, t) pair per input (``selection``
            says how). Each certificate then holds for the pair it records, not for one classifier
            shared by all inputs; the method is named ``lvm-per-input``. For comparisons only.
        selected_on: what chose the pair (:func:`select_lvm` records the held-out inputs, the
            scores and the choice here); part of :meth:`settings`, hence of a run's sidecar.
    """

    method = "lvm"

    def __init__(self, model, num_classes, sigma, maps: Sequence[str] = DEFAULT_MAPS,
                 temperatures: Sequence[float] = DEFAULT_TEMPERATURES, lipschitz: float | None = None,
                 formulas: Sequence[str] | None = None, bound: str = "auto", selection: str = "holdout",
                 per_input_grid: bool = False, selected_on: dict | None = None, **kwargs):
        super().__init__(model, num_classes, sigma, **kwargs)
        self.candidates = candidate_grid(maps, temperatures)
        if len(self.candidates) > 1 and not per_input_grid:
            raise InvalidArgumentError(
                f"{len(self.candidates)} (map, temperature) pairs are {len(self.candidates)} smoothed classifiers; "
                "choosing one per input from its own noise certifies no single classifier. Choose one pair on "
                "held-out inputs (robustcert.select_lvm, --lvm-select-on), or pass per_input_grid=True for "
                "per-input selection (not one classifier)")
        self.per_input_grid = len(self.candidates) > 1
        if self.per_input_grid:
            self.method = PER_INPUT_METHOD
        self.selected_on = selected_on
        self.lipschitz = None if lipschitz is None else check_sigma(lipschitz, "lipschitz")
        if formulas is None:
            formulas = [f for f in FORMULAS if f.startswith("probit") or self.lipschitz is not None]
        self.formulas = list(formulas)
        unknown = [f for f in self.formulas if f not in FORMULAS]
        if unknown or not self.formulas:
            raise InvalidArgumentError(f"unknown radius formulas {unknown}; known: {', '.join(FORMULAS)}")
        if bound != "auto" and bound not in MEAN_BOUNDS:
            raise InvalidArgumentError(f"unknown bound {bound!r}; known: auto, {', '.join(MEAN_BOUNDS)}")
        if bound != "auto" and MEAN_BOUNDS[bound].binary_only and \
                not all(get_simplex_map(c.map).binary for c in self.candidates):
            raise InvalidArgumentError(f"the {bound} bound needs binary maps (e.g. hardmax) only")
        if selection not in SELECTIONS:
            raise InvalidArgumentError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        self.bound, self.selection = bound, selection
        self.lvm_options = {"lipschitz": lipschitz, "formulas": formulas, "bound": bound, "selection": selection}
        self.pairs = [(k, f) for k in range(len(self.candidates)) for f in self.formulas]

    def settings(self) -> dict:
        settings = {"candidates": [c.label for c in self.candidates], "formulas": self.formulas,
                    "lvm_selection": self.selection, "lipschitz": self.lipschitz, "bound": self.bound}
        if self.per_input_grid:
            settings["per_input_grid"] = True
        if self.selected_on is not None:
            settings["lvm_selected_on"] = self.selected_on
        return settings

    def with_candidate(self, candidate: Candidate, selected_on: dict | None = None) -> "LipschitzSmooth":
        """This classifier's options with ONE (map, temperature) pair: what a grid selection returns."""
        chosen = LipschitzSmooth(self.model, self.num_classes, self.sigma, maps=[candidate.map],
                                 temperatures=[1.0 if candidate.temperature is None else candidate.temperature],
                                 selected_on=selected_on, device=self.device, input_shape=self.input_shape,
                                 precision=self.precision, channels_last=self.channels_last, compile=self.compile,
                                 graphs=self.graphs,
                                 **self.lvm_options)
        return chosen

    def margin_lipschitz(self, candidate: Candidate) -> float | None:
        """L_m = t L kappa_S: the base margin's Lipschitz constant (None when unknown)."""
        kappa = get_simplex_map(candidate.map).margin_lipschitz
        if self.lipschitz is None or math.isinf(kappa) or candidate.temperature is None:
            return None
        return candidate.temperature * self.lipschitz * kappa

    def bound_for(self, candidate: Candidate) -> str:
        """The mean bound used for a candidate's coordinates."""
        if self.bound != "auto":
            return self.bound
        return "clopper-pearson" if get_simplex_map(candidate.map).binary else "bernstein"

    def alpha_spending(self, alpha, **certify_options):
        if len(self.pairs) == 1:
            candidate = self.candidates[0]
            return formula_spending(self.formulas[0], self.bound_for(candidate), self.num_classes, alpha,
                                    candidate.label)
        what = "(map, temperature, formula)" if self.per_input_grid else "formula"
        if self.selection == "union":
            return {f"union bound over {len(self.pairs)} {what} certificates on the estimation samples, "
                    f"alpha/{len(self.pairs)} each": alpha}
        return {f"one certificate at alpha for the {what} chosen on the n0 selection samples; per-input split "
                "in Certificate.alpha_spending": alpha}

    def _radius(self, means, variances, n, alpha, class_a, k, formula) -> SoftCertificate:
        candidate = self.candidates[k]
        return soft_radius(means[k], variances[k], n, alpha, class_a, formula, self.bound_for(candidate),
                           self.sigma, self.margin_lipschitz(candidate))

    def select(self, means0: np.ndarray, variances0: np.ndarray, n: int, alpha: float,
               pairs=None) -> tuple[int, str, int, float]:
        """(candidate index, formula, cA, predicted radius) from one input's SELECTION moments only:
        the pair of ``pairs`` (default all) whose radius would be largest if the n estimation samples
        had the same moments."""
        pairs = self.pairs if pairs is None else pairs
        k0 = pairs[0][0]
        best = (k0, pairs[0][1], int(np.argmax(means0[k0])), 0.0)
        for k, formula in pairs:
            class_a = int(np.argmax(means0[k]))
            predicted = self._radius(means0, variances0, n, alpha, class_a, k, formula).radius
            if predicted > best[3]:
                best = (k, formula, class_a, predicted)
        return best

    def _moments(self, xs, n0, n, seed, indices, batch_size, stage_prefix: str = "", active=None):
        """Selection moments of every candidate (stage ``{prefix}selection``) and estimation moments
        (``{prefix}estimation``) of the candidates ``active(selection moments)`` lists per input."""
        common = dict(seed=seed, indices=indices, batch_size=batch_size)
        selection = self.sample(xs, n0, SoftMoments(len(xs), self.num_classes, self.device, self.candidates),
                                f"{stage_prefix}selection", **common)
        means0, variances0, _ = selection.moments()
        chosen = None if active is None else active(means0, variances0)
        estimation = self.sample(
            xs, n, SoftMoments(len(xs), self.num_classes, self.device, self.candidates,
                               None if chosen is None else [[k] for k, _, _, _ in chosen]),
            f"{stage_prefix}estimation", **common)
        return means0, variances0, chosen, estimation.moments()

    def _certify_input(self, i, pairs, chosen, means0, variances0, means, variances, votes, n0, n, alpha, seed,
                       index, seconds) -> Certificate:
        """One input's certificate over ``pairs`` (holdout: ``chosen`` on the selection samples; union:
        every pair at alpha / len(pairs) on the estimation samples)."""
        if self.selection == "holdout":
            k, formula, class_a, predicted = chosen
            result = self._radius(means[i], variances[i], n, alpha, class_a, k, formula)
            candidate = self.candidates[k]
            spending = formula_spending(formula, self.bound_for(candidate), self.num_classes, alpha, candidate.label)
        else:
            k, formula, class_a, predicted, result, spending = self._best_of_grid(means0[i], means[i], variances[i],
                                                                               n, alpha, pairs)
        return self._certificate(result, k, formula, class_a, predicted, means[i][k], means0[i][k], votes[i],
                                 spending, n0, n, alpha, seed, index, seconds, len(pairs))

    def certify_batch(self, xs, n0=DEFAULT_N0, n=DEFAULT_N, alpha=DEFAULT_ALPHA, batch_size=DEFAULT_BATCH, seed=0,
                      indices=None):
        n0, n, alpha, batch_size = self.check_certify_args(n0, n, alpha, batch_size)
        xs, seed, indices, clock = self.begin(xs, seed, indices)
        holdout = self.selection == "holdout"
        means0, variances0, chosen, (means, variances, votes) = self._moments(
            xs, n0, n, seed, indices, batch_size,
            active=(lambda m0, v0: [self.select(m0[i], v0[i], n, alpha) for i in range(len(xs))]) if holdout else None)
        seconds = clock.per_input(len(xs))
        return [self._certify_input(i, self.pairs, chosen[i] if holdout else None, means0, variances0, means,
                                    variances, votes, n0, n, alpha, seed, index, seconds)
                for i, index in enumerate(indices)]

    def certify_each_candidate(self, xs, n0=100, n=100_000, alpha=0.001, batch_size=1000, seed=0, indices=None,
                               stage_prefix: str = "") -> list[list[Certificate]]:
        """For grid selection on held-out inputs: ``result[i][k]`` is input i's certificate with
        candidate k alone (its formula chosen as ``selection`` says), all candidates sharing one set
        of samples per input. ``stage_prefix`` names the noise streams (select_lvm uses its own, so
        that held-out samples are independent of every certified input's)."""
        n0, n, alpha, batch_size = self.check_certify_args(n0, n, alpha, batch_size)
        xs, seed, indices, clock = self.begin(xs, seed, indices)
        means0, variances0, _, (means, variances, votes) = self._moments(xs, n0, n, seed, indices, batch_size,
                                                                         stage_prefix)
        seconds = clock.per_input(len(xs))
        results = []
        for i, index in enumerate(indices):
            row = []
            for k in range(len(self.candidates)):
                pairs = [(k, f) for f in self.formulas]
                chosen = self.select(means0[i], variances0[i], n, alpha, pairs) if self.selection == "holdout" else None
                row.append(self._certify_input(i, pairs, chosen, means0, variances0, means, variances, votes, n0, n,
                                               alpha, seed, index, seconds))
            results.append(row)
        return results

    def grid_share(self, alpha: float, count: int) -> float:
        """selection="union": the level of each of the M = ``count`` (candidate, formula) certificates, alpha / M."""
        return alpha / count

    def _best_of_grid(self, means0, means, variances, n, alpha, pairs):
        """selection="union": every pair certified at alpha/M on the estimation samples; the largest wins."""
        share = self.grid_share(alpha, len(pairs))
        best = None
        for k, formula in pairs:
            class_a = int(np.argmax(means0[k]))  # the class is still chosen on the selection samples
            result = self._radius(means, variances, n, share, class_a, k, formula)
            if best is None or result.radius > best[4].radius:
                best = (k, formula, class_a, None, result)
        spending = {f"{self.candidates[k].label} {formula} (union bound)": share for k, formula in pairs}
        return (*best, spending)

    def _certificate(self, result, k, formula, class_a, predicted, means, means0, votes, spending,
                     n0, n, alpha, seed, index, seconds, pairs) -> Certificate:
        candidate = self.candidates[k]
        abstain = not result.radius > 0
        return Certificate(
            prediction=ABSTAIN if abstain else class_a,
            radius=0.0 if abstain else float(result.radius),
            p_lower=result.p_a_lower,
            counts=[int(v) for v in votes],
            n0=n0, n=n, alpha=alpha, sigma=self.sigma, method=self.method, seed=seed, index=index,
            alpha_spending=spending,
            samples_used=n0 + n,
            time=seconds,
            details={
                "selected_class": class_a, "map": candidate.map, "temperature": candidate.temperature,
                "formula": formula, "formula_text": FORMULAS[formula], "bound": self.bound_for(candidate),
                "classifier": candidate.label, "per_input_grid": self.per_input_grid,
                "selection": self.selection if pairs > 1 else "none",
                "candidates": pairs, "p_b_upper": result.p_b_upper,
                "lipschitz_constant": result.lipschitz_constant, "predicted_radius": predicted,
                "means": [float(m) for m in means], "selection_means": [float(m) for m in means0],
            },
        )

    def predict_share(self, alpha: float) -> float:
        """PREDICT's level for each of its 2C one-sided bounds (a lower and an upper bound on every
        f_c, since the class A is picked from the same samples): alpha / (2C)."""
        return alpha / (2 * self.num_classes)

    def predict_batch(self, xs, n=DEFAULT_N, alpha=DEFAULT_ALPHA, batch_size=DEFAULT_BATCH, seed=0, indices=None):
        """PREDICT with the first candidate (maps[0] at temperatures[0]): returns the class A with the
        largest sample mean when lower_A > min(1/2, max_{c != A} upper_c), else ABSTAIN.

        All 2C one-sided bounds hold together with probability >= 1 - alpha (alpha/(2C) each), so a
        returned class is g's class whichever A the samples pick: f_A >= lower_A > upper_c >= f_c,
        or f_A > 1/2 > f_c.
        """
        _, n, alpha, batch_size = self.check_certify_args(1, n, alpha, batch_size)
        xs, seed, indices, clock = self.begin(xs, seed, indices)
        candidate = self.candidates[0]
        moments = self.sample(xs, n, SoftMoments(len(xs), self.num_classes, self.device, [candidate]),
                              "prediction", seed, indices, batch_size)
        means, variances, votes = moments.moments()
        seconds = clock.per_input(len(xs))
        bounds, share = MEAN_BOUNDS[self.bound_for(candidate)], self.predict_share(alpha)
        name = f"{bounds.name} lower and upper bounds on every f_c of {candidate.label}, alpha/(2*{self.num_classes}) each"
        predictions = []
        for row, index in enumerate(indices):
            class_a = int(np.argmax(means[row, 0]))
            lower = float(bounds.lower(means[row, 0, class_a], variances[row, 0, class_a], n, share))
            others = np.delete(np.arange(self.num_classes), class_a)
            upper = float(np.max(bounds.upper(means[row, 0, others], variances[row, 0, others], n, share)))
            predictions.append(Prediction(
                prediction=class_a if lower > min(0.5, upper) else ABSTAIN,
                counts=[int(v) for v in votes[row]],
                n=n, alpha=alpha, sigma=self.sigma, method=self.method, seed=seed, index=index,
                alpha_spending={name: alpha}, samples_used=n, time=seconds,
                details={"map": candidate.map, "temperature": candidate.temperature, "p_a_lower": lower,
                         "p_b_upper": upper, "means": [float(m) for m in means[row, 0]]},
            ))
        return predictions
