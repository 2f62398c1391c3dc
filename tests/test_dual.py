"""Dual randomized smoothing (Xia et al. 2024) against closed forms, a worst-case attack and coverage.

Ground truth: linear branch classifiers f_i(u) = [w_i.u + c_i > 0] on the two sub-images. Then
p_i = Phi(u_i) exactly with u_i = (w_i.x_i + c_i) / (sigma_i ||w_i||), the dual smoothed classifier
G(x) = argmax_c p_a,c + p_b,c predicts 1 iff u_a + u_b > 0 (a linear classifier of the whole
image), and its exact robust radius is (u_a + u_b) / sqrt(1/sigma_a^2 + 1/sigma_b^2): the
distance to that hyperplane.
"""
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import binomtest, norm

import robustcert.methods.cohen as cohen
import robustcert.methods.dual as dual
from robustcert import ABSTAIN, DualSmooth, InvalidArgumentError, ShapeError, load_model
from robustcert.cli import main
from robustcert.engine import derive_seed
from robustcert.radius import dual_gaussian_radius
from robustcert.splits import SPLITS, get_split

from conftest import LinearBinary, binomial_slack


# --------------------------------------------------------------------------- ground truth helpers
class LinearDual:
    """Two linear branch classifiers on the sub-images of ``split``, with exact smoothed probabilities."""

    def __init__(self, image_shape, sigma_a, sigma_b, split="checkerboard", seed=0):
        self.split, self.image_shape = get_split(split), tuple(image_shape)
        self.sigmas = (sigma_a, sigma_b)
        shape_a, _ = self.split.sub_shapes(image_shape)
        generator = torch.Generator().manual_seed(seed)
        self.models = [LinearBinary(torch.randn(math.prod(shape_a), generator=generator)) for _ in range(2)]

    def place(self, x, u_a, u_b):
        """Set the biases so that the exact probits at image x are u_a and u_b."""
        for model, sub, sigma, u in zip(self.models, self.split.split(x[None]), self.sigmas, (u_a, u_b)):
            model.b = float(sigma * model.w.norm() * u - sub.flatten() @ model.w)
        return self

    def probits(self, x):
        """Exact u_a, u_b at image x (shape image_shape)."""
        return [float((sub.flatten() @ m.w + m.b) / (s * m.w.norm()))
                for m, sub, s in zip(self.models, self.split.split(x[None]), self.sigmas)]

    def predicts_one(self, x) -> bool:
        """G(x) = 1 iff Phi(u_a) + Phi(u_b) > 1 (exact smoothed probabilities)."""
        u_a, u_b = self.probits(x)
        return norm.cdf(u_a) + norm.cdf(u_b) > 1

    def exact_radius(self, x) -> float:
        return sum(self.probits(x)) / math.sqrt(sum(s ** -2 for s in self.sigmas))

    def worst_perturbation(self, norm_: float) -> torch.Tensor:
        """The attack: delta_i along -w_i with ||delta_i|| proportional to 1/sigma_i, ||delta|| = norm_."""
        grads = [m.w / (s * m.w.norm()) for m, s in zip(self.models, self.sigmas)]
        scale = norm_ / math.sqrt(sum(float(g.norm()) ** 2 for g in grads))
        shape_a, shape_b = self.split.sub_shapes(self.image_shape)
        return self.split.merge((-scale * grads[0]).reshape(1, *shape_a), (-scale * grads[1]).reshape(1, *shape_b),
                                self.image_shape)[0]

    def smoothed(self, **kwargs):
        return DualSmooth(self.models[0], self.models[1], 2, self.sigmas[0], self.sigmas[1], self.split, **kwargs)


def sqrt_of_squares_radius(sigma_a, sigma_b, p_a_lower, p_b_lower):
    """The public code's CIFAR combination: sqrt(R_a^2 + R_b^2), R_i = Cohen radius of branch i. Over-claims."""
    radii = [s * norm.ppf(p) if p > 0.5 else 0.0 for s, p in ((sigma_a, p_a_lower), (sigma_b, p_b_lower))]
    return math.hypot(*radii) if any(radii) else 0.0


