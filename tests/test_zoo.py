"""The users' own pretrained classifiers: torchvision, timm and Hugging Face models from local files.

No network: every model is built with random weights and saved locally. For each source,
``load_model(spec)(x)`` must equal the network on the preprocessed (resized, cropped,
normalised) input; the CLI certifies and predicts on npz and imagefolder data of 224x224
images and records the weights' sha256 and the preprocessing; wrong names, missing weights,
weights of another architecture and a missing extra are one error line, with nothing written.
Small models keep this file fast (torchvision mobilenet_v3_small, timm test_vit at 160 pixels,
a two-layer transformers ViT).
"""
from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustcert import load_checkpoint, load_model
from robustcert.cli import main
from robustcert.errors import CheckpointError

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
torchvision = pytest.importorskip("torchvision")
from torchvision.transforms.v2 import functional as F  # noqa: E402

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HF_MEAN, HF_STD = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small models on a shared 2-core CPU: intra-op threads cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def normalise(x, mean, std):
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Random-weight models of each source, saved as users save them."""
    folder = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v3_small(weights=None, num_classes=3).eval()
    torch.save(tv.state_dict(), folder / "tv.pth")
    tm = timm.create_model("test_vit", pretrained=False, num_classes=3).eval()
    safetensors_torch.save_file(tm.state_dict(), str(folder / "tm.safetensors"))
    config = transformers.ViTConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    hf = transformers.ViTForImageClassification(config).eval()
    hf.save_pretrained(folder / "hf")
    transformers.ViTImageProcessor(image_mean=list(HF_MEAN), image_std=list(HF_STD),
                                   size={"height": 64, "width": 64}).save_pretrained(folder / "hf")
    return {"folder": folder, "tv": tv, "tm": tm, "hf": hf}


def test_torchvision_equals_the_network_on_normalised_input(zoo):
    model = load_model("torchvision:mobilenet_v3_small", weights=zoo["folder"] / "tv.pth")
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():  # at the model's size: normalisation only
        assert torch.allclose(model(x), zoo["tv"](normalise(x, *IMAGENET)), atol=1e-5)
        # another size: torchvision's own transform (resize 256, centre crop 224, normalise) on the tensor
        other = torch.rand(2, 3, 150, 190)
        recipe = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.transforms()
        assert torch.allclose(model(other), zoo["tv"](recipe(other)), atol=1e-5)


def test_timm_equals_the_network_on_resized_cropped_normalised_input(zoo):
    loaded = load_checkpoint("timm:test_vit", weights=zoo["folder"] / "tm.safetensors")
    cfg = zoo["tm"].pretrained_cfg  # 160 pixels, crop_pct 0.95, bicubic
    assert loaded.num_classes == 3 and loaded.preprocessing.size == tuple(cfg["input_size"][1:])
    x = torch.rand(2, 3, 224, 224)
    resized = F.resize(x, [int(160 / cfg["crop_pct"])], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    with torch.no_grad():
        want = zoo["tm"](normalise(F.center_crop(resized, [160, 160]), cfg["mean"], cfg["std"]))
        assert torch.allclose(loaded.module(x), want, atol=1e-5)
        at_size = torch.rand(2, 3, 160, 160)
        assert torch.allclose(loaded.module(at_size), zoo["tm"](normalise(at_size, cfg["mean"], cfg["std"])), atol=1e-5)


def test_hugging_face_equals_the_network_without_rescaling_twice(zoo):
    loaded = load_checkpoint(f"hf:{zoo['folder'] / 'hf'}")
    assert loaded.num_classes == 3
    x = torch.rand(2, 3, 224, 224)
    resized = F.resize(x, [64, 64], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    with torch.no_grad():
        want = zoo["hf"](pixel_values=normalise(resized, HF_MEAN, HF_STD)).logits
        assert torch.allclose(loaded.module(x), want, atol=1e-5)
    assert loaded.preprocessing.record()["mean"] == list(HF_MEAN) and "scale" not in loaded.preprocessing.record()


def test_the_preprocessing_matches_the_processor_on_images(zoo):
    """Our recipe from the processor's config against transformers' own processor on an image
    in 0-255 (which it rescales by 1/255): the same normalised tensor, up to the resize's rounding."""
    from PIL import Image

    image = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    processor = transformers.AutoImageProcessor.from_pretrained(zoo["folder"] / "hf", local_files_only=True)
    theirs = torch.as_tensor(np.asarray(processor(images=image, return_tensors="np")["pixel_values"]))
    ours = load_checkpoint(f"hf:{zoo['folder'] / 'hf'}").module[0](
        torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None])
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_safetensors_state_dict_and_exported_program(tmp_path):
    from robustcert.models import build_model

    model = build_model("digits_cnn").eval()
    safetensors_torch.save_file(model[1].state_dict(), str(tmp_path / "net.safetensors"))
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "net.safetensors", arch="digits_cnn")(x), model(x))
        program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, tmp_path / "net.pt2")
        loaded = load_checkpoint(tmp_path / "net.pt2")
        assert loaded.input_shape == (1, 8, 8) and loaded.num_classes == 10
        other = torch.rand(7, 1, 8, 8)  # another batch size: the batch dimension is dynamic
        assert torch.allclose(loaded.module(x), model(x), atol=1e-6)
        assert torch.allclose(loaded.module(other), model(other), atol=1e-6)


