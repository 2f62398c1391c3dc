"""Other threat models: l1 radii from uniform and Laplace noise, l0 radii from randomized ablation.

Every radius is checked on a classifier whose exact robust radius is known: the threshold
f(x) = 1[x_0 > 0] at x_0 = a (exact l1 distance a) for the l1 noises, and a model whose smoothed
vote share at every attacked input is a closed form for ablation. Each gets a coverage experiment
at a large alpha and a loosened-formula control that the same check must reject.
"""
import dataclasses
import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import stats

import robustcert.methods.ablation as ablation_module
import robustcert.methods.noises as noises
from robustcert import (
    ABSTAIN, AblationSmooth, InvalidArgumentError, SequentialSmooth, Smooth, certify_dataset, load_dataset, load_model,
)
from robustcert.cli import main
from robustcert.engine import AblationNoise, LaplaceNoise, UniformNoise, ablate
from robustcert.engine.sampling import fill_symmetric_grid
from robustcert.models.closed_form import SubsetIndex
from robustcert.plotting import radius_axis
from robustcert.radius import ablation_delta, ablation_radius, laplace_l1_radius, uniform_l1_radius
from robustcert.results import ResultsError, linf_radii, read_results, table_from_files
from robustcert.stats import clopper_pearson_lower

from conftest import LinearBinary, binomial_slack

THRESHOLD = LinearBinary(torch.tensor([1.0, 0.0, 0.0]))  # f(x) = 1[x_0 > 0] on 3 coordinates


# --------------------------------------------------------------------------- samplers
def test_symmetric_grid_is_odd_multiples_of_2_to_minus_24():
    out = torch.empty(200_000)
    fill_symmetric_grid(out, torch.Generator().manual_seed(0))
    scaled = out.double() * 2 ** 24
    assert bool((scaled == scaled.round()).all()) and bool((scaled.round() % 2 == 1).all())
    assert float(out.abs().max()) < 1.0 and float(out.abs().min()) > 0.0


@pytest.mark.parametrize("noise, law", [
    (LaplaceNoise(0.5), stats.laplace(scale=0.5 / math.sqrt(2))),
    (UniformNoise(0.5), stats.uniform(-0.5 * math.sqrt(3), 2 * 0.5 * math.sqrt(3))),
])
def test_noises_have_the_stated_law_and_standard_deviation(noise, law):
    out = torch.empty(200_000)
    noise.draw(out, torch.Generator().manual_seed(1))
    values = out.double().numpy()
    assert stats.kstest(values, law.cdf).pvalue > 1e-3
    assert values.std() == pytest.approx(0.5, rel=0.01)  # sigma is the per-coordinate standard deviation
    assert np.isfinite(values).all()
    # a different law must fail the same test (the check has power)
    assert stats.kstest(values, stats.norm(scale=0.5).cdf).pvalue < 1e-3


# --------------------------------------------------------------------------- l1 radii: closed forms
def test_l1_radii_closed_forms():
    sigma = 0.4
    lam, b = math.sqrt(3) * sigma, sigma / math.sqrt(2)
    for p in (0.55, 0.8, 0.999):
        assert uniform_l1_radius(sigma, p) == pytest.approx(2 * lam * (p - 0.5))
        assert laplace_l1_radius(sigma, p) == pytest.approx(-b * math.log(2 * (1 - p)))
    assert uniform_l1_radius(sigma, 0.7, 0.1) == pytest.approx(lam * 0.6)
    # Teng et al.: the larger of the likelihood-ratio and the tight term
    assert laplace_l1_radius(sigma, 0.6, 0.01) == pytest.approx(b / 2 * math.log(60))
    assert laplace_l1_radius(sigma, 0.9, 0.1) == pytest.approx(-b * math.log(0.2))
    for radius in (uniform_l1_radius, laplace_l1_radius):
        assert radius(sigma, 0.5) == 0.0 and radius(sigma, 0.4, 0.4) == 0.0
        with pytest.raises(InvalidArgumentError):
            radius(0.0, 0.9)


