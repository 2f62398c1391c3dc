"""Anytime-valid sequential certification: confidence sequences and SEQUENTIAL-CERTIFY.

Coverage experiments run at a large alpha (0.1) so that they are short and can fail: each one is
paired with a loosened or naive bound that the same check rejects.
"""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import beta, binom, norm
from scipy.special import betaln

import robustcert.methods.sequential as sequential
from robustcert import ABSTAIN, SequentialSmooth, Smooth
from robustcert.errors import InvalidArgumentError
from robustcert.methods.sequential import RadiusTolerance, TargetRadius, checkpoint_schedule
from robustcert.stats import (
    beta_binomial_log_mixture, beta_binomial_mixture_bounds, clopper_pearson_lower, clopper_pearson_upper,
    stitched_alpha, stitched_clopper_pearson_lower, stitched_clopper_pearson_upper,
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


# --------------------------------------------------------------------------- schedule and stopping rules
def test_checkpoint_schedule_grows_geometrically_in_whole_batches():
    assert checkpoint_schedule(100_000, 1000) == [1000, 2000, 4000, 8000, 16000, 32000, 64000, 100000]
    grid = checkpoint_schedule(100_000, 1000, growth=2.0, n_first=100)
    assert grid[:4] == [100, 200, 400, 800] and grid[-1] == 100_000
    assert all(n % 1000 == 0 for n in grid[4:])
    assert checkpoint_schedule(500, 1000) == [500]
    assert checkpoint_schedule(10, 4, growth=1.01, n_first=1) == list(range(1, 5)) + [8, 10]
    for bad in (dict(growth=1.0), dict(growth=float("nan")), dict(n_first=0)):
        with pytest.raises(InvalidArgumentError):
            checkpoint_schedule(1000, 100, **bad)


def test_stopping_rules():
    target = TargetRadius(sigma=0.5, radius=0.5)  # p* = Phi(1) = 0.841
    assert target.p_target == pytest.approx(norm.cdf(1.0))
    assert target.stop(0.85, 0.99, 0.999) == "certified"
    assert target.stop(0.80, 0.84, 0.999) == "not certifiable"
    assert target.stop(0.80, 0.90, 0.84) == "unreachable"
    assert target.stop(0.80, 0.90, 0.999) is None
    at_zero = TargetRadius(sigma=0.5, radius=0.0)  # p* = 1/2, but a certificate needs L > 1/2
    assert at_zero.stop(0.5, 0.9, 1.0) is None and at_zero.stop(0.51, 0.9, 1.0) == "certified"
    assert at_zero.stop(0.3, 0.5, 1.0) == "not certifiable" and at_zero.stop(0.3, 0.9, 0.5) == "unreachable"
    tolerance = RadiusTolerance(sigma=1.0, tolerance=0.1)
    assert tolerance.stop(0.90, norm.cdf(norm.ppf(0.90) + 0.09), 1.0) == "within tolerance"
    assert tolerance.stop(0.90, norm.cdf(norm.ppf(0.90) + 0.11), 1.0) is None
    assert tolerance.stop(0.90, 1.0, norm.cdf(norm.ppf(0.90) + 0.09)) == "within tolerance"  # the ceiling caps
    assert tolerance.stop(0.20, 0.45, 1.0) == "within tolerance"  # no radius is reachable: abstain now


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
    assert (clear.prediction, clear.n, clear.details["sequential"]["stop"]) == (1, 500, "certified")
    assert clear.radius >= 1.0
    hopeless = smoothed.certify(_at(0.6), target_radius=1.0, **options)
    assert hopeless.details["sequential"]["stop"] == "not certifiable" and hopeless.n <= 2000
    assert hopeless.radius < 1.0  # the sound radius from the lower bound is still reported
    beyond = smoothed.certify(_at(0.99999), target_radius=4.5, **options)  # ceiling: 20000 votes certify 3.3
    assert beyond.details["sequential"]["stop"] == "unreachable" and beyond.n == 500
    near = smoothed.certify(_at(norm.cdf(1.0)), target_radius=1.0, **options)  # pA = p*: never decided
    assert near.details["sequential"]["stop"] == "n_max" and near.n == 20_000
    assert near.radius <= 1.0
    tolerant = smoothed.certify(_at(0.9), tolerance=0.2, **options)
    details = tolerant.details["sequential"]
    assert details["stop"] == "within tolerance" and tolerant.n < 20_000
    assert 1.0 * norm.ppf(details["p_upper"]) - tolerant.radius <= 0.2


def test_samples_used_and_the_record(line):
    model, smoothed = line
    fixed = smoothed.certify(_at(0.9), n0=64, n=3000, alpha=0.01, batch_size=1000, seed=1)
    assert fixed.samples_used == 3064 and "sequential" not in fixed.details
    certs = smoothed.certify_batch(torch.stack([_at(p) for p in (0.6, 0.85, 0.999)]), n0=64, n=50_000, alpha=0.01,
                                   batch_size=1000, seed=1, sequential=True, target_radius=1.0, n_max=8000)
    for cert in certs:
        details = cert.details["sequential"]
        assert cert.samples_used == 64 + cert.n and sum(cert.counts) == cert.n
        assert sum(cert.details["selection_counts"]) == 64
        assert cert.n in details["checkpoints"] and details["n_max"] == 8000
        assert details["checkpoints"] == [1000, 2000, 4000, 8000]
        assert details["alpha_per_checkpoint"] == pytest.approx(0.01 / 4)
        assert sum(cert.alpha_spending.values()) == pytest.approx(cert.alpha) == 0.01
        assert cert.p_lower >= stitched_clopper_pearson_lower(cert.counts[1], cert.n, details["checkpoints"], 0.01)
        assert cert.radius == pytest.approx(norm.ppf(cert.p_lower)) if cert.prediction != ABSTAIN else cert.radius == 0
        assert details["mode"] == "target-radius" and details["stop"] in ("certified", "not certifiable", "n_max")
        json.loads(cert.to_json())
    assert len({cert.n for cert in certs}) > 1  # inputs stop at different times


def test_same_seed_same_result_and_the_stream_is_fixed_n_certifys(digits_test):
    """Same seed and index: same certificate, whatever else is in the batch; the first n samples
    are those a fixed-n CERTIFY with the same n draws (the same per-input generator, whole batches)."""
    from robustcert import load_model

    smoothed = Smooth(load_model("bundled:digits-0.50"), 10, sigma=0.5)
    xs = digits_test[0][:5]
    options = dict(n0=100, n=6000, alpha=0.001, batch_size=500, seed=4, sequential=True, target_radius=0.5)
    batch = smoothed.certify_batch(xs, **options)
    again = smoothed.certify_batch(xs, **options)
    alone = [smoothed.certify(xs[i], index=i, **options) for i in (3, 1)]
    for cert in alone:
        assert cert.counts == batch[cert.index].counts and cert.radius == batch[cert.index].radius
    for a, b in zip(batch, again):
        assert (a.counts, a.n, a.radius, a.details) == (b.counts, b.n, b.radius, b.details)
    for cert in batch:
        fixed = smoothed.certify_batch(xs[cert.index:cert.index + 1], n0=100, n=cert.n, alpha=0.001, batch_size=500,
                                       seed=4, indices=[cert.index])[0]
        assert fixed.counts == cert.counts and fixed.details["selected_class"] == cert.details["selected_class"]
    other = smoothed.certify_batch(xs, **{**options, "seed": 5})
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
    time. Spending 2 alpha, or the naive fixed-n bound at every look, fails the same check
    (exact error probabilities 0.069, 0.148 and 0.19 for the three checkpoints 30, 300, 3000)."""
    model, smoothed = line
    reps = 2500
    threshold = ALPHA + binomial_slack(ALPHA, reps)
    spaced = dict(n=3000, n_first=30, growth=10.0)  # checkpoints 30, 300, 3000
    assert _sequential_failures(smoothed, model, 0.8, reps, **spaced) <= threshold
    many = dict(n=3000, n_first=30, growth=1.3)  # 18 looks
    assert _sequential_failures(smoothed, model, 0.8, reps, **many) <= threshold

    stitched = sequential.stitched_clopper_pearson_lower
    monkeypatch.setattr(sequential, "stitched_clopper_pearson_lower",
                        lambda k, n, grid, alpha: stitched(k, n, grid, 2 * alpha))
    assert _sequential_failures(smoothed, model, 0.8, reps, **spaced) > threshold
    monkeypatch.setattr(sequential, "stitched_clopper_pearson_lower",
                        lambda k, n, grid, alpha: clopper_pearson_lower(k, n, alpha))
    assert _sequential_failures(smoothed, model, 0.8, reps, **many) > 2 * ALPHA


def test_bad_sequential_arguments(line):
    model, smoothed = line
    x = _at(0.9)
    for bad in (dict(), dict(target_radius=0.5, tolerance=0.1), dict(target_radius=-1.0), dict(tolerance=0.0),
                dict(target_radius=float("inf")), dict(target_radius=0.5, n_max=0), dict(target_radius=0.5, growth=1.0)):
        with pytest.raises(InvalidArgumentError):
            smoothed.certify(x, n=1000, sequential=True, **bad)
    with pytest.raises(InvalidArgumentError, match="only with sequential=True"):
        smoothed.certify(x, n=1000, target_radius=0.5)
    with pytest.raises(InvalidArgumentError):
        SequentialSmooth(model, 2, 1.0)


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
    result = CliRunner().invoke(main, args(out, "--target-radius", "0.5"))
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0].split("\t") == list(CERTIFY_COLUMNS)
    frame = read_results(out)
    assert len(frame) == 4
    sidecar = json.loads((tmp_path / "seq.tsv.json").read_text())
    assert sidecar["parameters"]["sequential"] is True and sidecar["parameters"]["target_radius"] == 0.5
    assert sidecar["parameters"]["n_max"] == 4000
    assert list(sidecar["parameters"]["alpha_spending"].values()) == [0.001]
    used = sidecar["runs"][-1]["samples_used"]
    assert used["inputs"] == 4 and 4 * 600 <= used["total"] <= 4 * 4100
    assert used["mean_per_input"] == used["total"] / 4

    refused = CliRunner().invoke(main, args(tmp_path / "both.tsv", "--target-radius", "0.5", "--tolerance", "0.1"))
    assert refused.exit_code == 2 and "exactly one" in refused.output
    fixed_out = tmp_path / "fixed.tsv"
    without = CliRunner().invoke(main, ["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n", "100",
                                        "--out", str(fixed_out), "--target-radius", "0.5"])
    assert without.exit_code == 2 and "--target-radius needs --sequential" in without.output
    assert not fixed_out.exists()