# --------------------------------------------------------------------------- splits
@pytest.mark.parametrize("name", sorted(SPLITS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 4, 6)])
def test_split_round_trip_partition_and_norms(name, shape):
    split = SPLITS[name]
    xs = torch.randn(5, *shape, dtype=torch.float64)
    sub_a, sub_b = split.split(xs)
    assert (tuple(sub_a.shape[1:]), tuple(sub_b.shape[1:])) == split.sub_shapes(shape)
    assert sub_a.shape == sub_b.shape and sub_a.numel() + sub_b.numel() == xs.numel()
    assert torch.equal(split.merge(sub_a, sub_b, shape), xs)
    assert torch.allclose(xs.square().sum((1, 2, 3)), sub_a.square().sum((1, 2, 3)) + sub_b.square().sum((1, 2, 3)))
    ids = torch.arange(math.prod(shape), dtype=torch.float64).reshape(1, *shape)
    assert sorted(torch.cat([t.flatten() for t in split.split(ids)]).tolist()) == ids.flatten().tolist()


def test_checkerboard_arranges_pixels_like_the_paper():
    """Row r of a sub-image holds row r's own pixels left to right: a = x[r, 2j + r%2], b = x[r, 2j + 1 - r%2]."""
    x = torch.arange(2 * 8 * 8).reshape(1, 2, 8, 8)
    sub_a, sub_b = get_split("checkerboard").split(x)
    for c in range(2):
        for r in range(8):
            for j in range(4):
                assert sub_a[0, c, r, j] == x[0, c, r, 2 * j + r % 2]
                assert sub_b[0, c, r, j] == x[0, c, r, 2 * j + 1 - r % 2]
    rows_a, _ = get_split("rows").split(x)
    cols_a, cols_b = get_split("columns").split(x)
    assert torch.equal(rows_a, x[:, :, ::2]) and torch.equal(cols_a, x[:, :, :, ::2]) and torch.equal(cols_b, x[..., 1::2])


def test_split_errors_are_clear():
    with pytest.raises(ShapeError, match="even image width"):
        get_split("checkerboard").split(torch.zeros(2, 1, 8, 7))
    with pytest.raises(ShapeError, match="even image height"):
        get_split("rows").split(torch.zeros(2, 1, 5, 8))
    with pytest.raises(InvalidArgumentError, match="unknown split 'diagonal'"):
        get_split("diagonal")
    with pytest.raises(ShapeError, match="cannot merge"):
        get_split("rows").merge(torch.zeros(1, 1, 8, 4), torch.zeros(1, 1, 8, 4), (1, 8, 8))


# --------------------------------------------------------------------------- the radius formula
@pytest.mark.parametrize("sigmas", [(1.0, 1.0), (0.25, 0.5), (0.5, 0.12)])
@pytest.mark.parametrize("p", [(0.999, 0.6), (0.9, 0.4), (0.7, 0.7), (0.99, 0.02)])
def test_radius_equals_the_distance_to_the_linear_dual_boundary(sigmas, p):
    """With exact p per branch the formula is the exact distance to G's boundary (negative b kept)."""
    model = LinearDual((1, 8, 8), *sigmas, seed=1)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(2))
    model.place(x, norm.ppf(p[0]), norm.ppf(p[1]))
    exact = model.exact_radius(x)
    assert exact > 0 and model.predicts_one(x)
    assert dual_gaussian_radius(*sigmas, *p) == pytest.approx(exact, rel=1e-6)
    assert dual_gaussian_radius(*sigmas, *p) == pytest.approx(
        (norm.ppf(p[0]) + norm.ppf(p[1])) / math.sqrt(sigmas[0] ** -2 + sigmas[1] ** -2))