@pytest.mark.parametrize("a", [0.05, 0.3, 0.6])
def test_l1_radii_are_exact_on_the_threshold_classifier(a):
    sigma = 0.5
    lam, b = math.sqrt(3) * sigma, sigma / math.sqrt(2)
    assert uniform_l1_radius(sigma, 0.5 + a / (2 * lam)) == pytest.approx(a)
    assert laplace_l1_radius(sigma, 1 - math.exp(-a / b) / 2) == pytest.approx(a)


def exact_p_top(noise: str, sigma: float, a: float) -> float:
    """P(f(x + delta) = 1) for the threshold classifier at x_0 = a."""
    if noise == "uniform":
        return 0.5 + a / (2 * math.sqrt(3) * sigma)
    return 1 - math.exp(-a * math.sqrt(2) / sigma) / 2


@pytest.mark.parametrize("noise", ["laplace", "uniform"])
def test_l1_certificate_approaches_the_exact_distance(noise):
    sigma, a = 0.5, 0.4
    smoothed = Smooth(THRESHOLD, num_classes=2, sigma=sigma, noise=noise)
    x = torch.tensor([a, 0.3, -0.2])
    cert = smoothed.certify(x, n0=100, n=200_000, alpha=0.001, batch_size=50_000, seed=2)
    assert cert.prediction == 1 and cert.norm == "l1" and cert.details["noise"] == noise
    assert cert.radius <= a
    assert cert.radius >= 0.95 * a, cert.radius
    assert sum(cert.alpha_spending.values()) == pytest.approx(0.001)
    assert cert.p_lower == pytest.approx(clopper_pearson_lower(cert.counts[1], 200_000, 0.001))


def _l1_failures(noise, sigma, a, reps, n, alpha):
    smoothed = Smooth(THRESHOLD, num_classes=2, sigma=sigma, noise=noise)
    xs = torch.tensor([[a, 0.0, 0.0]]).repeat(reps, 1)
    certs = smoothed.certify_batch(xs, n0=30, n=n, alpha=alpha, batch_size=20_000, seed=13)
    return np.mean([c.prediction != ABSTAIN and (c.prediction != 1 or c.radius > a) for c in certs])


LOOSENED_L1 = {  # the classic slip: the noise's scale parameter used as its standard deviation
    "uniform": lambda sigma, p: 2 * sigma * (2 * p - 1) if p > 0.5 else 0.0,  # lambda = 2 sigma, not sqrt(3) sigma
    "laplace": lambda sigma, p: -sigma * math.log(2 * (1 - p)) if p > 0.5 else 0.0,  # b = sigma, not sigma/sqrt(2)
}


@pytest.mark.parametrize("noise", ["laplace", "uniform"])
def test_l1_coverage_holds_and_a_loosened_formula_fails(noise, monkeypatch, one_thread):
    """2000 certifications at alpha = 0.05 of an input with pA = 0.8: the radius exceeds the exact
    l1 distance only when the Clopper-Pearson bound fails; a formula 15% (uniform) or 41% (Laplace)
    too large certifies beyond the distance most of the time."""
    sigma, alpha, reps, n = 0.5, 0.05, 2000, 500
    a = uniform_l1_radius(sigma, 0.8) if noise == "uniform" else laplace_l1_radius(sigma, 0.8)
    assert exact_p_top(noise, sigma, a) == pytest.approx(0.8)
    threshold = alpha + binomial_slack(alpha, reps)
    assert _l1_failures(noise, sigma, a, reps, n, alpha) <= threshold
    loosened = dataclasses.replace(noises.NOISES[noise], radius=LOOSENED_L1[noise])
    monkeypatch.setitem(noises.NOISES, noise, loosened)
    assert _l1_failures(noise, sigma, a, reps, n, alpha) > threshold


