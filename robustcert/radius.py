"""Certified l2 radii as pure functions of probability bounds and the noise level.

All radii are in the units of the noise sigma, i.e. pixel units in [0,1] space.
"""
from __future__ import annotations

import math

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
