"""Anytime-valid sequential certification: confidence sequences and SEQUENTIAL-CERTIFY.

Coverage experiments run at a large alpha (0.1) so that they are short and can fail: each one is
paired with a loosened or naive bound that the same check rejects.
"""
import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import beta, binom, norm
from scipy.special import betaln

import robustcert.methods.sequential as sequential
import robustcert.methods.sequential_design as sequential_design
from robustcert import ABSTAIN, SequentialSmooth, Smooth
from robustcert.errors import InvalidArgumentError
from robustcert.methods.sequential import (
    DEFAULT_FINAL_SHARE, DEFAULT_STOP_ALPHA, RadiusTolerance, SequenceStates, SequentialDesign, TargetRadius,
    checkpoint_schedule, reach_share, round_blocks, selection_lead, selection_looks,
)
from robustcert.stats import (
    beta_binomial_log_mixture, beta_binomial_mixture_bounds, checkpoint_levels, clopper_pearson_lower,
    clopper_pearson_lower_many, clopper_pearson_upper, clopper_pearson_upper_many, stitched_alpha,
    stitched_clopper_pearson_lower, stitched_clopper_pearson_upper,
)

from conftest import LinearBinary, binomial_slack

ALPHA = 0.1


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: many small batches, one torch thread


# --------------------------------------------------------------------------- the confidence sequences
def test_stitched_bounds_are_clopper_pearson_at_alpha_over_k():
    grid = [100, 200, 400, 1000]
    assert stitched_alpha(grid, 0.001) == pytest.approx(0.001 / 4)
    assert stitched_clopper_pearson_lower(180, 200, grid, 0.001) == pytest.approx(beta.ppf(0.00025, 180, 21), rel=1e-12)
    assert stitched_clopper_pearson_upper(180, 200, grid, 0.001) == pytest.approx(beta.ppf(1 - 0.00025, 181, 20),
                                                                                    rel=1e-12)
    assert stitched_clopper_pearson_lower(1000, 1000, grid, 0.001) == pytest.approx(0.00025 ** (1 / 1000), rel=1e-12)
    with pytest.raises(InvalidArgumentError, match="not one of the declared checkpoints"):
        stitched_clopper_pearson_lower(10, 150, grid, 0.001)
    with pytest.raises(InvalidArgumentError):
        stitched_alpha([200, 100], 0.001)
    with pytest.raises(InvalidArgumentError):
        stitched_alpha([], 0.001)


def _exact_miscoverage(p, checkpoints, lower):
    """P(exists checkpoint j: lower(S_{n_j}, n_j) > p), summed exactly over the binomial paths."""
    alive, drawn, failed = np.array([1.0]), 0, 0.0
    for n in checkpoints:
        alive = np.convolve(alive, binom.pmf(np.arange(n - drawn + 1), n - drawn, p))
        bad = np.array([lower(k, n) > p for k in range(n + 1)])
        failed += alive[bad].sum()
        alive[bad] = 0.0
        drawn = n
    return failed


def test_stitched_sequence_exact_error_at_most_alpha_and_a_loosened_one_exceeds_it():
    """Exact error probability over widely spaced checkpoints, where the union bound is nearly
    tight: <= alpha for the sequence, > alpha when it spends 2 alpha (alpha/K -> 2 alpha/K)."""
    grid = [30, 300, 3000]
    for p in (0.7, 0.8, 0.85):
        sound = _exact_miscoverage(p, grid, lambda k, n: stitched_clopper_pearson_lower(k, n, grid, ALPHA))
        loosened = _exact_miscoverage(p, grid, lambda k, n: stitched_clopper_pearson_lower(k, n, grid, 2 * ALPHA))
        assert sound <= ALPHA < loosened, (p, sound, loosened)


def _bernoulli_paths(p, reps, batch, looks, seed):
    """Successes after each of ``looks`` batches, for ``reps`` independent Bernoulli(p) streams."""
    rng = np.random.default_rng(seed)
    return rng.binomial(batch, p, size=(reps, looks)).cumsum(axis=1), batch * np.arange(1, looks + 1)


