"""Datasets: the bundled digits default and user data read from local files only."""
import numpy as np
import pytest
import torch

from robustcert import DataError, load_dataset


def test_digits_split_is_fixed_and_disjoint():
    test, train = load_dataset("digits", "test"), load_dataset("digits", "train")
    assert (len(test), len(train), len(load_dataset("digits", "val"))) == (360, 1293, 144)
    assert test.num_classes == 10 and test.input_shape == (1, 8, 8)
    x, y = test[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    from sklearn.datasets import load_digits

    raw = load_digits()
    assert torch.equal(test[3][0][0], torch.from_numpy(raw.images[15].astype(np.float32) / 16))  # index 3 -> 15
    assert test[3][1] == raw.target[15]


def test_npz_dataset(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.random.rand(5, 3, 4, 4).astype(np.float32), y=np.array([0, 1, 2, 1, 0]))
    data = load_dataset(f"npz:{path}")
    assert len(data) == 5 and data.input_shape == (3, 4, 4) and data.num_classes == 3
    assert data[2][1] == 2


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((2, 1, 2, 2))}, "'x' and 'y'"),
    ({"x": np.zeros((2, 4)), "y": np.zeros(2, int)}, "must be"),
    ({"x": np.full((2, 1, 2, 2), 2.0), "y": np.zeros(2, int)}, r"\[0, 1\]"),
    ({"x": np.zeros((2, 1, 2, 2)), "y": np.array([0.5, 1.0])}, "integer"),
])
def test_bad_npz_files(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(f"npz:{path}")


def test_unreadable_npz(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize("spec,message", [
    ("nope", "unknown dataset"), ("svhn:/tmp", "unknown dataset scheme"), ("npz:/does/not/exist.npz", "not found"),
    ("cifar10:/does/not/exist", "not found"), ("imagefolder:/does/not/exist", "not found"),
])
def test_bad_specs(spec, message):
    with pytest.raises(DataError, match=message):
        load_dataset(spec)


def test_cifar_root_without_files_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot read cifar10"):
        load_dataset(f"cifar10:{tmp_path}")
    with pytest.raises(DataError, match="cannot read mnist"):
        load_dataset(f"mnist:{tmp_path}")


def test_imagefolder_reference_preprocessing(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        folder = tmp_path / "val" / label
        folder.mkdir(parents=True)
        Image.fromarray(np.random.randint(0, 255, (300, 320, 3), dtype=np.uint8)).save(folder / "a.png")
    data = load_dataset(f"imagefolder:{tmp_path}", "val")
    assert len(data) == 2 and data.num_classes == 2
    assert data[0][0].shape == (3, 224, 224)