def test_unknown_noise_and_sequential_l1_are_refused():
    with pytest.raises(InvalidArgumentError, match="unknown noise"):
        Smooth(THRESHOLD, 2, sigma=0.5, noise="cauchy")
    smoothed = Smooth(THRESHOLD, 2, sigma=0.5, noise="laplace")
    with pytest.raises(InvalidArgumentError, match="sequential"):
        smoothed.certify(torch.tensor([0.3, 0.0, 0.0]), n=100, sequential=True, target_radius=0.1)
    with pytest.raises(InvalidArgumentError, match="sequential"):
        SequentialSmooth(THRESHOLD, 2, sigma=0.5, noise="uniform", target_radius=0.1)


def test_gaussian_smooth_is_unchanged_by_the_noise_option():
    """noise="gaussian" (the default) draws the same samples as before: same counts, l2 radius."""
    x = torch.tensor([0.2, 0.0, 0.0])
    default = Smooth(THRESHOLD, 2, sigma=0.5).certify(x, n=2000, seed=4)
    explicit = Smooth(THRESHOLD, 2, sigma=0.5, noise="gaussian").certify(x, n=2000, seed=4)
    assert default.counts == explicit.counts and default.norm == "l2" and "noise" not in default.details
    assert Smooth(THRESHOLD, 2, sigma=0.5).settings() == {}


# --------------------------------------------------------------------------- ablation: Delta and the radius
@pytest.mark.parametrize("pixels", [1, 4, 7])
def test_ablation_delta_matches_enumeration(pixels):
    for keep in range(1, pixels + 1):
        subsets = list(itertools.combinations(range(pixels), keep))
        for rho in range(pixels + 1):
            touching = sum(1 for kept in subsets if any(i < rho for i in kept))
            assert ablation_delta(rho, pixels, keep) == pytest.approx(touching / len(subsets), abs=1e-15)


def test_ablation_radius_is_the_largest_certified_rho():
    rng = np.random.default_rng(0)
    for pixels, keep in ((10, 3), (64, 4), (784, 45)):
        for p in rng.uniform(0.45, 1.0, size=40):
            rho = ablation_radius(float(p), pixels, keep)

            def certified(r, p_b=1 - Fraction(float(p))):
                delta = 1 - Fraction(math.comb(pixels - r, keep), math.comb(pixels, keep))
                return Fraction(float(p)) - delta > p_b + delta

            if p <= 0.5:
                assert rho == 0
                continue
            assert certified(rho) and not certified(rho + 1)
            p_b = float(rng.uniform(0, 1 - p))
            two_sided = ablation_radius(float(p), pixels, keep, p_b)
            assert two_sided >= rho and certified(two_sided, Fraction(p_b)) and not certified(two_sided + 1, Fraction(p_b))
    assert ablation_radius(0.99, 64, 64) == 0  # keeping every pixel certifies nothing beyond rho = 0
    with pytest.raises(InvalidArgumentError):
        ablation_radius(0.9, 10, 11)