def _ever_outside(successes, checkpoints, bound, p, side):
    """Per stream: whether the bound excluded p at SOME checkpoint (bound computed per distinct count)."""
    failed = np.zeros(len(successes), dtype=bool)
    for j, n in enumerate(checkpoints):
        values, inverse = np.unique(successes[:, j], return_inverse=True)
        bounds = np.array([bound(int(k), int(n)) for k in values])[inverse]
        failed |= bounds > p if side == "lower" else bounds < p
    return failed


def test_peeking_after_every_batch_keeps_the_sequence_valid_but_breaks_naive_clopper_pearson():
    """20000 Bernoulli(0.8) streams, bounds looked at after every batch of 25 (40 looks up to 1000)."""
    p, reps = 0.8, 20_000
    successes, grid = _bernoulli_paths(p, reps, batch=25, looks=40, seed=0)
    grid = [int(n) for n in grid]
    threshold = ALPHA + binomial_slack(ALPHA, reps)
    for side, stitched, fixed in (("lower", stitched_clopper_pearson_lower, clopper_pearson_lower),
                                  ("upper", stitched_clopper_pearson_upper, clopper_pearson_upper)):
        sequence = _ever_outside(successes, grid, lambda k, n: stitched(k, n, grid, ALPHA), p, side).mean()
        naive = _ever_outside(successes, grid, lambda k, n: fixed(k, n, ALPHA), p, side).mean()
        once = _ever_outside(successes[:, -1:], grid[-1:], lambda k, n: fixed(k, n, ALPHA), p, side).mean()
        assert sequence <= threshold, (side, sequence)
        assert once <= threshold  # the fixed-n bound is fine when looked at once...
        assert naive > 2 * ALPHA, (side, naive)  # ...and far from it when re-applied at every look


def test_beta_binomial_mixture_closed_form_and_interval():
    # all successes: M_n(p) = B(a+n, b) / (B(a, b) p^n) = 1/alpha  =>  lower = (alpha B(a+n,b)/B(a,b))^(1/n)
    n, a, b = 500, 0.5, 0.5
    lower, upper = beta_binomial_mixture_bounds(n, n, 0.01, a, b)
    assert lower == pytest.approx(np.exp((np.log(0.01) + betaln(a + n, b) - betaln(a, b)) / n), rel=1e-9)
    assert upper == 1.0
    assert beta_binomial_mixture_bounds(0, 20, 0.05)[0] == 0.0
    low, high = beta_binomial_mixture_bounds(300, 1000, 0.001)
    assert low < 0.3 < high
    assert beta_binomial_log_mixture(300, 1000, low) == pytest.approx(np.log(1000), abs=1e-6)
    assert beta_binomial_log_mixture(300, 1000, high) == pytest.approx(np.log(1000), abs=1e-6)
    # wider than the fixed-n bound (it pays for every n), narrower than it at alpha^2
    assert clopper_pearson_lower(300, 1000, 0.001 ** 2) < low < clopper_pearson_lower(300, 1000, 0.001)


def test_beta_binomial_mixture_holds_at_every_look():
    p, reps = 0.3, 4000
    successes, grid = _bernoulli_paths(p, reps, batch=10, looks=50, seed=1)
    threshold = ALPHA + binomial_slack(ALPHA, reps)
    failed = (_ever_outside(successes, grid, lambda k, n: beta_binomial_mixture_bounds(k, n, ALPHA)[0], p, "lower")
              | _ever_outside(successes, grid, lambda k, n: beta_binomial_mixture_bounds(k, n, ALPHA)[1], p, "upper"))
    assert failed.mean() <= threshold


