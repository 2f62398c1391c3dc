"""SmoothAdv PGD on the smoothed classifier (Salman et al. 2019): the closed form on a linear model,
the ball and the box, reproducibility, that it lowers the smoothed accuracy, a soundness
cross-check against CERTIFY, the attack command's files and errors, and SmoothAdv training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustcert import ABSTAIN, InvalidArgumentError, RunError, Smooth, load_dataset, load_model
from robustcert.methods.attack import SmoothedPGD, pgd_on_smoothed, smoothed_log_probability
from robustcert.results import (
    EMPIRICAL, ResultsError, attack_summary, check_derived_output, read_results, table_from_files,
)
from robustcert.runs.attack import attack_dataset
from robustcert.runs.train import train_model
from test_train import invoke, one_error_line  # the CLI helpers of the train tests


def linear_model(d: int = 16, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    """A 2-class linear classifier on flattened 1x4x4 inputs, and its weight rows."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 2))
    return model.eval(), model[1].weight.detach().clone()


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_on_a_linear_model_the_attack_moves_by_eps_against_the_class_weights(steps):
    """For logits W x + b every noise draw's gradient of log G_y is a positive multiple of w_y - w_other,
    so PGD goes straight along -(w_y - w_other) and ends on the sphere of radius eps (the box is far)."""
    model, weight = linear_model()
    x = torch.full((1, 1, 4, 4), 0.5)
    eps = 0.1
    for label in (0, 1):
        direction = weight[1 - label] - weight[label]
        direction = (direction / direction.norm()).view(1, 1, 4, 4)
        attack = SmoothedPGD(model, sigma=0.3, eps=eps, steps=steps, samples=8)
        found = attack.attack_batch(x, [label], seed=1, indices=[7])
        assert torch.allclose(found.adversarial, x + eps * direction, atol=1e-6)
        assert found.distance[0] == pytest.approx(eps, abs=1e-6)
    assert all(p.grad is None for p in model.parameters())  # gradients go to the inputs only


def test_the_attack_stays_in_the_ball_and_in_the_box():
    model, weight = linear_model(seed=3)
    xs = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    xs[:3] = (xs[:3] > 0.5).float()  # corners of the box: most directions leave it
    for eps in (0.05, 0.7, 3.0):
        found = SmoothedPGD(model, sigma=0.5, eps=eps, steps=7, samples=4).attack_batch(xs, [0, 1, 0, 1, 0, 1])
        adversarial = found.adversarial
        assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
        distances = (adversarial - xs).flatten(1).norm(dim=1)
        assert (distances <= eps * (1 + 1e-5)).all()
        assert distances.tolist() == pytest.approx(found.distance)
        # it still moves: the loss at the label never goes down
        labels = torch.tensor([0, 1, 0, 1, 0, 1])
        noise = SmoothedPGD(model, sigma=0.5, eps=eps, steps=7, samples=4).draw_noise(xs, 0, range(6))
        with torch.no_grad():
            before = smoothed_log_probability(model, xs, noise).gather(1, labels.view(-1, 1))
            after = smoothed_log_probability(model, adversarial, noise).gather(1, labels.view(-1, 1))
        assert (after <= before + 1e-6).all()


def test_the_attack_is_reproducible_and_seeded_per_input():
    model = load_model("bundled:digits-0.25")
    dataset = load_dataset("digits")
    xs = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(4)])
    labels = [dataset[i][1] for i in range(4)]
    attack = SmoothedPGD(model, sigma=0.25, eps=0.5, steps=5, samples=8)
    a = attack.attack_batch(xs, labels, seed=3, indices=[10, 11, 12, 13]).adversarial
    b = attack.attack_batch(xs, labels, seed=3, indices=[10, 11, 12, 13]).adversarial
    assert torch.equal(a, b)
    alone = attack.attack_batch(xs[2:3], labels[2:3], seed=3, indices=[12]).adversarial
    assert torch.allclose(alone, a[2:3], atol=1e-5)  # an input's draws do not depend on its neighbours
    other = attack.attack_batch(xs, labels, seed=4, indices=[10, 11, 12, 13]).adversarial
    assert not torch.equal(a, other)


@pytest.mark.parametrize("change,message", [
    (dict(eps=0), "eps must be a finite number > 0"),
    (dict(eps=float("nan")), "eps must be a finite number > 0"),
    (dict(steps=0), "steps must be >= 1"),
    (dict(samples=0), "m (noise samples of the attack) must be >= 1"),
    (dict(sigma=-1.0), "sigma"),
])
def test_bad_attack_arguments_are_refused(change, message):
    model, _ = linear_model()
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SmoothedPGD(model, **{**dict(sigma=0.25, eps=0.5, steps=2, samples=2), **change})


