"""First contact (issue 13): what a new user meets on a fresh clone, tested where the user meets it.

One section per item of the issue: (1) no command writes over its inputs or over results, (2) the
demo replaces only its own files, (3) README examples (tests/test_readme.py), (4) csv tables are
data, (5) CPU threads, (6) no test depends on timing (tests/test_bench.py), (7) error lines that
say what to do, (8) tables, output lines, interrupted runs, help texts, (9) plot labels and the
largest certifiable radius. Real ``python -m robustcert`` processes where the process matters
(stdout off a terminal, signals, exit status); click's CliRunner (same code, in-process) elsewhere.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustcert.cli import main
from robustcert.errors import RobustCertError, RunError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SMALL = ["--data", "digits", "--n0", "10", "--n", "50", "--alpha", "0.001", "--batch", "500", "--device", "cpu",
         "--threads", "1", "--quiet"]


def robustcert(*args, cwd=None, timeout=600) -> subprocess.CompletedProcess:  # a guard against hangs
    return subprocess.run([sys.executable, "-m", "robustcert", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result) -> str:
    """The single stderr line of a refused command (exit status 2)."""
    stderr = result.stderr
    code = result.returncode if hasattr(result, "returncode") else result.exit_code
    assert code == 2, (code, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustcert: error: "), stderr
    return lines[0]


def digests(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (hidden ones too) with its SHA-256: what 'left alone' means."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Small certify and predict runs with their sidecars: a (4 rows, sigma 0.25), b (4 rows, sigma
    0.5), six (6 rows), p (a predict file, 4 rows)."""
    folder = tmp_path_factory.mktemp("runs")
    for name, model, sigma, extra in [("a", "digits-0.25", "0.25", ["--max", "4"]),
                                      ("b", "digits-0.50", "0.5", ["--max", "4"]),
                                      ("six", "digits-0.25", "0.25", ["--max", "6"])]:
        result = invoke("certify", "--model", f"bundled:{model}", "--sigma", sigma, *SMALL, *extra,
                        "--out", folder / f"{name}.tsv")
        assert result.exit_code == 0, result.output
    result = invoke("predict", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--data", "digits", "--n", "50",
                    "--device", "cpu", "--threads", "1", "--quiet", "--max", "4", "--out", folder / "p.tsv")
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def copies(runs, tmp_path):
    """The runs, copied into this test's own folder (tests may try to damage them)."""
    for path in runs.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


# --------------------------------------------------------------------------- 1. nothing overwrites results
def test_table_out_over_its_own_input_is_refused_and_the_file_is_untouched(copies):
    before = digests(copies)
    result = robustcert("table", "a.tsv", "--out", "a.tsv", cwd=copies)  # replaced hours of work before
    assert one_error_line(result) == "robustcert: error: refusing to write the table to a.tsv: it is one of the input files"
    assert result.stdout == "" and digests(copies) == before


def test_no_table_or_plot_output_lands_on_an_input_or_a_result_file(copies):
    (copies / "sub").mkdir()
    (copies / "link.tsv").symlink_to(copies / "a.tsv")
    shutil.copy(copies / "a.tsv", copies / "a-copy.png")  # a certify TSV with a figure's name
    before = digests(copies)
    cases = [
        (["table", "a.tsv", "--out", "sub/../a.tsv"], "it is one of the input files"),
        (["table", "a.tsv", "--out", "link.tsv"], "it is one of the input files"),
        (["table", "a.tsv", "--out", "a.tsv.json"], "refusing to overwrite a.tsv.json: it is the JSON sidecar of a robustcert certify run"),
        (["table", "a.tsv", "--out", "b.tsv"], "refusing to overwrite b.tsv: it is a certify result file"),
        (["table", "a.tsv", "--format", "csv", "--out", "p.tsv"], "it is a predict result file"),
        (["plot", "a-copy.png", "--out", "a-copy.png"], "refusing to write the figure to a-copy.png"),
        (["plot", "a.tsv", "--out", "a-copy.png"], "refusing to overwrite a-copy.png: it is a certify result file"),
        (["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", *SMALL, "--out", "a.tsv"],
         "a.tsv already exists and is not empty"),
    ]
    cwd = os.getcwd()
    os.chdir(copies)
    try:
        for args, message in cases:
            assert message in one_error_line(invoke(*args)), args
        assert digests(copies) == before
        written = invoke("table", "a.tsv", "b.tsv", "--out", "t.md")  # a table file may be rewritten
        assert written.exit_code == 0 and written.stdout == "wrote t.md\n"
        assert invoke("table", "a.tsv", "--out", "t.md").exit_code == 0
    finally:
        os.chdir(cwd)