# --------------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def images(zoo):
    """Three 224x224 images with labels 0, 1, 2: as an npz and as an imagefolder (one folder per class)."""
    from PIL import Image

    folder = zoo["folder"]
    pixels = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    np.savez(folder / "imgs.npz", x=(pixels.transpose(0, 3, 1, 2) / 255).astype(np.float32), y=np.arange(3))
    for label, name in enumerate(("ant", "bee", "cat")):
        (folder / "imgs" / name).mkdir(parents=True)
        Image.fromarray(pixels[label]).save(folder / "imgs" / name / "0.png")
    return folder


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


RUN = ["--sigma", "0.25", "--n", "16", "--batch", "16", "--threads", "1", "--device", "cpu", "--quiet"]


def sidecar(out: Path) -> dict:
    return json.loads(Path(f"{out}.json").read_text())


def test_cli_certifies_a_torchvision_model_on_npz(zoo, images, tmp_path):
    out = tmp_path / "tv.tsv"
    result = invoke("certify", "--model", "torchvision:mobilenet_v3_small", "--weights", zoo["folder"] / "tv.pth",
                    "--data", f"npz:{images / 'imgs.npz'}", "--n0", "8", *RUN, "--out", out)
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 4
    record = sidecar(out)
    model = record["model"]
    assert model["spec"] == "torchvision:mobilenet_v3_small" and model["sha256"] == sha256(zoo["folder"] / "tv.pth")
    assert model["weights"] == str(zoo["folder"] / "tv.pth")
    assert model["preprocessing"]["mean"] == list(IMAGENET[0]) and model["preprocessing"]["std"] == list(IMAGENET[1])
    assert model["preprocessing"]["size"] == [3, 224, 224] and model["preprocessing"]["interpolation"] == "bilinear"
    assert model["preprocessing"]["resize"] == 256 and model["preprocessing"]["crop"] == [224, 224]
    assert record["data"]["num_classes"] == 3 and record["data"]["input_shape"] == [3, 224, 224]