# --------------------------------------------------------------------------- schedule, levels and rules
def test_checkpoint_schedule_grows_geometrically_and_ignores_the_batch_size():
    assert checkpoint_schedule(100_000) == [64 * 2 ** i for i in range(11)] + [100_000]
    assert checkpoint_schedule(100_000, growth=2.0, n_first=1000)[:3] == [1000, 2000, 4000]
    assert checkpoint_schedule(50) == [50]
    assert checkpoint_schedule(10, growth=1.01, n_first=1) == list(range(1, 11))
    assert checkpoint_schedule(1000, growth=1.5, n_first=100) == [100, 150, 225, 338, 507, 761, 1000]
    for bad in (dict(growth=1.0), dict(growth=float("nan")), dict(growth=True), dict(n_first=0)):
        with pytest.raises(InvalidArgumentError):
            checkpoint_schedule(1000, **bad)
    # every round's samples in draws of at most ESTIMATION_BLOCK, fixed by the schedule alone
    assert round_blocks([64, 128, 600, 1000]) == [[64], [64], [256, 216], [256, 144]]
    assert selection_looks(100) == [8, 16, 32, 64, 100] and selection_looks(8) == [8] and selection_looks(5) == [5]


def test_checkpoint_levels_sum_to_alpha():
    grid = [64, 128, 256, 512]
    assert checkpoint_levels(grid, 0.001) == pytest.approx([0.00025] * 4)
    assert checkpoint_levels(grid, 0.001, final_share=0.5) == pytest.approx([0.0005 / 3] * 3 + [0.0005])
    assert checkpoint_levels([100], 0.01, final_share=0.5) == [0.01]
    assert sum(checkpoint_levels(checkpoint_schedule(100_000), 0.001, 0.5)) == pytest.approx(0.001, rel=1e-12)
    with pytest.raises(InvalidArgumentError):
        checkpoint_levels(grid, 0.001, final_share=1.0)


def test_weighted_levels_exact_error_at_most_alpha_and_loosened_ones_exceed_it():
    """The default spending (half of alpha at the last look) over widely spaced checkpoints: exact
    error <= alpha; the same levels doubled: > alpha (the union bound is nearly tight here)."""
    grid = [30, 300, 3000]
    levels = dict(zip(grid, checkpoint_levels(grid, ALPHA, DEFAULT_FINAL_SHARE)))
    for p in (0.7, 0.8, 0.85):
        sound = _exact_miscoverage(p, grid, lambda k, n: clopper_pearson_lower(k, n, levels[n]))
        loosened = _exact_miscoverage(p, grid, lambda k, n: clopper_pearson_lower(k, n, 2 * levels[n]))
        assert sound <= ALPHA < loosened, (p, sound, loosened)


def test_vectorised_bounds_match_the_scalar_ones():
    k = np.array([0, 1, 50, 99, 100])
    assert clopper_pearson_lower_many(k, 100, 0.01) == pytest.approx([clopper_pearson_lower(int(v), 100, 0.01) for v in k])
    assert clopper_pearson_upper_many(k, 100, 0.01) == pytest.approx([clopper_pearson_upper(int(v), 100, 0.01) for v in k])
    with pytest.raises(InvalidArgumentError):
        clopper_pearson_lower_many([101], 100, 0.01)


