"""Certified l2 radii as pure functions of probability bounds and the noise level.

All radii are in the units of the noise sigma, i.e. pixel units in [0,1] space.
"""
from __future__ import annotations

import math

from scipy.stats import norm

from .errors import check_sigma


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
