"""Denoise-then-classify (Carlini et al. 2023) and noise-level-conditioned base models."""
import json
import math
import socket
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from scipy.stats import norm

from robustcert import ABSTAIN, CheckpointError, InvalidArgumentError, ShapeError, Smooth, load_model
from robustcert.methods.diffusion import (
    DiffusionDenoiser, MissingDependencyError, denoised_classifier, load_denoiser,
    select_timestep, with_denoiser,
)
from robustcert.models import LoadedModel

BUNDLED = "bundled:digits-ddpm"


# ----------------------------------------------------------------------------- helpers
def linear_alphas_cumprod(T=1000, beta_start=1e-4, beta_end=0.02):
    """abar_t = prod_{i<=t} (1 - beta_i), beta linear from beta_start to beta_end (Ho et al. 2020)."""
    abar, product = [], 1.0
    for i in range(T):
        product *= 1.0 - (beta_start + (beta_end - beta_start) * i / (T - 1))
        abar.append(product)
    return np.array(abar)


def cosine_t_star(sigma, T=1000, s=0.008):
    """Closed-form inverse for the cosine schedule (Nichol and Dhariwal 2021) as diffusers indexes it:
    abar_t = f((t+1)/T) / f(0), f(u) = cos^2((u + s)/(1 + s) pi/2). (1-abar)/abar >= 4 sigma^2
    <=> f(u) <= f(0)/(1 + 4 sigma^2) <=> u >= (1+s)(2/pi) arccos(sqrt(f(0)/(1+4 sigma^2))) - s."""
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    u = (1 + s) * 2 / math.pi * math.acos(math.sqrt(f0 / (1 + 4 * sigma**2))) - s
    return math.ceil(T * u - 1)


class OracleUNet(torch.nn.Module):
    """Knows the clean images: returns the exact epsilon (or v / x0) of x_t, so x0_hat = x."""

    def __init__(self, clean_model_space, abar, kind="epsilon", learned_variance=False, wrap=True):
        super().__init__()
        self.clean, self.abar, self.kind = clean_model_space, abar, kind
        self.learned_variance, self.wrap = learned_variance, wrap
        self.calls = []

    def forward(self, x_t, timesteps):
        t = int(timesteps[0])
        self.calls.append(t)
        a = float(self.abar[t])
        eps = (x_t - math.sqrt(a) * self.clean) / math.sqrt(1 - a)
        out = {"epsilon": eps, "sample": self.clean.expand_as(x_t),
               "v_prediction": math.sqrt(a) * eps - math.sqrt(1 - a) * self.clean}[self.kind]
        if self.learned_variance:
            out = torch.cat([out, torch.randn_like(out)], 1)
        return types.SimpleNamespace(sample=out) if self.wrap else out


def schedule(abar, kind="epsilon"):
    return types.SimpleNamespace(alphas_cumprod=torch.tensor(abar, dtype=torch.float32),
                                 config=types.SimpleNamespace(prediction_type=kind))


@pytest.fixture(scope="module")
def digits():
    from robustcert.data import digits_arrays

    x, y = digits_arrays("test")
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.fixture(scope="module")
def ddpm():
    """The bundled digits DDPM (UNet2DModel + DDPMScheduler), loaded offline."""
    denoiser = load_denoiser(BUNDLED, sigma=0.25)
    return denoiser.unet, types.SimpleNamespace(alphas_cumprod=denoiser.alphas_cumprod)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: the tiny UNet gains nothing from threads


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ----------------------------------------------------------------------------- t* selection
@pytest.mark.parametrize("sigma,expected", [(0.12, 70), (0.25, 145), (0.5, 259), (1.0, 396)])
def test_t_star_linear_schedule_matches_hand_computation(sigma, expected):
    from diffusers import DDPMScheduler

    abar = linear_alphas_cumprod()
    by_hand = next(t for t in range(1000) if (1 - abar[t]) / abar[t] >= 4 * sigma**2)
    assert by_hand == expected  # REFERENCE.md: 0.25 -> 145, 0.5 -> 259, 1.0 -> 396
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    assert DiffusionDenoiser(lambda x, t: x, scheduler, sigma).t_star == expected
    assert select_timestep(abar, sigma) == expected
    # the smallest such t: one step earlier the model-space noise is still below 2 sigma
    assert (1 - abar[expected - 1]) / abar[expected - 1] < 4 * sigma**2


