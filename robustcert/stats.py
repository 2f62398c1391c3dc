"""Confidence bounds and tests: pure functions of counts, means and levels.

Every function takes numbers and returns numbers; none touches a model. Each bound states the
probability with which it holds, so the methods can say exactly how they spend alpha.
"""
from __future__ import annotations

import functools
import math
from math import log, log1p

import numpy as np
from scipy.optimize import brentq
from scipy.special import betaln
from scipy.stats import beta as _beta
from scipy.stats import binomtest

from .errors import InvalidArgumentError, check_alpha, check_count


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


# --------------------------------------------------------------------------- bounds on [0,1] means
# Lipschitz-variance-margin smoothing (Delattre et al., ICLR 2024) bounds the mean of each soft
# output coordinate, a [0,1]-valued random variable, from its sample mean and sample variance.


def _mean_bound_args(mean, variance, n: int, alpha: float):
    n = check_count(n, "n", minimum=1)
    alpha = check_alpha(alpha)
    mean = np.asarray(mean, dtype=np.float64)
    variance = np.asarray(variance, dtype=np.float64)
    if np.any(~np.isfinite(mean)) or np.any((mean < 0) | (mean > 1)):
        raise InvalidArgumentError("means of [0,1]-valued samples must lie in [0, 1]")
    if np.any(~np.isfinite(variance)) or np.any(variance < 0):
        raise InvalidArgumentError("sample variances must be finite and >= 0")
    return mean, variance, n, alpha


def _as_output(value, like):
    return float(value) if getattr(like, "ndim", 0) == 0 else value


def bernstein_deviation(variance, n: int, alpha: float):
    """Maurer and Pontil (2009), Theorem 4: sqrt(2 V ln(2/alpha) / n) + 7 ln(2/alpha) / (3 (n - 1)).

    For i.i.d. Z_1..Z_n in [0,1], n >= 2, and V the unbiased sample variance, with probability
    >= 1 - alpha: E[Z] - mean(Z) <= this deviation. The statement is ONE-sided at level alpha;
    the 2 in ln(2/alpha) is not a two-sided correction: it pays for the union of two one-sided
    events at alpha/2 each, Bennett's inequality for the mean with the true variance, and the
    upper confidence bound on the standard deviation from V (their Theorem 10):
    sqrt(2 s^2 ln(2/a)/n) + ln(2/a)/(3n) with s <= sqrt(V) + sqrt(2 ln(2/a)/(n-1)) gives
    sqrt(2 V ln(2/a)/n) + (2/sqrt(n(n-1)) + 1/(3n)) ln(2/a) <= the formula above.
    Infinite for n < 2 (no bound).
    """
    n = check_count(n, "n", minimum=1)
    alpha = check_alpha(alpha)
    if n < 2:
        return np.inf * np.ones_like(np.asarray(variance, dtype=np.float64))
    log_term = np.log(2.0 / alpha)
    return np.sqrt(2.0 * np.asarray(variance, dtype=np.float64) * log_term / n) + 7.0 * log_term / (3.0 * (n - 1))


def bernstein_lower(mean, variance, n: int, alpha: float):
    """Empirical Bernstein lower bound on E[Z] for i.i.d. Z in [0,1] (Maurer and Pontil 2009, Thm 4).

    ``mean`` and ``variance`` (unbiased, divisor n - 1) of n samples; vectorised over arrays.
    With probability >= 1 - alpha (one-sided): E[Z] >= max(0, mean - sqrt(2 V ln(2/alpha)/n)
    - 7 ln(2/alpha) / (3 (n-1))). Applying Theorem 4 to 1 - Z gives this lower form. 0 when n < 2.
    """
    mean, variance, n, alpha = _mean_bound_args(mean, variance, n, alpha)
    return _as_output(np.clip(mean - bernstein_deviation(variance, n, alpha), 0.0, 1.0), mean)


def bernstein_upper(mean, variance, n: int, alpha: float):
    """Empirical Bernstein upper bound: with probability >= 1 - alpha (one-sided),
    E[Z] <= min(1, mean + sqrt(2 V ln(2/alpha)/n) + 7 ln(2/alpha) / (3 (n-1))). 1 when n < 2."""
    mean, variance, n, alpha = _mean_bound_args(mean, variance, n, alpha)
    return _as_output(np.clip(mean + bernstein_deviation(variance, n, alpha), 0.0, 1.0), mean)


