"""Floating-point soundness (Voracek and Hein, ICLR 2023): a false certificate of the standard mode,
and the sound mode (discretized Gaussian on the input grid, integer sums, one forward shape)."""
import json
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import chi2, norm

import robustcert.methods.cohen as cohen
from robustcert import ABSTAIN, Smooth
from robustcert.engine.sound import DiscreteGaussianNoise, as_levels, discrete_gaussian_table
from robustcert.errors import InvalidArgumentError, ModelOutputError, ResourceError
from robustcert.stats import clopper_pearson_lower

from conftest import binomial_slack

pytestmark = pytest.mark.usefixtures("one_thread")


class Footprint(torch.nn.Module):
    """Class 0 iff every coordinate of the noisy input is a multiple of 2^-exponent, else class 1.

    For x_i = 2^-5 every float32 fl(x_i + delta_i) is a multiple of 2^-29 (a float32 >= 2^-6 is a
    multiple of 2^-29, and a smaller sum x_i + delta_i is exact), whatever delta_i; for x_i = 0 the
    noisy value is delta_i itself, almost never such a multiple. The smoothed classifier the
    standard mode samples is 0 at x and 1 at x' = 0, although the theorem says it cannot change
    within the certified radius."""

    def __init__(self, exponent: int):
        super().__init__()
        self.scale = 2.0 ** exponent

    def forward(self, z):
        scaled = z.flatten(1) * self.scale
        off_lattice = (scaled != torch.floor(scaled)).any(dim=1)
        return torch.stack([(~off_lattice).float(), off_lattice.float()], dim=1)


def test_standard_mode_certifies_a_false_radius_and_the_sound_mode_does_not():
    """The paper's numbers: radius 1.26 certified at x (sigma = 0.33, n = 10^5, alpha = 0.001, every
    vote for class 0), and a point x' 0.80 away that the same smoothed classifier, as sampled in
    float32, gives class 1 (every base-model vote, and PREDICT at x'). 655 coordinates at 2^-5 (x)
    or 0 (x'): ||x - x'|| = 2^-5 sqrt(655) = 0.7998. In the sound mode on the grid k/32 both points
    are grid points; the network input is (K + N)/32, a multiple of 2^-5 either way, so the model
    cannot tell them apart and x' gets class 0 too: no contradiction."""
    model, sigma = Footprint(29), 0.33
    x, x_adv = torch.full((655,), 2.0 ** -5), torch.zeros(655)
    distance = float((x - x_adv).norm())
    assert distance == pytest.approx(0.7998, abs=1e-4)
    standard = Smooth(model, 2, sigma)
    cert = standard.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=20_000, seed=0)
    assert cert.prediction == 0 and cert.radius == pytest.approx(1.2578, abs=1e-4) and cert.radius > distance
    # the adversarial point: the base model votes 1 on (nearly) every noisy copy, PREDICT returns 1
    noisy = x_adv + torch.randn(2000, 655, generator=torch.Generator().manual_seed(1)) * sigma
    assert float((model(noisy).argmax(1) == 1).float().mean()) >= 0.99
    prediction = standard.predict(x_adv, n=1000, alpha=0.001, seed=2)
    assert prediction.prediction == 1 and prediction.p_value < 1e-6
    # CERTIFY at x' even certifies class 1 on a ball that overlaps the first one
    other = standard.certify(x_adv, n0=100, n=2000, alpha=0.001, batch_size=2000, seed=3)
    assert other.prediction == 1 and other.radius + cert.radius > distance

    sound = Smooth(model, 2, sigma, sound_float=True, quantization=32)
    cert = sound.certify(x, n0=100, n=20_000, alpha=0.001, batch_size=20_000, seed=0)
    assert cert.prediction == 0 and cert.radius > distance
    assert sound.predict(x_adv, n=1000, alpha=0.001, seed=2).prediction == 0
    assert sound.certify(x_adv, n0=100, n=2000, alpha=0.001, batch_size=2000, seed=3).prediction == 0


