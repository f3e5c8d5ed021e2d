"""The code passes the project's ruff rules (pyproject.toml: pyflakes, pycodestyle at 120 columns, import order,
docstrings on the library's public classes, methods and functions)."""

import subprocess
import sys

from tests.configs import ROOT


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
