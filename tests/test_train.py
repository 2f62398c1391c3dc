"""Training base models (robustcert train / train_model): losses against hand computations, data
readers on synthetic IDX and CIFAR-10 binary files, resume, the checkpoint round trip through
certify (one model and dual branches), and bad input."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from robustcert import DataError, InvalidArgumentError, RunError, ShapeError, load_checkpoint, load_dataset
from robustcert.augment import random_crop_flip
from robustcert.cli import main
from robustcert.losses import consistency_loss, consistency_terms, gaussian_augmentation_loss
from robustcert.models import default_architecture
from robustcert.runs.train import train_model

FAST = dict(epochs=2, batch_size=64, lr=0.05, threads=1, progress=False)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result, message: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("robustcert: error: "), result.stderr
    assert message in result.stderr, result.stderr


# --------------------------------------------------------------------------- synthetic data files
def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: 0, 0, 0x08, ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(folder: Path, train: int = 48, test: int = 20, gzipped: bool = True, seed: int = 0,
                      size: int = 28) -> dict:
    """Four IDX files in ``folder``: images whose class is readable (a bright row at 2 * label)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for part, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 60, (count, size, size)).astype(np.uint8)
        images[np.arange(count), 2 * labels.astype(int) + 4, :] = 250
        arrays[part] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{part}-{kind}-ubyte"
            data = idx_bytes(array)
            if gzipped:
                with gzip.open(folder / f"{name}.gz", "wb") as handle:
                    handle.write(data)
            else:
                (folder / name).write_bytes(data)
    return arrays