def test_cli_predicts_with_a_timm_model_on_an_imagefolder_at_its_resolution(zoo, images, tmp_path):
    """The folder's images are resized and cropped to the model's 160 pixels before the noise,
    as timm's own evaluation transform does, and the sidecar records it as part of the data."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from robustcert.data import load_dataset

    out = tmp_path / "tm.tsv"
    result = invoke("predict", "--model", "timm:test_vit", "--weights", zoo["folder"] / "tm.safetensors",
                    "--data", f"imagefolder:{images / 'imgs'}", *RUN, "--out", out)
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert [row[1] for row in rows] == ["0", "1", "2"]
    record = sidecar(out)
    assert record["data"]["input_shape"] == [3, 160, 160]
    assert record["data"]["transform"] == {"resize": 168, "crop": [160, 160], "interpolation": "bicubic",
                                           "size": [3, 160, 160]}
    assert record["model"]["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert record["model"]["sha256"] == sha256(zoo["folder"] / "tm.safetensors")
    loaded = load_checkpoint("timm:test_vit", weights=zoo["folder"] / "tm.safetensors")
    image, label = load_dataset(f"imagefolder:{images / 'imgs'}", "test", loaded.preprocessing)[1]
    timm_eval = create_transform(**resolve_data_config({}, model=zoo["tm"]), is_training=False)
    want = timm_eval(Image.open(images / "imgs" / "bee" / "0.png").convert("RGB"))
    assert label == 1 and torch.allclose(loaded.module[0](image[None])[0], want, atol=1e-5)


def test_cli_certifies_a_hugging_face_folder(zoo, images, tmp_path):
    out = tmp_path / "hf.tsv"
    result = invoke("certify", "--model", f"hf:{zoo['folder'] / 'hf'}", "--data", f"npz:{images / 'imgs.npz'}",
                    "--n0", "8", *RUN, "--out", out)
    assert result.exit_code == 0, result.output
    model = sidecar(out)["model"]
    assert model["preprocessing"]["size"] == [3, 64, 64] and model["preprocessing"]["std"] == list(HF_STD)
    assert len(model["sha256"]) == 64 and "weights" not in model


def test_numbered_folders_give_their_labels_and_the_model_the_class_count(zoo, tmp_path):
    from PIL import Image

    from robustcert.runs.build import load_model_and_data

    for label in ("0", "2"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (230, 240), (10, 20, 30)).save(tmp_path / label / "a.png")
    loaded, data = load_model_and_data("torchvision:mobilenet_v3_small", f"imagefolder:{tmp_path}",
                                       weights=zoo["folder"] / "tv.pth")
    assert [data[i][1] for i in range(len(data))] == [0, 2] and data.num_classes == 3
    assert data[0][0].shape == (3, 224, 224)


def test_num_classes_where_neither_model_nor_labels_tell(tmp_path):
    """A TorchScript model says nothing of its classes and npz labels 0-2 only bound them below."""
    from robustcert.models import build_model

    scripted = tmp_path / "digits.ts"
    with pytest.warns(FutureWarning):  # torch.jit.script is deprecated in the pinned torch
        torch.jit.save(torch.jit.script(build_model("digits_cnn").eval()), scripted)
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((2, 1, 8, 8)).astype(np.float32), y=np.arange(2))
    args = ["certify", "--model", scripted, "--data", f"npz:{tmp_path / 'd.npz'}", "--n0", "8", *RUN]
    result = invoke(*args, "--num-classes", "10", "--out", tmp_path / "ok.tsv")
    assert result.exit_code == 0, result.output
    assert sidecar(tmp_path / "ok.tsv")["data"]["num_classes"] == 10
    result = invoke(*args, "--out", tmp_path / "bad.tsv")  # 2 classes assumed: the model gives 10 outputs
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and "10" in result.stderr
    assert not (tmp_path / "bad.tsv").exists()


def hf_folder_with(zoo, tmp_path, config_change=None, pickled_weights=False) -> Path:
    folder = tmp_path / "hf"
    folder.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        (folder / name).write_bytes((zoo["folder"] / "hf" / name).read_bytes())
    if config_change:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **config_change}))
    if pickled_weights:
        (folder / "model.safetensors").unlink()
        torch.save({"weights": zipfile.ZipInfo("x")}, folder / "pytorch_model.bin")  # needs full unpickling
    return folder


def tampered_program(tmp_path) -> Path:
    """A .pt2 whose weights config says a weight is a pickle (torch.export.load would fully unpickle it)."""
    from robustcert.models import build_model

    program = torch.export.export(build_model("digits_cnn").eval(), (torch.rand(2, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "good.pt2")
    with zipfile.ZipFile(tmp_path / "good.pt2") as source, zipfile.ZipFile(tmp_path / "bad.pt2", "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            target.writestr(item, data)
    return tmp_path / "bad.pt2"


ERRORS = [
    (lambda z, t: ["--model", "torchvision:mobilenet_v3_smal", "--weights", z / "tv.pth"],
     "unknown torchvision classification model 'mobilenet_v3_smal'; did you mean mobilenet_v3_small"),
    (lambda z, t: ["--model", "timm:no_such_vit", "--weights", z / "tm.safetensors"], "unknown timm model"),
    (lambda z, t: ["--model", f"hf:{t / 'nothing'}"], "not a Hugging Face model folder"),
    (lambda z, t: ["--model", "torchvision:mobilenet_v3_small"], "needs --weights FILE"),
    (lambda z, t: ["--model", "timm:test_vit", "--weights", t / "missing.safetensors"], "weights file not found"),
    (lambda z, t: ["--model", "torchvision:shufflenet_v2_x0_5", "--weights", z / "tv.pth"],
     "do not fit torchvision:shufflenet_v2_x0_5"),
    (lambda z, t: ["--model", "timm:test_convnext", "--weights", z / "tm.safetensors"], "do not fit timm:test_convnext"),
    (lambda z, t: ["--model", "torchvision:mobilenet_v3_small", "--weights", "IMAGENET1K_V1"],
     "not in the local torch hub cache"),
    (lambda z, t: ["--model", "bundled:digits-0.25", "--weights", z / "tv.pth"], "--weights is for"),
    (lambda z, t: ["--model", "torchvision:mobilenet_v3_small", "--weights", z / "tv.pth", "--num-classes", "10"],
     "class-count mismatch: --num-classes 10, but model torchvision:mobilenet_v3_small has 3"),
]


@pytest.mark.parametrize("args,message", ERRORS)
def test_errors_are_one_line_and_write_nothing(zoo, images, tmp_path, monkeypatch, args, message):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty hub cache
    out = tmp_path / "out.tsv"
    result = invoke("certify", *args(zoo["folder"], tmp_path), "--data", f"npz:{images / 'imgs.npz'}", *RUN,
                    "--out", out)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("robustcert: error: ")
    assert message in result.stderr, result.stderr
    assert not out.exists() and not Path(f"{out}.json").exists()


@pytest.mark.parametrize("module,spec", [("timm", "timm:test_vit"), ("transformers", "hf:{hf}"),
                                         ("safetensors", "timm:test_vit")])
def test_a_missing_extra_is_one_line_naming_it(zoo, images, tmp_path, monkeypatch, module, spec):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, module, None)
    weights = [] if spec.startswith("hf:") else ["--weights", zoo["folder"] / "tm.safetensors"]
    out = tmp_path / "out.tsv"
    result = invoke("certify", "--model", spec.format(hf=zoo["folder"] / "hf"), *weights,
                    "--data", f"npz:{images / 'imgs.npz'}", *RUN, "--out", out)
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert 'pip install "robustcert[zoo]"' in result.stderr and 'pip install -e ".[zoo]"' in result.stderr
    assert not out.exists()


def test_code_and_pickles_are_refused_unless_trusted(zoo, tmp_path):
    remote = hf_folder_with(zoo, tmp_path / "a", {"auto_map": {"AutoModelForImageClassification": "x.Model"}})
    with pytest.raises(CheckpointError, match="needs trust_remote_code"):
        load_checkpoint(f"hf:{remote}")
    pickled = hf_folder_with(zoo, tmp_path / "b", pickled_weights=True)
    with pytest.raises(CheckpointError, match="needs full unpickling"):
        load_checkpoint(f"hf:{pickled}")
    with pytest.raises(CheckpointError, match="needs full unpickling"):
        load_checkpoint(tampered_program(tmp_path))
    assert load_checkpoint(tmp_path / "good.pt2").num_classes == 10  # the untouched program loads


def test_torchvision_weights_from_the_hub_cache(zoo, monkeypatch, tmp_path):
    """A torchvision weights name reads its file from the local hub cache (checked against the hash
    in its name) and brings that entry's transforms."""
    from robustcert.models import zoo as zoo_module

    entry = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    cache = tmp_path / "checkpoints"
    cache.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    wrong = cache / Path(entry.url).name
    wrong.write_bytes((zoo["folder"] / "tv.pth").read_bytes())
    with pytest.raises(CheckpointError, match="its sha256 does not start with"):
        load_checkpoint("torchvision:mobilenet_v3_small", weights="IMAGENET1K_V1")
    monkeypatch.setattr(zoo_module, "hub_cached_file", lambda e: (wrong, sha256(wrong)) if e == entry else None)
    loaded = load_checkpoint("torchvision:mobilenet_v3_small", weights="DEFAULT")
    assert loaded.num_classes == 3 and loaded.sha256 == sha256(wrong)
    assert loaded.weights == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"  # what DEFAULT stands for
    assert loaded.preprocessing.resize == entry.transforms().resize_size[0]