def test_the_sidecar_of_an_earlier_run_is_never_overwritten(copies):
    (copies / "a.tsv").unlink()  # the TSV is gone, its record is not
    before = digests(copies)
    result = invoke("certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", *SMALL, "--out",
                    copies / "a.tsv")
    assert "a.tsv.json already exists (the record of an earlier run)" in one_error_line(result)
    assert digests(copies) == before


# --------------------------------------------------------------------------- 2. the demo
def demo_args(out_dir) -> list[str]:
    return ["demo", "--out-dir", str(out_dir), "--n", "20", "--n0", "5", "--max", "2", "--jobs", "1", "--quiet"]


def test_demo_leaves_a_users_own_files_byte_identical_and_refuses(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "digits-0.25.tsv").write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.9\t1\t3:00:00\n")
    (folder / "digits-0.25.tsv.json").write_text('{"kind": "certify", "parameters": {}, "note": "hours of work"}\n')
    (folder / "README.md").write_text("# my notes\n")
    (folder / "other.txt").write_text("x")
    before = digests(folder)
    result = robustcert(*demo_args(folder))
    assert "is not a file the demo wrote (or it changed since): it is a certify result file; it is left alone" \
        in one_error_line(result)
    assert digests(folder) == before  # nothing replaced, nothing added (no temporary folder left)


def test_demo_default_folder_is_not_under_version_control():
    from robustcert.runs.demo import DEFAULT_DEMO_DIR

    demo = main.commands["demo"]
    default = next(p.default for p in demo.params if p.name == "out_dir")
    assert Path(default) == DEFAULT_DEMO_DIR and not DEFAULT_DEMO_DIR.is_absolute()
    assert (ROOT / "results").resolve() not in (ROOT / DEFAULT_DEMO_DIR).resolve().parents
    if shutil.which("git") and (ROOT / ".git").exists():  # a clone: the default folder is ignored, untracked
        ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", f"{DEFAULT_DEMO_DIR}/digits-0.25.tsv"])
        assert ignored.returncode == 0
        tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", str(DEFAULT_DEMO_DIR)], capture_output=True,
                                 text=True)
        assert tracked.stdout == ""


def test_demo_replaces_only_files_it_wrote_itself_and_that_are_unchanged(tmp_path):
    from robustcert.runs.demo import MARKER_FILE, demo_file_names

    folder = tmp_path / "demo"
    first = invoke(*demo_args(folder))
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in folder.iterdir()) == sorted(demo_file_names())
    assert "| sigma=0.12 |" in (folder / "table.md").read_text()  # labels say sigma once, not model + sigma
    marker = json.loads((folder / MARKER_FILE).read_text())["files"]
    assert set(marker) == set(demo_file_names()[:-1])
    (folder / "mine.txt").write_text("mine")
    again = invoke(*demo_args(folder))  # its own unchanged files: replaced; anything else: left alone
    assert again.exit_code == 0, again.output
    assert (folder / "mine.txt").read_text() == "mine"
    (folder / "table.md").write_text("my edits\n")
    before = digests(folder)
    refused = invoke(*demo_args(folder))
    assert f"demo: {folder / 'table.md'} is not a file the demo wrote" in one_error_line(refused)
    assert digests(folder) == before


