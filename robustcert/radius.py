"""Certified radii as pure functions of probability bounds and the noise level.

l2 radii (Gaussian noise), l1 radii (uniform and Laplace noise) and l0 radii (randomized
ablation, a number of pixels). Radii of additive noise are in the units of sigma, i.e. pixel
units in [0,1] space; sigma is always the per-coordinate standard deviation.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy.stats import norm

from .errors import InvalidArgumentError, check_alpha, check_budget, check_sigma


def _probit(p: float) -> float:
    """Phi^-1(p) with the conventions Phi^-1(0) = -inf and Phi^-1(1) = +inf."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return float(norm.ppf(p))


def gaussian_radius(sigma: float, p_a_lower: float) -> float:
    """Cohen et al. (2019), Theorem 1 with pB <= 1 - pA: R = sigma * Phi^-1(pA_lower).

    Returns 0.0 when p_a_lower <= 0.5 (no certificate: the caller abstains).
    """
    sigma = check_sigma(sigma)
    if p_a_lower <= 0.5:
        return 0.0
    return sigma * _probit(p_a_lower)


def largest_gaussian_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY (Cohen et al. 2019) can give with ``n`` estimation samples at
    level ``alpha``: sigma * Phi^-1(alpha^(1/n)).

    When all n votes go to the top class, the one-sided Clopper-Pearson lower bound is exactly
    alpha^(1/n) (the Beta(n, 1) quantile alpha); no input can be certified further, so every
    certified-accuracy curve of such a run drops to 0 at or before this radius (3.81 sigma for
    n = 100000, alpha = 0.001).
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise InvalidArgumentError(f"n must be a whole number >= 1, got {n!r}")
    return gaussian_radius(sigma, check_alpha(alpha) ** (1.0 / int(n)))


def gaussian_radius_two_sided(sigma: float, p_a_lower: float, p_b_upper: float) -> float:
    """Cohen et al. (2019), Theorem 1: R = sigma/2 * (Phi^-1(pA_lower) - Phi^-1(pB_upper)).

    Valid whenever pA_lower <= P(f(x+d) = cA) and pB_upper >= max_{c != cA} P(f(x+d) = c)
    (Salman et al. 2019 give the same form for soft classifiers with outputs in [0,1]).
    Returns 0.0 when pA_lower <= pB_upper.
    """
    sigma = check_sigma(sigma)
    if p_a_lower <= p_b_upper:
        return 0.0
    return 0.5 * sigma * (_probit(p_a_lower) - _probit(p_b_upper))


def dual_gaussian_radius(sigma_a: float, sigma_b: float, p_a_lower: float, p_b_lower: float) -> float:
    """Dual randomized smoothing (Xia et al., ICLR 2024), sound form: R = (a + b) / sqrt(1/sigma_a^2 + 1/sigma_b^2).

    a = Phi^-1(p_a_lower), b = Phi^-1(p_b_lower) are the probits of lower bounds on the two
    branches' probabilities of the predicted class; negative values are kept (not clamped) and
    Phi^-1(0) = -inf. Returns 0.0 when a + b <= 0 (no certificate: the caller abstains). Equal
    sigmas give sigma (a + b) / sqrt(2). The derivation is in :mod:`robustcert.methods.dual`.
    NOT sqrt(R_a^2 + R_b^2) with R_i = sigma_i Phi^-1(p_i): that over-claims whenever R_a != R_b.
    """
    sigma_a, sigma_b = check_sigma(sigma_a, "sigma_a"), check_sigma(sigma_b, "sigma_b")
    total = _probit(p_a_lower) + _probit(p_b_lower)  # -inf + finite = -inf; inf - inf = nan
    if not total > 0:
        return 0.0
    return total / math.sqrt(sigma_a ** -2 + sigma_b ** -2)


# --------------------------------------------------------------------------- l1: uniform and Laplace noise
# Both rest on one fact about smoothing: if the law of delta + v is within a known distance of the
# law of delta, every event (here {f(x + v + delta) = c}) changes probability by a bounded amount.


def _two_sided(p_a_lower: float, p_b_upper: float | None) -> tuple[float, float]:
    """(pA_lower, pB_upper) with the binary default pB_upper = 1 - pA_lower."""
    p_a = float(p_a_lower)
    return p_a, (1.0 - p_a if p_b_upper is None else float(p_b_upper))