@pytest.mark.parametrize("sigma,expected", [(0.12, 143), (0.25, 289), (0.5, 496), (1.0, 702)])
def test_t_star_cosine_schedule_matches_closed_form(sigma, expected):
    from diffusers import DDPMScheduler

    assert cosine_t_star(sigma) == expected
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    assert DiffusionDenoiser(lambda x, t: x, scheduler, sigma).t_star == expected


def test_t_star_uses_the_data_range_scale():
    abar = linear_alphas_cumprod()
    # noise sigma in [0,255] units is sigma/255 in [0,1]; in [-1,1] units it is already model-space
    assert select_timestep(abar, 0.25 * 255, data_range=(0, 255)) == 145
    assert select_timestep(abar, 0.5, data_range=(-1, 1)) == 145
    assert select_timestep(abar, 0.25, data_range=(0, 2)) == select_timestep(abar, 0.125)


@pytest.mark.parametrize("kwargs,match", [
    ({"sigma": 0}, "sigma"), ({"sigma": -1}, "sigma"), ({"sigma": 200.0}, "beyond the diffusion schedule"),
    ({"data_range": (1, 0)}, "data_range"), ({"data_range": (0, float("inf"))}, "data_range"),
])
def test_bad_denoiser_arguments(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        DiffusionDenoiser(lambda x, t: x, schedule(linear_alphas_cumprod()), **{"sigma": 0.25, **kwargs})


def test_bad_schedule_and_unet():
    with pytest.raises(InvalidArgumentError, match="non-increasing"):
        DiffusionDenoiser(lambda x, t: x, schedule([0.5, 0.9]), 0.25)
    with pytest.raises(InvalidArgumentError, match="callable"):
        DiffusionDenoiser("unet", schedule(linear_alphas_cumprod()), 0.25)
    with pytest.raises(InvalidArgumentError, match="prediction_type"):
        DiffusionDenoiser(lambda x, t: x, schedule(linear_alphas_cumprod(), "flow"), 0.25)


# ----------------------------------------------------------------------------- the formulas
@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)])
@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_one_shot_inverts_the_forward_process_with_an_oracle(data_range, kind):
    """With the exact noise prediction the one-shot estimate returns the clean image: checks the
    scaling to [-1,1], x_t = sqrt(abar)(s(x+delta-lo)-1), the x0 formula and the map back."""
    lo, hi = data_range
    sigma = 0.25 * (hi - lo)
    abar = linear_alphas_cumprod()
    generator = torch.Generator().manual_seed(0)
    clean = lo + (hi - lo) * torch.rand(6, 1, 8, 8, generator=generator)
    noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
    unet = OracleUNet(2 * (clean - lo) / (hi - lo) - 1, abar, kind)
    denoiser = DiffusionDenoiser(unet, schedule(abar, kind), sigma, data_range=data_range)
    assert denoiser.t_star == 145
    out = denoiser(noisy)
    assert unet.calls == [145]
    assert torch.allclose(out, clean, atol=1e-4 * (hi - lo))
    assert F.mse_loss(out, clean) < 1e-6 * F.mse_loss(noisy, clean)


def test_learned_variance_outputs_and_plain_tensor_outputs_work():
    abar = linear_alphas_cumprod()
    clean = torch.rand(3, 2, 4, 4)
    noisy = clean + 0.5 * torch.randn(clean.shape)
    for unet in (OracleUNet(2 * clean - 1, abar, learned_variance=True), OracleUNet(2 * clean - 1, abar, wrap=False)):
        assert torch.allclose(DiffusionDenoiser(unet, schedule(abar), 0.5)(noisy), clean, atol=1e-4)


def test_output_is_clipped_to_the_data_range():
    abar = linear_alphas_cumprod()
    wild = DiffusionDenoiser(lambda x, t: -100 * torch.ones_like(x), schedule(abar), 64.0, data_range=(0, 255))
    out = wild(torch.rand(2, 1, 8, 8) * 255)
    assert torch.allclose(out, torch.full_like(out, 255.0))