def test_the_8_bit_pair():
    """Valid 8-bit images: x = 1/255 everywhere, x' = black, 16/255 = 0.063 apart (256 pixels). fl(1/255
    + delta) is always a multiple of 2^-32; delta alone rarely is. Standard mode: certified at x, 1 at
    x'. Sound mode on the grid k/255: 0 at both."""
    model, sigma = Footprint(32), 0.25
    x, x_adv = torch.full((256,), 1 / 255), torch.zeros(256)
    standard = Smooth(model, 2, sigma)
    assert standard.certify(x, n0=50, n=2000, alpha=0.001, seed=0).radius > float((x - x_adv).norm())
    assert standard.predict(x_adv, n=500, seed=1).prediction == 1
    sound = Smooth(model, 2, sigma, sound_float=True, quantization=255)
    assert sound.certify(x, n0=50, n=2000, alpha=0.001, seed=0).prediction == 0
    assert sound.predict(x_adv, n=500, seed=1).prediction == 0


# ----------------------------------------------------------------------------- the sampler
@pytest.mark.parametrize("sigma, levels", [(0.25, 16), (0.12, 255), (0.5, 255)])
def test_alias_table_implements_the_threshold_weights_exactly(sigma, levels):
    """Every value's mass in the alias table (in units of 2^-B) is exactly its weight w_j; the weights
    sum to 2^B and each is within 2 units of 2^B times the exact discretized-Gaussian probability
    (mpmath at 300 bits), the end values absorbing the tails; eps_1 is the documented bound."""
    table = discrete_gaussian_table(sigma, levels)
    unit = 1 << (table.bits - table.column_bits)
    mass = [0] * (1 << table.column_bits)
    for column, (cut, alias) in enumerate(zip(table.cuts, table.aliases)):
        mass[column] += cut
        mass[alias] += unit - cut
    assert mass[:len(table.weights)] == list(table.weights) and not any(mass[len(table.weights):])
    assert sum(table.weights) == 1 << table.bits
    with mpmath.workprec(300):
        scale = mpmath.mpf(Fraction(sigma).numerator) / Fraction(sigma).denominator * levels
        total = mpmath.mpf(2) ** table.bits
        half = table.half_width
        for j, weight in zip(range(-half, half + 1), table.weights):
            upper = mpmath.ncdf((j + mpmath.mpf(1) / 2) / scale) if j < half else mpmath.mpf(1)
            lower = mpmath.ncdf((j - mpmath.mpf(1) / 2) / scale) if j > -half else mpmath.mpf(0)
            assert abs(weight - total * (upper - lower)) <= 2, j
    assert table.half_width == math.ceil(12 * levels * sigma)
    assert table.tv_per_coordinate == pytest.approx((2 * half + 1) * 2.0 ** (1 - table.bits) + 2 * table.tail)
    assert table.tv_per_coordinate < 1e-14


def _chi_square_p(draws: np.ndarray, sigma: float, levels: int) -> float:
    values, counts = np.unique(draws, return_counts=True)
    expected = (norm.cdf((values + 0.5) / (levels * sigma)) - norm.cdf((values - 0.5) / (levels * sigma))) * draws.size
    keep = expected > 20
    statistic = float((((counts[keep] - expected[keep]) ** 2) / expected[keep]).sum())
    return float(chi2.sf(statistic, keep.sum() - 1))


def test_the_sampler_draws_the_discretized_gaussian_and_a_wrong_sigma_is_detected():
    """10^6 draws (fixed seed) fit round(L delta), delta ~ N(0, sigma^2) (chi-square p > 0.001); the
    same check rejects the draws against sigma 2% larger (the check can fail)."""
    noise = DiscreteGaussianNoise(0.25, 16)
    out = torch.empty(1000, 1000)
    noise.draw(out, torch.Generator().manual_seed(0))
    draws = out.numpy().ravel()
    assert np.array_equal(draws, np.round(draws)) and np.abs(draws).max() <= noise.table.half_width
    assert _chi_square_p(draws, 0.25, 16) > 1e-3
    assert _chi_square_p(draws, 0.255, 16) < 1e-6