def uniform_l1_radius(sigma: float, p_a_lower: float, p_b_upper: float | None = None) -> float:
    """l1 radius of uniform noise on [-lambda, lambda]^d, lambda = sqrt(3) sigma (Yang et al. 2020,
    "Randomized smoothing of all shapes and sizes"; Lee et al. 2019): R = lambda (pA_lower - pB_upper),
    which with pB_upper = 1 - pA_lower (the default) is R = 2 lambda (pA_lower - 1/2).

    Derivation. For a shift v, the total variation between U and U + v is
    TV = 1 - prod_i max(0, 1 - |v_i| / (2 lambda)) <= sum_i |v_i| / (2 lambda) = ||v||_1 / (2 lambda)
    (the two cubes overlap in a box of side 2 lambda - |v_i|; and 1 - prod(1 - t_i) <= sum t_i).
    Every event moves by at most TV, so at x + v: P(A) >= pA - TV and P(c) <= pB + TV for c != A;
    A still wins when pA - TV > pB + TV, i.e. for every ||v||_1 < lambda (pA - pB).
    Tight: for f(x) = 1[x_0 > 0] at x_0 = a < lambda, pA = 1/2 + a / (2 lambda) and R = a, the
    exact l1 distance to the boundary. Returns 0.0 when pA_lower <= pB_upper.
    """
    sigma = check_sigma(sigma)
    p_a, p_b = _two_sided(p_a_lower, p_b_upper)
    if p_a <= p_b:
        return 0.0
    return math.sqrt(3.0) * sigma * (p_a - p_b)


def laplace_l1_radius(sigma: float, p_a_lower: float, p_b_upper: float | None = None) -> float:
    """l1 radius of Laplace noise, density proportional to exp(-||z||_1 / b), b = sigma / sqrt(2)
    (Teng, Lee and Yuan, ICLR 2020, "l1 adversarial robustness certificates: a randomized smoothing
    approach", Theorem 1): R = max( b/2 ln(pA_lower / pB_upper), -b ln(1 - pA_lower + pB_upper) ),
    which with pB_upper = 1 - pA_lower (the default) is R = -b ln(2 (1 - pA_lower)).

    Derivation. The densities of delta + v and delta differ by a factor in [e^(-r/b), e^(r/b)],
    r = ||v||_1, since | ||z - v||_1 - ||z||_1 | <= r. So at x + v every event E has
    e^(-r/b) P(E) <= P'(E) <= e^(r/b) P(E), and for each class c != A: P'(c) <= e^(r/b) pB.
    (1) P'(A) >= e^(-r/b) pA > e^(r/b) pB when r < b/2 ln(pA / pB);
    (2) P'(A) = 1 - P'(not A) >= 1 - e^(r/b) (1 - pA) > e^(r/b) pB when r < -b ln(1 - pA + pB).
    Either suffices, hence the max; with pB = 1 - pA, (2) is the larger for pA > 1/2.
    Tight: for f(x) = 1[x_0 > 0] at x_0 = a, pA = 1 - e^(-a/b) / 2 and (2) gives R = a, the exact
    l1 distance to the boundary. Returns 0.0 when pA_lower <= pB_upper.
    """
    sigma = check_sigma(sigma)
    p_a, p_b = _two_sided(p_a_lower, p_b_upper)
    if p_a <= p_b:
        return 0.0
    scale = sigma / math.sqrt(2.0)
    complement = 1.0 - p_a + p_b  # in [0, 1): exact for p_a >= 1/2 (Sterbenz)
    tight = math.inf if complement <= 0.0 else -scale * math.log(complement)
    ratio = math.inf if p_b <= 0.0 else 0.5 * scale * math.log(p_a / p_b)
    return max(tight, ratio)


# --------------------------------------------------------------------------- l0: randomized ablation


def _check_ablation(pixels: int, keep: int) -> tuple[int, int]:
    if isinstance(pixels, bool) or isinstance(keep, bool) or int(pixels) != pixels or int(keep) != keep:
        raise InvalidArgumentError(f"pixels and keep must be whole numbers, got {pixels!r} and {keep!r}")
    pixels, keep = int(pixels), int(keep)
    if not 1 <= keep <= pixels:
        raise InvalidArgumentError(f"keep must be between 1 and the number of pixels ({pixels}), got {keep}")
    return pixels, keep


def _kept_set_avoids(rho: int, pixels: int, keep: int) -> Fraction:
    """C(d - rho, k) / C(d, k), exactly: the chance that k pixels chosen uniformly without
    replacement out of d miss all of rho given pixels."""
    return Fraction(math.comb(pixels - rho, keep), math.comb(pixels, keep))


