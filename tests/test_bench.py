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
