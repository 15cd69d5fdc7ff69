"""Helpers for the logger's tests: run a real child interpreter, capture the in-process logger."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from logpipe import _emit, bindings

#: RFC 3339 UTC with microseconds and Z (SPEC §1)
TIME_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"


def logger_child_env(**extra: str) -> dict[str, str]:
    """This process's environment (already cleaned of LOGPIPE_/PM2 keys by conftest) plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in ("name", "NO_COLOR")}
    env.pop("PYTHONUNBUFFERED", None)  # the logger must not depend on it
    env.update(extra)
    return env


def run_py(
    code: str,
    *,
    env: Mapping[str, str] | None = None,
    args: list[str] | None = None,
    timeout: float = 30,
    **popen: Any,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``code`` in a fresh interpreter (stdout/stderr captured unless given) and wait."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    cmd = [sys.executable, "-c", textwrap.dedent(code), *(args or [])]
    return subprocess.run(cmd, env=dict(env) if env is not None else logger_child_env(), timeout=timeout,
                          check=False, **popen)


def lines(out: bytes) -> list[dict[str, Any]]:
    """NDJSON bytes → records; fails the test on any line that is not one JSON object."""
    recs = []
    for raw in out.splitlines():
        rec = orjson.loads(raw)
        assert isinstance(rec, dict), raw
        recs.append(rec)
    return recs


@contextlib.contextmanager
def capture(tmp_path: Path, **config: Any) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Point the in-process logger at a real file (JSON, level info, default redaction, no
    stdlib bridge, unless ``config`` says otherwise); restore everything afterwards.

    Yields a function returning the records written so far.
    """
    saved = _emit.state
    path = tmp_path / f"log-{os.urandom(4).hex()}.ndjson"
    f = open(path, "wb")  # noqa: SIM115 - closed in finally, after the logger let go of it
    opts: dict[str, Any] = {"format": "json", "level": "info", "redact": bindings.DEFAULT_REDACT,
                            "stdlib": False}
    opts.update(config)
    try:
        bindings.configure(stream=f, **opts)
        yield lambda: lines(path.read_bytes())
    finally:
        bindings._set_state(dict(saved.bound), saved.level, saved.fmt_setting, saved.redactor,
                            saved.writer, saved.stdlib)
        f.close()
