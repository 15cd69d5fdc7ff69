"""The code base stays ruff-clean and mypy-strict-clean (ARCHITECTURE.md, Habits)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    """`ruff check` reports nothing on the repository (config in pyproject.toml)."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (it is in the test extras)")
def test_mypy_strict_clean() -> None:
    """`mypy` (strict, files = logpipe/) reports no error."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
