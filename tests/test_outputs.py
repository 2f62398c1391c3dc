"""Nothing lost, nothing silent, where a user meets it: one writer per output (a second one is
refused with the holder's PID, a kill -9 leaves no lock behind), no command writes over a file it
did not write (--force only for files robustcert knows nothing about), tables and figures say when
a file's rows are duplicated, missing or unfinished, progress reaches a log, and the smaller
promises of issue 22 (messages, warnings, splits, the sound mode's grid, ranks' batch).

Processes are synchronised on files (a lock holder writes a marker, a run's rows appear), never
on sleeps racing the clock; a deadline only bounds how long a test may wait.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from robustcert import InvalidArgumentError, ResultsError, RobustCertWarning, Smooth, load_dataset, load_model
from robustcert.cli import main
from robustcert.files import FileRecord, OutputBusyError, check_derived_output, describe_file, is_locked, output_lock
from robustcert.results import table_from_files

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 300  # seconds a test may wait for another process to reach a point (a loaded machine is slow)
CERTIFY = ["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n0", "50", "--n", "200", "--threads",
           "1"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def robustcert(*args, cwd=None, env=None, **popen):
    """``python -m robustcert ARGS`` as a user runs it (this checkout first on the path)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   "OMP_NUM_THREADS": "1", **(env or {})}
    return [sys.executable, "-m", "robustcert", *map(str, args)], dict(cwd=cwd, env=environment, **popen)


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    command, options = robustcert(*args, **kwargs)
    return subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE, **options)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def rows(path: Path) -> int:
    try:
        return max(path.read_bytes().count(b"\n") - 1, 0)
    except OSError:
        return 0


def one_error_line(stderr: str, message: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustcert: error: ") and message in lines[0], stderr


@pytest.fixture(scope="module")
def certified(tmp_path_factory) -> Path:
    """A small finished certify run (TSV and sidecar), read-only for the tests."""
    out = tmp_path_factory.mktemp("certified") / "c.tsv"
    result = invoke(*CERTIFY, "--max", "12", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    return out


def copy_run(source: Path, target: Path, rows_kept=None, extra_rows: int = 0, **sidecar_changes) -> Path:
    """A copy of a run's TSV (some rows, some rows repeated) and sidecar (fields changed)."""
    lines = source.read_text().splitlines()
    body = lines[1:] if rows_kept is None else lines[1:1 + rows_kept]
    target.write_text("\n".join([lines[0], *body, *lines[1:1 + extra_rows]]) + "\n")
    record = json.loads(Path(f"{source}.json").read_text())
    for key, value in sidecar_changes.items():
        if key == "status":
            record["runs"][-1]["status"] = value
        elif key == "parameters":
            record["parameters"].update(value)
        else:
            record[key] = value
    Path(f"{target}.json").write_text(json.dumps(record))
    return target


# --------------------------------------------------------------------------- one writer per output
# Another process holding an output's lock, by the protocol of robustcert.files.output_lock (flock
# on .NAME.lock, its PID written in it), without importing robustcert (seconds of torch import).
HOLDER = """
import fcntl, os, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
descriptor = os.open(out.with_name("." + out.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(descriptor, fcntl.LOCK_EX)
os.write(descriptor, f"{os.getpid()} robustcert certify --out {out}\\n".encode())
pathlib.Path(sys.argv[2]).write_text("locked")
while not pathlib.Path(sys.argv[3]).exists():
    time.sleep(0.05)
os.unlink(out.with_name("." + out.name + ".lock"))
"""


def test_a_second_writer_is_refused_with_the_holders_pid_and_nothing_changes(tmp_path, certified):
    out = tmp_path / "same.tsv"
    args = [*CERTIFY, "--max", "12", "--out", out, "--quiet"]
    out.write_bytes(certified.read_bytes())
    Path(f"{out}.json").write_bytes(Path(f"{certified}.json").read_bytes())
    before = out.read_bytes(), Path(f"{out}.json").read_bytes()
    locked, release = tmp_path / "locked", tmp_path / "release"
    command, options = robustcert()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(locked), str(release)],
                              env=options["env"])
    try:
        wait_for(locked.exists, "the first writer to hold the lock")
        second = run(*args, "--resume")  # resuming, as "already exists ... --resume" suggests
        assert second.returncode == 2
        one_error_line(second.stderr, f"is being written by another process (PID {holder.pid}: robustcert certify")
        second = invoke(*args)
        assert second.exit_code == 2 and f"PID {holder.pid}" in second.stderr
        assert (out.read_bytes(), Path(f"{out}.json").read_bytes()) == before
        with pytest.raises(OutputBusyError, match=f"PID {holder.pid}"):
            with output_lock(out):
                pass
        assert is_locked(out)
    finally:
        release.write_text("")
        holder.wait(timeout=DEADLINE)
    assert not is_locked(out) and not (tmp_path / ".same.tsv.lock").exists()  # released and removed
    again = invoke(*args, "--resume")
    assert again.exit_code == 0, again.output


