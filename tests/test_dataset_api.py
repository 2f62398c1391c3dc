"""certify_dataset / predict_dataset: the Python API behind `robustcert certify` / `predict`."""
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from robustcert import RunError, ShapeError, Smooth, certify_dataset, load_dataset, load_model, predict_dataset
from robustcert.cli import main
from robustcert.results import format_radius

SETTINGS = dict(n0=20, n=300, alpha=0.001, batch_size=300, seed=3, skip=3, max_inputs=12)
CLI_SETTINGS = ["--n0", "20", "--n", "300", "--alpha", "0.001", "--batch", "300", "--seed", "3", "--skip", "3",
                "--max", "12", "--threads", "1", "--quiet"]


def smoothed_digits():
    return Smooth(load_model("bundled:digits-0.25"), num_classes=10, sigma=0.25, input_shape=(1, 8, 8))


def rows(path):
    """The TSV without its time column."""
    return [line.split("\t")[:-1] for line in path.read_text().splitlines()]


def comparable(sidecar_path):
    """A sidecar without what differs between two runs of the same parameters: times and the command."""
    record = json.loads(sidecar_path.read_text())
    record.pop("command")
    for run in record["runs"]:
        for key in ("started", "finished", "interrupted", "command"):
            run.pop(key, None)
    return record


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_certify_dataset_writes_what_the_cli_writes_and_returns_the_frame(tmp_path):
    api_out, cli_out = tmp_path / "api.tsv", tmp_path / "cli.tsv"
    frame = certify_dataset(smoothed_digits(), "digits", api_out, threads=1, progress=False, **SETTINGS)
    cli("certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--device", "cpu", *CLI_SETTINGS,
        "--out", cli_out)
    assert rows(api_out) == rows(cli_out) and len(rows(api_out)) == 13
    assert comparable(tmp_path / "api.tsv.json") == comparable(tmp_path / "cli.tsv.json")
    assert json.loads((tmp_path / "api.tsv.json").read_text())["parameters"]["alpha_spending"] == {
        "Clopper-Pearson one-sided lower bound on pA": 0.001}

    assert list(frame.columns) == ["idx", "label", "predict", "radius", "correct", "time", "p_lower", "samples_used"]
    assert frame["idx"].tolist() == list(range(0, 36, 3)) and (frame["samples_used"] == 320).all()
    written = [line.split("\t") for line in api_out.read_text().splitlines()[1:]]
    assert [format_radius(r) if p != -1 else "0.0" for r, p in zip(frame["radius"], frame["predict"])] == \
        [w[3] for w in written]  # the TSV holds the frame's exact radius rounded down
    abstained = frame["predict"] == -1
    assert (frame.loc[abstained, "radius"] == 0).all() and (frame.loc[~abstained, "p_lower"] >= 0.5).all()
    assert (frame["correct"] == ((frame["predict"] == frame["label"]) & ~abstained)).all()

    in_memory = certify_dataset(smoothed_digits(), load_dataset("digits"), threads=1, progress=False, **SETTINGS)
    pd.testing.assert_frame_equal(in_memory.drop(columns="time"), frame.drop(columns="time"))