def test_radius_reference_numbers_and_edge_cases():
    # REFERENCE.md section 4: p = (0.999, 0.6), equal sigma: sound 2.36 sigma, sqrt(R1^2 + R2^2) = 3.10 sigma
    assert dual_gaussian_radius(1.0, 1.0, 0.999, 0.6) == pytest.approx(2.364, abs=1e-3)
    assert sqrt_of_squares_radius(1.0, 1.0, 0.999, 0.6) == pytest.approx(3.100, abs=1e-3)
    assert dual_gaussian_radius(0.5, 0.5, 0.8, 0.8) == pytest.approx(0.5 * norm.ppf(0.8) * math.sqrt(2))
    assert dual_gaussian_radius(1.0, 1.0, 0.9, 0.1) == 0.0  # a + b = 0: abstain
    assert dual_gaussian_radius(1.0, 1.0, 0.999, 0.0) == 0.0  # Phi^-1(0) = -inf
    assert dual_gaussian_radius(1.0, 1.0, 0.95, 0.3) == pytest.approx((norm.ppf(0.95) + norm.ppf(0.3)) / math.sqrt(2))
    with pytest.raises(InvalidArgumentError, match="sigma_b"):
        dual_gaussian_radius(1.0, 0.0, 0.9, 0.9)


# --------------------------------------------------------------------------- worst-case perturbation
@pytest.mark.parametrize("sigmas,p", [((1.0, 1.0), (0.999, 0.6)), ((0.25, 0.5), (0.999, 0.6)),
                                      ((0.5, 0.25), (0.97, 0.45))])
def test_worst_case_attack_flips_just_beyond_r_never_inside(sigmas, p):
    model = LinearDual((1, 8, 8), *sigmas, seed=3)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(4))
    model.place(x, norm.ppf(p[0]), norm.ppf(p[1]))
    radius = dual_gaussian_radius(*sigmas, *p)
    for factor in (1.001, 1.05):
        delta = model.worst_perturbation(factor * radius)
        assert float(delta.norm()) == pytest.approx(factor * radius, rel=1e-5)
        assert not model.predicts_one(x + delta)  # flipped just beyond R
    assert model.predicts_one(x + model.worst_perturbation(0.999 * radius))
    # no perturbation inside R flips G: the attack direction is the worst, random ones do less harm
    generator = torch.Generator().manual_seed(5)
    for _ in range(200):
        direction = torch.randn(1, 8, 8, generator=generator)
        assert model.predicts_one(x + 0.999 * radius * direction / direction.norm())
    # the over-claiming combination certifies a radius the attack breaks
    claimed = sqrt_of_squares_radius(*sigmas, *p)
    assert claimed > 1.02 * radius
    assert not model.predicts_one(x + model.worst_perturbation((radius + claimed) / 2))


def test_monte_carlo_certificate_is_below_and_close_to_the_exact_radius():
    sigmas = (0.25, 0.5)
    model = LinearDual((1, 8, 8), *sigmas, seed=6)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(7))
    model.place(x, norm.ppf(0.999), norm.ppf(0.6))
    exact = model.exact_radius(x)
    cert = model.smoothed().certify(x, n0=100, n=100_000, alpha=0.001, batch_size=20_000, seed=0)
    assert cert.prediction == 1
    assert 0.94 * exact <= cert.radius <= exact
    assert model.predicts_one(x + model.worst_perturbation(cert.radius))
    assert not model.predicts_one(x + model.worst_perturbation(1.001 * exact))


# --------------------------------------------------------------------------- coverage
P_A, P_B, SIGMA, REPS, N, ALPHA = 0.9, 0.4, 0.5, 1000, 300, 0.2


def _coverage_run():
    """REPS certifications of one input with exact p = (0.9, 0.4) (b < 0), n = 300 per branch, alpha = 0.2."""
    model = LinearDual((1, 2, 2), SIGMA, SIGMA, seed=8)
    x = torch.tensor([[[0.3, 0.7], [0.6, 0.2]]])
    model.place(x, norm.ppf(P_A), norm.ppf(P_B))
    certs = model.smoothed().certify_batch(x.repeat(REPS, 1, 1, 1), n0=50, n=N, alpha=ALPHA, batch_size=50_000,
                                           seed=11)
    return model, x, certs