def test_multistep_ddim_chain_with_an_oracle_and_its_timesteps():
    abar = linear_alphas_cumprod()
    clean = torch.rand(4, 1, 8, 8)
    noisy = clean + 0.25 * torch.randn(clean.shape)
    unet = OracleUNet(2 * clean - 1, abar)
    denoiser = DiffusionDenoiser(unet, schedule(abar), 0.25, multistep=True, steps=5)
    assert denoiser.timesteps[0] == 145 and denoiser.timesteps[-1] == 0 and len(denoiser.timesteps) == 5
    assert torch.allclose(denoiser(noisy), clean, atol=1e-4)
    assert unet.calls == denoiser.timesteps
    full = DiffusionDenoiser(unet, schedule(abar), 0.25, multistep=True)
    assert full.timesteps == list(range(145, -1, -1))  # every timestep: t* + 1 model calls


# ----------------------------------------------------------------------------- the bundled DDPM
@pytest.mark.parametrize("sigma", [0.25, 0.5])
def test_bundled_denoiser_reduces_mse_on_noisy_digits(ddpm, digits, sigma):
    unet, scheduler = ddpm
    x = digits[0][:200]
    noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        denoised = DiffusionDenoiser(unet, scheduler, sigma).eval()(noisy)
    clipped = F.mse_loss(noisy.clamp(0, 1), x).item()  # the best a range projection can do
    assert F.mse_loss(denoised, x).item() < 0.5 * clipped
    assert F.mse_loss(noisy, x).item() == pytest.approx(sigma**2, rel=0.1)


def test_denoiser_adds_no_noise_and_multistep_is_deterministic(ddpm, digits):
    unet, scheduler = ddpm
    noisy = digits[0][:16] + 0.12 * torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    one_shot = DiffusionDenoiser(unet, scheduler, 0.12).eval()
    chain = DiffusionDenoiser(unet, scheduler, 0.12, multistep=True, steps=8).eval()
    with torch.inference_mode():
        first = one_shot(noisy)
        torch.manual_seed(123)  # the global RNG must not matter
        assert torch.equal(first, one_shot(noisy))
        a = chain(noisy)
        torch.manual_seed(456)
        b = chain(noisy)
    assert torch.equal(a, b)
    assert not torch.allclose(a, first)
    assert F.mse_loss(a, digits[0][:16]) < F.mse_loss(noisy.clamp(0, 1), digits[0][:16])


def test_certification_through_the_denoiser_offline(no_network, digits):
    """End to end, offline: bundled DDPM + a classifier trained without noise, through Smooth."""
    x, y = digits[0][:8], digits[1][:8]
    classifier = load_model("bundled:digits-0.00")
    model = denoised_classifier(load_denoiser(BUNDLED, sigma=0.25), classifier)
    smoothed = Smooth(model, num_classes=10, sigma=0.25, input_shape=(1, 8, 8))
    certs = smoothed.certify_batch(x, n0=20, n=100, alpha=0.01, batch_size=500, seed=0)
    correct = [c.prediction == int(label) for c, label in zip(certs, y)]
    assert sum(correct) >= 6
    for cert in certs:
        assert cert.method == "cohen" and cert.sigma == 0.25 and sum(cert.counts) == 100
        if cert.prediction != ABSTAIN:
            assert cert.radius == pytest.approx(0.25 * norm.ppf(cert.p_lower))
    # same seed, same certificates: the composed base model is a deterministic function
    again = smoothed.certify_batch(x[:3], n0=20, n=100, alpha=0.01, batch_size=500, seed=0)
    assert [c.counts for c in again] == [c.counts for c in certs[:3]]


def test_multistep_certifies_through_smooth(ddpm, digits):
    unet, scheduler = ddpm
    model = denoised_classifier(DiffusionDenoiser(unet, scheduler, 0.25, multistep=True, steps=3),
                                load_model("bundled:digits-0.00"))
    smoothed = Smooth(model, num_classes=10, sigma=0.25)
    first = smoothed.certify_batch(digits[0][:2], n0=10, n=30, alpha=0.05, seed=1)
    second = smoothed.certify_batch(digits[0][:2], n0=10, n=30, alpha=0.05, seed=1)
    assert [c.counts for c in first] == [c.counts for c in second]
    assert sum(first[0].counts) == 30


