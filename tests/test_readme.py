"""README.md's Python examples run as a reader copies them: each ```python block ALONE, in a fresh
namespace, in an empty folder, and prints what it shows.

A block that uses a name an earlier block defined fails here (NameError), and a block that shows a
value without printing it (a bare expression, as in a notebook) fails for printing nothing. Each
block runs in a child forked from one process that imported robustcert and its dependencies once
(the blocks' own namespaces start empty, so every import a block needs must be in the block), which
takes a fraction of the time of one interpreter per block. tests/test_docs.py runs the blocks of
docs/ with the same machinery (:func:`python_blocks`, :func:`run_blocks_alone`).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)

# Imports what the blocks import (the expensive part) once, then runs each block in a forked child
# with an empty namespace and its own empty folder; reports one JSON line per block.
DRIVER = """
import json, os, sys, tempfile, traceback
import matplotlib, numpy, pandas, torch, robustcert, robustcert.results, robustcert.runs.attack
blocks = json.load(open(sys.argv[1]))
for number, (source, line, code) in enumerate(blocks, 1):
    folder = tempfile.mkdtemp(prefix=f"block{number}-", dir=sys.argv[2])
    output = os.path.join(folder, ".stdout")
    pid = os.fork()
    if pid == 0:
        os.chdir(folder)
        with open(output, "w") as sink:
            os.dup2(sink.fileno(), 1)
            status = 0
            try:
                exec(compile(code, f"{source} (line {line})", "exec"), {"__name__": "__main__"})
            except BaseException:
                traceback.print_exc()
                status = 1
            sys.stdout.flush()
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    printed = open(output).read()
    print(json.dumps({"source": source, "line": line, "status": os.waitstatus_to_exitcode(status),
                      "printed": printed[-300:]}), flush=True)
"""


def python_blocks(path: Path) -> list[tuple[str, int, str]]:
    """(file relative to the repository, line number, code) of each ```python block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(ROOT).as_posix()
    return [(name, text.count("\n", 0, match.start()) + 2, match.group(1)) for match in PYTHON_BLOCK.finditer(text)]


def readme_python_blocks() -> list[tuple[str, int, str]]:
    """The ```python blocks of README.md, in order."""
    return python_blocks(README)


def run_blocks_alone(blocks: list[tuple[str, int, str]], tmp_path: Path) -> None:
    """Run each block alone (see the module docstring); fail naming every block that fails or
    prints nothing."""
    blocks_file = tmp_path / "blocks.json"
    blocks_file.write_text(json.dumps(blocks))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", DRIVER, str(blocks_file), str(tmp_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == len(blocks), result.stdout + result.stderr[-4000:]
    failed = [f"{r['source']} block at line {r['line']}" for r in reports if r["status"] != 0]
    assert not failed, f"python blocks failing when run alone: {failed}\n{result.stderr[-4000:]}"
    silent = [f"{r['source']} block at line {r['line']}" for r in reports if not r["printed"].strip()]
    assert not silent, f"python blocks printing nothing: {silent}"


def test_the_block_finder_finds_the_blocks():
    blocks = readme_python_blocks()
    assert len(blocks) >= 1
    text = README.read_text(encoding="utf-8")
    assert len(blocks) == text.count("```python")
    assert all(code.strip() for _, _, code in blocks)


def test_each_readme_python_block_runs_alone_and_prints_its_result(tmp_path):
    run_blocks_alone(readme_python_blocks(), tmp_path)