def _certificate_failures(model, x, certs):
    """Wrong certificates: a committed class that is not G's, or a radius beyond the exact one."""
    exact = model.exact_radius(x)
    return np.mean([c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > exact) for c in certs])


def _bound_failures(certs):
    """The event the proof rests on: either branch's lower bound above its true probability."""
    truth = {1: (P_A, P_B), 0: (1 - P_A, 1 - P_B)}
    return np.mean([c.details["p_a_lower"] > truth[c.details["selected_class"]][0]
                    or c.details["p_b_lower"] > truth[c.details["selected_class"]][1] for c in certs])


def test_coverage_holds_and_the_over_claims_fail_it(monkeypatch):
    """Exact miscoverage (binomial enumeration) of the joint bound event: 0.152 with alpha/2 per
    branch, 0.346 with alpha per branch; of the certificate (radius beyond the exact one): 0.029
    sound, about 1 for sqrt(R_a^2 + R_b^2). Threshold: alpha + 3.5 standard deviations.

    Alpha per branch is caught by the bound event, not by the certificate event: the certificate
    fails only when a_hat + b_hat > a + b, and a sum of two one-sided bounds rarely overshoots
    (0.099 < alpha here even with alpha per branch); the union-bound proof still needs alpha/2 each.
    """
    threshold = ALPHA + binomial_slack(ALPHA, REPS)
    model, x, certs = _coverage_run()
    assert _certificate_failures(model, x, certs) <= threshold
    assert _bound_failures(certs) <= threshold
    assert all(sum(c.alpha_spending.values()) == pytest.approx(ALPHA) for c in certs[:5])
    assert all(c.details["b"] < 0 for c in certs[:50] if c.prediction == 1)  # negative b kept, still certified
    assert np.mean([c.prediction == 1 for c in certs]) > 0.8

    # over-claim 1: alpha per branch instead of alpha/2 (spends 2 alpha in all)
    monkeypatch.setattr(DualSmooth, "branch_alpha", lambda self, alpha: alpha)
    _, _, loose = _coverage_run()
    assert _bound_failures(loose) > threshold
    monkeypatch.undo()

    # over-claim 2: the public code's sqrt(R_a^2 + R_b^2) combination
    monkeypatch.setattr(dual, "dual_gaussian_radius", sqrt_of_squares_radius)
    model, x, overclaimed = _coverage_run()
    assert _certificate_failures(model, x, overclaimed) > threshold


def _sequential_run(reps=REPS):
    """Sequential certifications at the EXACT radius (checkpoints 30, 300, 3000): a "certified" stop
    needs a_hat + b_hat >= a + b, so it is a failure of the branches' lower sequences."""
    model = LinearDual((1, 2, 2), SIGMA, SIGMA, seed=8)
    x = torch.tensor([[[0.3, 0.7], [0.6, 0.2]]])
    model.place(x, norm.ppf(P_A), norm.ppf(P_B))
    certs = model.smoothed().certify_batch(x.repeat(reps, 1, 1, 1), n0=50, n=3000, alpha=ALPHA, batch_size=50_000,
                                           seed=12, sequential=True, target_radius=model.exact_radius(x),
                                           n_first=30, growth=10.0)
    return model, x, certs