# ----------------------------------------------------------------------------- composition
class ShapeRecorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape[1:]))
        return torch.stack([x.flatten(1).mean(1), -x.flatten(1).mean(1)], 1)


def test_composition_resizes_to_the_classifier_input():
    identity = torch.nn.Identity()
    classifier = ShapeRecorder()
    x = torch.full((3, 1, 8, 8), 0.7)
    out = denoised_classifier(identity, classifier, resize_to=16)(x)
    assert classifier.shapes == [(1, 16, 16)]
    assert torch.allclose(out[:, 0], torch.full((3,), 0.7))  # a constant image stays constant
    denoised_classifier(identity, classifier, resize_to=(4, 6))(x)
    denoised_classifier(identity, classifier)(x)
    assert classifier.shapes[1:] == [(1, 4, 6), (1, 8, 8)]
    with pytest.raises(InvalidArgumentError, match="resize_to"):
        denoised_classifier(identity, classifier, resize_to=(1, 2, 3))


def test_with_denoiser_resizes_for_a_classifier_of_another_size_and_records_parameters():
    classifier = ShapeRecorder()
    loaded = LoadedModel(classifier, "recorder", num_classes=2, input_shape=(1, 16, 16))
    composed = with_denoiser(loaded, BUNDLED, 0.5, (1, 8, 8))
    parameters = composed.module.settings()  # what a dataset run records about the denoiser
    assert composed.input_shape == (1, 8, 8) and composed.module.resize_to == (16, 16)
    assert parameters["denoiser"] == BUNDLED and parameters["denoiser_t_star"] == 259
    assert len(parameters["denoiser_sha256"]) == 64
    Smooth(composed.module, 2, 0.5, input_shape=composed.input_shape).predict(torch.rand(1, 8, 8), n=10)
    assert set(classifier.shapes) == {(1, 16, 16)}
    assert with_denoiser(loaded, None, 0.5, (1, 8, 8)) is loaded
    with pytest.raises(ShapeError, match="channel"):
        with_denoiser(LoadedModel(classifier, "rgb", input_shape=(3, 8, 8)), BUNDLED, 0.5, (1, 8, 8))


def test_denoiser_refuses_inputs_of_another_size(ddpm):
    unet, scheduler = ddpm
    model = denoised_classifier(DiffusionDenoiser(unet, scheduler, 0.25), ShapeRecorder())
    with pytest.raises(ShapeError, match="8x8"):
        Smooth(model, 2, 0.25).certify(torch.rand(1, 16, 16), n0=5, n=5)


def test_sigma_mismatch_warns_but_runs(ddpm):
    unet, scheduler = ddpm
    model = denoised_classifier(DiffusionDenoiser(unet, scheduler, 0.25), ShapeRecorder())
    assert model.takes_sigma
    with pytest.warns(RuntimeWarning, match="sigma=0.25"):
        Smooth(model, 2, 0.5).predict(torch.rand(1, 8, 8), n=10)


