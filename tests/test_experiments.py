"""Every experiment script answers --help without doing its work, and lives in the topic folder of
the results it makes (experiments/<topic>/ mirrors results/<topic>/; weights scripts in
experiments/weights/)."""
from __future__ import annotations

import contextlib
import io
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
PYTHON_SCRIPTS = sorted(EXPERIMENTS.rglob("*.py"))
SHELL_SCRIPTS = sorted(EXPERIMENTS.rglob("*.sh"))


def test_scripts_are_in_topic_folders():
    folders = {path.parent.relative_to(EXPERIMENTS).as_posix() for path in [*PYTHON_SCRIPTS, *SHELL_SCRIPTS]}
    topics = {path.name for path in (ROOT / "results").iterdir() if path.is_dir()}
    assert PYTHON_SCRIPTS and SHELL_SCRIPTS
    assert folders <= topics | {"weights"}, folders - topics
    assert not list(EXPERIMENTS.glob("*.py")) and not list(EXPERIMENTS.glob("*.sh"))


@pytest.mark.parametrize("script", PYTHON_SCRIPTS, ids=lambda p: p.relative_to(EXPERIMENTS).as_posix())
def test_python_script_help(script, monkeypatch):
    """In this process (the imports are shared, so each --help is cheap): argparse prints the
    usage and exits 0 before any work; the script changes no import path."""
    text = script.read_text()
    assert "sys.path.insert" not in text and "sys.path.append" not in text
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    path_before = list(sys.path)
    output = io.StringIO()
    with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code == 0 and "usage:" in output.getvalue()
    assert sys.path == path_before


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.relative_to(EXPERIMENTS).as_posix())
def test_shell_script_help(script, tmp_path):
    """--help prints the header comment and exits 0 before the script touches anything."""
    result = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing created (fashion_mnist.sh makes its folders only after)