def test_sequential_dual_holds_at_the_stopping_time_and_alpha_per_branch_fails(monkeypatch):
    """Each branch's lower sequence spends alpha/2 (levels alpha_j / 2): the joint bound event at the
    stopping time (either running lower bound above its true probability) and the certificate
    (radius beyond the exact one) fail at most alpha of the time; spending alpha_j per branch (2
    alpha in all) fails the bound check, and re-applying the fixed-n bound at every look fails the
    certificate check."""
    import robustcert.methods.sequential_design as sequential_design

    threshold = ALPHA + binomial_slack(ALPHA, REPS)
    model, x, certs = _sequential_run()
    assert _certificate_failures(model, x, certs) <= threshold
    assert _bound_failures(certs) <= threshold
    assert all(sum(c.alpha_spending.values()) == pytest.approx(ALPHA) and len(c.alpha_spending) == 2
               for c in certs[:5])
    assert {c.details["sequential"]["stop"] for c in certs} <= {"certified", "not certifiable", "n_max"}
    assert all(c.samples_used == 2 * (c.n0 + c.n) for c in certs[:5])
    levels = sequential_design.checkpoint_levels
    monkeypatch.setattr(sequential_design, "checkpoint_levels",
                        lambda grid, alpha, share=None: [2 * a for a in levels(grid, alpha, share)])
    _, _, loose = _sequential_run()
    assert _bound_failures(loose) > threshold

    # statistical positive control on the certificate itself: the natural mistake, the fixed-n
    # Clopper-Pearson bound at alpha per branch re-applied at every look (no union over the looks or
    # the branches), gives radii beyond the exact one far more often than alpha (measured 0.445 of
    # 1000; the sound sequences 0.029)
    monkeypatch.setattr(sequential_design, "checkpoint_levels", lambda grid, alpha, share=None: [2 * alpha] * len(grid))
    model, x, naive = _sequential_run()
    assert _certificate_failures(model, x, naive) > threshold


def test_sequential_dual_on_the_bundled_branches(bundled_dual, digits_test):
    """Sequential dual certifies the digits at r = 0.25 with far fewer samples than n = 2000, the
    same images as fixed n (these 8), and gives the same certificates at any batch size."""
    xs = digits_test[0][:8]
    options = dict(n0=100, n=2000, alpha=0.001, seed=3)
    fixed = bundled_dual.certify_batch(xs, batch_size=1000, **options)
    seq = bundled_dual.certify_batch(xs, batch_size=1000, sequential=True, target_radius=0.25, **options)
    again = bundled_dual.certify_batch(xs, batch_size=64, sequential=True, target_radius=0.25, **options)
    assert [c.radius >= 0.25 for c in seq] == [c.radius >= 0.25 for c in fixed]
    assert np.mean([c.samples_used for c in seq]) < 0.5 * fixed[0].samples_used
    assert [(c.details, c.radius) for c in seq] == [(c.details, c.radius) for c in again]
    with pytest.raises(InvalidArgumentError, match="betting"):
        bundled_dual.certify_batch(xs[:1], sequential=True, target_radius=0.25, stop_test="betting", **options)
    with pytest.raises(InvalidArgumentError, match="only with sequential=True"):
        bundled_dual.certify_batch(xs[:1], target_radius=0.25, **options)


# --------------------------------------------------------------------------- certificates and predictions
def test_certificate_records_both_branches():
    model = LinearDual((1, 8, 8), 0.25, 0.5, seed=9)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(10))
    model.place(x, norm.ppf(0.95), norm.ppf(0.4))
    cert = model.smoothed().certify(x, n0=64, n=2500, alpha=0.01, batch_size=1000, seed=9, index=4)
    d = cert.details
    assert (cert.n0, cert.n, cert.alpha, cert.sigma, cert.method, cert.seed, cert.index) == \
        (64, 2500, 0.01, 0.25, "dual", 9, 4)
    assert (d["sigma_a"], d["sigma_b"], d["split"]) == (0.25, 0.5, "checkerboard")
    assert sum(d["counts_a"]) == sum(d["counts_b"]) == 2500 and sum(d["selection_counts_a"]) == 64
    assert cert.counts == [a + b for a, b in zip(d["counts_a"], d["counts_b"])]
    assert cert.samples_used == 2 * (64 + 2500)
    assert list(cert.alpha_spending.values()) == [0.005, 0.005]
    from robustcert.stats import clopper_pearson_lower

    assert d["p_a_lower"] == pytest.approx(clopper_pearson_lower(d["counts_a"][1], 2500, 0.005))
    assert d["p_b_lower"] == pytest.approx(clopper_pearson_lower(d["counts_b"][1], 2500, 0.005))
    assert cert.p_lower == min(d["p_a_lower"], d["p_b_lower"])
    assert (d["a"], d["b"]) == (pytest.approx(norm.ppf(d["p_a_lower"])), pytest.approx(norm.ppf(d["p_b_lower"])))
    assert d["b"] < 0 and cert.prediction == 1
    assert cert.radius == pytest.approx((d["a"] + d["b"]) / math.sqrt(16 + 4))
    assert '"method": "dual"' in cert.to_json()


