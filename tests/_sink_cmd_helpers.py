"""Helpers for tests that run ``logpipe sink`` / ``logpipe collect`` as real subprocesses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def env_without_colour(**overrides: str | None) -> dict[str, str]:
    """The test's environment without colour overrides, plus ``overrides`` (None removes)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def split_stderr(stderr: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """stderr → (logpipe's JSON diagnostics, every other line)."""
    diags: list[dict[str, Any]] = []
    other: list[str] = []
    for line in stderr.decode("utf-8", "replace").splitlines():
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and obj.get("logpipe") == "diagnostic":
                diags.append(obj)
                continue
        other.append(line)
    return diags, other


def summary_of(stderr: bytes) -> dict[str, Any]:
    """The exit summary diagnostic (fails when there is none)."""
    diags, _ = split_stderr(stderr)
    found = [d for d in diags if str(d.get("message", "")).startswith("summary: ")]
    assert len(found) == 1, f"expected one summary line, got {diags!r}"
    return found[0]


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    """Every complete line of an NDJSON file, parsed."""
    data = path.read_bytes()
    return [json.loads(line) for line in data.split(b"\n")[:-1] if line]


def count_lines(path: Path) -> int:
    """Newlines in ``path`` (0 if missing)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0