def test_the_attack_lowers_the_smoothed_accuracy_on_digits(one_thread):
    smoothed = Smooth(load_model("bundled:digits-0.25"), num_classes=10, sigma=0.25)
    frame = attack_dataset(smoothed, "digits", None, eps=1.0, steps=10, m=16, n=500, max_inputs=30, progress=False)
    summary = attack_summary(frame)
    assert summary["clean accuracy"] >= 0.9
    assert summary[EMPIRICAL] <= summary["clean accuracy"] - 0.4
    assert summary["max distance"] <= 1.0 + 1e-5
    assert frame["correct_adv"].tolist() == [int(a == y) for a, y in zip(frame["predict_adv"], frame["label"])]


def test_certified_inputs_are_never_broken_within_their_radius(one_thread):
    """Soundness cross-check: an input certified at radius R >= eps with class c keeps class c (or PREDICT
    abstains) after the attack at eps; a violation is a bug or a Monte Carlo failure (rate alpha,
    fixed seeds: deterministic). Control: at eps = 2 the same attack changes some of them, so the
    check has power."""
    smoothed = Smooth(load_model("bundled:digits-0.25"), num_classes=10, sigma=0.25)
    dataset = load_dataset("digits")
    indices = list(range(0, 240, 4))
    xs = torch.stack([torch.as_tensor(dataset[i][0]) for i in indices])
    certificates = smoothed.certify_batch(xs, n0=100, n=2000, alpha=0.001, seed=0, indices=indices)
    eps = 0.25
    kept = [row for row, c in enumerate(certificates) if c.prediction != ABSTAIN and c.radius >= eps]
    assert len(kept) >= 20
    classes = [certificates[row].prediction for row in kept]

    def changed(radius):
        attack = SmoothedPGD(smoothed.model, sigma=0.25, eps=radius, steps=10, samples=16)
        found = attack.attack_batch(xs[kept], classes, seed=5, indices=[indices[r] for r in kept])
        predictions = smoothed.predict_batch(found.adversarial, n=2000, alpha=0.001, seed=6,
                                             indices=[indices[r] for r in kept])
        return sum(p.prediction not in (c, ABSTAIN) for p, c in zip(predictions, classes))

    assert changed(eps) == 0
    assert changed(2.0) >= 5


# --------------------------------------------------------------------------- command line and files
ATTACK = ("attack", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--eps", "0.5", "--steps", "3", "--m", "4",
          "--n", "200", "--threads", "1", "--quiet")