def test_after_kill_9_the_stale_lock_file_does_not_block_resume(tmp_path):
    out = tmp_path / "k.tsv"
    args = ["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n0", "100", "--n", "5000",
            "--threads", "1", "--max", "200", "--out", out]
    command, options = robustcert(*args)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **options)
    wait_for(lambda: rows(out) >= 2, "the first rows")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=DEADLINE)
    written = rows(out)
    assert written < 200 and (tmp_path / ".k.tsv.lock").exists()  # killed mid-run: its lock file is left
    command, options = robustcert(*args, "--resume", env={"ROBUSTCERT_PROGRESS_SECONDS": "0"})
    log = tmp_path / "resume.log"
    with open(log, "w") as stderr:
        resumed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, **options)
        wait_for(lambda: rows(out) > written + 1 or resumed.poll() is not None, "the resumed run's rows")
        resumed.send_signal(signal.SIGTERM)
        resumed.wait(timeout=DEADLINE)
    text = log.read_text()
    assert "being written" not in text and "error" not in text, text
    frame = pd.read_csv(out, sep="\t")
    assert len(frame) > written and not frame["idx"].duplicated().any()
    runs = json.loads(Path(f"{out}.json").read_text())["runs"]
    assert len(runs) == 2 and "status" not in runs[0]  # the killed run never recorded its end
    if resumed.returncode == 143:  # stopped by SIGTERM: it says how far it got (else it had finished)
        assert runs[-1]["status"] == "interrupted"
        assert f"of 200 rows are in {out}" in text and "--resume continues" in text, text


# --------------------------------------------------------------------------- never over a foreign file
def test_table_and_plot_never_replace_a_file_they_did_not_write(tmp_path, certified):
    model, notes = tmp_path / "model.pt", tmp_path / "notes.txt"
    torch.save({"w": torch.zeros(3)}, model)
    notes.write_text("x\n")
    kept = model.read_bytes(), notes.read_bytes()
    refused = invoke("table", certified, "--out", model)
    one_error_line(refused.stderr, "refusing to overwrite")
    assert "it is a PyTorch file" in refused.stderr and "--force" in refused.stderr
    refused = invoke("table", certified, "--format", "csv", "--out", notes)
    one_error_line(refused.stderr, "it is a text file, not a table that robustcert table wrote there")
    assert invoke("plot", certified, "--out", tmp_path / "mine.png").exit_code == 0
    (tmp_path / "other.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    one_error_line(invoke("plot", certified, "--out", tmp_path / "other.png").stderr, "it is a PNG image")
    assert (model.read_bytes(), notes.read_bytes()) == kept
    # their own earlier output is replaced; --force replaces a file robustcert knows nothing about
    assert invoke("table", certified, "--out", tmp_path / "t.md").exit_code == 0
    assert invoke("table", certified, "--radii", "0,0.5", "--out", tmp_path / "t.md").exit_code == 0
    one_error_line(invoke("table", certified, "--out", tmp_path / "mine.png").stderr,
                   "it is a figure that robustcert plot wrote")
    forced = run("table", certified, "--format", "csv", "--out", notes, "--force")
    assert forced.returncode == 0 and notes.read_text().startswith("file,")
    record = json.loads((tmp_path / ".robustcert-files.json").read_text())
    assert record["kinds"] == {"mine.png": "figure", "t.md": "table", "notes.txt": "table"}
    # never, even with --force: a result file, a sidecar, a checkpoint robustcert train wrote
    trained = tmp_path / "m.pt"
    assert invoke("train", "--sigma", "0.25", "--epochs", "1", "--batch", "64", "--threads", "1", "--quiet",
                  "--out", trained).exit_code == 0
    result_file = copy_run(certified, tmp_path / "r.tsv")
    for target, what in ((trained, "a checkpoint written by robustcert train"), (result_file, "a certify result file"),
                         (Path(f"{result_file}.json"), "the JSON sidecar of a robustcert certify run")):
        before = target.read_bytes()
        one_error_line(invoke("table", certified, "--out", target, "--force").stderr, what)
        assert target.read_bytes() == before


def test_commands_refuse_an_output_of_another_kind_and_say_what_it_is(tmp_path, certified):
    model = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, model)
    before = model.read_bytes()
    for extra in ([], ["--resume"]):
        one_error_line(invoke(*CERTIFY, "--max", "2", "--out", model, *extra).stderr,
                       f"refusing to write over {model}: it is a PyTorch file")
        one_error_line(invoke("train", "--sigma", "0.25", "--epochs", "1", "--out", model, *extra).stderr,
                       "not the output of a robustcert train run")
    one_error_line(invoke("predict", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--max", "2", "--out",
                          certified, "--resume").stderr, "it is a certify result file, not the output of a robustcert "
                                                         "predict run")
    assert model.read_bytes() == before


