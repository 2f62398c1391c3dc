"""The command line end to end: the reference TSV, resume after a kill, error paths, plots, demo.

The end-to-end and resume runs go through a real subprocess (``python -m robustcert``); error
paths mostly through click's CliRunner (same code, in-process, faster), with two subprocess runs
checking that the real stderr is one line.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustcert.cli import main
from robustcert.models.checkpoint import WEIGHTS_DIR

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime"
# Small but not trivial: sigma 0.5 on the sigma-0.50 model gives certified rows AND abstentions.
CERTIFY_ARGS = ["certify", "--model", "bundled:digits-0.50", "--data", "digits", "--sigma", "0.5",
                "--n0", "20", "--n", "500", "--alpha", "0.001", "--batch", "500", "--skip", "2", "--max", "20",
                "--seed", "3", "--device", "cpu"]
ROWS = 20
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def robustcert(*args, timeout=600) -> subprocess.CompletedProcess:  # a guard against hangs, not a speed test
    return subprocess.run([sys.executable, "-m", "robustcert", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def with_option(args: list[str], option: str, value: str) -> list[str]:
    changed = list(args)
    changed[changed.index(option) + 1] = value
    return changed


def data_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()[1:]]


def without_time(path: Path) -> list[list[str]]:
    return [row[:5] for row in data_rows(path)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "full.tsv"
    result = robustcert(*CERTIFY_ARGS, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def test_certify_writes_the_reference_tsv(uninterrupted, digits_test):
    lines = uninterrupted.read_text().split("\n")
    assert lines[0] == HEADER and lines[-1] == ""  # exact header, every row ends with a newline
    rows = data_rows(uninterrupted)
    assert len(rows) == ROWS
    _, labels = digits_test
    assert [int(r[0]) for r in rows] == list(range(0, 2 * ROWS, 2))  # --skip 2 --max 20
    assert [int(r[1]) for r in rows] == [int(labels[i]) for i in range(0, 2 * ROWS, 2)]
    abstained = [r for r in rows if r[2] == "-1"]
    certified = [r for r in rows if r[2] != "-1"]
    assert abstained and certified, "the fixture must exercise both cases"
    for idx, label, predict, radius, correct, seconds in rows:
        assert correct == str(int(predict == label))
        if predict == "-1":
            assert radius == "0.0"
        else:
            assert float(radius) > 0 and len(radius.replace("0.", "").lstrip("0")) <= 3  # 3 significant digits
        hours, minutes, secs = seconds.split(":")  # str(timedelta)
        assert int(hours) == 0 and float(secs) >= 0


def test_certify_sidecar_records_the_run(uninterrupted):
    record = json.loads(Path(str(uninterrupted) + ".json").read_text())
    assert record["command"].startswith("robustcert certify --model bundled:digits-0.50")  # python -m robustcert
    parameters = record["parameters"]
    assert (parameters["n0"], parameters["n"], parameters["alpha"], parameters["seed"]) == (20, 500, 0.001, 3)
    assert sum(parameters["alpha_spending"].values()) == pytest.approx(parameters["alpha"])
    digest = hashlib.sha256((WEIGHTS_DIR / "digits-0.50.pt").read_bytes()).hexdigest()
    assert record["model"]["sha256"] == digest
    assert record["runs"][0]["versions"]["torch"] == torch.__version__ and "cpu" in record["runs"][0]["device"]


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted):
    out = tmp_path / "killed.tsv"
    process = subprocess.Popen([sys.executable, "-m", "robustcert", *CERTIFY_ARGS, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    while process.poll() is None:  # however slow the machine: the run ends by itself at the latest
        if out.exists() and out.read_text().count("\n") >= 4:  # header and three rows written
            process.kill()
            break
        time.sleep(0.005)
    process.wait(timeout=600)
    if process.returncode == 0:  # finished before the kill landed: cut it back to simulate one
        out.write_text("".join(out.read_text().splitlines(keepends=True)[:4]))
    kept = data_rows(out)
    assert 3 <= len(kept) < ROWS
    with open(out, "a") as handle:  # and a row cut off mid-write
        handle.write("38\t2\t2\t0.4")

    refused = invoke(*CERTIFY_ARGS, "--out", out)  # no --resume: refuses, touches nothing
    assert refused.exit_code == 2 and "--resume" in refused.stderr
    assert out.read_text().endswith("38\t2\t2\t0.4")

    resumed = robustcert(*CERTIFY_ARGS, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_text().split("\n")[0] == HEADER
    assert data_rows(out)[:len(kept)] == kept  # rows already written are kept as they were
    assert without_time(out) == without_time(uninterrupted)
    assert len(json.loads(Path(str(out) + ".json").read_text())["runs"]) == 2


def test_resume_refuses_a_different_run_and_leaves_the_file_alone(tmp_path, uninterrupted):
    out = tmp_path / "partial.tsv"
    out.write_text("".join(uninterrupted.read_text().splitlines(keepends=True)[:5]))
    sidecar = Path(str(out) + ".json")
    sidecar.write_text(Path(str(uninterrupted) + ".json").read_text())
    before = (out.read_bytes(), sidecar.read_bytes())
    for args, message in [(with_option(CERTIFY_ARGS, "--n", "600"), "differs from the first run in n"),
                          (with_option(CERTIFY_ARGS, "--model", "bundled:digits-0.25"), "model sha256")]:
        result = invoke(*args, "--out", out, "--resume")
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert (out.read_bytes(), sidecar.read_bytes()) == before
    sidecar.unlink()
    result = invoke(*CERTIFY_ARGS, "--out", out, "--resume")
    assert result.exit_code == 2 and "sidecar" in result.stderr and out.read_bytes() == before[0]


def test_failing_model_never_clobbers_existing_results(tmp_path, uninterrupted):
    out = tmp_path / "done.tsv"
    out.write_bytes(uninterrupted.read_bytes())
    sidecar = Path(str(out) + ".json")
    sidecar.write_bytes(Path(str(uninterrupted) + ".json").read_bytes())
    before = (out.read_bytes(), sidecar.read_bytes())
    bad_model = with_option(CERTIFY_ARGS, "--model", "bundled:no-such-model")
    result = invoke(*bad_model, "--out", out, "--resume")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["robustcert: error: no bundled model 'no-such-model'; available: "
                                          + result.stderr.split("available: ")[1].strip()]
    assert (out.read_bytes(), sidecar.read_bytes()) == before
    result = invoke(*bad_model, "--out", out)  # without --resume: refused before loading anything
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert (out.read_bytes(), sidecar.read_bytes()) == before


class NaNOnBrightImages(torch.nn.Module):
    """Always predicts class 0, but returns NaN logits on a bright image (mean pixel > 0.8)."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 10)
        logits[:, 0] = 1.0
        bright = x.flatten(1).mean(1) > 0.8
        return torch.where(bright[:, None], torch.full_like(logits, float("nan")), logits)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript files are a supported model format
