"""The code has no unused imports or variables and no syntax a reader would trip on: ruff (in
the test extra, for the docs' signatures) with the pyflakes rules that find dead code."""
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_no_unused_imports_or_variables():
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).parent / "ruff")
    if not pathlib.Path(ruff).exists():
        pytest.skip("ruff is not installed (the test extra)")
    out = subprocess.run([ruff, "check", "--no-cache", "--select", "F401,F811,F841,E9",
                          "--output-format", "concise", "funcdl", "tests", "benchmarks", "tools", "examples"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