def test_a_table_made_before_the_record_needs_force_once(tmp_path, certified):
    old = tmp_path / "table.md"
    old.write_text(invoke("table", certified).output)  # printed, saved by the shell: robustcert did not write it
    with pytest.raises(ResultsError, match="--force"):
        check_derived_output(old, [certified], "table", "table")
    assert invoke("table", certified, "--out", old, "--force").exit_code == 0
    assert FileRecord(tmp_path).kind_of(old) == "table"
    old.write_text(old.read_text() + "edited by hand\n")  # changed since: no longer robustcert's
    assert "changed since" in describe_file(old)
    assert invoke("table", certified, "--out", old).exit_code == 2


# --------------------------------------------------------------------------- tables say what they count
def test_duplicated_rows_are_counted_once_with_a_warning_or_refused(tmp_path, certified):
    twice = copy_run(certified, tmp_path / "twice.tsv", extra_rows=5)  # rows 0-4 again, identical
    result = invoke("table", twice)
    assert result.exit_code == 0
    assert "robustcert: warning: " in result.stderr and "5 duplicated idx rows" in result.stderr
    assert "| 12 |" in result.output  # 12 rows counted, not 17
    with pytest.warns(RobustCertWarning, match="duplicated"):
        assert table_from_files([twice])["rows"].iloc[0] == 12
    lines = twice.read_text().splitlines()
    cells = lines[-1].split("\t")
    cells[3] = "9.99"  # the repeated idx now disagrees: no rule can say which row is the result
    twice.write_text("\n".join([*lines[:-1], "\t".join(cells)]) + "\n")
    result = invoke("table", twice)
    assert result.exit_code == 2 and "more than once with different results" in result.stderr
    with pytest.warns(RobustCertWarning, match="counted once"):
        from robustcert import results_table

        frame = pd.read_csv(certified, sep="\t")
        assert results_table({"x": pd.concat([frame, frame])})["rows"].iloc[0] == 12


def test_unfinished_runs_and_missing_rows_are_said_on_stderr(tmp_path, certified):
    stopped = copy_run(certified, tmp_path / "stopped.tsv", rows_kept=5, status="interrupted")
    result = invoke("table", stopped)
    assert result.exit_code == 0
    assert "its last run was interrupted" in result.stderr and "it has 5 of the 12 rows its run asked for" in result.stderr
    failed = copy_run(certified, tmp_path / "failed.tsv", status="failed")
    assert "its last run failed" in invoke("table", failed).stderr
    plotted = invoke("plot", stopped, "--out", tmp_path / "s.png")
    assert plotted.exit_code == 0 and "interrupted" in plotted.stderr
    assert invoke("table", certified).stderr == ""  # a finished, complete run: nothing to say