def test_attack_command_writes_tsv_and_sidecar_and_never_overwrites(tmp_path):
    out = tmp_path / "a.tsv"
    result = invoke(*ATTACK, "--max", "4", "--out", out)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].split("\t") == ["idx", "label", "predict_clean", "predict_adv", "correct_adv", "distance", "time"]
    assert len(lines) == 5
    frame = read_results(out)
    assert (frame["distance"] <= 0.5 + 1e-5).all() and set(frame["correct_adv"]) <= {0, 1}
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["kind"] == "attack" and sidecar["runs"][-1]["status"] == "finished"
    p = sidecar["parameters"]
    assert (p["eps"], p["steps"], p["attack_samples"], p["n"], p["step_size"]) == (0.5, 3, 4, 200, pytest.approx(1 / 3))
    assert "not a certificate" in p["claim"] and sum(p["alpha_spending"].values()) == pytest.approx(p["alpha"])
    before = out.read_bytes()
    one_error_line(invoke(*ATTACK, "--max", "4", "--out", out), "already exists")
    assert out.read_bytes() == before
    one_error_line(invoke(*ATTACK[:6], "1.0", *ATTACK[7:], "--max", "4", "--out", out, "--resume"),
                   "differs from the first run in eps")
    assert out.read_bytes() == before
    # an interrupted run (two rows and half a row written) resumes to the same rows
    out.write_text("\n".join(lines[:3]) + "\n" + lines[3][:5])
    result = invoke(*ATTACK, "--max", "4", "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    resumed = read_results(out)
    assert resumed.drop(columns="time").equals(frame.drop(columns="time"))
    assert len(json.loads(Path(f"{out}.json").read_text())["runs"]) == 2
    assert "empirical robust accuracy at eps=0.5 (an upper bound, not a certificate)" in result.output
    # table summarises it (its own columns, no certified accuracy); nothing derived may overwrite it
    attack_rows = table_from_files([out])
    assert list(attack_rows.columns) == ["eps", "clean accuracy", "abstained at x", "abstained at x_adv", "broken",
                                         EMPIRICAL, "rows"]
    assert attack_rows["eps"].iloc[0] == 0.5 and attack_rows["rows"].iloc[0] == 4
    shown = invoke("table", out)
    assert shown.exit_code == 0 and EMPIRICAL in shown.output
    with pytest.raises(ResultsError, match="it is an attack result file"):
        check_derived_output(out, [])
    one_error_line(invoke("plot", out, "--out", tmp_path / "a.png"), "is an attack TSV")
    # beside it, the certified accuracy at r = eps of the same images (a certify file of other images is refused)
    certified = tmp_path / "c.tsv"
    assert invoke("certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n0", "20", "--n", "200",
                  "--max", "6", "--quiet", "--out", certified).exit_code == 0
    both = table_from_files([out, certified], labels=["attack", "cohen"])
    assert list(both.index) == ["attack"] and "certified at r=eps (cohen)" in both.columns
    expected = read_results(certified).head(4)
    assert both["certified at r=eps (cohen)"].iloc[0] == pytest.approx(
        float(((expected["radius"] >= 0.5) & (expected["correct"] == 1)).mean()))
    few = tmp_path / "few.tsv"
    assert invoke("certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n0", "20", "--n", "200",
                  "--max", "2", "--quiet", "--out", few).exit_code == 0
    one_error_line(invoke("table", out, few), "lacks 2 of the images")


@pytest.mark.parametrize("change,message", [
    (["--eps", "0"], "eps must be a finite number > 0"),
    (["--eps", "-0.5"], "eps must be a finite number > 0"),
    (["--steps", "0"], "steps must be >= 1"),
    (["--m", "0"], "m (noise samples of the attack) must be >= 1"),
    (["--n", "0"], "n must be >= 1"),
    (["--alpha", "1.5"], "alpha"),
])
def test_attack_errors_are_one_line_and_write_nothing(tmp_path, change, message):
    out = tmp_path / "a.tsv"
    one_error_line(invoke(*ATTACK, "--max", "2", "--out", out, *change), message)
    assert not out.exists() and not Path(f"{out}.json").exists()


def test_attack_refuses_the_sound_float_mode():
    smoothed = Smooth(load_model("bundled:digits-0.25"), num_classes=10, sigma=0.25, sound_float=True, quantization=16)
    with pytest.raises(InvalidArgumentError, match="off the grid"):
        attack_dataset(smoothed, "digits", None, eps=0.5, n=10, max_inputs=1, progress=False)


# --------------------------------------------------------------------------- SmoothAdv training
FAST = dict(epochs=2, batch_size=64, lr=0.05, threads=1, progress=False)


def test_smoothadv_training_trains_on_attacked_inputs_and_records_it(tmp_path, one_thread):
    out = tmp_path / "sa.pt"
    result = train_model("digits", out, sigma=0.25, adversarial=0.5, noise_copies=2, **{**FAST, "epochs": 1})
    p = json.loads(Path(f"{out}.json").read_text())["parameters"]
    assert (p["adversarial_eps"], p["attack_steps"], p["noise_copies"]) == (0.5, 2, 2)
    assert "Salman" in p["adversarial_attack"]
    assert torch.load(out, weights_only=True)["training"]["adversarial_eps"] == 0.5
    plain = train_model("digits", None, sigma=0.25, noise_copies=2, **{**FAST, "epochs": 1})
    assert not torch.equal(next(iter(plain.model.state_dict().values())),
                           next(iter(result.model.state_dict().values())))
    # same seed, weights and noise: the attacked batches cost more than the clean ones
    assert result.history["loss"].iloc[0] > plain.history["loss"].iloc[0] + 0.05
    assert plain.parameters["adversarial_eps"] is None


def test_smoothadv_training_resumes_to_the_uninterrupted_model(tmp_path, one_thread):
    options = dict(sigma=0.25, adversarial=0.5, attack_steps=1, **FAST)
    full = train_model("digits", tmp_path / "full.pt", **options)

    class Killed(Exception):
        pass

    def kill(line):
        raise Killed(line)

    with pytest.raises(Killed):
        train_model("digits", tmp_path / "part.pt", log=kill, **options)
    resumed = train_model("digits", tmp_path / "part.pt", resume=True, **options)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(RunError, match="differs from the first run in adversarial_eps"):
        train_model("digits", tmp_path / "part.pt", resume=True, **{**options, "adversarial": 0.25})


@pytest.mark.parametrize("change,message", [
    (["--attack-steps", "2"], "give adversarial (--adversarial EPS)"),
    (["--adversarial", "0"], "eps must be a finite number > 0"),
    (["--adversarial", "0.5", "--attack-steps", "0"], "attack_steps must be >= 1"),
])
def test_smoothadv_train_errors_are_one_line(tmp_path, change, message):
    out = tmp_path / "m.pt"
    one_error_line(invoke("train", "--sigma", "0.25", "--epochs", "1", "--out", out, "--quiet", *change), message)
    assert not out.exists()


def test_linear_closed_form_matches_numpy():
    """pgd_on_smoothed with one step from the centre of the box: x + eps * unit(-(w_y - w_o)) in numpy."""
    model, weight = linear_model(seed=5)
    w = weight.numpy().astype(np.float64)
    x = torch.full((1, 1, 4, 4), 0.5)
    adversarial = pgd_on_smoothed(model, x, torch.tensor([1]), torch.zeros(3, 1, 1, 4, 4), 0.2, 1).numpy().ravel()
    direction = w[0] - w[1]
    np.testing.assert_allclose(adversarial, 0.5 + 0.2 * direction / np.linalg.norm(direction), atol=1e-6)


def test_on_a_linear_model_certified_exact_and_empirical_accuracies_are_in_order(tmp_path, one_thread):
    """The audit's case. A 2-class linear model: its Gaussian-smoothed classifier is the model itself,
    and an input is robust at eps exactly when it is classified correctly more than eps from the
    hyperplane (every ball here lies inside the box). So, up to PREDICT's and CERTIFY's errors
    (fixed seeds: deterministic):  certified accuracy at eps <= exact robust accuracy <= the attack's
    empirical robust accuracy. 40 inputs lie just beyond eps: certified, and the attack brings them
    to the hyperplane, where PREDICT abstains; counting those abstentions as broken (the attack's old
    rule) put its "upper bound" below the certified accuracy."""
    d, sigma, eps, count = 16, 0.25, 0.1, 200
    model, weight = linear_model(d, seed=3)
    normal = weight[1] - weight[0]
    unit = normal / normal.norm()
    with torch.no_grad():  # the hyperplane through the centre of the box: class 1 iff normal . (x - 0.5) > 0
        model[1].bias.copy_(torch.tensor([0.0, -0.5 * float(normal.sum())]))
    generator = torch.Generator().manual_seed(0)
    offsets = 0.1 * (torch.rand(count, d, generator=generator) - 0.5)
    offsets -= (offsets @ unit)[:, None] * unit  # along the hyperplane
    signed = torch.cat([torch.rand(count - 40, generator=generator) * 0.6 - 0.2, torch.full((40,), eps + 0.012)])
    x = 0.5 + offsets + signed[:, None] * unit
    assert float(x.min()) >= eps and float(x.max()) <= 1 - eps  # each ball inside [0, 1]
    labels = (signed > 0).long()
    labels[:20] = 1 - labels[:20]  # some misclassified inputs too
    data = tmp_path / "linear.npz"
    np.savez(data, x=x.view(count, 1, 4, 4).numpy().astype(np.float32), y=labels.numpy())
    exact = int(((signed.abs() > eps) & ((signed > 0).long() == labels)).sum())

    smoothed = Smooth(model, num_classes=2, sigma=sigma)
    dataset = load_dataset(f"npz:{data}")
    from robustcert import certify_dataset

    certified = certify_dataset(smoothed, dataset, n0=100, n=20_000, alpha=0.001, seed=1, progress=False)
    certified_count = int((certified["correct"].astype(bool) & (certified["radius"] >= eps)).sum())
    attacked = attack_dataset(smoothed, dataset, None, eps=eps, steps=10, m=16, n=1000, alpha=0.001, seed=2,
                              progress=False)
    summary = attack_summary(attacked)
    empirical_count = round(summary[EMPIRICAL] * count)
    assert certified_count <= exact <= empirical_count
    assert certified_count > 0.3 * count and empirical_count < count  # neither bound is trivial
    abstained = (attacked["predict_adv"] == ABSTAIN).sum()
    assert abstained >= 20 and round(summary["abstained at x_adv"] * count) == abstained
    assert int(attacked["correct_adv"].sum()) < certified_count  # the old rule's "upper bound" fell below