def ablation_delta(rho: int, pixels: int, keep: int) -> float:
    """Levine and Feizi (AAAI 2020): Delta(rho) = 1 - C(d - rho, k) / C(d, k), the probability that a
    uniformly random set of k kept pixels out of d includes at least one of rho given pixels."""
    pixels, keep = _check_ablation(pixels, keep)
    if isinstance(rho, bool) or int(rho) != rho or not 0 <= rho <= pixels:
        raise InvalidArgumentError(f"rho must be a whole number between 0 and {pixels}, got {rho!r}")
    return float(1 - _kept_set_avoids(int(rho), pixels, keep))


def ablation_radius(p_a_lower: float, pixels: int, keep: int, p_b_upper: float | None = None) -> int:
    """l0 radius of randomized ablation (Levine and Feizi, AAAI 2020, Theorem 1): the largest number
    of pixels rho with pA_lower - Delta(rho) > pB_upper + Delta(rho), which with pB_upper =
    1 - pA_lower (the default) is pA_lower - Delta(rho) > 1/2; 0 when only rho = 0 qualifies.

    Derivation. Let x' differ from x in a set R of rho pixels. Ablate both with the same kept set
    T: when T misses R (probability C(d - rho, k) / C(d, k) = 1 - Delta), the two ablated inputs
    are identical, so f agrees on them. Hence every class's probability moves by at most Delta:
    P'(A) >= pA - Delta and P'(c) <= pB + Delta, and A still wins when pA - Delta > pB + Delta.
    (With pB = 1 - pA the condition reads pA - Delta > 1/2, which also makes P'(A) a majority.)
    Delta grows with rho, so the certified set is {0, ..., R}. Compared exactly, in rationals
    (the float pA_lower is an exact binary fraction), so no rounding can certify one pixel too many.
    """
    pixels, keep = _check_ablation(pixels, keep)
    p_a, p_b = _two_sided(p_a_lower, p_b_upper)
    if not p_a > p_b:
        return 0
    # certified at rho  <=>  2 Delta < pA - pB  <=>  C(d - rho, k) / C(d, k) > 1 - (pA - pB) / 2
    needed = 1 - (Fraction(p_a) - Fraction(p_b)) / 2
    low, high = 0, pixels - keep + 1  # rho = 0 qualifies (pA > pB); rho > d - k has Delta = 1
    while high - low > 1:  # invariant: low qualifies, high does not
        middle = (low + high) // 2
        if _kept_set_avoids(middle, pixels, keep) > needed:
            low = middle
        else:
            high = middle
    return low


# --------------------------------------------------------------------------- Lipschitz margins
# Lipschitz-variance-margin smoothing (Delattre et al., ICLR 2024): radii from a lower bound on the
# margin of a smoothed soft output and the Lipschitz constant of the smoothed margin.


def smoothed_lipschitz_constant(sigma: float, width: float = 2.0, lipschitz: float | None = None) -> float:
    """l2 Lipschitz constant of h_tilde(x) = E[h(x + delta)], delta ~ N(0, sigma^2 I), for any h
    with values in an interval of width ``width`` (and L-Lipschitz when ``lipschitz`` = L is given).

    * Any h: width / (sigma sqrt(2 pi)). The derivative along a unit u is (1/sigma) E[h(x+delta) Z],
      Z = <delta, u>/sigma ~ N(0,1); with h in [m, m + w], E[(h - m) Z] <= w E[Z 1(Z > 0)]
      = w / sqrt(2 pi), attained by a step across u. For a margin S_a - S_b in [-1, 1] (w = 2):
      sqrt(2/pi) / sigma.
    * h L-Lipschitz: L erf(w / (2 sqrt(2) L sigma)) = L (2 Phi(w / (2 L sigma)) - 1). Along u, for
      each orthogonal part of the noise, the 1-D section g has |g'| <= L and rises by at most w over
      any interval; by the layer-cake formula E[g'(s + sigma Z)] = int_0^inf int_{phi_sigma > r} g' dr
      <= int_0^inf min(w, L |{phi_sigma > r}|) dr, which the ramp g(s) = clip(L s, -w/2, w/2)
      attains; its smoothing has slope L P(|sigma Z| < w / (2L)). Tends to L as L -> 0 and to
      w / (sigma sqrt(2 pi)) as L -> infinity. (Written with the half-width r = w/2 this is the
      L erf(r / (sqrt(2) L sigma)) of the paper's public code; reading r as the full width would
      overstate the constant: sound but loose.)
    """
    sigma = check_sigma(sigma)
    width = check_sigma(width, "width")
    general = width / (sigma * math.sqrt(2 * math.pi))
    if lipschitz is None or math.isinf(lipschitz):
        return general
    lipschitz = check_sigma(lipschitz, "lipschitz")
    return min(general, lipschitz * math.erf(width / (2 * math.sqrt(2) * lipschitz * sigma)))