def test_stopping_rules():
    target = TargetRadius(sigma=0.5, radius=0.5)  # p* = Phi(1) = 0.841
    assert target.p_target == pytest.approx(norm.cdf(1.0))
    column = lambda values: np.array(values)[:, None]  # noqa: E731  (inputs, branches) with one branch
    lower = column([0.85, 0.80, 0.80, 0.80, 0.80, 0.85])
    upper = column([0.99, 0.84, 0.90, 0.90, 0.90, 0.80])
    ceiling = column([0.999, 0.999, 0.84, 0.999, 0.999, 0.999])
    below_target = upper[:, 0] < target.p_target
    below_reach = np.array([False, True, False, True, False, True])
    assert list(target.stop(lower, upper, ceiling, below_target, below_reach)) == [
        "certified", "not certifiable", "unreachable", "not certifiable by n_max", None, "certified"]
    at_zero = TargetRadius(sigma=0.5, radius=0.0)  # p* = 1/2, but a certificate needs L > 1/2
    none = np.zeros(4, dtype=bool)
    assert list(at_zero.stop(column([0.5, 0.51, 0.3, 0.3]), column([0.9, 0.9, 0.5, 0.9]),
                             column([1.0, 1.0, 1.0, 0.5]), none, none)) == [
        None, "certified", "not certifiable", "unreachable"]
    tolerance = RadiusTolerance(sigma=1.0, tolerance=0.1)
    reasons = tolerance.stop(column([0.90, 0.90, 0.90, 0.20]),
                             column([norm.cdf(norm.ppf(0.90) + 0.09), norm.cdf(norm.ppf(0.90) + 0.11), 1.0, 0.45]),
                             column([1.0, 1.0, norm.cdf(norm.ppf(0.90) + 0.09), 1.0]))
    assert list(reasons) == ["within tolerance", None, "within tolerance", "within tolerance"]


def test_reach_and_the_selection_lead():
    level = 0.0005
    reach = reach_share(norm.cdf(1.0), 100_000, level)
    assert clopper_pearson_lower(round(reach * 100_000), 100_000, level) >= norm.cdf(1.0)
    assert clopper_pearson_lower(round(reach * 100_000) - 1, 100_000, level) < norm.cdf(1.0)
    assert reach_share(0.9999, 1000, level) is None  # not even 1000 votes out of 1000 certify
    # ((1 - p*) / p*)^d <= 0.001: p* = Phi(1) -> 5, Phi(0.5) -> 9, Phi(2) -> 2; none when p* <= 1/2
    assert [selection_lead(norm.cdf(z)) for z in (1.0, 0.5, 2.0)] == [5, 9, 2]
    assert selection_lead(0.5) is None


def test_selection_lead_misselects_a_certifiable_input_rarely():
    """Three classes, pA = p* = Phi(0.5) = 0.69 (the hardest certifiable case), the runner-up
    taking all the rest: the lead rule picks another class with probability <= 0.001 (the bound
    of selection_lead); a lead of 2 does not (about 7%)."""
    rng = np.random.default_rng(0)
    p_star = norm.cdf(0.5)
    probabilities = np.array([p_star, 1 - p_star - 1e-3, 1e-3])

    def misselection(lead, reps=20_000):
        counts = np.zeros((reps, 3), dtype=np.int64)
        chosen = np.full(reps, -1)
        drawn = 0
        for look in selection_looks(100):
            counts += rng.multinomial(look - drawn, probabilities, size=reps)
            drawn = look
            top_two = np.sort(counts, axis=1)[:, -2:]
            stop = (chosen < 0) & ((top_two[:, 1] - top_two[:, 0] >= lead) | (look == 100))
            chosen[stop] = np.argmax(counts[stop], axis=1)
        return (chosen != 0).mean()

    assert misselection(selection_lead(p_star)) <= 0.001 + binomial_slack(0.001, 20_000)
    assert misselection(2) > 0.05


def _stop_paths(design, p, reps, seed=0):
    """Run ``reps`` Bernoulli(p) vote paths through the shipped decision code; their stopping reasons."""
    rng = np.random.default_rng(seed)
    states = SequenceStates(design, reps)
    votes, active, drawn = np.zeros(reps, dtype=np.int64), np.arange(reps), 0
    for j, checkpoint in enumerate(design.checkpoints):
        votes[active] += rng.binomial(checkpoint - drawn, p, size=len(active))
        drawn = checkpoint
        active = active[~states.look(j, active, votes[active])]
    return states.reason


