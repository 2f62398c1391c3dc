"""Confidence bounds against closed forms and reference implementations."""
import numpy as np
import pytest
from scipy.stats import beta, binom
from statsmodels.stats.proportion import proportion_confint

from robustcert.errors import InvalidArgumentError
from robustcert.radius import gaussian_radius, gaussian_radius_two_sided
from robustcert.stats import binomial_test_pvalue, clopper_pearson_lower, clopper_pearson_upper


@pytest.mark.parametrize("k,n", [(1, 10), (50, 100), (99, 100), (100, 100), (9990, 10000), (100000, 100000)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_matches_beta_quantiles_and_statsmodels(k, n, alpha):
    lower = clopper_pearson_lower(k, n, alpha)
    assert lower == pytest.approx(beta.ppf(alpha, k, n - k + 1), rel=1e-12)
    assert lower == pytest.approx(proportion_confint(k, n, alpha=2 * alpha, method="beta")[0], rel=1e-9)
    upper = clopper_pearson_upper(n - k, n, alpha)
    assert upper == pytest.approx(1 - lower, abs=1e-12)  # symmetry of the binomial


def test_clopper_pearson_edge_cases():
    assert clopper_pearson_lower(0, 10, 0.01) == 0.0
    assert clopper_pearson_upper(10, 10, 0.01) == 1.0
    # all votes for cA: pA_lower = alpha^(1/n) (REFERENCE.md section 1)
    assert clopper_pearson_lower(100_000, 100_000, 0.001) == pytest.approx(0.001 ** (1 / 100_000), rel=1e-12)
    assert gaussian_radius(1.0, 0.001 ** (1 / 100_000)) == pytest.approx(3.81, abs=0.005)
    assert gaussian_radius(1.0, 0.001 ** (1 / 10_000)) == pytest.approx(3.20, abs=0.005)


def test_exact_coverage_of_clopper_pearson_lower_bound():
    """P(lower > p) <= alpha exactly, summed over the binomial distribution."""
    n, alpha = 300, 0.05
    ks = np.arange(n + 1)
    for p in (0.55, 0.7, 0.9, 0.99):
        lower = np.array([clopper_pearson_lower(int(k), n, alpha) for k in ks])
        assert binom.pmf(ks, n, p)[lower > p].sum() <= alpha


@pytest.mark.parametrize("bad", [(-1, 10), (11, 10), (1, 0)])
def test_bounds_reject_impossible_counts(bad):
    with pytest.raises(InvalidArgumentError):
        clopper_pearson_lower(*bad, 0.01)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 2.0, float("nan")])
def test_bounds_reject_bad_alpha(alpha):
    with pytest.raises(InvalidArgumentError):
        clopper_pearson_lower(5, 10, alpha)


def test_binomial_test_pvalue():
    assert binomial_test_pvalue(50, 100) == pytest.approx(1.0)
    # two-sided exact test: 2 * P(X >= 60) for X ~ Bin(100, 0.5)
    assert binomial_test_pvalue(60, 100) == pytest.approx(2 * binom.sf(59, 100, 0.5), rel=1e-9)
    assert binomial_test_pvalue(100, 100) == pytest.approx(2 * 0.5 ** 100, rel=1e-9)


def test_radius_formulas():
    from scipy.stats import norm

    assert gaussian_radius(0.5, 0.5) == 0.0
    assert gaussian_radius(0.5, 0.4) == 0.0
    assert gaussian_radius(0.5, 0.9) == pytest.approx(0.5 * norm.ppf(0.9))
    # Cohen's radius is the two-sided one with pB_upper = 1 - pA_lower
    assert gaussian_radius_two_sided(0.5, 0.9, 0.1) == pytest.approx(gaussian_radius(0.5, 0.9))
    assert gaussian_radius_two_sided(0.5, 0.9, 0.05) == pytest.approx(0.25 * (norm.ppf(0.9) - norm.ppf(0.05)))
    assert gaussian_radius_two_sided(0.5, 0.3, 0.4) == 0.0
    with pytest.raises(InvalidArgumentError):
        gaussian_radius(0.0, 0.9)
