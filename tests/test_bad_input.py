"""Every bad input raises a robustcert error that names the problem; nothing is certified."""
import pytest
import torch

from robustcert import (
    CheckpointError, InvalidArgumentError, ModelOutputError, RobustCertError, ShapeError, Smooth,
    build_model, load_model,
)

from conftest import LinearBinary


@pytest.fixture
def smoothed():
    return Smooth(LinearBinary(torch.ones(4)), num_classes=2, sigma=0.5)


@pytest.mark.parametrize("sigma", [0, -0.1, float("nan"), float("inf"), "abc"])
def test_sigma_must_be_positive(sigma):
    with pytest.raises(InvalidArgumentError, match="sigma"):
        Smooth(LinearBinary(torch.ones(4)), 2, sigma=sigma)


@pytest.mark.parametrize("alpha", [0, 1, -0.5, 1.5])
def test_alpha_must_be_in_open_unit_interval(smoothed, alpha):
    with pytest.raises(InvalidArgumentError, match="alpha"):
        smoothed.certify(torch.zeros(4), n0=10, n=10, alpha=alpha)
    with pytest.raises(InvalidArgumentError, match="alpha"):
        smoothed.predict(torch.zeros(4), n=10, alpha=alpha)


@pytest.mark.parametrize("kwargs,name", [({"n0": 0}, "n0"), ({"n": 0}, "n"), ({"n": -5}, "n"),
                                          ({"n": 2.5}, "n"), ({"batch_size": 0}, "batch_size")])
def test_sample_counts_must_be_at_least_one(smoothed, kwargs, name):
    with pytest.raises(InvalidArgumentError, match=name):
        smoothed.certify(torch.zeros(4), **{"n0": 10, "n": 10, **kwargs})


def test_num_classes_must_be_at_least_two():
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        Smooth(LinearBinary(torch.ones(4)), num_classes=1, sigma=0.5)


def test_wrong_input_shape_is_reported():
    model = build_model("digits_cnn")
    with pytest.raises(ShapeError, match="shape"):
        Smooth(model, 10, 0.25).certify(torch.zeros(3, 32, 32), n0=10, n=10)
    with pytest.raises(ShapeError, match="no batch dimension"):
        Smooth(model, 10, 0.25, input_shape=(1, 8, 8)).certify(torch.zeros(1, 1, 8, 8), n0=10, n=10)


def test_class_count_mismatch_is_reported():
    model = build_model("digits_cnn")  # 10 outputs
    with pytest.raises(ShapeError, match="10 classes but num_classes=100"):
        Smooth(model, num_classes=100, sigma=0.25).certify(torch.zeros(1, 8, 8), n0=10, n=10)


class NaNModel(torch.nn.Module):
    def forward(self, x):
        out = torch.zeros(x.shape[0], 3)
        out[-1, 0] = float("nan")  # a single bad logit in the batch is enough
        return out


def test_nan_logits_are_reported():
    with pytest.raises(ModelOutputError, match="NaN"):
        Smooth(NaNModel(), 3, 0.5).certify(torch.zeros(2), n0=10, n=100, batch_size=30)


class InfModel(torch.nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = values

    def forward(self, x):
        out = torch.zeros(x.shape[0], 3)
        for column, value in enumerate(self.values):
            out[0, column] = value
        return out


@pytest.mark.parametrize("values", [(float("inf"),), (float("-inf"),), (float("inf"), float("-inf"))])
def test_infinite_logits_are_reported(values):
    with pytest.raises(ModelOutputError, match="infinite"):
        Smooth(InfModel(values), 3, 0.5).certify(torch.zeros(2), n0=10, n=100, batch_size=30)


def test_huge_finite_logits_are_not_mistaken_for_infinite():
    class Huge(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3), 3e38).index_fill_(1, torch.tensor([0]), 0.0)

    cert = Smooth(Huge(), 3, 0.5).certify(torch.zeros(2), n0=10, n=1000, batch_size=1000)
    assert cert.prediction == 1  # argmax of (0, 3e38, 3e38): the first maximum


def test_nan_inputs_are_rejected(smoothed):
    with pytest.raises(InvalidArgumentError, match="NaN"):
        smoothed.certify(torch.tensor([0.0, float("nan"), 0.0, 0.0]), n0=10, n=10)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pth.tar")
    with pytest.raises(CheckpointError, match="no bundled model"):
        load_model("bundled:does-not-exist")


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a torch checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(path)
    good = tmp_path / "truncated.pth"
    torch.save({"arch": "digits_cnn", "state_dict": build_model("digits_cnn").state_dict()}, good)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_model(good)


class Custom(torch.nn.Module):
    def forward(self, x):
        return x


def test_checkpoint_needing_unpickling_is_refused_without_the_flag(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(Custom(), path)
    with pytest.raises(CheckpointError, match="trust-checkpoint"):
        load_model(path)
    assert isinstance(load_model(path, trust_checkpoint=True), Custom)


def test_all_errors_are_robustcert_errors():
    for error in (CheckpointError, InvalidArgumentError, ModelOutputError, ShapeError):
        assert issubclass(error, RobustCertError)


def test_state_dict_entry_that_is_not_a_mapping_of_tensors(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"arch": "digits_cnn", "state_dict": "not a state_dict"}, path)
    with pytest.raises(CheckpointError, match="not a mapping of parameter names to tensors"):
        load_model(path)