def write_cifar_binary(root: Path, per_batch: int = 4, test: int = 6, seed: int = 0) -> dict:
    """cifar-10-batches-bin with five training batches and a test batch of random records."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    records = {}
    for name, count in [*((f"data_batch_{i}.bin", per_batch) for i in range(1, 6)), ("test_batch.bin", test)]:
        block = rng.integers(0, 256, (count, 3073)).astype(np.uint8)
        block[:, 0] = rng.integers(0, 10, count)
        block.tofile(folder / name)
        records[name] = block
    return records


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    arrays = write_idx_dataset(root)
    return root, arrays


# --------------------------------------------------------------------------- losses
def test_consistency_loss_matches_a_hand_computation():
    # two noisy copies of one input, three classes
    logits = torch.tensor([[[2.0, 0.0, -1.0]], [[0.5, 1.0, 0.0]]])
    label = torch.tensor([0])
    p1 = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    p2 = np.exp([0.5, 1.0, 0.0]) / np.exp([0.5, 1.0, 0.0]).sum()
    mean = (p1 + p2) / 2
    cross_entropy = (-np.log(p1[0]) - np.log(p2[0])) / 2
    kl = (np.sum(mean * np.log(mean / p1)) + np.sum(mean * np.log(mean / p2))) / 2
    entropy = -np.sum(mean * np.log(mean))
    loss = consistency_loss(logits, label, lam=10.0, eta=0.5)
    assert loss.cross_entropy.item() == pytest.approx(cross_entropy, rel=1e-6)
    assert loss.consistency.item() == pytest.approx(kl, rel=1e-5)
    assert loss.entropy.item() == pytest.approx(entropy, rel=1e-6)
    assert loss.total.item() == pytest.approx(cross_entropy + 10 * kl + 0.5 * entropy, rel=1e-6)
    # the same numbers from torch's own KL divergence (Jeong and Shin's kl_div(log F_i, F_bar))
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3)
    reference = sum(F.kl_div(F.log_softmax(logits[i], 1), mean_t, reduction="batchmean") for i in range(2)) / 2
    assert loss.consistency.item() == pytest.approx(reference.item(), rel=1e-5)


def test_consistency_terms_vanish_for_identical_copies_and_average_over_the_batch():
    logits = torch.randn(1, 5, 4, generator=torch.Generator().manual_seed(0)).repeat(3, 1, 1)
    kl, entropy = consistency_terms(logits)
    assert kl.item() == pytest.approx(0.0, abs=1e-6)
    p = logits[0].softmax(-1)
    assert entropy.item() == pytest.approx(-(p * p.log()).sum(-1).mean().item(), rel=1e-6)
    # extreme logits stay finite (log space, no clamping): F_1 = (1, e^-160), F_2 = (e^-160, 1), F_bar = (1/2, 1/2),
    # KL(F_bar || F_i) = 1/2 log(1/2) + 1/2 (log(1/2) + 160) = 80 - log 2
    kl, entropy = consistency_terms(torch.tensor([[[80.0, -80.0]], [[-80.0, 80.0]]]))
    assert math.isfinite(kl.item()) and kl.item() == pytest.approx(80.0 - math.log(2), rel=1e-6)
    assert entropy.item() == pytest.approx(math.log(2), rel=1e-6)


def test_gaussian_loss_is_the_cross_entropy_over_all_copies():
    logits = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 4, 2, 1])
    loss = gaussian_augmentation_loss(logits, labels)
    assert loss.total.item() == pytest.approx(F.cross_entropy(logits.reshape(12, 5), labels.repeat(3)).item())
    assert loss.consistency.item() == 0 and loss.entropy.item() == 0
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        consistency_loss(logits[:1], labels, 1.0)
    with pytest.raises(ShapeError):
        gaussian_augmentation_loss(logits, labels[:3])


def test_random_crop_flip_takes_a_window_of_the_padded_image():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    assert out.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    for b in range(2):
        found = [(r, c, flip) for r in range(5) for c in range(5) for flip in (False, True)
                 if torch.equal(out[b], (padded[b, :, r:r + 6, c:c + 6].flip(-1) if flip
                                         else padded[b, :, r:r + 6, c:c + 6]))]
        assert found, "each output must be a (possibly mirrored) window of its padded image"
    again = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    assert torch.equal(out, again)


# --------------------------------------------------------------------------- data readers
def test_idx_files_in_root_and_in_torchvision_layout(tmp_path):
    arrays = write_idx_dataset(tmp_path / "plain", gzipped=False)
    write_idx_dataset(tmp_path / "tv" / "FashionMNIST" / "raw", gzipped=True)
    for spec in (f"mnist:{tmp_path / 'plain'}", f"fashion-mnist:{tmp_path / 'tv'}"):
        test, train, val = (load_dataset(spec, split) for split in ("test", "train", "val"))
        assert (len(test), len(train), len(val)) == (20, 44, 4)  # val: every 12th of 48 training images
        assert test.input_shape == (1, 28, 28) and test.num_classes == 10
        x, y = test[3]
        images, labels = arrays["t10k"]
        assert torch.equal(x[0], torch.from_numpy(images[3].astype(np.float32) / 255)) and y == labels[3]
        xs, ys = val.batch([0, 1])
        assert torch.equal(xs[1, 0], torch.from_numpy(arrays["train"][0][12].astype(np.float32) / 255))
        assert ys.tolist() == arrays["train"][1][[0, 12]].tolist()
    with pytest.raises(DataError, match="no t10k-images-idx3-ubyte"):  # mnist does not look in FashionMNIST/raw
        load_dataset(f"mnist:{tmp_path / 'tv'}")


@pytest.mark.parametrize("damage,message", [
    (lambda b: b"\x01" + b[1:], "IDX header"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "type code 0x0d"),
    (lambda b: b[:-5], "the header announces"),
])
def test_bad_idx_files_are_one_clear_error(tmp_path, damage, message):
    write_idx_dataset(tmp_path, gzipped=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message):
        load_dataset(f"fashion-mnist:{tmp_path}")


def test_idx_labels_and_images_must_agree(tmp_path):
    write_idx_dataset(tmp_path, gzipped=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7, np.uint8)))
    with pytest.raises(DataError, match="20 images but 7 labels"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(20, 12, np.uint8)))
    with pytest.raises(DataError, match="label 12"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    with pytest.raises(DataError, match="split 'all' is not defined"):
        load_dataset(f"fashion-mnist:{tmp_path}", "all")


def test_cifar10_binary_layout_is_read_without_pickle(tmp_path):
    records = write_cifar_binary(tmp_path)
    test, train, val = (load_dataset(f"cifar10:{tmp_path}", split) for split in ("test", "train", "val"))
    assert (len(test), len(train), len(val)) == (6, 18, 2)  # val: every 10th of 20 training images
    assert test.input_shape == (3, 32, 32)
    x, y = test[2]
    record = records["test_batch.bin"][2]
    assert y == record[0]
    assert torch.equal(x[1, 0, :5], torch.from_numpy(record[1 + 1024:1 + 1024 + 5].astype(np.float32) / 255))  # green
    x, y = val[1]  # training image 10 = the 3rd record of data_batch_3
    assert y == records["data_batch_3.bin"][2][0]
    (tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match="data_batch_4.bin is missing"):
        load_dataset(f"cifar10:{tmp_path}", "train")
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="not a whole number"):
        load_dataset(f"cifar10:{tmp_path}", "test")


def test_default_architecture_follows_the_input_shape():
    assert default_architecture((1, 28, 28)) == "mnist_cnn"
    assert default_architecture((1, 28, 14)) == "mnist_sub_28x14"
    assert default_architecture((3, 32, 32)) == "cifar_resnet110"
    assert default_architecture((3, 224, 224)) == "resnet50"
    with pytest.raises(Exception, match="no default architecture"):
        default_architecture((2, 5, 5))


# --------------------------------------------------------------------------- training
def test_gaussian_training_learns_and_writes_a_reference_checkpoint(tmp_path, one_thread):
    out = tmp_path / "d.pt"
    result = train_model("digits", out, sigma=0.25, **{**FAST, "epochs": 4})
    history = result.history
    assert list(history["epoch"]) == [1, 2, 3, 4]
    assert history["val_noisy_accuracy"].iloc[-1] > 0.5 and history["val_clean_accuracy"].iloc[-1] > 0.6
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert (history["consistency_kl"] == 0).all()
    loaded = load_checkpoint(out)  # no arch given: the checkpoint names it
    assert loaded.arch == "digits_cnn" and loaded.num_classes == 10
    payload = torch.load(out, weights_only=True)
    assert payload["epoch"] == 4 and payload["noise_sd"] == 0.25 and "optimizer" in payload
    assert all(key.startswith("1.") for key in payload["state_dict"])
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["kind"] == "train" and sidecar["parameters"]["sigma"] == 0.25
    assert sidecar["parameters"]["lr_step"] == 1 and [e["lr"] for e in sidecar["epochs"]] == pytest.approx(
        [0.05, 0.005, 0.0005, 0.00005])
    assert sidecar["data"]["split"] == "train" and sidecar["data"]["validation"]["split"] == "val"
    assert sidecar["runs"][-1]["status"] == "finished" and "finished" in sidecar["runs"][-1]
    assert sidecar["runs"][-1]["versions"]["torch"]


def test_consistency_training_records_its_terms(one_thread):
    result = train_model("digits", None, sigma=0.5, consistency=5.0, **{**FAST, "epochs": 1})
    row = result.history.iloc[0]
    assert result.parameters["noise_copies"] == 2 and result.parameters["loss"] == "consistency"
    assert row["consistency_kl"] > 0 and row["entropy"] > 0
    assert row["loss"] == pytest.approx(row["cross_entropy"] + 5.0 * row["consistency_kl"] + 0.5 * row["entropy"],
                                        rel=1e-6)


def test_resumed_training_equals_the_uninterrupted_run(tmp_path, one_thread):
    full = train_model("digits", tmp_path / "full.pt", sigma=0.25, **FAST)

    class Killed(Exception):
        pass

    def kill_after_first_epoch(line):
        raise Killed(line)

    with pytest.raises(Killed):
        train_model("digits", tmp_path / "part.pt", sigma=0.25, log=kill_after_first_epoch, **FAST)
    part = json.loads((tmp_path / "part.pt.json").read_text())
    # the end-of-run record every command writes: status, its time, and a failure's error line
    assert len(part["epochs"]) == 1 and part["runs"][-1]["status"] == "failed" and "failed" in part["runs"][-1]
    assert part["runs"][-1]["error"].startswith("epoch 1/2")
    resumed = train_model("digits", tmp_path / "part.pt", sigma=0.25, resume=True, **FAST)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    columns = ["loss", "val_clean_accuracy", "val_noisy_accuracy"]
    assert full.history[columns].equals(resumed.history[columns])
    sidecar = json.loads((tmp_path / "part.pt.json").read_text())
    assert len(sidecar["runs"]) == 2 and len(sidecar["epochs"]) == 2
    # a different recipe does not resume the file, and leaves it alone
    before = (tmp_path / "part.pt").read_bytes()
    with pytest.raises(RunError, match="differs from the first run in lr"):
        train_model("digits", tmp_path / "part.pt", sigma=0.25, resume=True, **{**FAST, "lr": 0.1})
    assert (tmp_path / "part.pt").read_bytes() == before


def test_train_then_certify_on_idx_files(fashion_root, tmp_path, one_thread):
    root, _ = fashion_root
    out = tmp_path / "f.pt"
    result = invoke("train", "--data", f"fashion-mnist:{root}", "--sigma", "0.25", "--epochs", "1", "--batch", "16",
                    "--lr", "0.05", "--threads", "1", "--device", "cpu", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "mnist_cnn" in result.stdout
    tsv = tmp_path / "f.tsv"
    result = invoke("certify", "--model", out, "--data", f"fashion-mnist:{root}", "--sigma", "0.25", "--n0", "10",
                    "--n", "50", "--max", "3", "--out", tsv, "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert len(tsv.read_text().splitlines()) == 4
    assert json.loads(Path(f"{tsv}.json").read_text())["model"]["arch"] == "mnist_cnn"


def test_dual_branches_train_on_sub_images_and_certify(tmp_path, one_thread):
    for branch in "ab":
        train_model("digits", tmp_path / f"{branch}.pt", sigma=0.25, dual_split="checkerboard", branch=branch,
                    **{**FAST, "epochs": 1})
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert loaded.arch == "digits_sub_8x4" and loaded.metadata["dual_split"] == "checkerboard"
    assert loaded.metadata["dual_branch"] == "a"
    base = ["certify", "--method", "dual", "--sigma", "0.25", "--n0", "10", "--n", "50", "--max", "2", "--quiet",
            "--device", "cpu"]
    result = invoke(*base, "--model", tmp_path / "a.pt", "--model2", tmp_path / "b.pt", "--out", tmp_path / "d.tsv")
    assert result.exit_code == 0, result.output
    swapped = invoke(*base, "--model", tmp_path / "b.pt", "--model2", tmp_path / "a.pt", "--out", tmp_path / "s.tsv")
    one_error_line(swapped, "trained for branch b of the checkerboard split")


def test_cifar10_binary_training_uses_crop_flip_and_the_resnet(tmp_path, one_thread):
    write_cifar_binary(tmp_path, per_batch=4)
    result = train_model(f"cifar10:{tmp_path}", tmp_path / "c.pt", sigma=0.25, arch="cifar_resnet20",
                         **{**FAST, "epochs": 1, "batch_size": 8})
    assert result.parameters["augment"] == "crop-flip" and result.parameters["arch"] == "cifar_resnet20"
    assert load_checkpoint(tmp_path / "c.pt").input_shape == (3, 32, 32)
    assert len(result.history) == 1 and result.history["val_noisy_accuracy"].notna().all()


# --------------------------------------------------------------------------- bad input
TRAIN_ERRORS = [
    (["--sigma", "-0.25"], "sigma must be a finite number > 0"),  # 0 is allowed: clean training (Gaussian only)
    (["--sigma", "0", "--noise", "laplace"], "sigma must be a finite number > 0"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--batch", "-3"], "batch_size must be >= 1"),
    (["--lr", "nan"], "lr must be a finite number > 0"),
    (["--momentum", "1.5"], "momentum must be in [0, 1)"),
    (["--consistency", "5", "--noise-copies", "1"], "needs noise_copies >= 2"),
    (["--consistency", "-1"], "consistency (lambda) must be in"),
    (["--eta", "0.5"], "--eta needs --consistency"),
    (["--branch", "a"], "needs both the split"),
    (["--dual-split", "rows"], "needs both the split"),
    (["--arch", "cifar_resnet20"], "architecture cifar_resnet20 takes inputs (3, 32, 32)"),
    (["--arch", "nope"], "unknown architecture 'nope'"),
    (["--data", "fashion-mnist:/does/not/exist"], "fashion-mnist root folder not found"),
    (["--device", "tpu"], "device"),
    (["--lr", "1e30"], "the training loss became"),  # nan or inf, then refused before any file
    (["--precision", "fp8"], "Invalid value for '--precision'"),
]


@pytest.mark.parametrize("change,message", TRAIN_ERRORS)
def test_train_errors_are_one_line_and_write_nothing(tmp_path, change, message):
    out = tmp_path / "m.pt"
    result = invoke("train", "--sigma", "0.25", "--epochs", "1", "--out", out, "--quiet", *change)
    one_error_line(result, message)
    assert not out.exists() and not Path(f"{out}.json").exists()


def test_train_never_overwrites_without_resume(tmp_path):
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")
    one_error_line(invoke("train", "--sigma", "0.25", "--out", out), "it is a text file, not the output of a robustcert "
                                                                       "train run")
    assert out.read_bytes() == b"precious"
    one_error_line(invoke("train", "--sigma", "0.25", "--out", out, "--resume"), "it is a text file")
    assert out.read_bytes() == b"precious"


def test_help_lists_train_and_its_options():
    result = invoke("--help")
    assert result.exit_code == 0 and "  train " in result.stdout
    result = invoke("train", "--help")
    for option in ("--consistency", "--noise-copies", "--dual-split", "--branch", "--resume", "--precision", "--arch"):
        assert option in result.stdout


def test_train_split_is_the_deprecated_name_of_dual_split(tmp_path):
    """train --split (the dual pixel split, not certify's dataset split) still works, with a note."""
    out = tmp_path / "m.pt"
    result = invoke("train", "--sigma", "0.25", "--epochs", "1", "--out", out, "--quiet", "--split", "rows")
    assert result.exit_code == 2 and "train --split is deprecated" in result.stderr
    assert "needs both the split (--dual-split) and the branch" in result.stderr  # read as --dual-split rows
    with pytest.warns(FutureWarning, match="split is deprecated"):
        with pytest.raises(InvalidArgumentError, match="needs both the split"):
            train_model("digits", None, sigma=0.25, split="rows", epochs=1)


class CountingNoise:
    """An engine noise (sample_shape, perturb) that records its draws: training must use the object given."""

    name = "counting-gaussian"

    def __init__(self, sigma):
        self.sigma, self.draws = sigma, 0

    def sample_shape(self, input_shape):
        return tuple(input_shape)

    def perturb(self, out, clean, generator):
        self.draws += 1
        out.normal_(0.0, self.sigma, generator=generator).add_(clean)


def test_training_takes_any_engine_noise(one_thread):
    noise = CountingNoise(0.25)
    result = train_model("digits", None, sigma=None, noise=noise, **{**FAST, "epochs": 1, "batch_size": 500})
    assert noise.draws == 3 + 1  # three training batches of the 1437 images, one validation batch of 360
    assert result.parameters["noise"] == "counting-gaussian" and result.parameters["sigma"] is None


def test_training_noise_by_name_is_the_certification_noise(one_thread):
    """``noise="laplace"`` trains with the noise ``certify --noise laplace`` certifies with (its
    per-coordinate standard deviation sigma), and records it."""
    from robustcert.engine import LaplaceNoise

    result = train_model("digits", None, sigma=0.25, noise="laplace", **{**FAST, "epochs": 1, "batch_size": 500})
    assert result.parameters["noise"] == "laplace" and result.parameters["sigma"] == 0.25
    drawn = torch.empty(20000)
    LaplaceNoise(0.25).perturb(drawn.view(1, -1), torch.zeros(1, 20000), torch.Generator().manual_seed(0))
    assert abs(float(drawn.std()) - 0.25) < 0.01  # sigma is the standard deviation, as in certify
    with pytest.raises(InvalidArgumentError, match="unknown noise"):
        train_model("digits", None, sigma=0.25, noise="cauchy", **FAST)


def test_ablation_training_writes_a_model_that_certify_ablation_loads(tmp_path, one_thread):
    """train --keep K (randomized ablation, Levine and Feizi 2020) trains on the encoding that
    ``certify --method ablation --keep K`` feeds the model, with the ablation architecture."""
    from robustcert import AblationSmooth, load_dataset, load_model

    out = tmp_path / "ablation.pt"
    result = train_model("digits", out, sigma=None, keep=40, **{**FAST, "epochs": 6, "lr": 0.1, "lr_step": 6})
    assert result.arch == "digits_cnn_ablation" and result.parameters["noise"] == "ablation"
    assert result.parameters["keep"] == 40 and result.parameters["sigma"] is None
    assert result.history["val_clean_accuracy"].isna().all()  # the model takes ablated inputs only
    assert result.history["val_noisy_accuracy"].iloc[-1] > 0.6  # 40 of 64 pixels: the digits stay readable
    smoothed = AblationSmooth(load_model(str(out)), 10, keep=40)
    xs, labels = load_dataset("digits").batch(range(20))
    certs = smoothed.certify_batch(xs, n0=50, n=500, alpha=0.01, batch_size=500, seed=0)
    assert sum(c.prediction == int(y) for c, y in zip(certs, labels)) >= 12


@pytest.mark.parametrize("arguments, message", [
    (dict(sigma=0.25, keep=16), "adds no noise"),
    (dict(sigma=None), "needs a noise level"),
    (dict(sigma=None, keep=65), "more than the 64 pixels"),
])
def test_ablation_and_noise_arguments_are_checked(tmp_path, arguments, message):
    with pytest.raises(InvalidArgumentError, match=message):
        train_model("digits", tmp_path / "x.pt", **arguments, **FAST)
    assert not (tmp_path / "x.pt").exists()


def test_an_interrupted_train_says_its_checkpoint_is_kept(tmp_path, monkeypatch):
    """Ctrl-C during training: the message says what train leaves (the last finished epoch's
    checkpoint and sidecar), not "nothing was written"."""
    import robustcert.runs.train as train_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_model", interrupted)
    result = invoke("train", "--sigma", "0.25", "--out", tmp_path / "m.pt", "--quiet")
    assert result.exit_code == 130
    assert "interrupted (the checkpoint and sidecar of the last finished epoch, if any, are kept; --resume " \
        "continues)" in result.stderr and "nothing was written" not in result.stderr
