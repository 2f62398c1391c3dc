"""Multi-process runs (torchrun, gloo on CPU): the merged TSV equals a single-process run."""
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from robustcert.cli import main
from robustcert.runs.sharded import merge_parts, part_files, part_path
from robustcert.results import CERTIFY_COLUMNS

# 3 inputs per engine call (n0 + n = 200, batch 600): sharding must keep each call's inputs together
ARGS = ["certify", "--model", "bundled:digits-0.25", "--sigma", "0.25", "--n0", "50", "--n", "150",
        "--batch", "600", "--max", "24", "--seed", "5", "--quiet"]


def without_time(path):
    return [line.split("\t")[:-1] for line in path.read_text().splitlines()]


def torchrun(tmp_path, out, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "robustcert", "--", *ARGS, "--out", str(out), *extra]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The single-process run, with one thread like each torchrun worker (same kernels)."""
    out = tmp_path_factory.mktemp("single") / "one.tsv"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(main, [*ARGS, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out


def test_two_processes_give_the_single_process_file_and_resume_merges_parts(tmp_path, single):
    out = tmp_path / "two.tsv"
    run = torchrun(tmp_path, out)
    assert run.returncode == 0, run.stderr[-2000:]
    assert without_time(out) == without_time(single) and len(without_time(out)) == 25
    assert not part_files(out)
    record = json.loads(out.with_name("two.tsv.json").read_text())
    ranks = record["runs"][-1]["distributed"]["ranks"]
    assert record["runs"][-1]["distributed"]["world_size"] == 2 and [r["inputs"] for r in ranks] == [12, 12]
    assert record["runs"][-1]["samples_used"]["total"] == 24 * 200  # every rank's inputs, recorded once

    # an interrupted 2-process run: the TSV holds rows 0-2, the part files hold some more rows
    # (part 1 ends with the partial row of a killed writer); --resume merges them and does the rest
    rows = single.read_text().splitlines()
    header, body = rows[0], rows[1:]
    out.write_text("\n".join([header, *body[:3]]) + "\n")
    part_path(out, 0).write_text("\n".join([header, *body[3:6], *body[9:12]]) + "\n")
    part_path(out, 1).write_text("\n".join([header, *body[6:9]]) + "\n" + body[12][:7])
    rerun = torchrun(tmp_path, out, "--resume")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert without_time(out) == without_time(single) and not part_files(out)
    resumed = json.loads(out.with_name("two.tsv.json").read_text())["runs"][-1]["distributed"]["ranks"]
    assert sum(r["inputs"] for r in resumed) == 24 - 12  # rows 0-11 were kept, not recomputed


def test_single_process_resume_folds_part_files(tmp_path, single):
    out = tmp_path / "resumed.tsv"
    rows = single.read_text().splitlines()
    out.write_text("\n".join(rows[:5]) + "\n")
    out.with_name("resumed.tsv.json").write_text(single.with_name("one.tsv.json").read_text())
    part_path(out, 3).write_text("\n".join([rows[0], *rows[5:9]]) + "\n")
    result = CliRunner().invoke(main, [*ARGS, "--out", str(out), "--resume"])
    assert result.exit_code == 0, result.output
    assert without_time(out) == without_time(single) and not part_files(out)


def test_merge_sorts_by_index_keeps_first_copies_and_drops_partial_rows(tmp_path):
    out = tmp_path / "m.tsv"
    header = "\t".join(CERTIFY_COLUMNS)
    out.write_text(f"{header}\n4\t1\t1\t0.5\t1\t1.0\n")
    part_path(out, 0).write_text(f"{header}\n2\t0\t0\t0.3\t1\t1.0\n4\t1\t-1\t0.0\t0\t2.0\n0\t1\t1\t0.2\t1\t1.0\n")
    part_path(out, 1).write_text(f"{header}\n1\t0\t0\t0.1\t1\t1.0\n3\t0\t0")
    assert merge_parts(out, CERTIFY_COLUMNS) == {0, 1, 2, 4}
    assert [line.split("\t")[:3] for line in out.read_text().splitlines()[1:]] == [
        ["0", "1", "1"], ["1", "0", "0"], ["2", "0", "0"], ["4", "1", "1"]]
    assert not part_files(out)


def test_distributed_flag_outside_torchrun_is_a_one_line_error(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, [*ARGS, "--out", str(tmp_path / "x.tsv"), "--distributed"])
    assert result.exit_code == 2 and "torchrun" in result.output and "Traceback" not in result.output


class NaNModel(torch.nn.Module):
    """Returns NaN logits for every noisy digit: every rank's run fails at its first engine call."""

    def forward(self, x):
        return x.flatten(1)[:, :10] * float("nan")


def test_a_failing_run_leaves_no_empty_part_files_or_header_only_tsv(tmp_path):
    model = tmp_path / "nan.pt"
    torch.jit.save(torch.jit.script(NaNModel()), str(model))
    out = tmp_path / "failed.tsv"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "robustcert", "--", "certify", "--model", str(model), "--sigma", "0.25", "--n0", "10",
               "--n", "10", "--max", "4", "--quiet", "--out", str(out)]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "NaN or infinite outputs" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pt"]  # no TSV, sidecar or part file