def test_certify_abstains_at_a_tie_of_the_summed_probabilities():
    model = LinearDual((1, 4, 4), 0.5, 0.5, seed=12)
    x = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(13))
    model.place(x, norm.ppf(0.7), norm.ppf(0.3))  # p_a + p_b = 1 for both classes
    certs = model.smoothed().certify_batch(x.repeat(20, 1, 1, 1), n0=100, n=2000, alpha=0.01, seed=1)
    assert all(c.prediction == ABSTAIN and c.radius == 0.0 for c in certs)


def test_each_branch_and_stage_has_its_own_stream(monkeypatch):
    """Selection and estimation never share samples, nor do the two branches (distinct derived seeds)."""
    stages = []
    original = DualSmooth.sample

    def spy(self, xs, n, accumulator, stage, *args, **kwargs):
        stages.append(stage)
        return original(self, xs, n, accumulator, stage, *args, **kwargs)

    monkeypatch.setattr(DualSmooth, "sample", spy)
    model = LinearDual((1, 2, 2), 0.5, 0.5)
    model.smoothed().certify(torch.zeros(1, 2, 2), n0=10, n=10)
    model.smoothed().predict(torch.zeros(1, 2, 2), n=10)
    assert sorted(stages) == ["est-a", "est-b", "pred-a", "pred-b", "sel-a", "sel-b"]
    assert len({derive_seed(0, 3, s) for s in stages + ["mix"]}) == len(stages) + 1


class Constant(torch.nn.Module):
    def __init__(self, label, num_classes=2):
        super().__init__()
        self.label, self.num_classes = label, num_classes

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((x.shape[0],), self.label), self.num_classes).float()


def test_predict_rarely_commits_at_a_tie_and_a_loosened_test_fails(monkeypatch):
    """Branch a always says 1, branch b always 0: q = (1/2, 1/2). PREDICT must abstain except w.p. alpha.

    Exact commit rates with 2n = 100 coin-allocated draws at alpha = 0.2: 0.193 for the two-sided
    test, 0.368 for a test with halved p-values (the loosened control). (With a fixed n per branch
    the pooled counts would tie exactly and PREDICT would never commit here.)
    """
    smoothed = DualSmooth(Constant(1), Constant(0), 2, 0.5)
    reps, alpha = 1000, 0.2
    xs = torch.zeros(reps, 1, 2, 2)
    threshold = alpha + binomial_slack(alpha, reps)
    committed = np.mean([p.prediction != ABSTAIN for p in smoothed.predict_batch(xs, n=50, alpha=alpha, seed=5)])
    assert committed <= threshold
    # the decision rule is Cohen's (methods/cohen.predict_from_counts), shared with Smooth.predict
    monkeypatch.setattr(cohen, "binomial_test_pvalue", lambda k, n, p: binomtest(k, n, p).pvalue / 2)
    committed = np.mean([p.prediction != ABSTAIN for p in smoothed.predict_batch(xs, n=50, alpha=alpha, seed=5)])
    assert committed > threshold


