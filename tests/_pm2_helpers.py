"""Real PM2 for the tests: installed once per version from npm into a cache dir (``pm2_bin``,
a session fixture registered in conftest.py), and ``Pm2``, a private daemon driven through its CLI."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PM2_VERSION = "7.0.4"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "logpipe-test-pm2"

@pytest.fixture(scope="session")
def pm2_bin() -> Path:
    """The pm2 executable, installed once per version under ~/.cache/logpipe-test-pm2/<v>
    (an ``npm install`` of a few seconds the first time; reused afterwards)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm/node not installed: cannot install pm2 for the PM2 integration tests")
    target = CACHE / PM2_VERSION
    binary = target / "node_modules" / ".bin" / "pm2"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once install only once
        if binary.exists():
            return binary
        tmp = Path(tempfile.mkdtemp(prefix=f".{PM2_VERSION}-", dir=CACHE))
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(tmp),
             f"pm2@{PM2_VERSION}"], capture_output=True, timeout=300, check=False)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.fail(f"npm install pm2@{PM2_VERSION} failed: {proc.stderr.decode()[-500:]}")
        os.replace(tmp, target)  # atomic: a half-installed pm2 is never used
    return binary


class Pm2:
    """A private PM2 daemon (its own PM2_HOME) driven through the real CLI."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home

    @property
    def env(self) -> dict[str, str]:
        """The current environment (each test's own state dir) + PM2_HOME + pm2 on PATH."""
        env = dict(os.environ, PM2_HOME=str(self.home))
        env["PATH"] = f"{self.binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return env

    def __call__(self, *args: str) -> str:
        proc = subprocess.run([str(self.binary), *args], env=self.env, capture_output=True,
                              timeout=60, stdin=subprocess.DEVNULL, check=False)
        assert proc.returncode == 0, proc.stderr.decode()[-1000:]
        return proc.stdout.decode()

    def start(self, app: Path, name: str, *extra: str) -> None:
        self("start", str(app), "--name", name, "--interpreter", sys.executable, *extra)

    def log_lines(self) -> int:
        logs = self.home / "logs"
        return sum(p.read_bytes().count(b"\n") for p in logs.glob("*.log")) if logs.exists() else 0
