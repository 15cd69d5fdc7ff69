"""Who wrote a line: service, instance_id, host, pid — from LOGPIPE_* env, PM2's env, file names."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

ENV_SERVICE = "LOGPIPE_SERVICE"
ENV_INSTANCE_ID = "LOGPIPE_INSTANCE_ID"


@cache
def hostname() -> str:
    """This host's name (cached; computed once per process)."""
    try:
        return socket.gethostname() or "localhost"
    except OSError:
        return "localhost"


def under_pm2(environ: Mapping[str, str] | None = None) -> bool:
    """True when PM2 started this process (PM2 puts ``pm_id`` in its apps' environment)."""
    env = os.environ if environ is None else environ
    return "pm_id" in env and "name" in env


def program_name(argv: Sequence[str] | None = None) -> str:
    """A service name from the program: ``/srv/api/main.py`` → ``main``; ``python -m pkg`` →
    ``pkg``; an interactive interpreter → ``python``."""
    args = sys.argv if argv is None else argv
    first = args[0] if args else ""
    if not first or first in ("-c", "-"):
        return "python"
    base = os.path.basename(first)
    if base == "__main__.py":
        base = os.path.basename(os.path.dirname(first)) or "python"
    for suffix in (".py", ".pyz", ".pyw"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base or "python"


def service_from_env(environ: Mapping[str, str] | None = None, argv: Sequence[str] | None = None) -> str:
    """``LOGPIPE_SERVICE``, else PM2's ``name``, else the program name (SPEC §2)."""
    env = os.environ if environ is None else environ
    svc = env.get(ENV_SERVICE)
    if svc:
        return svc
    if under_pm2(env) and env.get("name"):
        return env["name"]
    return program_name(argv)


def instance_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``LOGPIPE_INSTANCE_ID``, else PM2's ``NODE_APP_INSTANCE``, else ``pm_id``, else ``"0"``."""
    env = os.environ if environ is None else environ
    for key in (ENV_INSTANCE_ID, "NODE_APP_INSTANCE", "pm_id"):
        val = env.get(key)
        if val is not None and val != "":
            return str(val)
    return "0"


# --- file names ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What a log file's name says about who wrote it."""

    service: str
    stream: str | None = None  # "out" / "err" for PM2 files, else None
    pm_id: int | None = None


# PM2: <name>-out.log, <name>-error.log, with -<pm_id> before .log for instances/cluster mode;
# pm2-logrotate's rotated copies are <base>__<date>.log
_PM2_RE = re.compile(r"^(?P<name>.+?)-(?P<stream>out|error|err)(?:-(?P<pm_id>\d+))?$")
_DATE_SUFFIX_RE = re.compile(r"__\d{4}-\d{2}-\d{2}[_T]\d{2}-\d{2}-\d{2}$")


def from_filename(path: str) -> FileIdentity:
    """``api.log`` → api; ``api-out-3.log`` → api, out, pm_id 3; ``worker-error.log`` → worker,
    err. Rotation suffixes (``.1``, ``.log.2026…``) and directories are ignored."""
    base = os.path.basename(path)
    for ext in (".log", ".txt", ".out", ".ndjson", ".jsonl", ".json"):
        idx = base.find(ext)
        if idx > 0:
            base = base[:idx]
            break
    base = _DATE_SUFFIX_RE.sub("", base)
    m = _PM2_RE.match(base)
    if m:
        stream = "out" if m["stream"] == "out" else "err"
        pm_id = int(m["pm_id"]) if m["pm_id"] is not None else None
        return FileIdentity(m["name"], stream, pm_id)
    if base.endswith((".stderr", "-stderr", "_stderr")):
        return FileIdentity(base[:-7] or base, "err", None)
    if base.endswith((".stdout", "-stdout", "_stdout")):
        return FileIdentity(base[:-7] or base, "out", None)
    return FileIdentity(base or "unknown", None, None)
