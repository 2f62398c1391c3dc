"""Randomized smoothing (Cohen et al. 2019) against closed forms and coverage experiments."""
import numpy as np
import pytest
import torch
from scipy.stats import norm

import robustcert.methods.cohen as cohen
from robustcert import ABSTAIN, Smooth
from robustcert.stats import clopper_pearson_lower

from conftest import LinearBinary, binomial_slack, point_at_distance


def test_linear_ground_truth_at_n_100000(linear_model):
    """Certified radius <= exact distance to the boundary, and within a few percent of it."""
    sigma = 0.5
    smoothed = Smooth(linear_model, num_classes=2, sigma=sigma)
    for p_top in (0.6, 0.8, 0.95, 0.99, 0.999):
        distance = sigma * norm.ppf(p_top)
        x = point_at_distance(linear_model, distance, (16,))
        assert linear_model.distance(x) == pytest.approx(distance, rel=1e-5)
        cert = smoothed.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=10_000, seed=3)
        assert cert.prediction == 1
        assert cert.radius <= distance
        # the only gaps are the confidence term (3.1 binomial standard deviations at alpha = 0.001)
        # and the sampling error of the vote share (3.5 standard deviations of slack)
        assert cert.radius >= sigma * norm.ppf(p_top - 6.6 * np.sqrt(p_top * (1 - p_top) / 100_000))
        if p_top >= 0.8:
            assert cert.radius >= 0.96 * distance, (p_top, cert.radius, distance)


def _coverage_failures(smoothed, model, x, true_class, reps, n, alpha):
    xs = x.unsqueeze(0).repeat(reps, *([1] * x.ndim))
    certs = smoothed.certify_batch(xs, n0=50, n=n, alpha=alpha, batch_size=20_000, seed=11)
    true_radius = model.distance(x)
    return np.mean([c.prediction != ABSTAIN and (c.prediction != true_class or c.radius > true_radius)
                    for c in certs])


def test_coverage_holds_and_a_loosened_bound_fails(monkeypatch):
    """3000 certifications at alpha = 0.05 of an input with pA = 0.8 (n = 500).

    The exact miscoverage of the one-sided Clopper-Pearson bound here is 0.039; spending 2*alpha
    instead (a loosened bound) raises it to 0.098, which the same check must reject.
    """
    model = LinearBinary(torch.tensor([1.0]))
    sigma, alpha, reps, n = 1.0, 0.05, 3000, 500
    x = torch.tensor([norm.ppf(0.8) * sigma])
    smoothed = Smooth(model, num_classes=2, sigma=sigma)
    threshold = alpha + binomial_slack(alpha, reps)
    assert _coverage_failures(smoothed, model, x, 1, reps, n, alpha) <= threshold

    def loosened(k, n_, alpha_):
        return clopper_pearson_lower(k, n_, 2 * alpha_)

    monkeypatch.setattr(cohen, "clopper_pearson_lower", loosened)
    assert _coverage_failures(smoothed, model, x, 1, reps, n, alpha) > threshold


def test_predict_abstains_on_a_tie_and_rarely_errs():
    """At the decision boundary pA = pB = 1/2: PREDICT must abstain except with probability alpha."""
    model = LinearBinary(torch.tensor([1.0]))
    smoothed = Smooth(model, num_classes=2, sigma=1.0)
    reps, alpha = 2000, 0.05
    preds = smoothed.predict_batch(torch.zeros(reps, 1), n=200, alpha=alpha, batch_size=20_000, seed=5)
    committed = np.mean([p.prediction != ABSTAIN for p in preds])
    assert committed <= alpha + binomial_slack(alpha, reps)
    assert committed < 0.5  # far from never abstaining
    clear = smoothed.predict(torch.tensor([3.0]), n=200, alpha=alpha, seed=5)
    assert clear.prediction == 1 and clear.p_value < alpha


def test_certify_abstains_when_the_top_class_is_not_a_majority():
    model = LinearBinary(torch.tensor([1.0]))
    cert = Smooth(model, 2, sigma=1.0).certify(torch.tensor([0.0]), n0=100, n=1000, alpha=0.001)
    assert cert.prediction == ABSTAIN and cert.radius == 0.0


def test_certificate_records_everything(linear_model):
    x = point_at_distance(linear_model, 0.3, (16,))
    cert = Smooth(linear_model, 2, sigma=0.25).certify(x, n0=64, n=2500, alpha=0.01, batch_size=1000, seed=9,
                                                       index=4)
    assert (cert.n0, cert.n, cert.alpha, cert.sigma, cert.method, cert.seed, cert.index) == \
        (64, 2500, 0.01, 0.25, "cohen", 9, 4)
    assert sum(cert.counts) == 2500 and sum(cert.details["selection_counts"]) == 64  # last partial batch counted
    assert sum(cert.alpha_spending.values()) == pytest.approx(cert.alpha)
    assert cert.samples_used == 2564
    assert cert.p_lower == pytest.approx(clopper_pearson_lower(cert.counts[1], 2500, 0.01))
    assert cert.radius == pytest.approx(0.25 * norm.ppf(cert.p_lower))
    restored = cert.to_dict()
    assert restored["prediction"] == 1 and restored["counts"] == cert.counts
    assert '"method": "cohen"' in cert.to_json()