@pytest.mark.parametrize("stop_test", ["clopper-pearson", "betting"])
def test_not_certifiable_stops_err_at_most_stop_alpha_and_loosened_ones_do_not(stop_test, monkeypatch):
    """At pA = p* exactly, "not certifiable" (pA < p*) is wrong every time it is said: it must be
    said at most stop_alpha of the time (the reach test switched off, so that it cannot stop the
    paths first); at pA = reach, the same for "not certifiable by n_max". Controls that fail the
    same check: the stopping sequence at twice its levels (Clopper-Pearson, checkpoints 30, 300,
    3000 where the union bound is nearly tight: 0.074 and 0.143 measured), bets that peek at the
    round they bet on (betting, 30, 60, ..., 3000: 0.016 and 0.16)."""
    reps, stop_alpha = 10_000, ALPHA
    threshold = stop_alpha + binomial_slack(stop_alpha, reps)
    rule = TargetRadius(sigma=1.0, radius=1.0)
    growth = 10.0 if stop_test == "clopper-pearson" else 2.0
    design = SequentialDesign.build(rule, 3000, 0.01, growth=growth, n_first=30, stop_alpha=stop_alpha,
                                    stop_test=stop_test)
    said = lambda reasons, verdicts: np.isin(reasons.astype(str), verdicts).mean()  # noqa: E731
    target_only = dataclasses.replace(design, reach=None)
    assert said(_stop_paths(target_only, rule.p_target, reps), ["not certifiable"]) <= threshold
    assert said(_stop_paths(design, design.reach, reps, seed=1),
                ["not certifiable", "not certifiable by n_max"]) <= threshold
    if stop_test == "clopper-pearson":
        loosened = dataclasses.replace(target_only, stop_levels=tuple(2 * a for a in design.stop_levels))
    else:
        original = SequenceStates._bet

        def peeking(self, rows, successes, trials, before_votes, before_n, thresholds):
            return original(self, rows, successes, trials, before_votes + successes, before_n + trials, thresholds)

        monkeypatch.setattr(SequenceStates, "_bet", peeking)
        loosened = target_only
    assert said(_stop_paths(loosened, rule.p_target, reps), ["not certifiable"]) > threshold


def test_betting_test_decides_clear_inputs():
    rule = TargetRadius(sigma=1.0, radius=1.0)
    design = SequentialDesign.build(rule, 100_000, 0.001, stop_test="betting")
    reasons = _stop_paths(design, 0.7, 200)
    assert np.isin(reasons.astype(str), ["not certifiable", "not certifiable by n_max"]).all()


@pytest.fixture
def line():
    """f(x) = 1 iff x > 0 in one dimension, sigma = 1: pA = Phi(x) for x > 0."""
    model = LinearBinary(torch.tensor([1.0]))
    return model, Smooth(model, num_classes=2, sigma=1.0)


def _at(p_a):
    return torch.tensor([norm.ppf(p_a)])


def test_stopping_end_to_end(line):
    model, smoothed = line
    options = dict(n0=50, n=20_000, alpha=0.001, batch_size=500, seed=2, sequential=True)
    clear = smoothed.certify(_at(0.99999), target_radius=1.0, **options)  # p* = 0.841, every vote for class 1
    assert (clear.prediction, clear.n, clear.details["sequential"]["stop"]) == (1, 64, "certified")
    assert clear.radius >= 1.0 and clear.n0 == 8 and clear.samples_used == 72  # selection: 5 votes ahead at 8
    hopeless = smoothed.certify(_at(0.6), target_radius=1.0, **options)
    assert hopeless.details["sequential"]["stop"] == "not certifiable" and hopeless.n <= 256
    assert hopeless.radius < 1.0  # the sound radius from the lower bound is still reported
    beyond = smoothed.certify(_at(0.99999), target_radius=4.5, **options)  # ceiling: 20000 votes certify 3.4
    assert beyond.details["sequential"]["stop"] == "unreachable" and beyond.n == 64
    near = smoothed.certify(_at(norm.cdf(1.0)), target_radius=1.0, **{**options, "stop_alpha": 0.001})
    assert near.details["sequential"]["stop"] in ("n_max", "not certifiable by n_max") and near.n > 5000
    assert near.radius <= 1.0
    tolerant = smoothed.certify(_at(0.9), tolerance=0.2, **options)
    details = tolerant.details["sequential"]
    assert details["stop"] == "within tolerance" and tolerant.n < 20_000
    assert 1.0 * norm.ppf(details["p_upper"]) - tolerant.radius <= 0.2
    assert sum(tolerant.details["selection_counts"]) == 50  # tolerance mode: all n0 selection votes


