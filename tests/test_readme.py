"""README.md's Python examples run as written: every ```python block, in order, in one fresh process
started in an empty folder (so a block may use what an earlier one defined, and nothing else)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)

# Runs the blocks one after another in one namespace, saying which one failed.
DRIVER = """
import json, sys, time, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for number, (line, code) in enumerate(blocks, 1):
    started = time.perf_counter()
    try:
        exec(compile(code, f"README.md block {number} (line {line})", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"README.md python block {number} (line {line}) failed", file=sys.stderr)
        sys.exit(1)
    print(f"block {number} (line {line}): {time.perf_counter() - started:.1f} s", flush=True)
"""


def readme_python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of README.md, in order."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start()) + 2, match.group(1)) for match in PYTHON_BLOCK.finditer(text)]


def test_the_block_finder_finds_the_blocks():
    blocks = readme_python_blocks()
    assert len(blocks) >= 6
    text = README.read_text(encoding="utf-8")
    assert len(blocks) == text.count("```python")
    assert all(code.strip() for _, code in blocks)


def test_readme_python_blocks_run_in_order_in_a_fresh_process(tmp_path):
    workdir = tmp_path / "empty"
    workdir.mkdir()
    blocks_file = tmp_path / "blocks.json"
    blocks_file.write_text(json.dumps(readme_python_blocks()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", DRIVER, str(blocks_file)], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert result.stdout.count("block ") == len(readme_python_blocks()), result.stdout