def hoeffding_lower(mean, n: int, alpha: float):
    """Hoeffding (1963) lower bound on E[Z] for i.i.d. Z in [0,1]: with probability >= 1 - alpha
    (one-sided), E[Z] >= max(0, mean - sqrt(ln(1/alpha) / (2n)))."""
    mean, _, n, alpha = _mean_bound_args(mean, 0.0, n, alpha)
    return _as_output(np.clip(mean - np.sqrt(np.log(1.0 / alpha) / (2.0 * n)), 0.0, 1.0), mean)


def hoeffding_upper(mean, n: int, alpha: float):
    """Hoeffding upper bound: with probability >= 1 - alpha, E[Z] <= min(1, mean + sqrt(ln(1/alpha)/(2n)))."""
    mean, _, n, alpha = _mean_bound_args(mean, 0.0, n, alpha)
    return _as_output(np.clip(mean + np.sqrt(np.log(1.0 / alpha) / (2.0 * n)), 0.0, 1.0), mean)


def binomial_test_pvalue(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test p-value of k successes in n trials against proportion p.

    Used by PREDICT (Cohen et al. 2019): with top-two counts nA >= nB, abstain when
    ``binomial_test_pvalue(nA, nA + nB) > alpha``. (scipy.stats.binomtest; the old
    scipy.stats.binom_test was removed in SciPy 1.12.)
    """
    k, n = _check_successes(k, n)
    return float(binomtest(k, n, p, alternative="two-sided").pvalue)


# --------------------------------------------------------------------------- survival-function bands
# Simultaneous lower confidence bands on S(t) = P(X >= t) from n i.i.d. samples: the statistics of
# policy smoothing (Kumar, Levine and Feizi 2022), which certifies an expected return from a lower
# bound on the whole survival function of the clean smoothed return.


def empirical_survival(samples, thresholds):
    """S_n(t) = #{j : X_j >= t} / n at each threshold (an array like ``thresholds``)."""
    values = np.sort(np.asarray(samples, dtype=float))
    check_count(len(values), "number of samples", minimum=1)
    thresholds = np.asarray(thresholds, dtype=float)
    return (len(values) - np.searchsorted(values, thresholds, side="left")) / len(values)


def dkw_epsilon(n: int, alpha: float) -> float:
    """Width of the one-sided Dvoretzky-Kiefer-Wolfowitz band (Massart 1990).

    Massart (1990, Ann. Probab. 18, Theorem 1 and its one-sided corollary): for n i.i.d. samples
    of ANY distribution, P(sup_t (S_n(t) - S(t)) > eps) <= exp(-2 n eps^2) whenever
    exp(-2 n eps^2) <= 1/2. Hence, for alpha <= 1/2, with probability >= 1 - alpha,
    S(t) >= S_n(t) - eps for every t at once, with eps = sqrt(ln(1/alpha) / (2n)).
    (S_n - S for the survival function is F - F_n at left limits, i.e. the one-sided DKW statement
    for -X; discontinuous distributions only make the supremum stochastically smaller.)
    For alpha > 1/2 Massart's one-sided condition fails and the two-sided constant is used:
    eps = sqrt(ln(2/alpha) / (2n)) (P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2) for all eps).
    The two-sided form sqrt(ln(2/alpha)/(2n)) is always valid but wider than needed for a
    one-sided band.
    """
    n = check_count(n, "n")
    alpha = check_alpha(alpha)
    log_term = math.log(1.0 / alpha) if alpha <= 0.5 else math.log(2.0 / alpha)
    return math.sqrt(log_term / (2.0 * n))


def dkw_survival_lower(samples, thresholds, alpha: float):
    """Lower band max(S_n(t) - eps, 0), valid for all t simultaneously with probability >= 1 - alpha.

    eps from :func:`dkw_epsilon`. The thresholds may depend on the samples (the band holds for
    every t at once), so certifying at the observed levels costs nothing extra.
    """
    survival = empirical_survival(samples, thresholds)
    return np.maximum(survival - dkw_epsilon(len(np.atleast_1d(samples)), alpha), 0.0)


def clopper_pearson_survival_lower(samples, thresholds, alpha: float, fixed_grid: bool = False):
    """Clopper-Pearson lower bounds on S(t) = P(X >= t), simultaneous over all thresholds.

    Two ways to split alpha (both union bounds):

    * ``fixed_grid=True``: the m thresholds were declared BEFORE sampling (e.g. every integer
      return 1..T of a T-step episode). Each bound is a one-sided Clopper-Pearson bound at level
      alpha/m on the count #{X_j >= t}; the union bound over the m fixed events gives 1 - alpha.
    * ``fixed_grid=False`` (default): the thresholds may be chosen from the data (e.g. the distinct
      observed values). alpha is then split over the n possible count levels c = 1..n instead:
      with L_c = CP_lower(c, n, alpha/n), let q_c be the largest t with S(t) >= L_c; the event
      "some t with count(t) >= c has S(t) < L_c" implies #{X_j > q_c} >= c, where
      P(X > q_c) <= L_c, so it has probability <= P(Binomial(n, L_c) >= c) = alpha/n. The union
      over c = 1..n gives S(t) >= L_count(t) for every t at once with probability >= 1 - alpha.
      (Splitting alpha over the k distinct OBSERVED levels instead would not be a valid union
      bound: those levels, and k, depend on the data.)

    A threshold with count 0 gets the trivial bound 0. Reuses :func:`clopper_pearson_lower`.
    """
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=float))
    n = len(np.atleast_1d(samples))
    counts = np.rint(empirical_survival(samples, thresholds) * n).astype(int)
    splits = len(thresholds) if fixed_grid else n
    level = check_alpha(alpha) / max(splits, 1)
    return np.array([_cached_clopper_pearson_lower(int(count), n, level) for count in counts], dtype=float)