# --------------------------------------------------------------------------- ablation: the sampler
@pytest.mark.parametrize("channels, channels_last", [(1, False), (1, True), (3, False), (3, True)])
def test_ablation_draws_uniform_subsets_in_the_papers_encoding(channels, channels_last, one_thread):
    """Every 2-subset of the 6 pixels of a (C, 2, 3) input is equally likely, whatever the memory
    layout of the batches, and every sample is encoded exactly (no count in the extra class)."""
    clean = torch.rand(channels, 2, 3, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    model = SubsetIndex(clean, keep=2)
    smoothed = AblationSmooth(model, num_classes=16, keep=2, channels_last=channels_last)
    counts = np.array(smoothed.certify(clean, n0=10, n=6000, alpha=0.01, batch_size=1000, seed=5).counts)
    assert counts[15] == 0 and counts.sum() == 6000
    assert stats.chisquare(counts[:15]).pvalue > 1e-3
    assert stats.chisquare(counts[:15], f_exp=np.r_[[600] * 5, [300] * 10]).pvalue < 1e-3  # the test has power


def test_ablate_batch_uses_the_same_encoding():
    xs = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = ablate(xs, keep=6, generator=torch.Generator().manual_seed(1))
    assert out.shape == (5, 6, 4, 4)
    kept = (out[:, :3] + out[:, 3:]).sum(1) > 1.5
    assert bool((kept.flatten(1).sum(1) == 6).all())
    mask = kept[:, None].expand_as(xs)
    assert torch.equal(out[:, :3][mask], xs[mask]) and torch.equal(out[:, 3:][mask], 1 - xs[mask])
    assert bool((out[:, :3][~mask] == 0).all()) and bool((out[:, 3:][~mask] == 0).all())
    with pytest.raises(InvalidArgumentError, match="keep"):
        AblationNoise(17, (1, 4, 4))


# --------------------------------------------------------------------------- ablation: coverage
class TouchesFirst(torch.nn.Module):
    """A model with known smoothed behaviour: class 1 if any kept pixel is bright (> 1/2) or the kept
    set misses the first m pixels, else class 0.

    At x = all dark, P(class 0) = P(kept set touches the first m) = Delta(m). Brightening the first
    rho <= m pixels leaves P(class 0) = Delta(m) - Delta(rho), exactly the Levine-Feizi bound
    pA - Delta(rho): the bound is tight here, so the smoothed class flips after the largest rho with
    Delta(m) - Delta(rho) > 1/2.
    """

    def __init__(self, m: int):
        super().__init__()
        self.m = m

    def forward(self, z):
        kept = (z[:, 0] + z[:, 1]).flatten(1) > 0.5
        bright = kept & (z[:, 0].flatten(1) > 0.5)
        class_one = bright.any(1) | ~kept[:, :self.m].any(1)
        return torch.stack([(~class_one).float(), class_one.float()], dim=1)


PIXELS, KEEP, M = 64, 3, 18  # 8x8 inputs; pA = Delta(18) = 0.6357, true radius 2 (Delta(18) - Delta(3) = 0.4995)


def true_radius() -> int:
    p_a = ablation_delta(M, PIXELS, KEEP)
    return max(r for r in range(PIXELS) if p_a - ablation_delta(r, PIXELS, KEEP) > 0.5)


def test_known_model_behaves_as_stated(one_thread):
    smoothed = AblationSmooth(TouchesFirst(M), 2, keep=KEEP, input_shape=(1, 8, 8))
    for rho in (0, 6):
        x = torch.zeros(1, 8, 8)
        x.view(-1)[:rho] = 1.0
        cert = smoothed.certify(x, n0=10, n=40_000, alpha=0.01, batch_size=10_000, seed=rho)
        expected = ablation_delta(M, PIXELS, KEEP) - ablation_delta(rho, PIXELS, KEEP)
        assert cert.counts[0] / 40_000 == pytest.approx(expected, abs=4 * math.sqrt(0.25 / 40_000))
    assert true_radius() == 2


def test_ablation_certificate_reaches_the_true_radius():
    smoothed = AblationSmooth(TouchesFirst(M), 2, keep=KEEP)
    cert = smoothed.certify(torch.zeros(1, 8, 8), n0=100, n=100_000, alpha=0.001, batch_size=20_000, seed=0)
    assert (cert.prediction, cert.radius, cert.norm) == (0, true_radius(), "l0")
    assert cert.details["keep"] == KEEP and cert.details["pixels"] == PIXELS and cert.sigma is None
    assert cert.alpha_spending == {"Clopper-Pearson one-sided lower bound on pA": 0.001}


def _ablation_failures(reps, n, alpha):
    smoothed = AblationSmooth(TouchesFirst(M), 2, keep=KEEP)
    certs = smoothed.certify_batch(torch.zeros(reps, 1, 8, 8), n0=30, n=n, alpha=alpha, batch_size=20_000, seed=17)
    truth = true_radius()
    return np.mean([c.prediction != ABSTAIN and (c.prediction != 0 or c.radius > truth) for c in certs])


def forgets_delta_on_the_runner_up(p_a_lower, pixels, keep):
    """A loosened formula: pA - Delta(rho) > pB (with pB = 1 - pA), dropping the runner-up's + Delta."""
    return max([r for r in range(pixels - keep + 1) if p_a_lower - ablation_delta(r, pixels, keep) > 1 - p_a_lower],
               default=0)


def test_ablation_coverage_holds_and_a_loosened_formula_fails(monkeypatch, one_thread):
    """1500 certifications at alpha = 0.05 (n = 400): rho = 3 is certified only if pA_lower exceeds
    pA by 0.0005, so the failure rate is the Clopper-Pearson miscoverage; dropping the runner-up's
    Delta certifies rho = 6 or so, far beyond the true radius."""
    alpha, reps, n = 0.05, 1500, 400
    threshold = alpha + binomial_slack(alpha, reps)
    assert _ablation_failures(reps, n, alpha) <= threshold
    monkeypatch.setattr(ablation_module, "ablation_radius", forgets_delta_on_the_runner_up)
    assert _ablation_failures(reps, n, alpha) > threshold


def test_ablation_refuses_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="keep"):
        AblationSmooth(TouchesFirst(M), 2, keep=0)
    with pytest.raises(InvalidArgumentError, match="more than the 64 pixels"):
        AblationSmooth(TouchesFirst(M), 2, keep=65, input_shape=(1, 8, 8))
    with pytest.raises(InvalidArgumentError, match="more than the 64 pixels"):
        AblationSmooth(TouchesFirst(M), 2, keep=65).certify(torch.zeros(1, 8, 8), n=10)
    with pytest.raises(InvalidArgumentError, match="sequential"):
        AblationSmooth(TouchesFirst(M), 2, keep=3).certify(torch.zeros(1, 8, 8), n=10, sequential=True,
                                                           target_radius=1)