def test_bench_measures_a_zoo_model(tmp_path):
    result = invoke("bench", "--quick", "--models", "timm:test_vit", "--n", "4", "--reps", "1", "--no-packing",
                    "--device", "cpu", "--threads", "1", "--out-dir", tmp_path)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "bench-cpu-fp32-quick.json").read_text())["models"]
    assert row["model"] == "timm:test_vit" and row["input_shape"] == [3, 160, 160] and row["b/a"] > 0
    bad = invoke("bench", "--models", "timm:no_such_vit", "--out-dir", tmp_path / "x")
    assert bad.exit_code == 2 and "unknown timm model" in bad.output


def test_python_api_reads_an_imagefolder_at_the_models_resolution(zoo, images, tmp_path):
    from robustcert import Smooth, certify_dataset

    model = load_model("timm:test_vit", weights=zoo["folder"] / "tm.safetensors")
    frame = certify_dataset(Smooth(model, num_classes=3, sigma=0.25), f"imagefolder:{images / 'imgs'}",
                            tmp_path / "api.tsv", n0=4, n=8, batch_size=8, max_inputs=1, progress=False, threads=1)
    record = sidecar(tmp_path / "api.tsv")
    assert len(frame) == 1 and record["data"]["input_shape"] == [3, 160, 160]
    assert record["model"]["preprocessing"]["size"] == [3, 160, 160]