def without_probe(calls: list, fixed: int) -> list:
    """The recorded forward passes (inputs, or (inputs, outputs)) of a fresh classifier minus the
    runner's batch-invariance probe: the three calls after its first pass of the fixed shape (that
    batch again, reversed, and half replaced by off-grid rows)."""
    rows = [(call[0] if isinstance(call, tuple) else call).shape[0] for call in calls]
    first = rows.index(fixed)
    return calls[:first + 1] + calls[first + 4:]


class Recorder(torch.nn.Module):
    """A base model that records the batches it receives (and votes by the first coordinate)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, z):
        self.seen.append(z.detach().clone())
        return torch.stack([-z.flatten(1)[:, 0], z.flatten(1)[:, 0]], dim=1)


def test_the_network_input_is_a_function_of_the_integer_sum():
    """What the model receives is fl(M / L) for an integer M: (z * L) is an integer and z equals
    fl(round(z L) / L) bitwise. Two splits of the same sum give the same input, which the naive
    float addition fl(fl(K/L) + fl(N/L)) does not (the footprint the sound mode removes)."""
    levels = 255
    recorder = Recorder()
    x = torch.randint(0, levels + 1, (300,), generator=torch.Generator().manual_seed(0)).float() / levels
    Smooth(recorder, 2, 0.5, sound_float=True, quantization=levels).certify(x, n0=10, n=500, batch_size=250)
    seen = torch.cat(without_probe(recorder.seen, 250))
    integers = torch.round(seen.double() * levels)
    assert torch.equal(seen, (integers / levels).float()) and torch.equal(seen, integers.float() / levels)
    k1, n1 = torch.arange(0, 256), torch.arange(255, -1, -1) - 300
    k2, n2 = torch.zeros(256, dtype=torch.int64), k1 + n1
    assert torch.equal((k1 + n1).float() / levels, (k2 + n2).float() / levels)
    naive = lambda k, n: k.float() / levels + n.float() / levels  # noqa: E731
    assert not torch.equal(naive(k1, n1), naive(k2, n2))


def test_quantization_and_off_grid_inputs():
    assert as_levels(255) == 255 and as_levels(1 / 255) == 255 and as_levels(16.0) == 16 and as_levels(0.0625) == 16
    for bad in (0, -3, 1.5, 0.3, float("nan"), "255", True):
        with pytest.raises(InvalidArgumentError):
            as_levels(bad)
    model = Recorder()
    with pytest.raises(InvalidArgumentError, match="grid k/255"):
        Smooth(model, 2, 0.5, sound_float=True).certify(torch.full((4,), 0.5), n=10)
    with pytest.raises(InvalidArgumentError, match="sound_float"):
        Smooth(model, 2, 0.5, quantization=255)
    Smooth(model, 2, 0.5, sound_float=True, quantization=16).certify(torch.full((4,), 0.5), n0=5, n=10)


# ----------------------------------------------------------------------------- one base classifier
class ShapeDependent(torch.nn.Module):
    """Votes 1 iff x_0 > 0.5 - (batch rows) / 10^4: row-wise, but its threshold moves with the batch
    shape, as real kernels' rounding does (by ~1e-6 rather than 1e-4)."""

    def forward(self, z):
        score = z.flatten(1)[:, 0] - 0.5 + z.shape[0] / 10_000
        return torch.stack([-score, score], dim=1)