def test_predict_on_a_clear_input_and_allocation_is_seeded():
    model = LinearDual((1, 8, 8), 0.5, 0.5, seed=14)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(15))
    model.place(x, norm.ppf(0.99), norm.ppf(0.8))
    pred = model.smoothed().predict(x, n=200, alpha=0.001, seed=3)
    assert pred.prediction == 1 and pred.p_value < 0.001 and sum(pred.counts) == pred.n == 400
    assert 0 < pred.details["draws_a"] < 400
    assert DualSmooth.allocation(200, 3, 0) == DualSmooth.allocation(200, 3, 0)
    assert len({DualSmooth.allocation(200, 3, i) for i in range(20)}) > 5


# --------------------------------------------------------------------------- bundled models, reproducibility
@pytest.fixture(scope="module")
def bundled_dual():
    return DualSmooth(load_model("bundled:digits-dual-a-0.25"), load_model("bundled:digits-dual-b-0.25"), 10, 0.25)


def test_bundled_branches_certify_digits_and_results_do_not_depend_on_batching(bundled_dual, digits_test):
    xs, ys = digits_test[0][:8], digits_test[1][:8]
    together = bundled_dual.certify_batch(xs, n0=100, n=600, alpha=0.001, batch_size=500, seed=7)
    assert np.mean([c.prediction == int(y) for c, y in zip(together, ys)]) >= 0.75
    assert all(c.radius > 0 for c in together if c.prediction != ABSTAIN)
    order = [5, 2, 7]
    shuffled = bundled_dual.certify_batch(xs[order], n0=100, n=600, alpha=0.001, batch_size=500, seed=7,
                                          indices=order)
    for cert in shuffled:
        assert cert.details == together[cert.index].details and cert.radius == together[cert.index].radius
    counts_a, counts_b = together[0].details["counts_a"], together[0].details["counts_b"]
    assert counts_a != counts_b  # the branches see different noise (and different pixels)


def test_bad_arguments_are_reported():
    a, b = LinearBinary(torch.ones(32)), LinearBinary(torch.ones(32))
    with pytest.raises(InvalidArgumentError, match="sigma2"):
        DualSmooth(a, b, 2, 0.25, sigma2=-1)
    with pytest.raises(InvalidArgumentError, match="sigma"):
        DualSmooth(a, b, 2, 0.0)
    with pytest.raises(InvalidArgumentError, match="unknown split"):
        DualSmooth(a, b, 2, 0.25, split="diagonal")
    with pytest.raises(InvalidArgumentError, match="model2"):
        DualSmooth(a, None, 2, 0.25)
    with pytest.raises(InvalidArgumentError, match="give sigma2 only"):
        DualSmooth(a, b, 2, 0.25, sigma2=0.5, sigma_b=0.5)
    with pytest.raises(ShapeError, match="even image width"):
        DualSmooth(a, b, 2, 0.25, input_shape=(1, 8, 7))
    with pytest.raises(ShapeError, match="even image width"):
        DualSmooth(a, b, 2, 0.25).certify(torch.zeros(1, 8, 7), n0=10, n=10)
    with pytest.raises(ShapeError, match="input shape"):
        DualSmooth(a, b, 2, 0.25, input_shape=(1, 8, 8)).certify_batch(torch.zeros(2, 1, 8, 6), n0=10, n=10)
    with pytest.raises(InvalidArgumentError, match="alpha"):
        DualSmooth(a, b, 2, 0.25).certify(torch.zeros(1, 8, 8), n0=10, n=10, alpha=1.0)
    with pytest.raises(ShapeError, match="failed on inputs of shape"):
        DualSmooth(a, b, 2, 0.25).certify(torch.zeros(1, 8, 10), n0=10, n=10)


# --------------------------------------------------------------------------- command line
DUAL = ["--method", "dual", "--model", "bundled:digits-dual-a-0.25", "--sigma", "0.25"]


