"""The benchmark command runs end to end and its baseline loop is a real certification loop.

Nothing here depends on how fast the machine is: the timer is replaced by fixed durations (every
loop still runs), so the figures the benchmark derives from them are checked exactly.
"""
import json

import pytest
import torch
from click.testing import CliRunner

from robustcert import Smooth
from robustcert.runs import bench
from robustcert.runs.bench import baseline_certify, bench_packing, markdown
from robustcert.runs.provenance import cpu_model
from robustcert.cli import main
from robustcert.models import load_model


def fixed_durations(seconds: dict[str, float]):
    """An ``interleave`` that runs every loop once and reports the given seconds per repetition."""
    def interleave(loops, reps):
        for loop in loops.values():
            loop()
        return {name: [seconds[name]] * reps for name in loops}
    return interleave


def test_bench_command_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "interleave", fixed_durations({"a": 0.2, "b": 0.25, "c": 0.5, "c2": 0.25}))
    result = CliRunner().invoke(main, ["bench", "--quick", "--models", "digits", "--n", "300", "--reps", "1",
                                       "--no-packing", "--device", "cpu", "--clock", "cpu", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "bench-cpu-fp32-quick-cpuclock.json").read_text())
    (row,) = record["models"]
    assert row["model"] == "digits" and row["n"] == 300 and row["n0"] == 100
    assert row["samples_per_s"] == {"a": 2000.0, "b": 1600.0, "c": 800.0, "c2": 1600.0}  # 400 samples per loop
    assert (row["b/a"], row["b/c"], row["b/c2"]) == (0.8, 2.0, 1.0)
    assert "| digits | 100 | 300 | 1000 |" in (tmp_path / "bench-cpu-fp32-quick-cpuclock.md").read_text()
    assert markdown(record).startswith("# Certification loop benchmark: cpu")
    assert cpu_model() in record["device"]  # the CPU's model where the OS names it (figures name their CPU)
    bad = CliRunner().invoke(main, ["bench", "--models", "vgg", "--out-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown model" in bad.output


def test_packing_measurement_packs_like_the_cli(monkeypatch):
    """The speed-up is the ratio of the two rates (it failed under load as 6.04 == 6.01 when it was
    recomputed from the rounded rates of a real measurement)."""
    calls = []
    real_predict = Smooth.predict_batch
    monkeypatch.setattr(Smooth, "predict_batch", lambda self, xs, *a, **k: calls.append(len(xs)) or
                        real_predict(self, xs, *a, **k))
    monkeypatch.setattr(bench, "interleave", fixed_durations({"packed": 0.4, "one_per_call": 2.5}))
    result = bench_packing("digits", 20, torch.device("cpu"), "fp32", None, False, reps=3)
    assert result["inputs_per_call"] == 10 and result["inputs"] == 20  # n = 100 per input, batches of 1000
    assert calls == [10, 10] + [1] * 20  # packed: two calls of 10 inputs; then one input per call
    assert result["inputs_per_s"] == {"packed": 50.0, "one_per_call": 8.0} and result["speedup"] == 6.25


def test_published_baseline_loop_certifies_like_robustcert(digits_test):
    model = load_model("bundled:digits-0.25")
    x = digits_test[0][0]
    ours = Smooth(model, 10, 0.25).certify(x, n0=100, n=2000, alpha=0.001, batch_size=500, seed=0)
    c_a, p_lower = baseline_certify(model, x.unsqueeze(0), 100, 2000, 0.25, 0.001, 500, 10, torch.device("cpu"))
    assert c_a == ours.details["selected_class"] == int(digits_test[1][0])
    assert abs(p_lower - ours.p_lower) < 0.02  # independent noise, same smoothed classifier


def test_bench_sound_column_and_engine_lines(tmp_path, monkeypatch):
    """--sound times (b) in the floating-point-sound mode beside the standard one; every row names
    its noise stream and CUDA-graph status; the file name says the run had the sound column."""
    monkeypatch.setattr(bench, "interleave", fixed_durations({"a": 0.2, "b": 0.25, "c": 0.5, "c2": 0.25,
                                                              "b_sound": 0.275}))
    result = CliRunner().invoke(main, ["bench", "--quick", "--models", "digits", "--n", "300", "--reps", "1",
                                       "--no-packing", "--device", "cpu", "--sound", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "bench-cpu-fp32-quick-sound.json").read_text())
    (row,) = record["models"]
    assert row["sound_over_standard_time"] == 1.1 and record["options"]["sound"] is True
    assert row["engine"]["noise_stream"].startswith("torch.Generator per input")
    assert row["sound_engine"]["noise"] == "discrete-gaussian" and row["limit"] == "eager forward passes"
    text = (tmp_path / "bench-cpu-fp32-quick-sound.md").read_text()
    assert "sound mode / standard mode time 1.100" in text and "CUDA graphs off (cpu)" in text


def test_sweep_compares_every_option_on_the_same_weights(monkeypatch):
    """The sweep's votes are compared with the default options' votes on the same samples: the same
    model (random weights are seeded) and the same layout give 0 differences; each option reports
    its seconds per image at n = 100000."""
    monkeypatch.setattr(bench, "interleave", fixed_durations({label: 0.1 for label in (
        "fp32+contiguous", "fp32+channels_last", "bf16+contiguous", "bf16+channels_last", "fp16+channels_last")}))
    monkeypatch.setattr(bench, "SWEEP", [("fp32", False, False, None), ("fp32", True, False, None)])
    result = bench.bench_sweep("mnist_cnn", bench.Setting(10, 200, 100, 1), torch.device("cpu"), 1,
                               with_compile=False)
    assert result["votes_vs_default"]["fp32+channels_last"] == 0  # the default options, same weights
    assert result["votes_vs_default"]["fp32+contiguous"] <= 2  # another kernel layout, same samples
    assert result["s_per_image_at_n100000"]["fp32+channels_last"] == round(100_100 / 2100, 3)
    assert torch.equal(next(iter(bench.make_model("mnist_cnn", torch.device("cpu")).state_dict().values())),
                       next(iter(bench.make_model("mnist_cnn", torch.device("cpu")).state_dict().values())))