def test_samples_used_and_the_record(line):
    model, smoothed = line
    fixed = smoothed.certify(_at(0.9), n0=64, n=3000, alpha=0.01, batch_size=1000, seed=1)
    assert fixed.samples_used == 3064 and "sequential" not in fixed.details
    certs = smoothed.certify_batch(torch.stack([_at(p) for p in (0.6, 0.85, 0.999)]), n0=64, n=50_000, alpha=0.01,
                                   batch_size=1000, seed=1, sequential=True, target_radius=1.0, n_max=8000,
                                   n_first=1000)
    for cert in certs:
        details = cert.details["sequential"]
        assert cert.samples_used == cert.n0 + cert.n and sum(cert.counts) == cert.n
        assert sum(cert.details["selection_counts"]) == cert.n0 == details["selection"]["used"] <= 64
        assert cert.n in details["checkpoints"] and details["n_max"] == 8000
        assert details["checkpoints"] == [1000, 2000, 4000, 8000]
        assert details["alpha_per_checkpoint"] == pytest.approx([0.005 / 3] * 3 + [0.005])
        assert details["stop_alpha"] == DEFAULT_STOP_ALPHA and details["stop_test"] == "clopper-pearson"
        assert sum(cert.alpha_spending.values()) == pytest.approx(cert.alpha) == 0.01
        level = details["alpha_per_checkpoint"][details["checkpoints"].index(cert.n)]
        assert cert.p_lower >= clopper_pearson_lower(cert.counts[1], cert.n, level)
        assert cert.radius == pytest.approx(norm.ppf(cert.p_lower)) if cert.prediction != ABSTAIN else cert.radius == 0
        assert details["mode"] == "target-radius"
        assert details["stop"] in ("certified", "not certifiable", "not certifiable by n_max", "n_max")
        json.loads(cert.to_json())
    assert len({cert.n for cert in certs}) > 1  # inputs stop at different times