def test_crash_mid_run_keeps_the_rows_written(tmp_path):
    x = np.full((6, 1, 8, 8), 0.2, dtype=np.float32)
    x[3] = 1.0  # the model fails on the 4th input
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=np.array([0, 0, 1, 0, 2, 9]))
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(NaNOnBrightImages()), str(model))
    out = tmp_path / "crash.tsv"
    args = ["certify", "--model", model, "--data", f"npz:{data}", "--sigma", "0.05", "--n0", "10", "--n", "50",
            "--batch", "60", "--out", out]
    result = invoke(*args)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and "NaN" in result.stderr
    text = out.read_text()
    assert text.endswith("\n") and [r[:3] for r in data_rows(out)] == [["0", "0", "0"], ["1", "0", "0"],
                                                                        ["2", "1", "0"]]
    again = invoke(*args, "--resume")  # resuming keeps them too (and fails again on input 3)
    assert again.exit_code == 2 and out.read_text() == text


def test_predict_writes_the_reference_tsv(tmp_path):
    out = tmp_path / "predict.tsv"
    result = invoke("predict", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n", "200", "--max", "6",
                    "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    assert out.read_text().split("\n")[0] == "idx\tlabel\tpredict\tcorrect\ttime"
    rows = data_rows(out)
    assert len(rows) == 6 and all(r[3] == str(int(r[2] == r[1])) for r in rows)


@pytest.fixture
def npz_label_beyond_the_model(tmp_path):
    """Labels 0..11 cannot come from a 10-class model (npz labels bound the class count from below)."""
    path = tmp_path / "twelve.npz"
    np.savez(path, x=np.zeros((4, 1, 8, 8), dtype=np.float32), y=np.array([0, 1, 11, 1]))
    return path


@pytest.fixture
def npz_wrong_shape(tmp_path):
    path = tmp_path / "big.npz"
    np.savez(path, x=np.zeros((4, 1, 10, 10), dtype=np.float32), y=np.arange(10)[:4] * 0 + np.array([0, 1, 9, 2]))
    return path


CERTIFY_ERRORS = [
    (["--data", "foo:bar"], "unknown dataset scheme 'foo'"),
    (["--data", "nonsense"], "unknown dataset 'nonsense'"),
    (["--data", "cifar10:/no/such/root"], "root folder not found"),
    (["--data", "npz:/no/such/file.npz"], "npz file not found"),
    (["--model", "bundled:nope"], "no bundled model 'nope'"),
    (["--model", "/no/such/model.pth.tar"], "checkpoint not found"),
    (["--sigma", "0"], "sigma must be a finite number > 0"),
    (["--sigma", "-0.5"], "sigma must be a finite number > 0"),
    (["--sigma", "abc"], "Invalid value for '--sigma'"),
    (["--alpha", "1.5"], "alpha must be in the open interval (0, 1)"),
    (["--alpha", "0"], "alpha must be in the open interval (0, 1)"),
    (["--n", "0"], "n must be >= 1"),
    (["--n0", "0"], "n0 must be >= 1"),
    (["--batch", "0"], "batch_size must be >= 1"),
    (["--skip", "0"], "--skip must be >= 1"),
    (["--method", "nope"], "Invalid value for '--method'"),
    (["--frobnicate"], "No such option"),
    (["--max", "0"], "--max must be >= 1, or -1 for all inputs"),
    (["--max", "-5"], "--max must be >= 1, or -1 for all inputs"),
    (["--seed", "-1"], "seed must be >= 0"),  # found only when certifying the first input: no files may remain
]


@pytest.mark.parametrize("change,message", CERTIFY_ERRORS)
def test_certify_errors_are_one_line_and_write_nothing(tmp_path, change, message):
    out = tmp_path / "out.tsv"
    base = {"--model": "bundled:digits-0.25", "--sigma": "0.25", "--n": "20", "--n0": "5", "--max": "2",
            "--out": str(out)}
    for key, value in zip(change[::2], change[1::2]):
        base[key] = value
    args = ["certify", *[item for pair in base.items() for item in pair]] + change[len(change) // 2 * 2:]
    result = invoke(*args)
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("robustcert: error: ")
    assert message in result.stderr, result.stderr
    assert not out.exists() and not Path(str(out) + ".json").exists()


def test_model_and_data_that_do_not_fit(tmp_path, npz_label_beyond_the_model, npz_wrong_shape):
    for data, message in [(npz_label_beyond_the_model, "class-count mismatch: dataset npz:"),
                          (npz_wrong_shape, "shape mismatch")]:
        result = invoke("certify", "--model", "bundled:digits-0.25", "--data", f"npz:{data}", "--sigma", "0.25",
                        "--n", "10", "--out", tmp_path / "x.tsv")
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_output_that_cannot_be_written(tmp_path, monkeypatch):
    args = ["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n", "10", "--out"]
    result = invoke(*args, tmp_path / "missing" / "out.tsv")
    assert result.exit_code == 2 and "output folder does not exist" in result.stderr
    result = invoke(*args, tmp_path)
    assert result.exit_code == 2 and "is a directory" in result.stderr
    monkeypatch.setattr("robustcert.files.os.access", lambda path, mode: False)  # a read-only folder (root ignores chmod)
    result = invoke(*args, tmp_path / "out.tsv")
    assert result.exit_code == 2 and "not writable" in result.stderr and not (tmp_path / "out.tsv").exists()


def test_table_and_plot_errors(tmp_path, uninterrupted):
    binary = tmp_path / "model.tsv"
    binary.write_bytes((WEIGHTS_DIR / "digits-0.25.pt").read_bytes()[:2000])
    cases = [
        (["table", uninterrupted, "--radii", "0,x"], "bad radius list '0,x'"),
        (["table", uninterrupted, "--radii", "0,-1"], "bad radius list"),
        (["table", tmp_path / "none.tsv"], "result file not found"),
        (["table", binary], "not a text file"),
        (["table", uninterrupted, "--labels", "a,b"], "--labels needs 1"),
        (["table", uninterrupted, "--out", tmp_path / "no" / "t.md"], "output folder does not exist"),
        (["table", uninterrupted, "--format", "html"], "Invalid value for '--format'"),
        (["plot", uninterrupted, "--out", tmp_path / "c.jpg"], "use a .png, .pdf or .svg"),
        (["plot", uninterrupted, "--out", tmp_path / "no" / "c.png"], "output folder does not exist"),
        (["plot", uninterrupted, "--out", tmp_path / "c.png", "--max-radius", "-1"], "--max-radius"),
        (["plot", binary, "--out", tmp_path / "c.png"], "not a text file"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.splitlines()) == 1 and message in result.stderr, (args, result.stderr)
    real = robustcert("table", uninterrupted, "--radii", "0:1:0")  # and as a real process
    assert real.returncode == 2 and real.stderr.splitlines() == [
        "robustcert: error: bad radius list '0:1:0': use e.g. 0,0.25,0.5 or 0:1.5:0.25"]


def test_plot_writes_png_and_pdf(tmp_path, uninterrupted):
    predict_file = Path(__file__).parent / "data/cohen2019/predict/imagenet/resnet50/noise_0.25/test/N_100"
    for name, magic in [("curve.png", b"\x89PNG"), ("curve.pdf", b"%PDF")]:
        out = tmp_path / name
        result = invoke("plot", uninterrupted, uninterrupted, "--labels", "a,b", "--out", out, "--title", "t")
        assert result.exit_code == 0, result.stderr
        assert out.read_bytes()[:4] == magic and out.stat().st_size > 5000
    result = invoke("plot", uninterrupted, predict_file, "--out", tmp_path / "mixed.png")
    assert result.exit_code == 2 and "predict file" in result.stderr and not (tmp_path / "mixed.png").exists()


def test_plot_draws_the_certified_accuracy_step_function(uninterrupted):
    from matplotlib.figure import Figure

    from robustcert.plotting import draw_certified_accuracy
    from robustcert.results import certified_accuracy, read_results

    frame = read_results(uninterrupted)
    ax = Figure().add_subplot()
    draw_certified_accuracy(ax, frame, "x")
    xs, ys = ax.lines[0].get_data()  # step(where="pre") vertices
    for r in np.linspace(0, frame["radius"].max() * 1.04, 50):
        k = int(np.searchsorted(xs, r, side="left"))  # value on (xs[k-1], xs[k]] is ys[k]
        assert ys[k] == pytest.approx(certified_accuracy(frame, [r])[0])


def test_demo_writes_tsvs_table_plot_and_readme(tmp_path):
    out_dir = tmp_path / "demo"
    args = ["demo", "--out-dir", out_dir, "--n", "60", "--n0", "10", "--max", "5"]
    result = invoke(*args)  # default: the three certify runs as parallel child processes
    assert result.exit_code == 0, result.stderr
    names = ["digits-0.12", "digits-0.25", "digits-0.50"]
    first = {}
    for name in names:
        first[name] = without_time(out_dir / f"{name}.tsv")
        assert len(first[name]) == 5
        record = json.loads((out_dir / f"{name}.tsv.json").read_text())
        assert record["command"].startswith(f"robustcert certify --model bundled:{name}")
        assert f"--out {out_dir / name}.tsv --max 5" in record["command"]
    table = (out_dir / "table.md").read_text()
    assert table.count("| 5 |") == 3 and "| sigma=0.25 |" in table
    assert (out_dir / "certified_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    readme = (out_dir / "README.md").read_text()
    assert "n=60" in readme and "alpha=0.001" in readme and table.strip() in readme
    assert "n0=10, n=60, alpha=0.001" in result.stdout
    # the demo's TSV is exactly what its recorded certify command writes
    again = tmp_path / "again.tsv"
    command = record["command"].split()[1:]
    command[command.index("--out") + 1] = str(again)
    assert invoke(*command, "--quiet").exit_code == 0
    assert without_time(again) == first["digits-0.50"]
    # in this process, one run after another: regenerates the same files
    assert invoke(*args, "--jobs", "1", "--quiet").exit_code == 0
    assert {name: without_time(out_dir / f"{name}.tsv") for name in names} == first


def test_demo_reports_a_failing_run_in_one_line(tmp_path):
    from robustcert.runs.demo import DemoRun, run_in_processes
    from robustcert.errors import RobustCertError

    result = invoke("demo", "--out-dir", tmp_path, "--n", "0")
    assert result.exit_code == 2 and result.stderr.strip() == "robustcert: error: n must be >= 1, got 0"
    bad = DemoRun("nope", 0.25, tmp_path / "bad.tsv", ["certify", "--model", "bundled:nope", "--sigma", "0.25",
                                                         "--out", str(tmp_path / "bad.tsv"), "--quiet"],
                  tmp_path / "bad.tsv")
    settings = dict(n0=10, n=10, alpha=0.001, batch_size=100, seed=0, max_inputs=1)
    with pytest.raises(RobustCertError, match="failed: no bundled model 'nope'") as info:
        run_in_processes([bad], settings, jobs=2, echo=print, quiet=True, expected_rows=1)
    assert "\n" not in str(info.value)


def test_help_lists_every_command():
    """The group's --help names every command (and nothing else), each command's own --help works,
    and each declares what an interrupted run of it leaves behind."""
    from robustcert.cli import INTERRUPTED_NOTES

    result = invoke("--help")
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:", 1)[1].splitlines()
    names = [line.split()[0] for line in listed if line.startswith("  ") and line.split()]
    assert sorted(names) == sorted(main.commands) and len(names) >= 9, names
    for command in main.commands:
        assert invoke(command, "--help").exit_code == 0, command
        assert INTERRUPTED_NOTES[command], command


def test_row_writer_recovers_what_a_killed_run_left(tmp_path):
    from robustcert.errors import RunError
    from robustcert.runs.files import RowWriter

    columns = tuple(HEADER.split("\t"))
    path = tmp_path / "r.tsv"
    path.write_text("idx\tlab")  # killed while writing the header: nothing to lose
    writer = RowWriter(path, columns, resume=True)
    writer.close()
    assert path.read_text() == HEADER + "\n" and writer.done == set()
    path.write_text(HEADER + "\n0\t1\t1\t0.5\t1\t0:00:01\n2\t3\t3\t0.2\t1\t0:00:01\n4\t5\t5")
    writer = RowWriter(path, columns, resume=True)
    writer.write("4\t5\t5\t0.3\t1\t0:00:01")
    writer.close()
    assert writer.done == {0, 2}
    assert path.read_text() == HEADER + "\n0\t1\t1\t0.5\t1\t0:00:01\n2\t3\t3\t0.2\t1\t0:00:01\n4\t5\t5\t0.3\t1\t0:00:01\n"
    path.write_text("idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t0:00:01\n")  # a predict file
    with pytest.raises(RunError, match="its header is"):
        RowWriter(path, columns, resume=True)
    assert path.read_text() == "idx\tlabel\tpredict\tcorrect\ttime\n0\t1\t1\t1\t0:00:01\n"


@pytest.mark.parametrize("method_args", [
    ["--method", "dual", "--model", "bundled:digits-dual-a-0.25", "--model2", "bundled:digits-dual-b-0.25"],
    ["--method", "lvm", "--maps", "softmax", "--temperatures", "1", "--model", "bundled:digits-0.25"],
])
def test_predict_with_other_methods(tmp_path, method_args):
    out = tmp_path / "pred.tsv"
    result = invoke("predict", *method_args, "--sigma", 0.25, "--n", 200, "--max", 6, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    rows = out.read_text().splitlines()
    assert rows[0] == "idx\tlabel\tpredict\tcorrect\ttime" and len(rows) == 7
    for row in rows[1:]:
        idx, label, predict, correct, _ = row.split("\t")
        assert int(correct) == int(predict == label)
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["method"] == method_args[1]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_a_run_that_fails_before_its_first_row_leaves_no_files(tmp_path):
    """NaN outputs on the very first input: one error line, and no header-only TSV or sidecar left
    behind (which a rerun would then refuse as 'already exists')."""
    data = tmp_path / "bright.npz"
    np.savez(data, x=np.ones((2, 1, 8, 8), dtype=np.float32), y=np.array([0, 9]))  # 10 classes
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(NaNOnBrightImages()), str(model))
    for command in (["certify", "--n0", "10"], ["predict"]):
        out = tmp_path / f"{command[0]}.tsv"
        result = invoke(*command, "--model", model, "--data", f"npz:{data}", "--sigma", "0.05", "--n", "50",
                        "--out", out)
        assert result.exit_code == 2 and result.stderr.splitlines() == [
            "robustcert: error: the base model returned NaN or infinite outputs on noisy inputs"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bright.npz", "model.pt"]


def test_resume_with_a_sidecar_that_is_not_an_object(tmp_path, uninterrupted):
    out = tmp_path / "done.tsv"
    out.write_bytes(uninterrupted.read_bytes())
    sidecar = Path(str(out) + ".json")
    sidecar.write_text("[1, 2]\n")
    result = invoke(*CERTIFY_ARGS, "--out", out, "--resume")
    assert result.exit_code == 2 and result.stderr.splitlines() == [
        f"robustcert: error: cannot resume: sidecar {sidecar} is not a robustcert sidecar (no parameters object)"]
    assert out.read_bytes() == uninterrupted.read_bytes() and sidecar.read_text() == "[1, 2]\n"


@pytest.mark.parametrize("option,message", [({"seed": -1}, "seed must be >= 0"),
                                            ({"max_inputs": 0}, "max_inputs must be >= 1")])
def test_demo_refuses_bad_input_before_replacing_its_last_output(tmp_path, option, message):
    from robustcert.runs.demo import run_demo
    from robustcert.errors import InvalidArgumentError

    earlier = tmp_path / "digits-0.12.tsv"
    earlier.write_text(HEADER + "\n0\t0\t0\t0.5\t1\t0.1\n")
    with pytest.raises(InvalidArgumentError, match=message):
        run_demo(tmp_path, n=20, n0=5, jobs=1, quiet=True, **{"max_inputs": 2, **option})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-0.12.tsv"]
    assert earlier.read_text() == HEADER + "\n0\t0\t0\t0.5\t1\t0.1\n"


@pytest.mark.parametrize("radius", ["inf", "nan", "-1"])
def test_result_files_with_impossible_radii_are_refused(tmp_path, radius):
    """inf crashed plot with a matplotlib traceback; nan and -1 were summarised as if valid."""
    path = tmp_path / "odd.tsv"
    path.write_text(f"{HEADER}\n0\t1\t1\t{radius}\t1\t0.1\n")
    for args in (["table", path], ["plot", path, "--out", tmp_path / "c.png"]):
        result = invoke(*args)
        assert result.exit_code == 2 and result.stderr.splitlines() == [
            f"robustcert: error: malformed row in {path}: radius {float(radius)} (must be a finite number >= 0)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.tsv"]


def test_plot_of_an_empty_file_says_it_is_empty(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("")
    result = invoke("plot", path, "--out", tmp_path / "c.png")
    assert result.exit_code == 2 and result.stderr.splitlines() == [
        f"robustcert: error: cannot read result file {path}: it is empty (no header line)"]


@pytest.mark.parametrize("args,message", [
    (["bench", "--models", "digits", "--quick", "--reps", "0"], "--reps must be >= 1, got 0"),
    (["bench", "--models", "digits", "--quick", "--threads", "-1"], "--threads must be >= 1, got -1"),
    (["bench", "--models", "digits", "--quick", "--n", "0"], "--n must be >= 1, got 0"),
    (["bench", "--models", "digits", "--quick", "--device", "bogus"], "unknown device 'bogus' (auto, cpu, cuda, cuda:1, ...)"),
    (["certify-policy", "--env", "CartPole-v1", "--policy", "cartpole-pd", "--sigma", "0.2", "--budgets", "0.1",
      "--max-episode-steps", "0"], "--max-episode-steps must be >= 1, got 0"),
    (["certify-policy", "--env", "CartPole-v1", "--policy", "cartpole-pd", "--sigma", "0.2", "--budgets", "0.1",
      "--max-episode-steps", "-1"], "--max-episode-steps must be >= 1, got -1"),
])
def test_bench_and_certify_policy_counts_are_checked_before_anything_is_written(tmp_path, args, message):
    out = ["--out-dir", tmp_path / "bench"] if args[0] == "bench" else ["--out", tmp_path / "p.tsv"]
    result = invoke(*args, *out)
    assert result.exit_code == 2 and result.stderr.splitlines() == [f"robustcert: error: {message}"]
    assert list(tmp_path.iterdir()) == []