# --------------------------------------------------------------------------- tables and plots: norms
RADII_TSV = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.8\t1\t1.0\n1\t2\t2\t0.4\t1\t1.0\n2\t3\t-1\t0.0\t0\t1.0\n"


def result_file(folder, name, norm=None, input_shape=(1, 8, 8)):
    """A certify TSV with radii 0.8, 0.4 and an abstention, and a sidecar recording ``norm``."""
    path = folder / f"{name}.tsv"
    path.write_text(RADII_TSV)
    if norm is not None:
        sidecar = {"kind": "certify", "norm": norm, "data": {"spec": "digits", "input_shape": list(input_shape)}}
        path.with_name(path.name + ".json").write_text(json.dumps(sidecar))
    return path


def test_table_names_the_norm_and_refuses_to_mix_norms(tmp_path):
    l2, l1, l0 = (result_file(tmp_path, n, n) for n in ("l2", "l1", "l0"))
    reference = result_file(tmp_path, "reference")  # no sidecar: Cohen et al.'s l2 format
    assert list(table_from_files([l2, reference], [0, 0.5]).columns[:2]) == ["r=0", "r=0.5"]
    assert list(table_from_files([l1], [0, 0.5]).columns[:2]) == ["l1 r=0", "l1 r=0.5"]
    assert list(table_from_files([l0], [0, 1]).columns[:2]) == ["l0 r=0", "l0 r=1"]
    with pytest.raises(ResultsError, match="different norms .*l2.tsv: l2, l1.tsv: l1.*--mixed-norms"):
        table_from_files([l2, l1], [0, 0.5])
    mixed = table_from_files([l2, l1], [0, 0.5], mixed_norms=True)
    assert list(mixed.index) == ["l2 [l2]", "l1 [l1]"] and list(mixed.columns[:2]) == ["r=0", "r=0.5"]
    assert mixed.loc["l1 [l1]", "r=0.5"] == pytest.approx(1 / 3)


