"""The benchmark command runs end to end and its baseline loop is a real certification loop."""
import json

import pytest
import torch
from click.testing import CliRunner

from robustcert import Smooth
from robustcert.runs.bench import baseline_certify, bench_packing, markdown
from robustcert.cli import main
from robustcert.models import load_model


def test_bench_command_writes_json_and_markdown(tmp_path):
    result = CliRunner().invoke(main, ["bench", "--quick", "--models", "digits", "--n", "300", "--reps", "1",
                                       "--no-packing", "--device", "cpu", "--clock", "cpu", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "bench-cpu-fp32-quick-cpuclock.json").read_text())
    (row,) = record["models"]
    assert row["model"] == "digits" and row["n"] == 300 and row["n0"] == 100
    assert all(row["samples_per_s"][k] > 0 for k in ("a", "b", "c", "c2"))
    assert row["b/a"] == round(row["samples_per_s"]["b"] / row["samples_per_s"]["a"], 3)
    assert "| digits | 100 | 300 | 1000 |" in (tmp_path / "bench-cpu-fp32-quick-cpuclock.md").read_text()
    assert markdown(record).startswith("# Certification loop benchmark: cpu")
    bad = CliRunner().invoke(main, ["bench", "--models", "vgg", "--out-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown model" in bad.output


def test_packing_measurement_packs_like_the_cli():
    result = bench_packing("digits", 20, torch.device("cpu"), "fp32", None, False, reps=1)
    assert result["inputs_per_call"] == 10 and result["inputs"] == 20  # n = 100 per input, batches of 1000
    packed, single = result["inputs_per_s"]["packed"], result["inputs_per_s"]["one_per_call"]
    # the speed-up is the ratio of the rates; the reported rates are rounded to 0.1 and the speed-up to 0.01
    assert result["speedup"] == pytest.approx(packed / single, abs=0.005 + packed / single * (0.05 / packed + 0.05 / single))


def test_published_baseline_loop_certifies_like_robustcert(digits_test):
    model = load_model("bundled:digits-0.25")
    x = digits_test[0][0]
    ours = Smooth(model, 10, 0.25).certify(x, n0=100, n=2000, alpha=0.001, batch_size=500, seed=0)
    c_a, p_lower = baseline_certify(model, x.unsqueeze(0), 100, 2000, 0.25, 0.001, 500, 10, torch.device("cpu"))
    assert c_a == ours.details["selected_class"] == int(digits_test[1][0])
    assert abs(p_lower - ours.p_lower) < 0.02  # independent noise, same smoothed classifier