# clopper_pearson_lower memoised: bands re-use the same few (k, n, alpha) many times
_cached_clopper_pearson_lower = functools.lru_cache(maxsize=65536)(clopper_pearson_lower)


# --------------------------------------------------------------------------- confidence sequences
# Sequential certification (robustcert/methods/sequential.py) looks at the votes after every
# checkpoint and stops as soon as the answer is decided. A fixed-n bound re-applied at every look
# is NOT valid: the chance that SOME look fails grows with the number of looks (naive peeking).
# A confidence sequence (CS) holds at all looks at once: P(exists t: p outside CS_t) <= alpha, so
# it holds at any data-dependent stopping time.


def _check_checkpoints(checkpoints) -> list[int]:
    grid = [int(n) for n in checkpoints]
    if not grid or grid[0] < 1 or grid != list(checkpoints) or any(b <= a for a, b in zip(grid, grid[1:])):
        raise InvalidArgumentError(f"checkpoints must be a non-empty increasing list of sample counts, got {grid}")
    return grid


def stitched_alpha(checkpoints, alpha: float) -> float:
    """The level of each bound of the stitched Clopper-Pearson sequence: alpha_k = alpha / K.

    K = len(checkpoints); the K shares sum to alpha (union bound over the declared checkpoints).
    """
    return check_alpha(alpha) / len(_check_checkpoints(checkpoints))


def _stitched_level(n: int, checkpoints, alpha: float) -> float:
    grid = _check_checkpoints(checkpoints)
    if n not in grid:
        raise InvalidArgumentError(
            f"n = {n} is not one of the declared checkpoints {grid}: the stitched sequence holds only there"
        )
    return check_alpha(alpha) / len(grid)


def stitched_clopper_pearson_lower(k: int, n: int, checkpoints, alpha: float) -> float:
    """Lower confidence sequence for a Bernoulli mean p over checkpoints declared in advance.

    ``checkpoints`` n_1 < ... < n_K are fixed before sampling (e.g. a geometric grid up to n_max).
    At a checkpoint n = n_j with k successes among the first n_j draws, the bound is the one-sided
    Clopper-Pearson lower bound at level alpha_k = alpha / K:  L_j = CP_lower(k, n_j, alpha / K).
    Union bound: P(exists j: L_j > p) <= sum_j alpha / K = alpha, so the bounds hold at every
    checkpoint simultaneously with probability >= 1 - alpha, and therefore at any stopping time
    that only stops at checkpoints, however it depends on the data (the running maximum of the
    L_j is valid too). This is the finite-horizon, Bonferroni form of "stitching" fixed-n bounds
    over a geometric grid of epochs with alpha_k summing to alpha (Howard, Ramdas, McAuliffe and
    Sekhon 2021, Ann. Statist. 49(2), Sec. 3; group-sequential Bonferroni tests). Over a geometric
    grid K ~ log2(n_max / n_1), so the price of peeking is only alpha -> alpha / K.
    Raises InvalidArgumentError when n is not a declared checkpoint.
    """
    return clopper_pearson_lower(k, n, _stitched_level(n, checkpoints, alpha))