def test_sound_outputs_do_not_depend_on_batch_composition(digits_test):
    """The same input (seed, index) gives the same votes, bitwise the same model outputs, whether it is
    certified alone, packed with other inputs, or in another order: every forward pass has the one
    fixed shape. In the standard mode the batch shape follows the packing, and a shape-dependent
    model (ShapeDependent) changes the votes."""
    x = torch.full((1, 2), 0.5)
    others = torch.rand(5, 2, generator=torch.Generator().manual_seed(0))
    packed = torch.cat([x, others])
    for sound, same in ((False, False), (True, True)):
        options = {"sound_float": True, "quantization": 1 / 16} if sound else {}
        smoothed = Smooth(ShapeDependent(), 2, 0.02, **options)
        grid = lambda t: torch.round(t * 16) / 16 if sound else t  # noqa: E731
        alone = smoothed.certify_batch(grid(x), n0=10, n=300, batch_size=1000, seed=4, indices=[7])[0]
        with_others = smoothed.certify_batch(grid(packed), n0=10, n=300, batch_size=1000, seed=4,
                                             indices=[7, 1, 2, 3, 4, 5])[0]
        assert (alone.counts == with_others.counts) == same, sound
    from robustcert import load_model

    model = load_model("bundled:digits-0.25")
    recorded = []
    hook = model.register_forward_hook(lambda module, inputs, output: recorded.append((inputs[0].clone(), output)))
    xs = digits_test[0][:4]
    alone = Smooth(model, 10, 0.25, sound_float=True, quantization=16).certify_batch(
        xs[2:3], n0=20, n=100, batch_size=300, seed=1, indices=[2])[0]
    rows_alone = _outputs_of(without_probe(recorded, 300))
    recorded.clear()
    batch = Smooth(model, 10, 0.25, sound_float=True, quantization=16).certify_batch(
        xs[[3, 2, 0]], n0=20, n=100, batch_size=300, seed=1, indices=[3, 2, 0])
    hook.remove()
    assert batch[1].counts == alone.counts and batch[1].details == alone.details
    # one forward shape for the estimation samples; the selection stage (3 x 20 samples) is not padded
    assert {inputs.shape[0] for inputs, _ in recorded} == {300, 60}
    rows_batch = _outputs_of(without_probe(recorded, 300))
    assert len(rows_alone) >= 95  # the 100 estimation samples of input 2 (a few may coincide on the grid)
    for sample, output in rows_alone.items():  # every noisy sample of input 2 got bitwise the same output
        assert torch.equal(rows_batch[sample], output)


def _outputs_of(recorded) -> dict:
    """Map each noisy input row of the fixed-shape (300-row) passes, as bytes, to its output row."""
    table = {}
    for inputs, output in recorded:
        if inputs.shape[0] != 300:
            continue
        for row in range(inputs.shape[0]):
            if inputs[row].any():  # not a zero row padding a short batch
                table[inputs[row].contiguous().numpy().tobytes()] = output[row]
    return table


class RowMixer(torch.nn.Module):
    """Subtracts the batch mean: each row's output depends on the others (like BatchNorm in training)."""

    def forward(self, z):
        centred = z.flatten(1) - z.flatten(1).mean(dim=0)
        return torch.stack([-centred[:, 0], centred[:, 0]], dim=1)


class OutOfMemory(torch.nn.Module):
    """Runs out of memory on batches of more than 50 rows (the selection stage's 10 fit)."""

    def forward(self, z):
        if z.shape[0] > 50:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.zeros(z.shape[0], 2)


def test_the_sound_mode_refuses_row_mixing_models_and_never_splits_on_out_of_memory():
    x = torch.full((3,), 0.5)
    with pytest.raises(ModelOutputError, match="function of each row"):
        Smooth(RowMixer(), 2, 0.25, sound_float=True, quantization=16).certify(x, n0=10, n=100)
    Smooth(RowMixer(), 2, 0.25).certify(x, n0=10, n=100)  # the standard mode does not check
    with pytest.raises(ResourceError, match="smaller batch"):
        Smooth(OutOfMemory(), 2, 0.25, sound_float=True, quantization=16).certify(x, n0=10, n=100)


