"""Training a denoiser for denoised smoothing (runs/denoiser.py, ``robustcert train-denoiser``) and
the off-the-shelf classifier it serves (``robustcert train --sigma 0``), on tiny data.

CI has no Fashion-MNIST: the data here is the bundled 8x8 digits and a small npz written by the
test; the UNets have a few thousand parameters and train a handful of steps.
"""
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustcert import InvalidArgumentError, RunError, ShapeError
from robustcert.methods.diffusion import load_denoiser, select_timestep, unet_config
from robustcert.runs.denoiser import (
    RECORD_NAME, STATE_NAME, denoising_errors, draw_timesteps, train_denoiser, training_ranges,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models gain nothing from threads
TINY = dict(channels=(8, 16), batch_size=8, validation_images=40, progress=False)


def linear_abar():
    betas = np.linspace(1e-4, 0.02, 1000)
    return np.cumprod(1 - betas)


# ----------------------------------------------------------------------------- timesteps
def test_training_ranges_surround_each_t_star_and_draws_stay_inside():
    abar = linear_abar()
    ranges = training_ranges(abar, [0.25, 0.5], "around", 0.25)
    assert ranges == [(math.floor(145 * 0.75), math.ceil(145 * 1.25)), (math.floor(259 * 0.75), math.ceil(259 * 1.25))]
    assert training_ranges(abar, [0.5], "full") == [(0, 999)]
    assert training_ranges(abar, [0.5], "around", 0.0) == [(259, 259)]
    t = draw_timesteps(ranges, 20000, torch.Generator().manual_seed(0))
    inside = ((t >= 108) & (t <= 182)) | ((t >= 194) & (t <= 324))
    assert bool(inside.all())
    # each range gets about half of the draws, and both ends of a range are drawn
    assert abs(float(((t >= 108) & (t <= 182)).float().mean()) - 0.5) < 0.02
    assert {108, 182, 194, 324} <= set(t.tolist())
    with pytest.raises(InvalidArgumentError, match="window"):
        training_ranges(abar, [0.5], "around", 1.5)
    with pytest.raises(InvalidArgumentError, match="timesteps"):
        training_ranges(abar, [0.5], "middle")


def test_unet_config_checks_the_image_size():
    config = unet_config((1, 28, 28), (16, 32, 64))
    assert config["sample_size"] == 28 and config["block_out_channels"] == (16, 32, 64)
    assert config["norm_num_groups"] == 8
    assert unet_config((3, 8, 12), (6, 12))["sample_size"] == (8, 12)
    with pytest.raises(ShapeError, match="divisible by 8"):
        unet_config((1, 28, 28), (16, 32, 64, 64))
    with pytest.raises(InvalidArgumentError, match="channels"):
        unet_config((1, 28, 28), (0, 4))


# ----------------------------------------------------------------------------- training
def test_train_denoiser_writes_a_folder_that_certify_reads(tmp_path):
    out = tmp_path / "ddpm"
    result = train_denoiser("digits", out, sigmas=0.5, steps=4, save_every=2, seed=1, threads=1, **TINY)
    assert {p.name for p in out.iterdir()} == {"model_index.json", RECORD_NAME, "scheduler", "unet"}
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["kind"] == "train-denoiser" and record["parameters"]["sigmas"] == [0.5]
    assert record["timestep_ranges"] == [[194, 324]]
    assert [row["step"] for row in record["history"]] == [2, 4]
    assert record["history"][-1]["validation"]["0.5"]["t_star"] == 259
    assert record["runs"][-1]["status"] == "finished" and "finished" in record["runs"][-1]
    denoiser = load_denoiser(str(out), sigma=0.5)
    assert denoiser.t_star == 259
    # the saved model is the returned one (the moving average)
    x = torch.rand(3, 1, 8, 8)
    t = torch.full((3,), 259)
    with torch.no_grad():
        assert torch.equal(denoiser.unet(x, t).sample, result.unet(x, t).sample)
    with pytest.raises(RunError, match="already exists"):
        train_denoiser("digits", out, sigmas=0.5, steps=4, **TINY)
    with pytest.raises(RunError, match="no interrupted training run"):
        train_denoiser("digits", out, sigmas=0.5, steps=4, resume=True, **TINY)


def test_an_interrupted_run_resumes_to_the_same_model(tmp_path):
    whole = train_denoiser("digits", None, sigmas=0.25, steps=4, save_every=2, seed=3, threads=1, **TINY)

    def stop_after_first_save(line):
        raise KeyboardInterrupt

    out = tmp_path / "ddpm"
    with pytest.raises(KeyboardInterrupt):
        train_denoiser("digits", out, sigmas=0.25, steps=4, save_every=2, seed=3, threads=1,
                       log=stop_after_first_save, **TINY)
    assert (out / STATE_NAME).is_file()
    assert json.loads((out / RECORD_NAME).read_text())["runs"][-1]["status"] == "interrupted"
    with pytest.raises(RunError, match="parameters differ"):
        train_denoiser("digits", out, sigmas=0.25, steps=5, save_every=2, seed=3, resume=True, **TINY)
    resumed = train_denoiser("digits", out, sigmas=0.25, steps=4, save_every=2, seed=3, threads=1, resume=True,
                             **TINY)
    assert not (out / STATE_NAME).exists()
    for a, b in zip(whole.unet.state_dict().values(), resumed.unet.state_dict().values()):
        assert torch.equal(a, b)
    record = json.loads((out / RECORD_NAME).read_text())
    assert [row["step"] for row in record["history"]] == [2, 4] and len(record["runs"]) == 2


def test_training_lowers_the_denoising_error_on_an_npz_of_its_own(tmp_path):
    """Blobs on 8x8 images: a few dozen steps already denoise better than clipping the noisy image."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"))
    centres = rng.uniform(2, 6, size=(300, 2, 1, 1))
    images = np.exp(-((grid[None] - centres) ** 2).sum(1) / 4.0)[:, None].astype(np.float32)
    path = tmp_path / "blobs.npz"
    np.savez(path, x=images, y=np.zeros(300, dtype=np.int64))
    result = train_denoiser(f"npz:{path}", None, sigmas=0.5, steps=60, lr=5e-3, ema=0.9, validation=None, seed=0,
                            threads=1, **{**TINY, "batch_size": 32})
    errors = denoising_errors(result.unet, result.scheduler, torch.from_numpy(images[:100]), [0.5])["0.5"]
    assert errors["t_star"] == select_timestep(result.scheduler, 0.5)
    assert errors["mse_denoised"] < 0.5 * errors["mse_noisy_clipped"]


def test_bad_denoiser_training_arguments(tmp_path):
    with pytest.raises(InvalidArgumentError, match="sigma"):
        train_denoiser("digits", None, sigmas=0.0, steps=1, **TINY)
    with pytest.raises(InvalidArgumentError, match="ema"):
        train_denoiser("digits", None, sigmas=0.5, steps=1, ema=1.0, **TINY)
    with pytest.raises(ShapeError, match="divisible"):
        train_denoiser("digits", None, sigmas=0.5, steps=1, **{**TINY, "channels": (4, 8, 8, 8, 8)})
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file"):
        train_denoiser("digits", tmp_path / "file", sigmas=0.5, steps=1, **TINY)


# ----------------------------------------------------------------------------- the off-the-shelf classifier
def test_train_at_sigma_zero_trains_on_clean_images():
    from robustcert.runs.train import NoNoise, train_model

    noise = NoNoise()
    clean = torch.rand(2, 5)
    out = torch.empty(3, 5)
    noise.perturb(out, clean[0], None)
    assert torch.equal(out, clean[0].expand(3, 5))
    result = train_model("digits", None, sigma=0, epochs=1, batch_size=128, lr=0.05, progress=False, threads=1)
    assert result.parameters["sigma"] == 0.0 and result.parameters["noise"] == "none"
    row = result.history.iloc[0]
    assert row["val_clean_accuracy"] == row["val_noisy_accuracy"]  # no noise: the same images
    with pytest.raises(InvalidArgumentError, match="sigma"):
        train_model("digits", None, sigma=-0.1, epochs=1, progress=False)


# ----------------------------------------------------------------------------- the command line
def test_cli_train_denoiser_then_certify_through_it(tmp_path):
    from robustcert.cli import main
    from robustcert.results import read_results

    out = tmp_path / "ddpm"
    runner = CliRunner()
    result = runner.invoke(main, ["train-denoiser", "--data", "digits", "--sigma", "0.5", "--channels", "8,16",
                                  "--steps", "3", "--batch", "8", "--save-every", "3", "--threads", "1", "--quiet",
                                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / RECORD_NAME).read_text())["parameters"]["channels"] == [8, 16]
    tsv = tmp_path / "cert.tsv"
    result = runner.invoke(main, ["certify", "--model", "bundled:digits-0.00", "--denoiser", str(out), "--sigma", "0.5",
                                  "--max", "2", "--n0", "10", "--n", "50", "--batch", "64", "--sequential",
                                  "--target-radius", "0.25", "--threads", "1", "--quiet", "--out", str(tsv)])
    assert result.exit_code == 0, result.output
    assert len(read_results(tsv)) == 2
    assert json.loads(tsv.with_name("cert.tsv.json").read_text())["parameters"]["denoiser_t_star"] == 259
    result = runner.invoke(main, ["train-denoiser", "--data", "digits", "--channels", "8,x", "--out", str(out)])
    assert result.exit_code == 2 and "--channels" in result.output
    result = runner.invoke(main, ["train-denoiser", "--data", "digits", "--steps", "1", "--out", str(out)])
    assert result.exit_code != 0 and "already exists" in result.output
    assert len(result.output.strip().splitlines()) == 1
