"""Architectures and checkpoint formats: reference checkpoints, state_dicts, TorchScript, bundled."""
import pytest
import torch

from robustcert import CheckpointError, NormalizeLayer, build_model, load_checkpoint, load_model
from robustcert.models import bundled_names


def _same_outputs(a, b, shape):
    x = torch.rand(2, *shape)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


def test_normalize_layer_has_no_saved_state_so_keys_start_with_1():
    model = build_model("cifar_resnet20")
    assert isinstance(model[0], NormalizeLayer)
    keys = list(model.state_dict())
    assert keys and all(k.startswith("1.") for k in keys)
    assert "1.layer1.0.conv1.weight" in keys and "1.fc.weight" in keys
    assert "1.layer2.0.downsample.0.weight" in keys and "1.layer2.0.downsample.1.running_mean" in keys


def test_cifar_resnet110_shape():
    model = build_model("cifar_resnet110").eval()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(1.73e6, rel=0.01)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_reference_checkpoint_format(tmp_path):
    """torch.save({'epoch', 'arch', 'state_dict', 'optimizer'}) with keys '1.' loads unchanged."""
    source = build_model("cifar_resnet20")
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 90, "arch": "cifar_resnet20", "state_dict": source.state_dict(),
                "optimizer": optimizer.state_dict()}, path)
    loaded = load_checkpoint(path)
    assert loaded.arch == "cifar_resnet20" and loaded.num_classes == 10 and loaded.input_shape == (3, 32, 32)
    assert loaded.metadata == {"epoch": 90, "arch": "cifar_resnet20"}
    assert _same_outputs(source, loaded.module, (3, 32, 32))


def test_dataparallel_prefix_is_stripped(tmp_path):
    """ImageNet reference checkpoints have keys '1.module.' (DataParallel)."""
    source = build_model("cifar_resnet20", num_classes=7)
    state = {k.replace("1.", "1.module.", 1): v for k, v in source.state_dict().items()}
    path = tmp_path / "dp.pth.tar"
    torch.save({"arch": "cifar_resnet20", "state_dict": state}, path)
    loaded = load_checkpoint(path)
    assert loaded.num_classes == 7
    assert _same_outputs(source, loaded.module, (3, 32, 32))


def test_plain_state_dict_needs_arch(tmp_path):
    source = build_model("digits_cnn")
    path = tmp_path / "plain.pt"
    torch.save(source[1].state_dict(), path)  # bare network keys, no '1.' prefix
    with pytest.raises(CheckpointError, match="--arch"):
        load_model(path)
    assert _same_outputs(source, load_model(path, arch="digits_cnn"), (1, 8, 8))
    with pytest.raises(CheckpointError, match="does not match architecture"):
        load_model(path, arch="cifar_resnet20")
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_model(path, arch="vgg_nonexistent")


def test_torchscript_file(tmp_path):
    source = build_model("digits_cnn").eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(source, torch.rand(1, 1, 8, 8)), path)
    assert _same_outputs(source, load_model(path), (1, 8, 8))


def test_bundled_models_are_small_and_accurate(digits_test):
    x, y = digits_test
    names = bundled_names()
    assert {"digits-0.12", "digits-0.25", "digits-0.50"} <= set(names)
    for name in ("digits-0.12", "digits-0.25", "digits-0.50"):
        loaded = load_checkpoint(f"bundled:{name}")
        assert loaded.arch == "digits_cnn"
        with torch.no_grad():
            accuracy = (loaded.module(x).argmax(1) == y).float().mean().item()
        assert accuracy > 0.95, (name, accuracy)