def test_certify_dataset_resumes_an_interrupted_run(tmp_path, monkeypatch):
    full = certify_dataset(smoothed_digits(), "digits", tmp_path / "full.tsv", threads=1, progress=False, **SETTINGS)
    out = tmp_path / "killed.tsv"
    smoothed = smoothed_digits()
    calls = {"n": 0}
    certify_batch = smoothed.certify_batch

    def interrupted_after_four(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return certify_batch(*args, **kwargs)

    monkeypatch.setattr(smoothed, "certify_batch", interrupted_after_four)
    with pytest.raises(KeyboardInterrupt):
        certify_dataset(smoothed, "digits", out, threads=1, progress=False, **SETTINGS)
    record = json.loads((tmp_path / "killed.tsv.json").read_text())
    assert "interrupted" in record["runs"][-1] and "finished" not in record["runs"][-1]
    assert len(rows(out)) == 1 + 4
    with open(out, "a") as handle:
        handle.write("12\t3")  # and killed while writing the next row
    with pytest.raises(RunError, match="already exists"):
        certify_dataset(smoothed_digits(), "digits", out, threads=1, progress=False, **SETTINGS)
    with pytest.raises(RunError, match="differs from the first run in n"):
        certify_dataset(smoothed_digits(), "digits", out, resume=True, threads=1, progress=False,
                        **{**SETTINGS, "n": 301})
    resumed = certify_dataset(smoothed_digits(), "digits", out, resume=True, threads=1, progress=False, **SETTINGS)
    assert rows(out) == rows(tmp_path / "full.tsv")
    assert resumed["idx"].tolist() == full["idx"].tolist()
    assert resumed["p_lower"].isna().sum() == 4  # rows of the first run come from the file
    record = json.loads((tmp_path / "killed.tsv.json").read_text())
    assert len(record["runs"]) == 2 and "finished" in record["runs"][-1]
    assert record["runs"][-1]["samples_used"]["inputs"] == 8


def test_sequential_options_pass_through_like_the_cli(tmp_path):
    options = dict(sequential=True, target_radius=0.25, n_max=2000)
    api = certify_dataset(smoothed_digits(), "digits", tmp_path / "api.tsv", threads=1, progress=False,
                          **{**SETTINGS, "n": 2000, "batch_size": 100}, **options)
    cli("certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--device", "cpu",
        *[a if a != "300" else "2000" for a in CLI_SETTINGS[:4]], *CLI_SETTINGS[4:6], "--batch", "100",
        *CLI_SETTINGS[8:], "--sequential", "--target-radius", "0.25", "--n-max", "2000", "--out", tmp_path / "cli.tsv")
    assert rows(tmp_path / "api.tsv") == rows(tmp_path / "cli.tsv")
    assert comparable(tmp_path / "api.tsv.json") == comparable(tmp_path / "cli.tsv.json")
    assert (api["samples_used"] < 2020).any()  # some inputs stopped early


def test_predict_dataset_writes_what_the_cli_writes(tmp_path):
    frame = predict_dataset(smoothed_digits(), "digits", tmp_path / "api.tsv", n=200, batch_size=1000, seed=1,
                            max_inputs=15, threads=1, progress=False)
    cli("predict", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--device", "cpu", "--n", "200", "--seed", "1",
        "--max", "15", "--threads", "1", "--quiet", "--out", tmp_path / "cli.tsv")
    assert rows(tmp_path / "api.tsv") == rows(tmp_path / "cli.tsv") and len(frame) == 15
    assert comparable(tmp_path / "api.tsv.json") == comparable(tmp_path / "cli.tsv.json")
    assert list(frame.columns) == ["idx", "label", "predict", "correct", "time", "p_value", "samples_used"]
    assert ((frame["predict"] == -1) == (frame["p_value"] > 0.001)).all()


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "x.tsv"
    for kwargs, message in [({"n": 0}, "n must be >= 1"), ({"alpha": 1.5}, "alpha"),
                            ({"max_inputs": 0}, "max_inputs must be >= 1"), ({"skip": 0}, "skip must be >= 1"),
                            ({"seed": -1}, "seed must be >= 0")]:
        with pytest.raises(Exception, match=message):
            certify_dataset(smoothed_digits(), "digits", out, progress=False, **kwargs)
        assert not out.exists() and not (tmp_path / "x.tsv.json").exists()
    three_classes = Smooth(load_model("bundled:digits-0.25"), num_classes=3, sigma=0.25)
    with pytest.raises(ShapeError, match="class-count mismatch"):
        certify_dataset(three_classes, "digits", out, progress=False)
    out.write_text("precious\n")
    with pytest.raises(RunError, match="refusing to write over .*: it is a text file"):
        certify_dataset(smoothed_digits(), "digits", out, progress=False)
    assert out.read_text() == "precious\n"


def test_threads_are_applied_for_the_run_and_restored(tmp_path):
    import torch

    before = torch.get_num_threads()
    seen = []
    smoothed = smoothed_digits()
    certify_batch = smoothed.certify_batch
    smoothed.certify_batch = lambda *a, **k: seen.append(torch.get_num_threads()) or certify_batch(*a, **k)
    certify_dataset(smoothed, "digits", tmp_path / "t.tsv", n0=10, n=10, max_inputs=2, threads=1, progress=False)
    assert set(seen) == {1} and torch.get_num_threads() == before
    record = json.loads((tmp_path / "t.tsv.json").read_text())
    assert record["runs"][-1]["cpu"]["threads"] == 1 and record["runs"][-1]["cpu"]["cpu_allocator"] in ("tuned", "default")
    assert np.isfinite(record["runs"][-1]["samples_used"]["mean_per_input"])