def test_table_converts_l2_and_l1_radii_to_linf(tmp_path):
    l2, l1 = result_file(tmp_path, "l2", "l2"), result_file(tmp_path, "l1", "l1")
    r2, r1 = 0.4 / math.sqrt(64), 0.4 / 64  # the smaller radius, converted: R / sqrt(d) and R / d
    table = table_from_files([l2, l1], [0, r1, r2], norm="linf")
    assert list(table.columns[:3]) == [f"linf r={0:g}", f"linf r={r1:g}", f"linf r={r2:g}"]
    assert table.loc["l2", f"linf r={r2:g}"] == pytest.approx(2 / 3) and table.loc["l1", f"linf r={r2:g}"] == 0.0
    assert table.loc["l1", f"linf r={r1:g}"] == pytest.approx(2 / 3)
    assert table.loc["l2", "ACR"] == pytest.approx((0.8 + 0.4) / 3 / 8)
    default = table_from_files([l2], norm="linf")  # a grid for small radii, not 0 and 0.25
    assert len(default.columns) > 6
    with pytest.raises(ResultsError, match="l0 radii, which do not convert"):
        table_from_files([result_file(tmp_path, "l0", "l0")], norm="linf")
    with pytest.raises(ResultsError, match="input dimension is unknown"):
        table_from_files([result_file(tmp_path, "reference")], norm="linf")
    with pytest.raises(ResultsError, match="do not convert to l2"):
        table_from_files([l1], norm="l2")
    assert linf_radii(np.array([3.0]), "l2", 9)[0] == 1.0 and linf_radii(np.array([3.0]), "l1", 9)[0] == pytest.approx(1 / 3)