def test_tiny_random_unet_saved_flat_loads_offline(tmp_path, no_network):
    """A flat save_pretrained folder (unet config + scheduler config side by side) also loads."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    unet.save_pretrained(tmp_path)
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").save_pretrained(tmp_path)
    denoiser = load_denoiser(tmp_path, sigma=0.5)
    assert denoiser.t_star == 496
    cert = Smooth(denoised_classifier(denoiser, load_model("bundled:digits-0.00")), 10, 0.5).certify(
        torch.rand(1, 8, 8), n0=10, n=20, alpha=0.1)
    assert sum(cert.counts) == 20


# ----------------------------------------------------------------------------- loading errors
def test_missing_and_broken_denoiser_folders(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_denoiser(tmp_path / "nope", sigma=0.25)
    with pytest.raises(CheckpointError, match="no bundled denoiser 'nope'"):
        load_denoiser("bundled:nope", sigma=0.25)
    with pytest.raises(CheckpointError, match="cannot load the diffusion model"):
        load_denoiser(tmp_path, sigma=0.25)  # an empty folder


def test_importing_robustcert_does_not_import_diffusers():
    code = ("import sys, robustcert, robustcert.cli, robustcert.methods.diffusion; "
            "assert 'diffusers' not in sys.modules, 'diffusers was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_diffusers_gives_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now raises ImportError
    with pytest.raises(MissingDependencyError, match=r'pip install -e "\.\[diffusion\]" in the robustcert checkout'):
        load_denoiser(BUNDLED, sigma=0.25)
    from robustcert.cli import main

    result = CliRunner().invoke(main, ["certify", "--model", "bundled:digits-0.00", "--denoiser", BUNDLED,
                                       "--sigma", "0.25", "--n", "10", "--max", "1", "--out", str(tmp_path / "a.tsv")])
    assert result.exit_code == 2
    assert 'pip install -e ".[diffusion]"' in result.output
    assert len(result.output.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the CLI
def test_cli_certify_and_predict_with_the_bundled_denoiser(tmp_path, no_network):
    from robustcert.cli import main
    from robustcert.results import read_results

    out = tmp_path / "cert.tsv"
    common = ["--model", "bundled:digits-0.00", "--denoiser", BUNDLED, "--sigma", "0.5", "--max", "3", "--batch", "400"]
    result = CliRunner().invoke(main, ["certify", *common, "--n0", "20", "--n", "100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_results(out)) == 3
    sidecar = json.loads(out.with_name("cert.tsv.json").read_text())
    assert sidecar["parameters"]["denoiser"] == BUNDLED
    assert sidecar["parameters"]["denoiser_t_star"] == 259
    result = CliRunner().invoke(main, ["predict", *common, "--n", "50", "--out", str(tmp_path / "pred.tsv")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "pred.tsv.json").read_text())["parameters"]["denoiser_t_star"] == 259
    result = CliRunner().invoke(main, ["certify", *common[:2], "--denoiser", str(tmp_path / "missing"), "--sigma",
                                       "0.5", "--out", str(tmp_path / "x.tsv")])
    assert result.exit_code == 2 and "denoiser folder not found" in result.output
    # --denoiser-steps: the deterministic DDIM chain, recorded in the sidecar; refused without --denoiser
    result = CliRunner().invoke(main, ["certify", *common, "--denoiser-steps", "2", "--n0", "20", "--n", "50",
                                       "--out", str(tmp_path / "ddim.tsv")])
    assert result.exit_code == 0, result.output
    parameters = json.loads((tmp_path / "ddim.tsv.json").read_text())["parameters"]
    assert parameters["denoiser_multistep"] is True and parameters["denoiser_steps"] == 2
    result = CliRunner().invoke(main, ["certify", *common[:2], "--denoiser-steps", "2", "--sigma", "0.5",
                                       "--out", str(tmp_path / "y.tsv")])
    assert result.exit_code == 2 and "--denoiser-steps needs --denoiser" in result.output
    assert not (tmp_path / "y.tsv").exists()


# ----------------------------------------------------------------------------- rRCM-style models
class NoiseConditioned(torch.nn.Module):
    """A noise-level-conditioned base model (rRCM family): its answer depends on the sigma it is
    given (class 1 above 0.3, class 0 below), not on the input."""

    takes_sigma = True

    def __init__(self):
        super().__init__()
        self.seen = set()

    def forward(self, x, sigma):
        self.seen.add(sigma)
        logits = torch.zeros(x.shape[0], 3)
        logits[:, 1 if sigma > 0.3 else 0] = 1.0
        return logits


@pytest.mark.parametrize("sigma,expected", [(0.25, 0), (0.5, 1)])
def test_noise_level_conditioned_model_through_smooth(sigma, expected):
    model = NoiseConditioned()
    n, alpha = 1000, 0.01
    cert = Smooth(model, num_classes=3, sigma=sigma).certify(torch.zeros(4), n0=10, n=n, alpha=alpha)
    assert model.seen == {sigma}
    assert cert.prediction == expected
    # every vote for the class: pA_lower = alpha^(1/n), R = sigma Phi^-1(alpha^(1/n))
    assert cert.radius == pytest.approx(sigma * norm.ppf(alpha ** (1 / n)), rel=1e-6)
    assert Smooth(model, num_classes=3, sigma=sigma).predict(torch.zeros(4), n=100).prediction == expected