def test_a_demo_that_fails_halfway_leaves_the_previous_output_as_it_was(tmp_path, monkeypatch):
    from robustcert.runs import demo

    folder = tmp_path / "demo"
    assert invoke(*demo_args(folder)).exit_code == 0
    before = digests(folder)
    real = demo.certify_demo_model

    def second_run_fails(name, *args, **kwargs):
        if name == "digits-0.25":
            raise RobustCertError("simulated failure")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(demo, "certify_demo_model", second_run_fails)
    with pytest.raises(RobustCertError, match="simulated failure"):
        demo.run_demo(folder, n=20, n0=5, max_inputs=2, jobs=1, quiet=True, echo=lambda line: None)
    assert digests(folder) == before
    with pytest.raises(RobustCertError, match="simulated failure"):  # and a new folder is not left behind
        demo.run_demo(tmp_path / "new", n=20, n0=5, max_inputs=2, jobs=1, quiet=True, echo=lambda line: None)
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------- 4. csv is data
def test_csv_tables_are_data_for_pandas(runs):
    result = robustcert("table", "a.tsv", "b.tsv", "p.tsv", "--format", "csv", cwd=runs)
    assert result.returncode == 0, result.stderr
    assert "*" not in result.stdout and "#" not in result.stdout
    frame = pd.read_csv(io.StringIO(result.stdout), index_col=0)
    assert list(frame.index) == ["a", "b", "p"]
    assert all(pd.api.types.is_numeric_dtype(dtype) for dtype in frame.dtypes), frame.dtypes
    assert frame.loc["p", ["r=0", "ACR"]].isna().all() and frame.loc["a", "rows"] == 4
    marked = invoke("table", runs / "a.tsv", runs / "b.tsv", "--format", "csv", "--mark")
    assert "*" in marked.stdout and "#" not in marked.stdout