# ----------------------------------------------------------------------------- the certificate
def test_sound_certificate_subtracts_the_correction_and_records_the_sampler():
    recorder = Recorder()
    smoothed = Smooth(recorder, 2, 0.25, sound_float=True, quantization=255)
    x = torch.full((8,), 200 / 255)
    cert = smoothed.certify(x, n0=20, n=2000, alpha=0.01, seed=1)
    record = cert.details["sound_float"]
    eps = 8 * discrete_gaussian_table(0.25, 255).tv_per_coordinate
    assert record["correction"] == pytest.approx(eps) and record["levels"] == 255
    assert record["p_lower_sampler"] == clopper_pearson_lower(cert.counts[1], 2000, 0.01)
    assert cert.p_lower == record["p_lower_sampler"] - eps and cert.prediction == 1
    assert cert.alpha_spending == {cohen.CERTIFY_BOUND: 0.01}
    prediction = smoothed.predict(x, n=1000, alpha=0.01)
    assert sum(prediction.alpha_spending.values()) == pytest.approx(0.01)
    assert prediction.alpha_spending[cohen.SAMPLER_SLACK] == pytest.approx(1000 * eps)
    sequential = smoothed.certify(x, n0=20, n=2000, alpha=0.01, seed=1, sequential=True, tolerance=0.05)
    assert sequential.details["sound_float"]["correction"] == pytest.approx(eps)
    assert smoothed.settings()["sound_float"] is True and smoothed.settings()["quantization"] == 255


def _sound_failures(smoothed, distance, levels, reps, n, alpha):
    """The sound mode's smoothed classifier of f(z) = [z_0 > 0] is h(u) = [round(L u) > 0] = [u > 1/(2L)]
    smoothed by N(0, sigma^2): its exact radius at x is x_0 - 1/(2L). Count certificates claiming more."""
    x = torch.full((reps, 1), distance + 1 / (2 * levels))
    x = torch.round(x * levels) / levels
    exact = float(x[0, 0]) - 1 / (2 * levels)
    certs = smoothed.certify_batch(x, n0=30, n=n, alpha=alpha, batch_size=20_000, seed=5)
    return np.mean([c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > exact) for c in certs])


def test_sound_coverage_holds_and_a_loosened_bound_fails(monkeypatch):
    """2000 certifications at alpha = 0.05, pA = 0.8 on the grid k/16 (n = 500): at most alpha + slack
    false radii; spending 2 alpha on the Clopper-Pearson bound breaks the same check."""
    levels, sigma, alpha, reps, n = 16, 1.0, 0.05, 2000, 500
    smoothed = Smooth(Recorder(), 2, sigma, sound_float=True, quantization=levels)
    smoothed.model.forward = lambda z: torch.stack([-z[:, 0], z[:, 0]], dim=1)  # no recording: many samples
    distance = sigma * norm.ppf(0.8)
    threshold = alpha + binomial_slack(alpha, reps)
    assert _sound_failures(smoothed, distance, levels, reps, n, alpha) <= threshold
    monkeypatch.setattr(cohen, "clopper_pearson_lower", lambda k, n_, a: clopper_pearson_lower(k, n_, 2 * a))
    assert _sound_failures(smoothed, distance, levels, reps, n, alpha) > threshold


def test_cli_sound_float(tmp_path):
    from robustcert.cli import main

    out = tmp_path / "sound.tsv"
    common = ["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n0", "20", "--n", "200", "--max", "2",
              "--quiet"]
    result = CliRunner().invoke(main, [*common, "--sound-float", "--quantization", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sidecar = json.loads(out.with_name("sound.tsv.json").read_text())
    assert sidecar["parameters"]["sound_float"] is True and sidecar["parameters"]["quantization"] == 16
    assert sidecar["runs"][-1]["engine"]["sound"]["batch_invariance_probe"].startswith("passed")
    for args, message in ((["--sound-float"], "grid k/255"), (["--quantization", "16"], "--sound-float"),
                          (["--sound-float", "--method", "lvm"], "--method cohen")):
        bad = tmp_path / "bad.tsv"
        result = CliRunner().invoke(main, [*common, *args, "--out", str(bad)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not bad.exists()