def stitched_clopper_pearson_upper(k: int, n: int, checkpoints, alpha: float) -> float:
    """Upper confidence sequence over declared checkpoints: U_j = CP_upper(k, n_j, alpha / K).

    P(exists j: U_j < p) <= alpha (union bound; see :func:`stitched_clopper_pearson_lower`).
    """
    return clopper_pearson_upper(k, n, _stitched_level(n, checkpoints, alpha))


def checkpoint_levels(checkpoints, alpha: float, final_share: float | None = None) -> list[float]:
    """The level alpha_j of each checkpoint's bound in a stitched sequence; the levels sum to alpha.

    ``final_share`` None: alpha / K at each of the K checkpoints (:func:`stitched_alpha`). A share f
    in (0, 1): f alpha at the last checkpoint n_K and (1 - f) alpha / (K - 1) at each of the others
    (a single checkpoint gets alpha). Any fixed levels summing to alpha keep the union bound of
    :func:`stitched_clopper_pearson_lower` (P(exists j: L_j > p) <= sum_j alpha_j = alpha), as long
    as they are declared before sampling; weighting the last look, where inputs that are hard to
    decide end up, brings its bound close to the fixed-n bound at alpha (group-sequential designs
    spend alpha unevenly over their looks for the same reason).
    """
    grid = _check_checkpoints(checkpoints)
    alpha = check_alpha(alpha)
    if final_share is None or len(grid) == 1:
        return [alpha / len(grid)] * len(grid)
    if not (isinstance(final_share, (int, float)) and 0.0 < final_share < 1.0):
        raise InvalidArgumentError(f"final_share must lie in (0, 1), got {final_share!r}")
    return [(1.0 - final_share) * alpha / (len(grid) - 1)] * (len(grid) - 1) + [final_share * alpha]


def _count_arrays(k, n):
    k = np.asarray(k, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), k.shape)
    if np.any(k < 0) or np.any(k > n) or np.any(n < 1) or np.any(k != np.floor(k)) or np.any(n != np.floor(n)):
        raise InvalidArgumentError("successes must be whole numbers in [0, n] and n >= 1")
    return k, n


def clopper_pearson_lower_many(k, n, alpha):
    """:func:`clopper_pearson_lower` over arrays (k, n and alpha broadcast): Beta(k, n-k+1) quantiles, 0 at k = 0."""
    k, n = _count_arrays(k, n)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), k.shape)
    return np.where(k > 0, _beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)


def clopper_pearson_upper_many(k, n, alpha):
    """:func:`clopper_pearson_upper` over arrays: Beta(k+1, n-k) 1-alpha quantiles, 1 at k = n."""
    k, n = _count_arrays(k, n)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), k.shape)
    return np.where(k < n, _beta.ppf(1.0 - alpha, k + 1, np.maximum(n - k, 1)), 1.0)


def oracle_sample_size(p: float, p_target: float, alpha: float, n_max: int) -> int:
    """The sample-complexity floor of the question "pA >= p*?" for an input whose pA = p is known.

    The smallest n at which one Clopper-Pearson bound at level alpha on the expected votes k = p n
    (a real number: Beta quantiles take real parameters) decides the question: the lower bound
    reaches p* when p > p*, the upper bound falls below p* when p < p*. An oracle that knew p
    would take exactly that many samples and look once; n_max when not even n_max decide (and
    at p = p*). Selection samples are not counted (the oracle knows cA).
    """
    n_max = check_count(n_max, "n_max")
    alpha = check_alpha(alpha)
    if not (0.0 <= p <= 1.0 and 0.0 < p_target < 1.0):
        raise InvalidArgumentError(f"p must lie in [0, 1] and p_target in (0, 1), got {p!r}, {p_target!r}")
    if p > p_target:
        decided = lambda n: p * n >= 1 and _beta.ppf(alpha, p * n, n - p * n + 1) >= p_target  # noqa: E731
    elif p < p_target:
        decided = lambda n: p * n <= n - 1 and _beta.ppf(1.0 - alpha, p * n + 1, n - p * n) < p_target  # noqa: E731
    else:
        return n_max
    if not decided(n_max):
        return n_max
    low, high = 0, n_max  # bisection: the bounds tighten as n grows
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if decided(middle) else (middle, high)
    return high