def test_target_radius_runs_are_marked_and_not_ranked_against_fixed_n_runs(tmp_path, certified):
    target = copy_run(certified, tmp_path / "seq.tsv", parameters={"sequential": True, "target_radius": 0.5})
    other = copy_run(certified, tmp_path / "other.tsv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning about anything else
        result = invoke("table", other, target)
    assert result.exit_code == 0
    assert "seq [sequential, target r=0.5]" in result.output and "**" not in result.output
    assert "same number of rows and mode" in result.stderr
    assert "[sequential, target r=0.5]" in " ".join(table_from_files([target]).index)


def test_l0_tables_count_whole_pixels(tmp_path, certified):
    l0 = copy_run(certified, tmp_path / "l0.tsv", norm="l0")
    frame = pd.read_csv(l0, sep="\t")
    frame["radius"] = (frame["radius"] * 10).round().astype(float)  # a few pixels each
    frame.to_csv(l0, sep="\t", index=False)
    table = table_from_files([l0])
    radii = [float(c.split("=")[1]) for c in table.columns if c.startswith("l0 r=")]
    assert len(radii) >= 2 and all(r.is_integer() for r in radii)
    with pytest.raises(ResultsError, match="whole numbers"):
        table_from_files([l0], radii="0,0.5")
    assert invoke("plot", l0, "--out", tmp_path / "l0.png").exit_code == 0


def test_plot_converts_to_linf_with_norm(tmp_path, certified):
    result = invoke("plot", certified, "--norm", "linf", "--out", tmp_path / "linf.png")
    assert result.exit_code == 0 and "l-infinity" in result.stderr


# --------------------------------------------------------------------------- progress in a log
def test_progress_reaches_a_log_as_lines_and_quiet_stays_silent(tmp_path, monkeypatch):
    args = [*CERTIFY, "--max", "4", "--batch", "250"]  # one input per engine call (n0 + n = 250)
    log = run(*args, "--out", tmp_path / "a.tsv", env={"ROBUSTCERT_PROGRESS_SECONDS": "0"})
    assert log.returncode == 0, log.stderr
    lines = log.stderr.splitlines()
    assert "\r" not in log.stderr and log.stderr.endswith("\n")
    assert [line.split(" inputs")[0] for line in lines[:4]] == [f"certify: {k}/4" for k in range(1, 5)]
    assert "inputs/s" in lines[0] and "ETA" in lines[0] and lines[-1].startswith("certify: 4/4 inputs in ")
    monkeypatch.setenv("ROBUSTCERT_PROGRESS_SECONDS", "0")
    quiet = invoke(*args, "--out", tmp_path / "b.tsv", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert invoke(*args, "--out", tmp_path / "c.tsv").stderr.count("certify: ") == 5  # the same lines in-process


def test_log_progress_prints_while_a_long_step_runs():
    """The lines come from a timer thread, not from updates: one slow input still gets them."""
    from robustcert.runs.progress import LogProgress

    stream = io.StringIO()
    progress = LogProgress(3, "input", what="certify", interval=0.01, stream=stream)
    wait_for(lambda: progress.lines >= 3, "three progress lines without an update")
    progress.update(3)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("certify: 0/3 inputs (0%), first input running, elapsed")
    assert lines[-1].startswith("certify: 3/3 inputs in ")


# --------------------------------------------------------------------------- train: resume and interruptions
def test_train_resume_extends_a_finished_run_and_says_what_it_can_do(tmp_path):
    out = tmp_path / "m.pt"
    base = ["train", "--sigma", "0.25", "--batch", "64", "--lr", "0.05", "--threads", "1", "--out", out]
    assert invoke(*base, "--epochs", "2", "--quiet").exit_code == 0
    before = out.read_bytes()
    same = invoke(*base, "--epochs", "2", "--resume", "--quiet")
    assert same.exit_code == 0 and "nothing to train" in same.output and out.read_bytes() == before
    longer = invoke(*base, "--epochs", "3", "--resume")
    assert longer.exit_code == 0 and "extending" in longer.output and "3 epochs" in longer.output
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["parameters"]["epochs"] == 3 and len(record["epochs"]) == 3
    assert record["runs"][-1]["extended"] == {"from_epochs": 2, "to_epochs": 3, "lr_step": 1}
    shorter = invoke(*base, "--epochs", "1", "--resume")
    assert shorter.exit_code == 2 and "cannot be shortened" in shorter.stderr
    other = invoke(*base, "--epochs", "4", "--lr", "0.1", "--resume")
    assert other.exit_code == 2 and "differs from the first run in lr" in other.stderr


@pytest.mark.parametrize("stop_at,note", [(0, "no epoch finished: nothing was written"),
                                          (2, "epoch 2 of 5 is saved in")])
def test_an_interrupted_train_says_what_it_kept(tmp_path, monkeypatch, stop_at, note):
    from robustcert.runs import train

    original = train._Trainer.train_epoch

    def stop(self, epoch, bar):
        if epoch == stop_at:
            raise KeyboardInterrupt
        return original(self, epoch, bar)

    monkeypatch.setattr(train._Trainer, "train_epoch", stop)
    out = tmp_path / "m.pt"
    result = invoke("train", "--sigma", "0.25", "--epochs", "5", "--batch", "64", "--threads", "1", "--quiet",
                    "--out", out)
    assert result.exit_code == 130 and f"robustcert: interrupted ({note}" in result.stderr, result.stderr
    assert out.exists() == (stop_at > 0)


# --------------------------------------------------------------------------- smaller promises
def test_certify_policy_without_the_rl_extra_is_one_line(tmp_path):
    code = ("import sys; sys.modules['gymnasium'] = None; from robustcert.cli import main; "
            "sys.argv = ['robustcert', 'certify-policy', '--env', 'CartPole-v1', '--policy', 'cartpole-0.2', "
            f"'--sigma', '0.2', '--budgets', '0', '--out', {str(tmp_path / 'p.tsv')!r}]; main()")
    command, options = robustcert()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE, **options)
    assert result.returncode == 2
    one_error_line(result.stderr, "certify-policy needs the rl extra")
    assert 'pip install -e ".[rl]"' in result.stderr and not (tmp_path / "p.tsv").exists()


def test_the_diffusion_hint_works_from_a_checkout():
    from robustcert.methods.diffusion import INSTALL_HINT

    assert 'pip install -e ".[diffusion]"' in INSTALL_HINT
    assert 'pip install -e \\".[diffusion]\\"' not in invoke("certify", "--help").output


def test_a_sigma_other_than_the_trained_one_is_warned(tmp_path):
    args = ["certify", "--model", "bundled:digits-0.25", "--n0", "20", "--n", "50", "--max", "1", "--quiet"]
    other = invoke(*args, "--sigma", "0.5", "--out", tmp_path / "a.tsv")
    assert other.exit_code == 0
    assert other.stderr.startswith("robustcert: warning: bundled:digits-0.25 was trained at sigma 0.25")
    assert len(other.stderr.splitlines()) == 1
    assert invoke(*args, "--sigma", "0.25", "--out", tmp_path / "b.tsv").stderr == ""


def test_messages_name_what_a_user_typed(tmp_path):
    text = tmp_path / "data.npz"
    text.write_text("x,y\n0.5,1\n")
    result = invoke(*CERTIFY, "--data", f"npz:{text}", "--out", tmp_path / "a.tsv")
    assert result.exit_code == 2 and "cannot read npz:" in result.stderr and "it is a text file" in result.stderr
    assert "allow_pickle" not in result.stderr
    result = invoke(*CERTIFY, "--sequential", "--out", tmp_path / "b.tsv")
    assert result.exit_code == 2 and "--target-radius R or --tolerance T" in result.stderr


def test_demo_children_are_born_ignoring_interrupts():
    """A Ctrl-C reaches every process of the terminal; the demo's children must not die of it while
    they still import robustcert (a traceback, and the pool's semaphores leaked)."""
    from robustcert.runs.demo import _children_born_ignoring_interrupts

    code = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
    with _children_born_ignoring_interrupts():
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
    assert child.stdout.strip() == "True"
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # the parent's handler is back


def test_the_demo_figure_title_names_the_models():
    from robustcert.runs.demo import plot_title

    assert plot_title(10_000, 0.001) == ("Bundled models digits-0.12, digits-0.25, digits-0.50 at their sigma, "
                                         "n=10000, alpha=0.001")


def test_digits_val_is_held_out_of_train_and_test():
    def images(split):
        return {tuple(x.flatten().tolist()) + (int(y),) for x, y in load_dataset("digits", split)}

    train, val, test = images("train"), images("val"), images("test")
    assert len(load_dataset("digits", "val")) == 144 and len(load_dataset("digits", "train")) == 1293
    assert not (val & test) and not (val & train)
    from robustcert.data import digits_arrays

    assert len(digits_arrays("train+val")[0]) == 1437  # what the bundled models were trained on


def test_ranks_use_rank_zeros_automatic_batch(monkeypatch):
    from robustcert.runs import dataset, sharded

    class World:
        def __init__(self, rank):
            self.rank, self.sent = rank, []

        def broadcast(self, value):
            self.sent.append(value)
            return 384  # rank 0's choice

    class Probe:
        def resolve_batch_size(self, batch_size, input_shape):
            return 1000 if batch_size == "auto" else batch_size

    for rank, sent in ((0, [1000]), (1, [None])):
        world = World(rank)
        monkeypatch.setattr(sharded, "current", lambda: world)
        assert dataset.run_batch_size(Probe(), "auto", (1, 8, 8)) == 384 and world.sent == sent
        assert dataset.run_batch_size(Probe(), 200, (1, 8, 8)) == 200  # a given batch is everyone's already


def test_sound_mode_accepts_float32_rounding_of_the_grid_and_records_it():
    smoothed = Smooth(load_model("bundled:digits-0.25"), num_classes=10, sigma=0.25, sound_float=True,
                      quantization=16)
    x = torch.as_tensor(load_dataset("digits")[0][0]).double()
    near = (x + 2.0 ** -25).float()  # within float32 rounding of k/16: certified as k/16, and says so
    certificate = smoothed.certify(near, n0=20, n=100, alpha=0.01, seed=0)
    rounding = certificate.details["sound_float"]["rounding_l2"]
    assert 0 < rounding <= 8 * 2.0 ** -23
    assert smoothed.certify(x.float(), n0=20, n=100, alpha=0.01, seed=0).details["sound_float"]["rounding_l2"] == 0
    with pytest.raises(InvalidArgumentError, match="up to float32 rounding"):
        smoothed.certify((x + 1e-5).float(), n0=20, n=100, alpha=0.01, seed=0)


def test_bench_replaces_only_its_own_records(tmp_path):
    import robustcert.runs.bench  # noqa: F401  (registers how a bench record looks)

    mine, foreign = tmp_path / "bench-cpu-fp32.json", tmp_path / "bench-cpu-fp32-quick.json"
    mine.write_text(json.dumps({"device": "cpu", "models": [], "options": {}, "torch": "2"}))
    foreign.write_text(json.dumps({"notes": "mine"}))
    check_derived_output(mine, [], "bench record", "bench")  # a record bench wrote before folders had a record
    with pytest.raises(ResultsError, match="not a bench record that robustcert bench wrote"):
        check_derived_output(foreign, [], "bench record", "bench")


@pytest.mark.parametrize("command,locked_name", [
    (["train", "--sigma", "0.25", "--epochs", "1", "--quiet", "--out", "{dir}/m.pt"], "m.pt"),
    (["train-denoiser", "--data", "digits", "--channels", "8,16", "--steps", "1", "--batch", "4", "--quiet", "--out",
      "{dir}/ddpm"], "ddpm"),
    (["predict", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--max", "1", "--out", "{dir}/p.tsv"], "p.tsv"),
    (["attack", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--eps", "0.5", "--max", "1", "--out",
      "{dir}/a.tsv"], "a.tsv"),
    (["certify-policy", "--env", "CartPole-v1", "--policy", "cartpole-pd", "--sigma", "0.2", "--budgets", "0",
      "--episodes", "2", "--out", "{dir}/c.tsv"], "c.tsv"),
    (["demo", "--max", "1", "--jobs", "1", "--quiet", "--out-dir", "{dir}/demo"], "demo/.robustcert-demo.json"),
])
def test_every_writing_command_refuses_a_second_writer(tmp_path, command, locked_name):
    """The lock is taken before anything is loaded or written: the second command fails at once."""
    locked, release = tmp_path / "locked", tmp_path / "release"
    (tmp_path / "demo").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / locked_name), str(locked), str(release)])
    try:
        wait_for(locked.exists, "the other writer to hold the lock")
        result = invoke(*[part.format(dir=tmp_path) for part in command])
        assert result.exit_code == 2 and f"is being written by another process (PID {holder.pid}" in result.stderr
        visible = [sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) for folder in
                   (tmp_path, tmp_path / "demo")]
        assert visible == [["demo", "locked"], []]  # nothing written (the lock files are hidden)
    finally:
        release.write_text("")
        holder.wait(timeout=DEADLINE)
