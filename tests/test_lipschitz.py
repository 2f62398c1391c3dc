"""Lipschitz-variance-margin smoothing (Delattre et al. 2024): bounds, Lipschitz constants, radii,
alpha accounting and sound selection, against closed forms and coverage experiments."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import binom, norm

import robustcert.methods.lipschitz as lipschitz
from robustcert import ABSTAIN, LipschitzSmooth, Smooth
from robustcert.errors import InvalidArgumentError, ModelOutputError
from robustcert.radius import lipschitz_margin_radius, smoothed_lipschitz_constant
from robustcert.simplex import SIMPLEX_MAPS, register_simplex_map
from robustcert.stats import bernstein_lower, bernstein_upper, hoeffding_lower, hoeffding_upper

from conftest import LinearBinary, binomial_slack


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one torch thread


# ----------------------------------------------------------------------------- Bernstein and Hoeffding
def test_bernstein_closed_form():
    n, a, mean, var = 400, 0.01, 0.7, 0.05
    log_term = math.log(2 / a)
    deviation = math.sqrt(2 * var * log_term / n) + 7 * log_term / (3 * (n - 1))
    assert bernstein_lower(mean, var, n, a) == pytest.approx(mean - deviation, rel=1e-14)
    assert bernstein_upper(mean, var, n, a) == pytest.approx(mean + deviation, rel=1e-14)
    # vectorised, clipped to [0,1], vacuous for n = 1
    np.testing.assert_allclose(bernstein_lower(np.array([0.0, 1.0]), np.zeros(2), 10, 0.1),
                               [0.0, 1 - 7 * math.log(20) / 27])
    assert bernstein_lower(0.5, 0.0, 1, 0.1) == 0.0 and bernstein_upper(0.5, 0.0, 1, 0.1) == 1.0
    assert hoeffding_lower(0.7, n, a) == pytest.approx(0.7 - math.sqrt(math.log(1 / a) / (2 * n)))
    with pytest.raises(InvalidArgumentError):
        bernstein_lower(1.5, 0.1, 10, 0.1)
    with pytest.raises(InvalidArgumentError):
        bernstein_lower(0.5, 0.1, 10, 1.0)


def _two_point_failure(bound, n, p, low, high, a, upper=False):
    """Exact P(bound is wrong) for i.i.d. Z in {low, high} with P(high) = p: k ~ Binomial(n, p)
    determines the sample mean and the unbiased sample variance."""
    k = np.arange(n + 1)
    means = low + (high - low) * k / n
    variances = (high - low) ** 2 * k * (n - k) / (n * (n - 1))
    truth = low + (high - low) * p
    values = np.array([bound(m, v, n, a) for m, v in zip(means, variances)])
    wrong = values < truth if upper else values > truth
    return binom.pmf(k, n, p)[wrong].sum()


@pytest.mark.parametrize("n", [20, 200])
@pytest.mark.parametrize("a", [0.05, 0.4])
def test_bernstein_and_hoeffding_exact_coverage(n, a):
    """For two-point distributions the miscoverage is a finite sum: it must be <= a."""
    for p, low, high in [(0.5, 0, 1), (0.9, 0, 1), (0.99, 0, 1), (0.02, 0, 1), (0.7, 0.3, 0.6), (0.95, 0.1, 0.9)]:
        assert _two_point_failure(bernstein_lower, n, p, low, high, a) <= a
        assert _two_point_failure(bernstein_upper, n, p, low, high, a, upper=True) <= a
        assert _two_point_failure(lambda m, v, n_, a_: hoeffding_lower(m, n_, a_), n, p, low, high, a) <= a
        assert _two_point_failure(lambda m, v, n_, a_: hoeffding_upper(m, n_, a_), n, p, low, high, a,
                                  upper=True) <= a


def test_exact_coverage_check_rejects_a_bernstein_bound_without_its_range_term():
    """Dropping 7 ln(2/a) / (3(n-1)) leaves mean - sqrt(2 V ln(2/a)/n), which equals 1 whenever all
    n samples are 1: with p = 0.99, n = 50 that happens with probability 0.6 > a."""
    def no_range_term(m, v, n, a):
        return m - math.sqrt(2 * v * math.log(2 / a) / n)

    assert _two_point_failure(bernstein_lower, 50, 0.99, 0, 1, 0.05) <= 0.05
    assert _two_point_failure(no_range_term, 50, 0.99, 0, 1, 0.05) > 0.5


# ----------------------------------------------------------------------------- Lipschitz constants
def smoothed_ramp(x, slope, width, sigma):
    """E[clip(slope (x + sigma Z), -w/2, w/2)] in closed form (Y = slope (x + sigma Z) is Gaussian)."""
    half, mu, scale = width / 2, slope * x, slope * sigma
    lo, hi = (-half - mu) / scale, (half - mu) / scale
    return (-half * norm.cdf(lo) + half * norm.sf(hi) + mu * (norm.cdf(hi) - norm.cdf(lo))
            + scale * (norm.pdf(lo) - norm.pdf(hi)))


@pytest.mark.parametrize("slope,width,sigma", [(0.3, 2.0, 0.5), (2.0, 2.0, 0.25), (50.0, 2.0, 1.0), (1.0, 1.0, 0.12)])
def test_erf_lipschitz_constant_is_attained_by_the_ramp_and_never_exceeded(slope, width, sigma):
    def exact(x):
        return quad(lambda z: np.clip(slope * (x + sigma * z), -width / 2, width / 2) * norm.pdf(z), -12, 12,
                    points=[(-width / 2 / slope - x) / sigma, (width / 2 / slope - x) / sigma], limit=200)[0]

    for x in (0.0, 0.1, -0.7, 2.0):
        assert smoothed_ramp(x, slope, width, sigma) == pytest.approx(exact(x), abs=1e-9)
    constant = smoothed_lipschitz_constant(sigma, width, slope)
    assert constant == pytest.approx(slope * math.erf(width / (2 * math.sqrt(2) * slope * sigma)), rel=1e-12)
    grid = np.linspace(-4 * sigma - width / slope, 4 * sigma + width / slope, 4001)
    step = 1e-6
    slopes = (smoothed_ramp(grid + step, slope, width, sigma) - smoothed_ramp(grid - step, slope, width, sigma)) / (2 * step)
    assert slopes.max() <= constant * (1 + 1e-6)
    at_zero = (smoothed_ramp(step, slope, width, sigma) - smoothed_ramp(-step, slope, width, sigma)) / (2 * step)
    assert at_zero == pytest.approx(constant, rel=1e-6)  # attained at the ramp's centre
    assert constant <= slope and constant <= width / (sigma * math.sqrt(2 * math.pi))


def test_other_lipschitz_functions_of_the_same_range_stay_below_the_constant():
    """tanh and a saw-tooth clipped to the range: L-Lipschitz with values in [-1, 1]."""
    sigma, slope = 0.5, 1.5
    constant = smoothed_lipschitz_constant(sigma, 2.0, slope)
    z, weights = np.polynomial.hermite_e.hermegauss(200)
    weights = weights / weights.sum()
    functions = [lambda u: np.tanh(slope * u), lambda u: np.clip(slope * np.abs(u - 0.3) - 1, -1, 1),
                 lambda u: np.clip(slope * u, -1, 1) * np.cos(u) ** 2]
    for f in functions:
        grid = np.linspace(-3, 3, 601)
        values = np.array([np.sum(weights * f(x + sigma * z)) for x in grid])
        assert np.max(np.abs(np.diff(values) / np.diff(grid))) <= constant * (1 + 1e-6)


def test_general_constant_is_the_smoothed_step_slope_and_the_erf_form_tends_to_it():
    sigma = 0.5
    general = smoothed_lipschitz_constant(sigma, 2.0)
    assert general == pytest.approx(math.sqrt(2 / math.pi) / sigma)
    # E[sign(x + sigma Z)] = 2 Phi(x / sigma) - 1 has slope 2 phi(0) / sigma at 0
    assert general == pytest.approx(2 * norm.pdf(0) / sigma)
    assert smoothed_lipschitz_constant(sigma, 2.0, 1e6) == pytest.approx(general, rel=1e-6)
    assert smoothed_lipschitz_constant(sigma, 2.0, 1e-3) == pytest.approx(1e-3, rel=1e-9)
    # R = sigma sqrt(pi/2) (a - b) never beats sigma/2 (Phi^-1(a) - Phi^-1(b))
    for a, b in [(0.6, 0.3), (0.9, 0.05), (0.51, 0.49)]:
        margin = lipschitz_margin_radius(a - b, general)
        assert margin == pytest.approx(sigma * math.sqrt(math.pi / 2) * (a - b))
        assert margin <= sigma / 2 * (norm.ppf(a) - norm.ppf(b))


# ----------------------------------------------------------------------------- the method
def test_hardmax_with_clopper_pearson_is_exactly_cohen(digits_test):
    from robustcert import load_model

    model = load_model("bundled:digits-0.25")
    xs = digits_test[0][:5]
    ours = LipschitzSmooth(model, 10, 0.25, maps=["hardmax"], formulas=["probit-simplex"]).certify_batch(
        xs, n0=100, n=1000, alpha=0.001, batch_size=500, seed=4)
    cohen = Smooth(model, 10, 0.25).certify_batch(xs, n0=100, n=1000, alpha=0.001, batch_size=500, seed=4)
    for a, b in zip(ours, cohen):
        assert (a.prediction, a.counts) == (b.prediction, b.counts)
        assert a.radius == pytest.approx(b.radius, rel=1e-12)
        assert a.details["bound"] == "clopper-pearson" and a.details["selection"] == "none"


def ramp_point(distance):
    """LinearBinary with w = (1,): logits (-x, x); sparsemax at t gives class 1 the probability
    clip(1/2 + t x, 0, 1): a margin ramp clip(2 t x, -1, 1) of slope 2t, exactly t * L * kappa with
    L = sqrt(2) (logit map x -> (-x, x)) and kappa = sqrt(2) (sparsemax)."""
    return torch.tensor([float(distance)])


def test_margin_radius_with_known_lipschitz_constant_beats_the_probit_form_and_stays_below_the_truth():
    model, sigma, t = LinearBinary(torch.tensor([1.0])), 0.5, 0.25
    known = LipschitzSmooth(model, 2, sigma, maps=["sparsemax"], temperatures=[t], lipschitz=math.sqrt(2))
    unknown = LipschitzSmooth(model, 2, sigma, maps=["sparsemax"], temperatures=[t])
    x = ramp_point(1.0)  # the exact robust radius is 1.0: the smoothed margin is odd in x
    cert = known.certify(x, n0=200, n=20_000, alpha=0.001, batch_size=10_000, seed=1)
    probit = unknown.certify(x, n0=200, n=20_000, alpha=0.001, batch_size=10_000, seed=1)
    assert cert.prediction == 1 and cert.details["formula"].startswith("margin")
    assert cert.details["lipschitz_constant"] == pytest.approx(smoothed_lipschitz_constant(sigma, 2.0, 2 * t))
    exact_margin = smoothed_ramp(1.0, 2 * t, 2.0, sigma)
    assert cert.radius <= exact_margin / cert.details["lipschitz_constant"] <= 1.0
    assert cert.radius >= 0.9
    assert probit.details["formula"].startswith("probit") and 0 < probit.radius < 0.4 < cert.radius
    assert sum(cert.alpha_spending.values()) == pytest.approx(0.001)


def _ramp_failures(smoothed, distance, reps, n, alpha):
    xs = ramp_point(distance).repeat(reps, 1)
    certs = smoothed.certify_batch(xs, n0=30, n=n, alpha=alpha, batch_size=20_000, seed=2)
    return np.mean([c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > distance) for c in certs])


def test_soft_coverage_with_bernstein_and_a_factor_two_range_error_fails(monkeypatch):
    """1000 certifications of a sparsemax ramp (expected soft output known in closed form) at
    alpha = 0.2: the margin radius must exceed the exact robust radius at most alpha of the time.
    Halving the Lipschitz constant (a width/half-width mix-up) must break the same check."""
    model, sigma, t, reps, alpha = LinearBinary(torch.tensor([1.0])), 0.5, 0.25, 1000, 0.2
    smoothed = LipschitzSmooth(model, 2, sigma, maps=["sparsemax"], temperatures=[t], lipschitz=math.sqrt(2),
                               formulas=["margin-simplex"])
    threshold = alpha + binomial_slack(alpha, reps)
    assert _ramp_failures(smoothed, 0.5, reps, 300, alpha) <= threshold
    original = lipschitz.smoothed_lipschitz_constant
    monkeypatch.setattr(lipschitz, "smoothed_lipschitz_constant", lambda *args: original(*args) / 2)
    assert _ramp_failures(smoothed, 0.5, reps, 300, alpha) > threshold


@pytest.fixture
def coordinate_maps():
    """Six binary maps; map k votes class 0 when logit k > 0, else class 1: with identity logits
    each candidate looks at its own noise coordinate, so their estimation errors are independent."""
    names = []
    for k in range(6):
        def vote(v, k=k):
            return torch.nn.functional.one_hot((v[:, k] <= 0).long(), v.shape[1]).to(v.dtype)
        names.append(f"coordinate{k}")
        register_simplex_map(names[-1], vote, uses_temperature=False, binary=True)
    yield names
    for name in names:
        SIMPLEX_MAPS.pop(name)


def _grid_failures(smoothed, reps, alpha, sigma):
    """Each candidate's smoothed classifier predicts 0 with probability Phi(mu / sigma) = 0.8 and its
    exact robust radius is mu (the distance to x_k = 0); count certificates claiming more."""
    mu = sigma * norm.ppf(0.8)
    xs = torch.full((reps, 6), mu)
    certs = smoothed.certify_batch(xs, n0=50, n=400, alpha=alpha, batch_size=20_000, seed=6)
    return np.mean([c.prediction != ABSTAIN and (c.prediction != 0 or c.radius > mu) for c in certs])


def test_best_of_grid_on_estimation_samples_breaks_coverage_and_sound_selections_keep_it(coordinate_maps,
                                                                                          monkeypatch):
    """Clopper-Pearson on binary maps has nearly exact miscoverage, so a mis-spent alpha shows."""
    sigma, alpha, reps = 1.0, 0.1, 1000
    threshold = alpha + binomial_slack(alpha, reps)
    identity = torch.nn.Identity()
    # per-input choice of the pair: each certificate must hold for the pair it records
    holdout = LipschitzSmooth(identity, 6, sigma, maps=coordinate_maps, formulas=["probit-simplex"],
                              per_input_grid=True)
    union = LipschitzSmooth(identity, 6, sigma, maps=coordinate_maps, formulas=["probit-simplex"], selection="union",
                            per_input_grid=True)
    assert sum(union.certify(torch.zeros(6), n=50).alpha_spending.values()) == pytest.approx(0.001)
    assert _grid_failures(holdout, reps, alpha, sigma) <= threshold
    assert _grid_failures(union, reps, alpha, sigma) <= threshold
    # the paper's public code: best of the grid on the estimation samples, each radius at alpha
    monkeypatch.setattr(LipschitzSmooth, "grid_share", lambda self, a, count: a)
    assert _grid_failures(union, reps, alpha, sigma) > 2 * threshold


def test_single_bound_formula_with_a_loosened_alpha_fails_coverage(monkeypatch):
    """Hardmax + Clopper-Pearson + probit-simplex at alpha = 0.05, pA = 0.8, n = 500 (as for Cohen):
    spending 2 alpha on the single bound must break the check."""
    model, sigma, alpha, reps = LinearBinary(torch.tensor([1.0])), 1.0, 0.05, 3000
    smoothed = LipschitzSmooth(model, 2, sigma, maps=["hardmax"], formulas=["probit-simplex"])
    x = torch.tensor([norm.ppf(0.8)]).repeat(reps, 1)
    threshold = alpha + binomial_slack(alpha, reps)

    def failures():
        certs = smoothed.certify_batch(x, n0=50, n=500, alpha=alpha, batch_size=20_000, seed=11)
        return np.mean([c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > norm.ppf(0.8)) for c in certs])

    assert failures() <= threshold
    monkeypatch.setattr(lipschitz, "soft_radius", _loosened(lipschitz.soft_radius))
    assert failures() > threshold


def _loosened(soft_radius):
    def loosened(means, variances, n, alpha, *args):
        return soft_radius(means, variances, n, min(2 * alpha, 0.99), *args)
    return loosened


def test_alpha_split_recorded_is_the_split_used(monkeypatch):
    """Record the levels each bound is called with for the final certificate of a probit-union run."""
    calls = []
    real = lipschitz.MEAN_BOUNDS["bernstein"]

    def recording(function):
        def wrapped(mean, variance, n, a):
            calls.append((np.size(mean), a, n))
            return function(mean, variance, n, a)
        return wrapped

    monkeypatch.setitem(lipschitz.MEAN_BOUNDS, "bernstein",
                        lipschitz.MeanBound(real.name, recording(real.lower), recording(real.upper)))
    model = torch.nn.Linear(3, 4)
    smoothed = LipschitzSmooth(model, 4, 0.5, maps=["softmax"], temperatures=[1.0], formulas=["probit-union"])
    cert = smoothed.certify(torch.zeros(3), n0=20, n=300, alpha=0.01)
    final = [(size, a) for size, a, n in calls if n == 300][-2:]  # selection calls also use n = 300
    assert final == [(1, 0.005), (3, pytest.approx(0.01 / 6))]
    spent = sum(size * a for size, a in final)
    assert spent == pytest.approx(0.01) == pytest.approx(sum(cert.alpha_spending.values()))
    assert sorted(cert.alpha_spending.values()) == [pytest.approx(0.005)] * 2
    assert cert.details["formula"] == "probit-union" and cert.details["map"] == "softmax"
    assert cert.details["temperature"] == 1.0 and "Phi^-1" in cert.details["formula_text"]


def test_union_spending_lists_every_candidate_even_when_temperatures_print_alike():
    """Temperatures 1 and 1.0000001 both print as t=1 with :g; the union-bound record keyed by label
    must still hold M entries of alpha/M (it once collapsed them and summed to alpha/2)."""
    smoothed = LipschitzSmooth(torch.nn.Linear(3, 4), 4, 0.5, maps=["softmax"], temperatures=[1.0, 1.0000001],
                               formulas=["probit-simplex"], selection="union", per_input_grid=True)
    cert = smoothed.certify(torch.zeros(3), n0=10, n=50, alpha=0.01)
    assert len(cert.alpha_spending) == len(smoothed.pairs) == 2
    assert sum(cert.alpha_spending.values()) == pytest.approx(0.01)
    assert [c.label for c in smoothed.candidates] == ["softmax(t=1)", "softmax(t=1.0000001)"]


def test_records_and_reproducibility(digits_test):
    from robustcert import load_model

    model = load_model("bundled:digits-0.25")
    smoothed = LipschitzSmooth(model, 10, 0.25, maps=["softmax", "sparsemax", "hardmax"], temperatures=[0.5, 1.0],
                               per_input_grid=True)
    xs = digits_test[0][:4]
    batch = smoothed.certify_batch(xs, n0=60, n=600, alpha=0.01, batch_size=400, seed=3)
    order = [2, 0, 3, 1]
    shuffled = {c.index: c for c in smoothed.certify_batch(xs[order], n0=60, n=600, alpha=0.01, batch_size=400,
                                                            seed=3, indices=order)}
    single = smoothed.certify(xs[2], n0=60, n=600, alpha=0.01, batch_size=400, seed=3, index=2)
    for cert in batch:
        assert cert.details == shuffled[cert.index].details and cert.radius == shuffled[cert.index].radius
        assert sum(cert.counts) == 600 and cert.samples_used == 660 and cert.method == "lvm-per-input"
        assert sum(cert.alpha_spending.values()) == pytest.approx(0.01)
        assert cert.details["selection"] == "holdout" and cert.details["candidates"] == 10
        assert cert.details["map"] in ("softmax", "sparsemax", "hardmax")
        assert cert.to_json()
    assert single.details == batch[2].details
    assert "selection samples" in next(iter(smoothed.alpha_spending(0.01)))


def test_predict_abstains_at_a_tie_and_commits_when_clear():
    model = LinearBinary(torch.tensor([1.0]))
    smoothed = LipschitzSmooth(model, 2, sigma=1.0, maps=["softmax"], temperatures=[1.0])
    reps, alpha = 500, 0.2
    preds = smoothed.predict_batch(torch.zeros(reps, 1), n=200, alpha=alpha, batch_size=20_000, seed=5)
    assert np.mean([p.prediction != ABSTAIN for p in preds]) <= alpha + binomial_slack(alpha, reps)
    clear = smoothed.predict(torch.tensor([3.0]), n=500, alpha=0.01, seed=5)
    assert clear.prediction == 1 and sum(clear.alpha_spending.values()) == pytest.approx(0.01)


def test_predict_commits_at_a_tie_within_alpha_and_fails_without_the_2c_split(monkeypatch):
    """hardmax + Clopper-Pearson at the boundary (f_0 = f_1 = 1/2): PREDICT commits only when a
    bound at alpha/(2C) clears 1/2, about alpha/2 of the time. Bounds at alpha each (no split over
    the data-chosen class) commit about 2 alpha of the time."""
    smoothed = LipschitzSmooth(LinearBinary(torch.tensor([1.0])), 2, sigma=1.0, maps=["hardmax"])
    reps, alpha = 2000, 0.1
    threshold = alpha + binomial_slack(alpha, reps)

    def committed():
        preds = smoothed.predict_batch(torch.zeros(reps, 1), n=200, alpha=alpha, batch_size=20_000, seed=7)
        return np.mean([p.prediction != ABSTAIN for p in preds])

    assert committed() <= threshold
    monkeypatch.setattr(LipschitzSmooth, "predict_share", lambda self, a: a)
    assert committed() > threshold


@pytest.mark.parametrize("kwargs", [dict(maps=["nope"]), dict(temperatures=[0.0]), dict(temperatures=[]),
                                    dict(lipschitz=-1.0), dict(lipschitz=float("nan")), dict(bound="nope"),
                                    dict(maps=["softmax"], bound="clopper-pearson"), dict(selection="best"),
                                    dict(formulas=["x"]), dict(formulas=[]), dict(maps=["softmax", "hardmax"]),
                                    dict(maps=["softmax"], temperatures=[0.5, 1.0])])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(InvalidArgumentError):
        LipschitzSmooth(torch.nn.Identity(), 2, 0.5, **kwargs)


def test_nan_outputs_and_bad_alpha_raise():
    smoothed = LipschitzSmooth(lambda x: torch.full((len(x), 2), float("nan")), 2, 0.5)
    with pytest.raises(ModelOutputError):
        smoothed.certify(torch.zeros(3), n0=10, n=10)
    with pytest.raises(InvalidArgumentError):
        LipschitzSmooth(torch.nn.Identity(), 2, 0.5).certify(torch.zeros(2), alpha=1.5)


# ----------------------------------------------------------------------------- one classifier
@pytest.fixture
def two_views():
    """Two binary maps of 2-d identity logits: "first" votes 0 iff x_0 > 0, "second" votes 1 iff
    x_1 > 0. Each defines its own smoothed classifier g_first, g_second (exact radii |x_0|, |x_1|)."""
    def first(v):
        return torch.nn.functional.one_hot((v[:, 0] <= 0).long(), 2).to(v.dtype)

    def second(v):
        return torch.nn.functional.one_hot((v[:, 1] > 0).long(), 2).to(v.dtype)

    register_simplex_map("first", first, uses_temperature=False, binary=True)
    register_simplex_map("second", second, uses_temperature=False, binary=True)
    yield ["first", "second"]
    SIMPLEX_MAPS.pop("first")
    SIMPLEX_MAPS.pop("second")


def _contradict(a, b, distance) -> bool:
    """Two certified balls with different classes that overlap: no single classifier has both."""
    return ABSTAIN not in (a.prediction, b.prediction) and a.prediction != b.prediction and \
        a.radius + b.radius > distance


def test_a_grid_chosen_per_input_certifies_no_single_classifier_so_it_needs_a_held_out_choice(two_views):
    """x = (3, 0.3) picks "first" (class 0, radius ~2.9), x' = (0.3, 3) picks "second" (class 1,
    radius ~2.9), 3.8 apart: the certified balls overlap with different classes. Each certificate
    holds for its own g_k, but together they certify no classifier. A grid therefore needs
    ``per_input_grid=True`` (and is named lvm-per-input); by default it is refused (the old
    default grid chose per input), and each single pair never contradicts itself."""
    identity, x, x2 = torch.nn.Identity(), torch.tensor([3.0, 0.3]), torch.tensor([0.3, 3.0])
    distance = float((x - x2).norm())
    with pytest.raises(InvalidArgumentError, match="select_lvm"):
        LipschitzSmooth(identity, 2, 1.0, maps=two_views)
    per_input = LipschitzSmooth(identity, 2, 1.0, maps=two_views, formulas=["probit-simplex"], per_input_grid=True)
    a, b = (per_input.certify(point, n0=100, n=10_000, alpha=0.001, seed=0, index=i) for i, point in enumerate((x, x2)))
    assert (a.details["classifier"], b.details["classifier"]) == ("first", "second")
    assert _contradict(a, b, distance) and per_input.method == "lvm-per-input"
    for name in two_views:
        one = LipschitzSmooth(identity, 2, 1.0, maps=[name], formulas=["probit-simplex"])
        c, d = (one.certify(point, n0=100, n=10_000, alpha=0.001, seed=0, index=i) for i, point in enumerate((x, x2)))
        assert not _contradict(c, d, distance) and one.method == "lvm" and c.details["per_input_grid"] is False


def test_default_is_one_classifier():
    smoothed = LipschitzSmooth(LinearBinary(torch.tensor([1.0])), 2, 1.0)
    assert [c.label for c in smoothed.candidates] == ["hardmax"] and not smoothed.per_input_grid
    certs = smoothed.certify_batch(torch.tensor([[0.5], [2.0], [-1.0]]), n0=50, n=500, alpha=0.01)
    assert {c.details["classifier"] for c in certs} == {"hardmax"}


def test_select_lvm_chooses_on_held_out_inputs_with_their_own_noise(monkeypatch):
    from robustcert import certify_dataset, load_dataset, load_model, select_lvm
    from robustcert.methods.base import SmoothedClassifier
    from robustcert.runs.lvm_select import SELECTION_STAGE_PREFIX

    stages = []
    original = SmoothedClassifier.sample
    monkeypatch.setattr(SmoothedClassifier, "sample",
                        lambda self, xs, n, acc, stage, *args, **kwargs:
                        stages.append(stage) or original(self, xs, n, acc, stage, *args, **kwargs))
    model = load_model("bundled:digits-0.25")
    selection = select_lvm(model, 10, 0.25, "digits", maps=["softmax", "hardmax"], temperatures=[1.0],
                           max_inputs=6, n0=30, n=300, alpha=0.01, seed=1)
    assert set(stages) == {SELECTION_STAGE_PREFIX + "selection", SELECTION_STAGE_PREFIX + "estimation"}
    scores = selection.scores.set_index("classifier")["ACR"]
    assert selection.chosen.label == scores.idxmax() and len(scores) == 2
    record = selection.smoothed.settings()["lvm_selected_on"]
    assert record["split"] == "train" and len(record["indices"]) == len(record["fingerprints"]) == 6
    assert [c.label for c in selection.smoothed.candidates] == [selection.chosen.label]
    frame = certify_dataset(selection.smoothed, "digits", n0=30, n=300, alpha=0.01, max_inputs=2, progress=False)
    assert len(frame) == 2 and {"selection", "estimation"} <= set(stages)
    # certifying an input the choice was made on is refused (by content, whatever the split name)
    test = load_dataset("digits")
    on_test = select_lvm(model, 10, 0.25, test, maps=["softmax", "hardmax"], max_inputs=2, n0=10, n=50)
    with pytest.raises(InvalidArgumentError, match="held-out"):
        certify_dataset(on_test.smoothed, test, n0=10, n=50, progress=False)


# ----------------------------------------------------------------------------- the CLI
def test_cli_certify_with_lvm_and_cohen_beside_it(tmp_path):
    import json

    from click.testing import CliRunner

    from robustcert.cli import main
    from robustcert.results import read_results

    common = ["--model", "bundled:digits-0.25", "--sigma", "0.25", "--n0", "30", "--n", "300", "--max", "3"]
    out = tmp_path / "lvm.tsv"
    result = CliRunner().invoke(main, ["certify", *common, "--method", "lvm", "--maps", "softmax,hardmax",
                                       "--temperatures", "0.5,1", "--lvm-select-on", "train:4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    assert len(rows) == 3 and (rows["radius"] > 0).any()
    parameters = json.loads(out.with_name("lvm.tsv.json").read_text())["parameters"]
    selected = parameters["lvm_selected_on"]
    assert parameters["candidates"] == [selected["chosen"]] and parameters["method"] == "lvm"
    assert sorted(selected["scores"]) == ["hardmax", "softmax(t=0.5)", "softmax(t=1)"]
    assert selected["split"] == "train" and selected["inputs"] == 4 and (selected["n0"], selected["n"]) == (30, 300)
    assert parameters["lvm_selection"] == "holdout" and sum(parameters["alpha_spending"].values()) == 0.001
    # held-out inputs of the certified split: never a certified one (indices 0, 1, 2 here)
    result = CliRunner().invoke(main, ["certify", *common, "--method", "lvm", "--maps", "softmax,hardmax",
                                       "--lvm-select-on", "test:5", "--out", str(tmp_path / "same.tsv")])
    assert result.exit_code == 0, result.output
    selected = json.loads((tmp_path / "same.tsv.json").read_text())["parameters"]["lvm_selected_on"]
    assert selected["split"] == "test" and len(selected["indices"]) == 5 and not {0, 1, 2} & set(selected["indices"])
    result = CliRunner().invoke(main, ["certify", *common, "--method", "lvm", "--maps", "softmax",
                                       "--temperatures", "1", "--lipschitz", "2.0", "--out", str(tmp_path / "l.tsv")])
    assert result.exit_code == 0, result.output
    parameters = json.loads((tmp_path / "l.tsv.json").read_text())["parameters"]
    assert parameters["lipschitz"] == 2.0 and "margin-union" in parameters["formulas"]
    # cohen is unaffected by the lvm options it does not use
    result = CliRunner().invoke(main, ["certify", *common, "--out", str(tmp_path / "cohen.tsv")])
    assert result.exit_code == 0, result.output
    for args, message in [(["--method", "lvm", "--maps", "nope"], "unknown simplex map"),
                          (["--method", "lvm", "--maps", "softmax,hardmax"], "--lvm-select-on"),
                          (["--method", "lvm", "--lvm-select-on", "train:x"], "SPLIT[:COUNT]"),
                          (["--method", "lvm", "--temperatures", "a"], "--temperatures"),
                          (["--method", "lvm", "--temperatures", "-1"], "temperatures"),
                          (["--maps", "softmax"], "--maps")]:
        result = CliRunner().invoke(main, ["certify", *common, *args, "--out", str(tmp_path / "bad.tsv")])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "bad.tsv").exists() or (tmp_path / "bad.tsv").stat().st_size == 0