# A betting test (Waudby-Smith and Ramdas 2023, JRSS-B 86(1), "Estimating means of bounded random
# variables by betting"; Shafer and Vovk's testing by betting) of H0: p >= m for i.i.d. X_i in {0,1}:
# the capital K_t = prod_{i<=t} (1 - lambda_i (X_i - m)) with bets 0 <= lambda_i < 1/(1 - m) chosen
# before X_i is seen. Under H0, E[1 - lambda (X - m) | past] = 1 - lambda (p - m) <= 1, so K_t is a
# nonnegative supermartingale with K_0 = 1 (an e-process) and Ville's inequality gives
# P(exists t: K_t >= 1/beta) <= beta: rejecting H0 ("p < m") once K_t >= 1/beta errs with
# probability <= beta at any stopping time, with no declared checkpoints and no union bound.


def betting_log_growth(successes, trials, m: float, bet):
    """ln of prod (1 - bet (X_i - m)) over ``trials`` draws with ``successes`` ones, for a constant bet:
    successes ln(1 - bet (1 - m)) + (trials - successes) ln(1 + bet m). Arrays broadcast."""
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    bet = np.asarray(bet, dtype=np.float64)
    return successes * np.log1p(-bet * (1.0 - m)) + (trials - successes) * np.log1p(bet * m)


def kelly_bet(p_estimate, m: float, cap: float = 0.5):
    """The bet against H0: p >= m that maximises E ln(1 - bet (X - m)) when p = ``p_estimate``:
    (m - p) / (m (1 - m)) (Kelly), clipped to [0, cap / (1 - m)] so that one success never costs
    more than the fraction ``cap`` of the capital. Arrays broadcast."""
    if not 0.0 < m < 1.0:
        raise InvalidArgumentError(f"m must lie in (0, 1), got {m!r}")
    p_estimate = np.asarray(p_estimate, dtype=np.float64)
    return np.clip((m - p_estimate) / (m * (1.0 - m)), 0.0, cap / (1.0 - m))


def beta_binomial_log_mixture(k: int, n: int, p: float, a: float = 0.5, b: float = 0.5) -> float:
    """ln M_n(p) of Robbins' beta-binomial mixture martingale for a Bernoulli mean p.

    M_n(p) = integral of prod_i (q/p)^{X_i} ((1-q)/(1-p))^{1-X_i} dBeta(a, b)(q)
           = B(a + k, b + n - k) / (B(a, b) p^k (1 - p)^(n - k)),   k = sum of the first n X_i.
    Under the true p it is a nonnegative martingale with M_0 = 1 (a mixture of likelihood ratios),
    so Ville's inequality gives P(exists n: M_n(p) >= 1/alpha) <= alpha (Robbins 1970; Howard et
    al. 2021, Ann. Statist. 49(2), the beta-binomial confidence sequence).
    """
    k, n = (0, 0) if n == 0 else _check_successes(k, n)
    if not 0.0 < p < 1.0:
        raise InvalidArgumentError(f"p must lie in (0, 1), got {p!r}")
    return float(betaln(a + k, b + n - k) - betaln(a, b) - k * log(p) - (n - k) * log1p(-p))


def beta_binomial_mixture_bounds(k: int, n: int, alpha: float, a: float = 0.5, b: float = 0.5) -> tuple[float, float]:
    """Time-uniform confidence sequence from the beta-binomial mixture: {p : M_n(p) < 1/alpha}.

    With probability >= 1 - alpha the interval (lower, upper) contains p at EVERY n = 1, 2, ...
    simultaneously (no horizon, no declared checkpoints; see :func:`beta_binomial_log_mixture`).
    ln M_n(p) is convex in p and <= 0 at p = k/n (a mixture of likelihoods never exceeds the
    maximum likelihood), so the set is an interval around k/n; its ends are found by root finding.
    Each end is also a one-sided bound at level alpha. Prior Beta(a, b), default Beta(1/2, 1/2).
    """
    k, n = _check_successes(k, n)
    threshold = log(1.0 / check_alpha(alpha))
    excess = lambda p: beta_binomial_log_mixture(k, n, p, a, b) - threshold  # noqa: E731
    tiny = 1e-300
    p_hat = k / n
    lower = 0.0
    if k > 0 and excess(tiny) >= 0:
        lower = brentq(excess, tiny, min(p_hat, 1.0 - 1e-16), xtol=1e-15, rtol=1e-14)
    upper = 1.0
    if k < n and excess(1.0 - 1e-16) >= 0:
        upper = brentq(excess, max(p_hat, tiny), 1.0 - 1e-16, xtol=1e-15, rtol=1e-14)
    return float(lower), float(upper)