def test_same_seed_same_result_and_order_does_not_matter(digits_test):
    from robustcert import load_model

    model = load_model("bundled:digits-0.25")
    smoothed = Smooth(model, 10, sigma=0.25)
    xs = digits_test[0][:6]
    one_by_one = [smoothed.certify(x, n0=100, n=700, alpha=0.001, batch_size=300, seed=7, index=i)
                  for i, x in enumerate(xs)]
    again = smoothed.certify_batch(xs, n0=100, n=700, alpha=0.001, batch_size=300, seed=7)
    order = [4, 1, 5, 0, 3, 2]
    shuffled = smoothed.certify_batch(xs[order], n0=100, n=700, alpha=0.001, batch_size=300, seed=7,
                                      indices=order)
    shard = smoothed.certify_batch(xs[3:], n0=100, n=700, alpha=0.001, batch_size=300, seed=7, indices=[3, 4, 5])
    by_index = {c.index: c for c in shuffled}
    for i, cert in enumerate(one_by_one):
        assert cert.counts == again[i].counts == by_index[i].counts
        assert cert.details == again[i].details == by_index[i].details
        assert cert.radius == by_index[i].radius
    for cert in shard:
        assert cert.counts == one_by_one[cert.index].counts
    other_seed = smoothed.certify_batch(xs, n0=100, n=700, alpha=0.001, batch_size=300, seed=8)
    assert any(a.counts != b.counts for a, b in zip(again, other_seed))


def test_seed_none_draws_and_records_a_seed(linear_model):
    x = point_at_distance(linear_model, 0.3, (16,))
    smoothed = Smooth(linear_model, 2, sigma=0.25)
    first = smoothed.certify(x, n=500, seed=None)
    assert isinstance(first.seed, int)
    replay = smoothed.certify(x, n=500, seed=first.seed)
    assert replay.counts == first.counts


class AlwaysClassZero(torch.nn.Module):
    """A base classifier that votes class 0 on every input: pA = 1 for class 0."""

    def forward(self, x):
        logits = torch.zeros(len(x), 2)
        logits[:, 0] = 1.0
        return logits


def test_every_method_abstains_when_p_lower_is_exactly_one_half(monkeypatch):
    """pA_lower = 1/2 does not make cA the smoothed class (another class may also have 1/2).

    With n = 1 vote for cA out of 1 at alpha = 1/2, the Clopper-Pearson lower bound is exactly
    alpha^(1/n) = 1/2. CERTIFY and SEQUENTIAL-CERTIFY used to return cA with radius 0 there
    (abstain only below 1/2); every method must abstain. Dual abstains at a + b <= 0, i.e. at
    p_a_lower = p_b_lower = 1/2 (patched in: alpha/2 per branch cannot reach 1/2 with one vote).
    """
    import robustcert.methods.dual as dual
    from robustcert import DualSmooth, LipschitzSmooth

    model, x = AlwaysClassZero(), torch.zeros(3)
    assert clopper_pearson_lower(1, 1, 0.5) == 0.5
    smoothed = Smooth(model, 2, sigma=0.5)
    fixed = smoothed.certify(x, n0=1, n=1, alpha=0.5)
    assert fixed.p_lower == 0.5 and fixed.prediction == ABSTAIN and fixed.radius == 0.0
    for options in ({"tolerance": 0.1}, {"target_radius": 0.0}):
        sequential = smoothed.certify(x, n0=1, n=1, alpha=0.5, sequential=True, n_first=1, **options)
        assert sequential.p_lower == 0.5 and sequential.prediction == ABSTAIN, options
        if "target_radius" in options:
            assert sequential.details["sequential"]["stop"] != "certified"
    lvm = LipschitzSmooth(model, 2, sigma=0.5, maps=["hardmax"], formulas=["probit-simplex"])
    cert = lvm.certify(x, n0=1, n=1, alpha=0.5)
    assert cert.p_lower == 0.5 and cert.prediction == ABSTAIN
    from robustcert import AblationSmooth

    ablated = AblationSmooth(model, 2, keep=1).certify(torch.zeros(1, 2, 2), n0=1, n=1, alpha=0.5)
    assert ablated.p_lower == 0.5 and ablated.prediction == ABSTAIN
    for noise in ("laplace", "uniform"):
        assert Smooth(model, 2, sigma=0.5, noise=noise).certify(x, n0=1, n=1, alpha=0.5).prediction == ABSTAIN
    monkeypatch.setattr(dual, "clopper_pearson_lower", lambda k, n, alpha: 0.5)
    two = DualSmooth(model, model, 2, sigma=0.5, split="rows").certify(torch.zeros(1, 2, 2), n0=1, n=1, alpha=0.5)
    assert two.details["a"] == 0.0 and two.details["b"] == 0.0 and two.prediction == ABSTAIN