def lipschitz_margin_radius(margin_lower: float, lipschitz_constant: float) -> float:
    """R = margin_lower / Lip: a function with value >= margin_lower > 0 at x that is Lip-Lipschitz
    stays positive on the open l2 ball of that radius. 0.0 when margin_lower <= 0.

    With margin = f_A - f_c of a smoothed soft output (f_c in [0,1]) and Lip = sqrt(2/pi)/sigma,
    R = sigma sqrt(pi/2) (pA_lower - pB_upper) <= sigma/2 (Phi^-1(pA_lower) - Phi^-1(pB_upper))
    (Phi^-1 has slope >= sqrt(2 pi)): this form only wins with a small known base Lipschitz constant.
    """
    lipschitz_constant = check_sigma(lipschitz_constant, "lipschitz_constant")
    if not margin_lower > 0:
        return 0.0
    return float(margin_lower) / lipschitz_constant


# --------------------------------------------------------------------------- policy smoothing
# Kumar, Levine and Feizi (ICLR 2022), "Policy Smoothing for Provably Robust Reinforcement
# Learning": an adversary adds eps_t to every observation with sqrt(sum_t ||eps_t||^2) <= B over
# the episode (adaptively); the agent acts on o_t + eps_t + delta_t, delta_t ~ N(0, sigma^2 I).


def attacked_probability_lower(p_lower, budget: float, sigma: float):
    """Adaptive Neyman-Pearson bound: an episode event of clean probability >= p keeps probability
    >= Phi(Phi^-1(p) - B / sigma) under any adaptive attack of total l2 budget B.

    Vectorised over ``p_lower``; Phi^-1(0) = -inf gives 0 and Phi^-1(1) = +inf gives 1. Increasing
    in p, so a lower confidence bound on p gives a lower bound on the attacked probability.
    """
    sigma = check_sigma(sigma)
    budget = check_budget(budget)
    p = np.clip(np.asarray(p_lower, dtype=float), 0.0, 1.0)
    return norm.cdf(norm.ppf(p) - budget / sigma)


def _check_levels(levels, p_lower, lower_bound: float):
    levels = np.asarray(levels, dtype=float)
    p_lower = np.asarray(p_lower, dtype=float)
    if levels.shape != p_lower.shape or levels.ndim != 1:
        raise InvalidArgumentError("levels and p_lower must be 1-D arrays of the same length")
    if len(levels) and (np.any(np.diff(levels) <= 0) or levels[0] <= lower_bound):
        raise InvalidArgumentError("levels must be strictly increasing and above return_lower_bound")
    return levels, p_lower


def certified_expected_return(levels, p_lower, budget: float, sigma: float, lower_bound: float) -> float:
    """Kumar et al. (2022), Theorem 2: E_attacked[R] >= v_0 + sum_i (v_i - v_{i-1}) Phi(Phi^-1(p_i) - B/sigma).

    ``levels`` v_1 < ... < v_k (strictly above ``lower_bound`` = v_0, a known lower bound on every
    return), ``p_lower`` p_i <= P_clean(R >= v_i), all holding simultaneously. Proof: for
    R >= v_0, E[R] = v_0 + int_{v_0}^inf P(R >= t) dt, and for t in (v_{i-1}, v_i] the attacked
    P(R >= t) >= attacked P(R >= v_i) >= Phi(Phi^-1(p_i) - B/sigma) (the event {R >= v_i} is an
    event of the episode); the integral above v_k is >= 0.
    """
    levels, p_lower = _check_levels(levels, p_lower, lower_bound)
    if len(levels) == 0:
        return float(lower_bound)
    steps = np.diff(np.concatenate([[float(lower_bound)], levels]))
    return float(lower_bound + np.sum(steps * attacked_probability_lower(p_lower, budget, sigma)))


def certified_quantile(levels, p_lower, budget: float, sigma: float, lower_bound: float, q: float) -> float:
    """The largest level v with certified attacked P(R >= v) >= 1 - q (v_0 if none).

    Certifies that the attacked return is >= v with probability >= 1 - q, i.e. the attacked
    return's q-quantile (lower q tail) is at least v. Uses the same simultaneous bounds as
    :func:`certified_expected_return`, so it costs no extra alpha.
    """
    levels, p_lower = _check_levels(levels, p_lower, lower_bound)
    q = check_alpha(q, "quantile")
    attacked = attacked_probability_lower(p_lower, budget, sigma)
    certified = np.nonzero(attacked >= 1.0 - q)[0]
    return float(levels[certified[-1]]) if len(certified) else float(lower_bound)