class Recorder(torch.nn.Module):
    """Two coordinates: votes class 1 iff x0 > 0; x1 = 1000 * (input number) tells whose sample it is.
    Records every noisy sample it classifies."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.stack([-x[:, 0], x[:, 0]], dim=1)

    def samples_of(self, number: int) -> torch.Tensor:
        seen = torch.cat(self.seen)
        return seen[torch.round(seen[:, 1] / 1000) == number]


def test_samples_do_not_depend_on_the_batch_size_or_on_which_inputs_share_a_batch():
    """Each input's noisy samples (selection and estimation, in order) and its certificate are the
    same at batch sizes 7, 100 and 4096, alone or with others, in any order."""
    p_values = (0.999, 0.9, 0.86, 0.6)  # stop at different rounds
    xs = torch.tensor([[norm.ppf(p), 1000.0 * i] for i, p in enumerate(p_values)])
    options = dict(n0=100, n=4000, alpha=0.001, seed=3, sequential=True, target_radius=1.0)

    def run(batch_size, order):
        model = Recorder()
        certs = Smooth(model, 2, 1.0).certify_batch(xs[order], batch_size=batch_size, indices=order, **options)
        return {c.index: c for c in certs}, {i: model.samples_of(i) for i in order}

    reference, samples = run(4096, [0, 1, 2, 3])
    assert len({cert.n for cert in reference.values()}) >= 3
    for batch_size, order in ((7, [0, 1, 2, 3]), (100, [3, 1, 0, 2]), (4096, [2]), (100, [1, 3])):
        certs, seen = run(batch_size, order)
        for i in order:
            assert torch.equal(seen[i], samples[i]), (batch_size, order, i)
            assert certs[i].counts == reference[i].counts and certs[i].details == reference[i].details


def test_same_seed_same_result_and_on_cpu_the_streams_are_fixed_n_certifys(digits_test):
    """Same seed and index: the same certificate, whatever else is in the batch and whatever the
    batch size. On a CPU, for inputs of a multiple of 16 values, torch draws the same normal values
    whatever the cut of a generator's draws into multiples of 16 values, so the sequential streams
    are prefixes of fixed-n CERTIFY's (the paired comparisons of results/sequential rely on it)."""
    from robustcert import load_model

    smoothed = Smooth(load_model("bundled:digits-0.50"), 10, sigma=0.5)
    xs = digits_test[0][:5]
    options = dict(n0=100, n=6000, alpha=0.001, seed=4, sequential=True, target_radius=0.5)
    batch = smoothed.certify_batch(xs, batch_size=500, **options)
    again = smoothed.certify_batch(xs, batch_size=10_000, **options)
    alone = [smoothed.certify(xs[i], index=i, batch_size=64, **options) for i in (3, 1)]
    for cert in alone:
        assert cert.counts == batch[cert.index].counts and cert.radius == batch[cert.index].radius
    for a, b in zip(batch, again):
        assert (a.counts, a.n, a.radius, a.details) == (b.counts, b.n, b.radius, b.details)
    for cert in batch:
        fixed = smoothed.certify_batch(xs[cert.index:cert.index + 1], n0=cert.n0, n=cert.n, alpha=0.001,
                                       batch_size=500, seed=4, indices=[cert.index])[0]
        assert fixed.counts == cert.counts and fixed.details["selection_counts"] == cert.details["selection_counts"]
    other = smoothed.certify_batch(xs, batch_size=500, **{**options, "seed": 5})
    assert any(a.counts != b.counts for a, b in zip(batch, other))


def _sequential_failures(smoothed, model, p_a, reps, **options):
    """Fraction of certificates that claim too much: a wrong class, or a radius beyond the truth."""
    x = _at(p_a)
    truth = model.distance(x)
    certs = smoothed.certify_batch(x.repeat(reps, 1), n0=20, alpha=ALPHA, batch_size=20_000, seed=13,
                                   sequential=True, target_radius=truth, **options)
    return np.mean([c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > truth) for c in certs])


def test_sequential_certificates_hold_at_1_minus_alpha_and_loosened_ones_do_not(line, monkeypatch):
    """2500 inputs with pA = 0.8, asked "certified at the exact radius?": a "certified" stop is
    exactly a confidence-sequence failure, so this measures the sequence's error at the stopping
    time (default levels: half of alpha at the last look). Doubling every level, or the naive
    fixed-n bound at every look, fails the same check (exact error probabilities 0.075 and 0.164
    for the sound and doubled levels at the three checkpoints 30, 300, 3000)."""
    model, smoothed = line
    reps = 2500
    threshold = ALPHA + binomial_slack(ALPHA, reps)
    spaced = dict(n=3000, n_first=30, growth=10.0)  # checkpoints 30, 300, 3000
    assert _sequential_failures(smoothed, model, 0.8, reps, **spaced) <= threshold
    many = dict(n=3000, n_first=30, growth=1.3)  # 18 looks
    assert _sequential_failures(smoothed, model, 0.8, reps, **many) <= threshold

    levels = sequential_design.checkpoint_levels
    monkeypatch.setattr(sequential_design, "checkpoint_levels",
                        lambda grid, alpha, share=None: [2 * a for a in levels(grid, alpha, share)])
    assert _sequential_failures(smoothed, model, 0.8, reps, **spaced) > threshold
    monkeypatch.setattr(sequential_design, "checkpoint_levels", lambda grid, alpha, share=None: [alpha] * len(grid))
    assert _sequential_failures(smoothed, model, 0.8, reps, **many) > 2 * ALPHA


