"""Confidence bounds and tests: pure functions of counts, means and levels.

Every function takes numbers and returns numbers; none touches a model. Each bound states the
probability with which it holds, so the methods can say exactly how they spend alpha.
"""
from __future__ import annotations

from scipy.stats import beta as _beta
from scipy.stats import binomtest

from .errors import check_alpha, check_count, InvalidArgumentError


def _check_successes(k: int, n: int) -> tuple[int, int]:
    n = check_count(n, "n", minimum=1)
    k = check_count(k, "successes", minimum=0)
    if k > n:
        raise InvalidArgumentError(f"successes ({k}) cannot exceed trials ({n})")
    return k, n


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower confidence bound on a binomial proportion.

    With probability >= 1 - alpha over the draw of k ~ Binomial(n, p), the returned value is <= p.
    It is the alpha quantile of Beta(k, n - k + 1), and 0 when k = 0 (Clopper and Pearson 1934;
    Cohen et al. 2019, Algorithm CERTIFY, LowerConfBound). Equal to statsmodels'
    ``proportion_confint(k, n, alpha=2*alpha, method="beta")[0]``.
    """
    k, n = _check_successes(k, n)
    alpha = check_alpha(alpha)
    if k == 0:
        return 0.0
    return float(_beta.ppf(alpha, k, n - k + 1))


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper confidence bound: >= p with probability >= 1 - alpha.

    The 1 - alpha quantile of Beta(k + 1, n - k), and 1 when k = n.
    """
    k, n = _check_successes(k, n)
    alpha = check_alpha(alpha)
    if k == n:
        return 1.0
    return float(_beta.ppf(1.0 - alpha, k + 1, n - k))


def binomial_test_pvalue(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test p-value of k successes in n trials against proportion p.

    Used by PREDICT (Cohen et al. 2019): with top-two counts nA >= nB, abstain when
    ``binomial_test_pvalue(nA, nA + nB) > alpha``. (scipy.stats.binomtest; the old
    scipy.stats.binom_test was removed in SciPy 1.12.)
    """
    k, n = _check_successes(k, n)
    return float(binomtest(k, n, p, alternative="two-sided").pvalue)