# --------------------------------------------------------------------------- 5. threads
def test_threads_are_an_option_and_recorded_in_the_sidecar(tmp_path):
    out = tmp_path / "t.tsv"
    result = robustcert("certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", *SMALL, "--max", "2",
                        "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {out} (2 rows) and t.tsv.json\n"  # also off a terminal (item 8)
    cpu = json.loads(out.with_name("t.tsv.json").read_text())["runs"][-1]["cpu"]
    assert cpu["threads"] == 1 and cpu["threads_rule"] == "given"
    for command in (["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25"],
                    ["certify-policy", "--env", "CartPole-v1", "--policy", "cartpole-pd", "--sigma", "0.2",
                     "--budgets", "0"]):
        refused = invoke(*command, "--threads", "0", "--out", tmp_path / "z.tsv")
        assert "threads must be >= 1, got 0" in one_error_line(refused)
    assert not (tmp_path / "z.tsv").exists()


def test_certify_policy_has_threads_too(tmp_path):
    pytest.importorskip("gymnasium")
    out = tmp_path / "cartpole.tsv"
    result = invoke("certify-policy", "--env", "CartPole-v1", "--policy", "cartpole-pd", "--sigma", "0.2",
                    "--episodes", "8", "--num-envs", "8", "--budgets", "0,0.1", "--max-episode-steps", "20",
                    "--threads", "1", "--quiet", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"wrote {out} (2 rows) and cartpole.tsv.json"
    run = json.loads(out.with_name("cartpole.tsv.json").read_text())["runs"][-1]
    assert run["cpu"]["threads"] == 1 and run["status"] == "finished"


@pytest.mark.parametrize("cores,busy,threads", [(2, 0.0, 2), (2, 0.3, 2), (2, 0.7, 1), (2, 1.96, 1), (2, 5.0, 1),
                                                (16, 2.0, 14), (16, 0.0, 16), (1, 0.0, 1)])
def test_default_threads_are_the_cores_other_processes_leave_idle(monkeypatch, cores, busy, threads):
    from robustcert.engine import device

    monkeypatch.setattr(device, "available_cores", lambda: cores)
    monkeypatch.setattr(device, "busy_cores", lambda window=0.2: busy)
    assert device.default_threads() == (threads, {"cores": cores, "busy_cores": busy, "measured_by": "busy_cores"})
    monkeypatch.setattr(device, "busy_cores", lambda window=0.2: None)  # no /proc/stat: the load average
    monkeypatch.setattr(device.os, "getloadavg", lambda: (busy, 0.0, 0.0))
    assert device.default_threads()[0] == threads
    before = torch.get_num_threads()
    try:
        record = device.configure_cpu(None, tune_allocator=False)
        assert torch.get_num_threads() == threads == record["threads"] and record["cores"] == cores
    finally:
        torch.set_num_threads(before)


def test_busy_cores_counts_the_other_processes_only(monkeypatch):
    """busy = (all CPU seconds - this process's CPU seconds) / wall seconds over the window."""
    from types import SimpleNamespace

    from robustcert.engine import device

    readings = iter([100.0, 101.5])  # all processes: 1.5 CPU s during the window
    own = iter([(3.0, 1.0, 0, 0, 0), (3.2, 1.1, 0, 0, 0)])  # this process: 0.3 CPU s of them
    clock = iter([10.0, 11.0])
    monkeypatch.setattr(device, "_busy_cpu_seconds", lambda: next(readings))
    monkeypatch.setattr(device.os, "times", lambda: next(own))
    monkeypatch.setattr(device, "time", SimpleNamespace(monotonic=lambda: next(clock), sleep=lambda seconds: None))
    assert device.busy_cores() == pytest.approx(1.2)
    monkeypatch.setattr(device, "_busy_cpu_seconds", lambda: None)  # no /proc/stat (macOS, Windows)
    assert device.busy_cores() is None


# --------------------------------------------------------------------------- 7. error lines that help
def test_error_lines_say_what_is_wrong_and_what_to_do(tmp_path):
    text_model = tmp_path / "model.txt"
    text_model.write_text("hello, I am not a model\n")
    result = robustcert("certify", "--model", text_model, "--sigma", "0.25", "--out", tmp_path / "x.tsv")
    assert one_error_line(result) == (
        f"robustcert: error: cannot read checkpoint {text_model}: it is a text file, not a model; give a file "
        "saved with torch.save (a state_dict or {'arch', 'state_dict'}), a TorchScript file, or bundled:NAME")

    result = invoke("certify", "--method", "dual", "--model", "bundled:digits-0.25", "--sigma", "0.25",
                    "--out", tmp_path / "x.tsv")  # was a shape mismatch about sub-images
    assert one_error_line(result) == ("robustcert: error: --method dual needs --model2 (the base model of "
                                      "sub-image b; --model is sub-image a's)")
    assert list(tmp_path.iterdir()) == [text_model]


def test_a_wrong_architecture_names_the_architecture_the_weights_fit(tmp_path):
    from robustcert.models import build_model

    digits = tmp_path / "digits.pt"
    torch.save(build_model("digits_cnn").state_dict(), digits)
    resnet = tmp_path / "resnet20.pth.tar"
    torch.save({"arch": "cifar_resnet110", "state_dict": build_model("cifar_resnet20").state_dict()}, resnet)
    cases = [(digits, "digits_sub_8x4", "its weights fit digits_cnn (give --arch digits_cnn)"),
             (resnet, None, "its weights fit cifar_resnet20 (give --arch cifar_resnet20)")]
    for path, arch, message in cases:
        result = invoke("certify", "--model", path, *(["--arch", arch] if arch else []), "--sigma", "0.25",
                        "--out", tmp_path / "x.tsv")
        line = one_error_line(result)
        assert line.endswith(message) and len(line) < 200, line
    broken = build_model("digits_cnn").state_dict()
    broken.pop("1.classifier.3.weight")
    torch.save(broken, tmp_path / "broken.pt")
    line = one_error_line(invoke("certify", "--model", tmp_path / "broken.pt", "--arch", "digits_cnn", "--sigma",
                                 "0.25", "--out", tmp_path / "x.tsv"))
    assert "nor any other known one" in line and "1 missing key (e.g. 1." in line  # whole key names, no cut


# --------------------------------------------------------------------------- 8. smaller things
def test_best_values_are_marked_only_among_comparable_files(runs):
    different_rows = invoke("table", runs / "a.tsv", runs / "six.tsv")
    assert different_rows.exit_code == 0 and "**" not in different_rows.stdout
    assert different_rows.stderr == ("robustcert: note: no best value marked: no two files are of the same kind "
                                     "(certify/predict) with the same number of rows and mode (fixed n, or a sequential "
                                     "target radius)\n")
    mixed = robustcert("table", "a.tsv", "b.tsv", "p.tsv", cwd=runs)
    assert mixed.returncode == 0
    lines = {line.split(" | ")[0].strip("| "): line for line in mixed.stdout.splitlines()[2:]}
    assert "**" not in lines["p"] and ("**" in lines["a"] or "**" in lines["b"])
    assert mixed.stderr == ("robustcert: note: best values marked only among files of the same kind "
                            "(certify/predict) with the same number of rows and mode (fixed n, or a sequential target "
                            "radius): a, b\n")


def test_a_certify_policy_file_gets_a_table_too(tmp_path, runs):
    policy = ROOT / "results" / "policy" / "cartpole-sigma0.2.tsv"
    result = invoke("table", policy)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| file | budget | certified_return | certified_q10 |")
    assert len(lines) == 2 + len(pd.read_csv(policy, sep="\t"))
    assert lines[2].startswith("| cartpole-sigma0.2 | 0 | 192.071 |")
    mixed = invoke("table", policy, runs / "a.tsv")
    assert "cannot share a table" in one_error_line(mixed)


def test_every_command_that_writes_says_what_it_wrote(tmp_path, runs):
    """certify: test_threads_are_an_option_and_recorded_in_the_sidecar (a real process); certify-policy:
    test_certify_policy_has_threads_too; table --out: test_no_table_or_plot_output_lands_on_..."""
    predict = invoke("predict", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n", "30", "--max", "2",
                     "--threads", "1", "--quiet", "--out", tmp_path / "p.tsv")
    assert predict.stdout == f"wrote {tmp_path / 'p.tsv'} (2 rows) and p.tsv.json\n"
    plot = invoke("plot", runs / "a.tsv", "--out", tmp_path / "c.png")
    assert plot.stdout == f"wrote {tmp_path / 'c.png'}\n"


@pytest.mark.parametrize("signum,status,how", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_an_interrupted_run_says_so_in_its_sidecar(tmp_path, signum, status, how):
    out = tmp_path / "long.tsv"
    process = subprocess.Popen([sys.executable, "-m", "robustcert", "certify", "--model", "bundled:digits-0.25",
                                "--sigma", "0.25", "--n", "2000", "--n0", "10", "--batch", "500", "--threads", "1",
                                "--device", "cpu", "--quiet", "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    while process.poll() is None:  # however slow the machine; 360 inputs take far longer than one
        if out.exists() and out.read_text().count("\n") >= 2:  # header and one row: the run is under way
            break
        time.sleep(0.02)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == status, stderr
    (line,) = stderr.strip().splitlines()  # what was kept, counted
    assert re.fullmatch(rf"robustcert: {how} \((\d+) of 360 rows are in {re.escape(str(out))} \(\1 from this run\); "
                        r"--resume continues\)", line), line
    assert int(re.search(r"\((\d+) of", line).group(1)) == out.read_text().count("\n") - 1
    run = json.loads(out.with_name("long.tsv.json").read_text())["runs"][-1]
    assert run["status"] == "interrupted" and "interrupted" in run and "finished" not in run
    assert 1 <= len(out.read_text().splitlines()) - 1 < 360


def test_a_run_that_fails_midway_says_failed_in_its_sidecar(tmp_path):
    data = tmp_path / "d.npz"
    x = np.zeros((3, 1, 8, 8), dtype=np.float32)
    x[2] = 1.0  # the third image makes the model return NaN
    np.savez(data, x=x, y=np.array([0, 1, 9]))
    model = tmp_path / "nan.pt"

    class NaNOnBright(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 10)
            return torch.where(x.flatten(1).mean(1, keepdim=True) > 0.8, torch.full_like(logits, float("nan")), logits)

    torch.jit.save(torch.jit.script(NaNOnBright()), str(model))
    out = tmp_path / "f.tsv"
    result = invoke("certify", "--model", model, "--data", f"npz:{data}", "--sigma", "0.01", "--n0", "5", "--n", "20",
                    "--batch", "10", "--threads", "1", "--out", out)
    assert "NaN" in one_error_line(result)
    run = json.loads(out.with_name("f.tsv.json").read_text())["runs"][-1]
    assert run["status"] == "failed" and "NaN" in run["error"] and "finished" not in run
    assert len(out.read_text().splitlines()) == 3  # header and the two rows before the failure


def normalised(text: str) -> str:
    return " ".join(text.split())


def test_help_texts(runs):
    from robustcert.runs.demo import DEMO_DURATION

    readme = normalised((ROOT / "README.md").read_text())
    assert DEMO_DURATION in readme  # --help and README give the demo's duration from one constant
    assert DEMO_DURATION in normalised(invoke("--help").stdout)
    assert DEMO_DURATION in normalised(invoke("demo", "--help").stdout)
    predict_help = invoke("predict", "--help").stdout
    assert "Certify every" not in predict_help and "Use every SKIP-th input" in normalised(predict_help)
    undocumented = [f"{name} {param.opts[0]}" for name, command in main.commands.items() for param in command.params
                    if isinstance(param, click.Option) and not param.help and param.name != "help"]
    assert undocumented == []
    certify_help = invoke("certify", "--help").stdout
    headers = [line[:-1] for line in certify_help.splitlines() if line and not line.startswith(" ") and
               line.endswith(":")]
    assert headers == ["Model and data", "Certification", "--method cohen, dual: sequential",
                       "--method cohen: floating-point-sound certificates", "--method dual", "--method lvm",
                       "--method ablation", "Diffusion denoiser (any method)", "Engine and speed", "Output",
                       "Other options"]


def test_default_radius_grid_has_no_column_that_is_zero_for_every_file(runs):
    from robustcert.results import table_from_files

    published = sorted((ROOT / "tests/data/cohen2019/certify/cifar10").rglob("sigma_*"))
    for paths in ([runs / "a.tsv", runs / "b.tsv"], [runs / "a.tsv"], published):
        table = table_from_files(paths)
        radius_columns = [c for c in table.columns if c.startswith("r=")]
        assert radius_columns and (table[radius_columns].max() > 0).all(), table


# --------------------------------------------------------------------------- 9. the plot
def test_plot_names_curves_after_files_with_sigma_and_marks_the_largest_certifiable_radius(runs):
    from matplotlib.figure import Figure

    from robustcert.plotting import LIMIT_NOTE, draw_files
    from robustcert.radius import largest_gaussian_radius

    published = ROOT / "tests/data/cohen2019/certify/cifar10/resnet110/noise_0.25/test/sigma_0.25"
    ax = Figure().add_subplot()
    draw_files(ax, [runs / "a.tsv", runs / "b.tsv", published])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "a, sigma=0.25", "b, sigma=0.5", "sigma_0.25", LIMIT_NOTE]  # no sidecar: no sigma, no line
    dotted = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":")
    assert dotted == pytest.approx([largest_gaussian_radius(s, 50, 0.001) for s in (0.25, 0.5)])
    assert ax.get_xlim()[1] >= max(dotted)


def test_the_largest_certifiable_radius_is_what_a_unanimous_model_gets():
    """sigma * Phi^-1(alpha^(1/n)): a constant classifier gets every vote, hence exactly this radius."""
    from robustcert import Smooth
    from robustcert.radius import gaussian_radius, largest_gaussian_radius
    from robustcert.stats import clopper_pearson_lower

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((x.shape[0],), 3), 10).float()

    for n, alpha in [(1000, 0.001), (250, 0.05)]:
        cert = Smooth(Constant(), 10, 0.5).certify(torch.zeros(1, 8, 8), n0=10, n=n, alpha=alpha, batch_size=500)
        assert cert.radius == pytest.approx(largest_gaussian_radius(0.5, n, alpha), rel=1e-9)
        assert largest_gaussian_radius(0.5, n, alpha) == pytest.approx(
            gaussian_radius(0.5, clopper_pearson_lower(n, n, alpha)), rel=1e-9)
    assert largest_gaussian_radius(1.0, 100_000, 0.001) == pytest.approx(3.81, abs=0.005)
    assert math.isclose(largest_gaussian_radius(2.0, 10_000, 0.001), 2 * largest_gaussian_radius(1.0, 10_000, 0.001))