def test_cli_certifies_with_two_branch_models(tmp_path):
    import json

    out = tmp_path / "dual.tsv"
    result = CliRunner().invoke(main, ["certify", *DUAL, "--model2", "bundled:digits-dual-b-0.25", "--n0", "20",
                                       "--n", "200", "--max", "3", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = out.read_text().splitlines()
    assert rows[0].split("\t") == ["idx", "label", "predict", "radius", "correct", "time"] and len(rows) == 4
    parameters = json.loads((tmp_path / "dual.tsv.json").read_text())["parameters"]
    assert parameters["dual_split"] == "checkerboard" and parameters["sigma2"] == 0.25
    assert len(parameters["model2_sha256"]) == 64
    assert sum(parameters["alpha_spending"].values()) == pytest.approx(0.001)
    assert len(parameters["alpha_spending"]) == 2


def test_cli_sequential_dual(tmp_path):
    import json

    out = tmp_path / "dual.tsv"
    result = CliRunner().invoke(main, ["certify", *DUAL, "--model2", "bundled:digits-dual-b-0.25", "--n", "4000",
                                       "--max", "3", "--out", str(out), "--quiet", "--sequential",
                                       "--target-radius", "0.25"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "dual.tsv.json").read_text())
    assert record["parameters"]["sequential"] is True and len(record["parameters"]["alpha_spending"]) == 2
    assert record["runs"][-1]["samples_used"]["mean_per_input"] < 2 * 4100


@pytest.mark.parametrize("args,message", [
    (["--model2", "bundled:digits-0.25"], "shape mismatch: --model2 bundled:digits-0.25 expects inputs (1, 8, 8), "
                                          "but the checkerboard split gives sub-images of shape (1, 8, 4)"),
    ([], "--method dual needs --model2"),
    (["--model2", "bundled:digits-dual-a-0.25"], "trained for branch a of the checkerboard split, but is used as branch b"),
    (["--model2", "bundled:digits-dual-b-0.25", "--dual-split", "rows"], "feeds it (1, 4, 8)"),
    (["--model2", "bundled:digits-dual-b-0.25", "--sigma2", "0"], "sigma2 (branch b's noise level) must be"),
])
def test_cli_reports_bad_dual_arguments(tmp_path, args, message):
    result = CliRunner().invoke(main, ["certify", *DUAL, *args, "--n", "10", "--out", str(tmp_path / "x.tsv")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "x.tsv").exists() or len((tmp_path / "x.tsv").read_text().splitlines()) <= 1


def test_cli_refuses_full_size_model_and_dual_options_for_other_methods(tmp_path):
    result = CliRunner().invoke(main, ["certify", "--method", "dual", "--model", "bundled:digits-0.25", "--model2",
                                       "bundled:digits-dual-b-0.25", "--sigma", "0.25", "--out", str(tmp_path / "x.tsv")])
    assert result.exit_code == 2 and "expects inputs (1, 8, 8), but this method feeds it (1, 8, 4)" in result.output
    result = CliRunner().invoke(main, ["certify", "--model", "bundled:digits-0.25", "--model2",
                                       "bundled:digits-dual-b-0.25", "--sigma", "0.25", "--out", str(tmp_path / "y.tsv")])
    assert result.exit_code == 2 and "--model2 is an option of --method dual, not cohen" in result.output


def test_the_earlier_argument_names_still_work_with_a_warning():
    """DualSmooth's arguments are named as the command line names them (model2, sigma2); the
    earlier names (model_a, model_b, sigma_a, sigma_b) give the same classifier and a FutureWarning."""
    a, b = LinearBinary(torch.ones(32)), LinearBinary(-torch.ones(32))
    with pytest.warns(FutureWarning) as caught:
        old = DualSmooth(model_a=a, model_b=b, num_classes=2, sigma_a=0.25, sigma_b=0.5)
    assert sorted(str(w.message).split()[3] for w in caught) == ["model_a", "model_b", "sigma_a", "sigma_b"]
    new = DualSmooth(a, b, 2, 0.25, 0.5)
    assert (old.model_a, old.model_b, old.sigma_a, old.sigma_b) == (new.model_a, new.model_b, 0.25, 0.5)
    assert old.settings() == new.settings() == {"dual_split": "checkerboard", "sigma2": 0.5}