def test_table_and_plot_commands_with_norms(tmp_path):
    l2, l1, l0 = (result_file(tmp_path, n, n) for n in ("l2", "l1", "l0"))
    result = CliRunner().invoke(main, ["table", str(l2), str(l1), "--norm", "linf", "--radii", "0,0.01"])
    assert result.exit_code == 0 and "linf r=0.01" in result.stdout and "weak" in result.stderr
    result = CliRunner().invoke(main, ["table", str(l2), str(l1)])
    assert result.exit_code == 2 and "--mixed-norms" in result.stderr and len(result.stderr.splitlines()) == 1
    assert CliRunner().invoke(main, ["table", str(l2), str(l1), "--mixed-norms"]).exit_code == 0
    result = CliRunner().invoke(main, ["plot", str(l2), str(l1), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 2 and "--mixed-norms" in result.stderr and not (tmp_path / "c.png").exists()
    result = CliRunner().invoke(main, ["plot", str(l2), str(l1), "--mixed-norms", "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0 and (tmp_path / "c.png").stat().st_size > 1000
    assert radius_axis([l0], ["a"], False) == ("pixels changed (l0)", ["a"])
    assert radius_axis([l1, l1], ["a", "b"], False)[0] == "radius (l1, pixel units in [0,1])"
    assert radius_axis([l1, l2], ["a", "b"], True)[1] == ["a [l1]", "b [l2]"]


# --------------------------------------------------------------------------- dataset runs and the command line
ABLATION_MODEL = "bundled:digits-ablation-k16"
RUN = ["--data", "digits", "--n0", "10", "--n", "200", "--batch", "200", "--max", "4", "--threads", "1", "--quiet"]


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_sidecars_record_noise_norm_and_alpha_spending(tmp_path):
    laplace = tmp_path / "laplace.tsv"
    result = run_cli("certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--noise", "laplace",
                     "--out", laplace, *RUN)
    assert result.exit_code == 0, result.output
    record = json.loads(laplace.with_name("laplace.tsv.json").read_text())
    assert (record["noise"], record["norm"], record["parameters"]["noise"]) == ("laplace", "l1", "laplace")
    assert sum(record["parameters"]["alpha_spending"].values()) == pytest.approx(record["parameters"]["alpha"])
    ablated = tmp_path / "ablation.tsv"
    result = run_cli("certify", "--method", "ablation", "--model", ABLATION_MODEL, "--keep", "16", "--out", ablated,
                     *RUN)
    assert result.exit_code == 0, result.output
    record = json.loads(ablated.with_name("ablation.tsv.json").read_text())
    assert (record["method"], record["noise"], record["norm"]) == ("ablation", "ablation", "l0")
    assert record["parameters"]["keep"] == 16 and record["parameters"]["sigma"] is None
    assert record["parameters"]["alpha_spending"] == {"Clopper-Pearson one-sided lower bound on pA": 0.001}
    radii = read_results(ablated)["radius"]
    assert ((radii == radii.round()) & (radii >= 0)).all()  # whole numbers of pixels
    gaussian = tmp_path / "gaussian.tsv"
    assert run_cli("certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--out", gaussian, *RUN).exit_code == 0
    record = json.loads(gaussian.with_name("gaussian.tsv.json").read_text())
    assert (record["noise"], record["norm"]) == ("gaussian", "l2") and "noise" not in record["parameters"]
    # resuming with another noise is refused: its radii would be in another norm
    result = run_cli("certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--noise", "uniform",
                     "--out", laplace, "--resume", *RUN)
    assert result.exit_code == 2 and "differs from the first run in noise" in result.stderr
    result = run_cli("table", laplace, ablated)
    assert result.exit_code == 2 and "different norms" in result.stderr


def test_python_dataset_run_with_ablation_matches_its_certificates():
    smoothed = AblationSmooth(load_model(ABLATION_MODEL), num_classes=10, keep=16, input_shape=(1, 8, 8))
    frame = certify_dataset(smoothed, "digits", n0=10, n=300, batch_size=300, max_inputs=3, progress=False)
    x, _ = load_dataset("digits")[1]
    cert = smoothed.certify(x, n0=10, n=300, batch_size=300, seed=0, index=1)
    assert frame.loc[1, "radius"] == cert.radius and cert.norm == "l0" and smoothed.threat_model() == \
        {"noise": "ablation", "norm": "l0"}


@pytest.mark.parametrize("args, message", [
    (["--method", "ablation", "--model", ABLATION_MODEL], "--method ablation needs --keep"),
    (["--method", "ablation", "--model", ABLATION_MODEL, "--keep", "16", "--sigma", "0.25"], "drop --sigma"),
    (["--method", "ablation", "--model", ABLATION_MODEL, "--keep", "65"], "more than the 64 pixels"),
    (["--method", "ablation", "--model", "bundled:digits-0.25", "--keep", "16"], "expects inputs (1, 8, 8)"),
    (["--method", "ablation", "--model", ABLATION_MODEL, "--keep", "16", "--denoiser", "bundled:digits-ddpm"],
     "--denoiser"),
    (["--model", "bundled:digits-0.25"], "needs --sigma"),
    (["--model", "bundled:digits-0.25", "--sigma", "0.25", "--noise", "cauchy"], "Invalid value for '--noise'"),
    (["--model", "bundled:digits-0.25", "--sigma", "0.25", "--noise", "laplace", "--sequential",
      "--target-radius", "0.5"], "does not support noise='laplace'"),
    (["--method", "dual", "--model", "bundled:digits-dual-a-0.25", "--model2", "bundled:digits-dual-b-0.25",
      "--sigma", "0.25", "--noise", "laplace"], "--noise is an option of --method cohen"),
    (["--model", "bundled:digits-0.25", "--sigma", "0.25", "--keep", "16"], "--keep is an option of --method ablation"),
])
def test_threat_model_options_are_checked(tmp_path, args, message):
    out = tmp_path / "out.tsv"
    result = run_cli("certify", *args, "--out", out, *RUN)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert not out.exists()