def test_file_that_is_not_a_torch_save_is_not_sent_to_trust_checkpoint(tmp_path):
    """An HTML error page saved as a .pth must not be reported as needing --trust-checkpoint."""
    path = tmp_path / "model.pth"
    path.write_bytes(b"<html><body>404 Not Found</body></html>\n")
    with pytest.raises(CheckpointError, match="not a torch.save file") as caught:
        load_model(path)
    assert "trust" not in str(caught.value)


def test_npz_without_inputs_and_non_string_specs_are_data_errors(tmp_path):
    import numpy as np

    from robustcert import DataError, load_dataset

    path = tmp_path / "none.npz"
    np.savez(path, x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="holds no inputs"):
        load_dataset(f"npz:{path}")
    with pytest.raises(DataError, match="specification is a string"):
        load_dataset(None)


def test_loading_a_torchscript_model_prints_no_deprecation_warning(tmp_path):
    """An error about a TorchScript model must be the only line on stderr (torch warns on jit.load)."""
    import warnings

    path = tmp_path / "model.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(path)
    assert [str(w.message) for w in caught] == []


class AlwaysLastOfFive(torch.nn.Module):
    """Scores 5 actions, the last one highest: CartPole has only 2."""

    def forward(self, observations):
        scores = torch.zeros(observations.shape[0], 5)
        scores[:, 4] = 1.0
        return scores


def test_policy_for_another_environment_or_frame_stack_is_a_shape_error():
    from robustcert import PolicySmooth
    from robustcert.rl.policies import load_policy

    loaded = load_policy("cartpole-0.2")  # an MLP on 5 stacked CartPole frames
    for frame_stack in (1, loaded.frame_stack + 1):
        agent = PolicySmooth(loaded.policy, 0.2, frame_stack=frame_stack, num_envs=2)
        with pytest.raises(ShapeError, match="the policy failed on observations of shape"):
            agent.certify("CartPole-v1", 2, [0.1])


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # torch.jit.save / script in this test only
def test_policy_with_more_actions_than_the_environment_is_refused_in_one_line(tmp_path):
    """It crashed with gymnasium's AssertionError; loading it printed torch's jit deprecation warning."""
    import warnings

    from click.testing import CliRunner

    from robustcert.cli import main
    from robustcert.rl.policies import load_policy

    path = tmp_path / "policy.ts"
    torch.jit.save(torch.jit.script(AlwaysLastOfFive()), str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_policy(path)
    assert [str(w.message) for w in caught] == []
    result = CliRunner().invoke(main, ["certify-policy", "--env", "CartPole-v1", "--policy", str(path), "--sigma", "0.2",
                                       "--episodes", "2", "--budgets", "0.1", "--num-envs", "2",
                                       "--out", str(tmp_path / "p.tsv")])
    assert result.exit_code == 2 and result.stderr.splitlines() == [
        "robustcert: error: the policy returned action 4, but the environment's actions are 0..1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.ts"]


@pytest.mark.parametrize("temperatures", ["abc", [None], 0.5])
def test_lvm_temperatures_that_are_not_numbers(temperatures):
    from robustcert import LipschitzSmooth

    with pytest.raises(InvalidArgumentError, match="temperatures must be a list of finite numbers > 0"):
        LipschitzSmooth(build_model("digits_cnn"), 10, 0.25, temperatures=temperatures)


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > pwned.txt",))


def test_malicious_pickle_is_refused_without_running_code_or_warnings(tmp_path, monkeypatch):
    """A plain pickle (protocol 4) with a code-running reducer: refused, nothing runs, no torch warning."""
    import pickle
    import warnings

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": RunsCode()}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="needs full unpickling"):
            load_model(path)
    assert [str(w.message) for w in caught] == [] and not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize("device", ["bogus", "cuda:not-a-number"])
def test_unknown_devices_are_reported(device):
    with pytest.raises(InvalidArgumentError, match="unknown device"):
        Smooth(LinearBinary(torch.ones(4)), 2, 0.5, device=device)
    with pytest.raises(InvalidArgumentError, match="unknown device"):
        load_model("bundled:digits-0.25", device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_unavailable_cuda_is_reported():
    with pytest.raises(InvalidArgumentError, match="no CUDA device"):
        Smooth(LinearBinary(torch.ones(4)), 2, 0.5, device="cuda")


def test_empty_batches_give_no_certificates():
    smoothed = Smooth(LinearBinary(torch.ones(4)), 2, 0.5)
    assert smoothed.certify_batch(torch.zeros(0, 4), n0=10, n=10) == []
    assert smoothed.certify_batch(torch.zeros(0, 4), n0=10, n=10, sequential=True, target_radius=0.1) == []
    assert smoothed.predict_batch(torch.zeros(0, 4), n=10) == []