def test_bad_sequential_arguments(line):
    model, smoothed = line
    x = _at(0.9)
    for bad in (dict(), dict(target_radius=0.5, tolerance=0.1), dict(target_radius=-1.0), dict(tolerance=0.0),
                dict(target_radius=float("inf")), dict(target_radius=0.5, n_max=0), dict(target_radius=0.5, growth=1.0),
                dict(target_radius=0.5, stop_alpha=0.0), dict(target_radius=0.5, stop_test="wald"),
                dict(target_radius=0.5, final_share=1.0), dict(target_radius=0.5, selection_lead_votes=0)):
        with pytest.raises(InvalidArgumentError):
            smoothed.certify(x, n=1000, sequential=True, **bad)
    with pytest.raises(InvalidArgumentError, match="only with sequential=True"):
        smoothed.certify(x, n=1000, target_radius=0.5)
    with pytest.raises(InvalidArgumentError):
        SequentialSmooth(model, 2, 1.0)
    with pytest.raises(InvalidArgumentError, match="stop_alpha"):
        SequentialSmooth(model, 2, 1.0, target_radius=0.5, stop_alpha=1.5)


def test_fixed_n_certificate_of_a_sequential_smooth_names_the_bound_it_used(line):
    """SequentialSmooth(...).certify(sequential=False) is fixed-n CERTIFY: one Clopper-Pearson bound
    at alpha, not the stitched sequence (whose name it once recorded)."""
    from robustcert.methods.cohen import CERTIFY_BOUND

    model, _ = line
    smoothed = SequentialSmooth(model, 2, 1.0, target_radius=0.5)
    fixed = smoothed.certify(_at(0.9), n=1000, alpha=0.01, sequential=False)
    assert fixed.alpha_spending == {CERTIFY_BOUND: 0.01} and fixed.n == 1000
    stopped = smoothed.certify(_at(0.9), n=1000, alpha=0.01)
    assert stopped.alpha_spending == {sequential.SEQUENCE_BOUND: 0.01}


# --------------------------------------------------------------------------- command line
def test_cli_sequential_writes_the_reference_tsv_and_samples_in_the_sidecar(tmp_path):
    from robustcert.cli import main
    from robustcert.results import CERTIFY_COLUMNS, read_results

    def args(out, *extra):
        return ["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n", "100000", "--n-max", "4000",
                "--batch", "500", "--max", "4", "--quiet", "--out", str(out), "--sequential", *extra]

    out = tmp_path / "seq.tsv"
    result = CliRunner().invoke(main, args(out, "--target-radius", "0.5", "--stop-alpha", "0.01"))
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0].split("\t") == list(CERTIFY_COLUMNS)
    frame = read_results(out)
    assert len(frame) == 4
    sidecar = json.loads((tmp_path / "seq.tsv.json").read_text())
    assert sidecar["parameters"]["sequential"] is True and sidecar["parameters"]["target_radius"] == 0.5
    assert sidecar["parameters"]["n_max"] == 4000 and sidecar["parameters"]["stop_alpha"] == 0.01
    assert list(sidecar["parameters"]["alpha_spending"].values()) == [0.001]
    used = sidecar["runs"][-1]["samples_used"]
    assert used["inputs"] == 4 and 4 * 72 <= used["total"] <= 4 * 4100
    assert used["mean_per_input"] == used["total"] / 4

    refused = CliRunner().invoke(main, args(tmp_path / "both.tsv", "--target-radius", "0.5", "--tolerance", "0.1"))
    assert refused.exit_code == 2 and "exactly one" in refused.output
    fixed_out = tmp_path / "fixed.tsv"
    without = CliRunner().invoke(main, ["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n", "100",
                                        "--out", str(fixed_out), "--target-radius", "0.5"])
    assert without.exit_code == 2 and "--target-radius needs --sequential" in without.output
    assert not fixed_out.exists()
