"""PM2: where its files are, which app and instance wrote each, and how to undo its formats.

Who wrote a PM2 log file is answered, in this order, by:

1. **the running apps' environments** — ``$PM2_HOME/pids/<name>-<pm_id>.pid`` names each live
   app's pid, and ``/proc/<pid>/environ`` holds what PM2 spawned it with: ``name``, ``pm_id``,
   ``NODE_APP_INSTANCE`` (or the key ``instance_var`` names), ``pm_out_log_path``,
   ``pm_err_log_path``, ``pm_log_path``, ``log_date_format``, ``log_type``. No ``pm2`` command is
   needed (cron, systemd and ``npx pm2`` users have none on PATH);
2. ``pm2 jlist``, when a ``pm2`` command is found and PM2's daemon is already up (``jlist``
   would otherwise *start* one), with a 5 s timeout, rate-limited. Only the start-up refresh
   waits for it; later ones run it on a worker thread (:mod:`logpipe.sources._pm2_jlist`) and
   keep its previous answer meanwhile, so a hung PM2 daemon never stalls the event loop (1 and
   3, which decide what is logpipe's own output, stay synchronous: a pid file, a few ``/proc``
   reads and one small file);
3. ``$PM2_HOME/dump.pm2`` (written by ``pm2 save``), for apps that are stopped.

Only those keys are kept: an app's environment may hold secrets and is never logged. When no
source names a file, one warning per file says so and what its records lack.

PM2's own formats (``--time``/``log_date_format`` prefixes, ``log_type: json`` chunks) are undone
by the decoders of :mod:`logpipe.sources.pm2_formats`; :meth:`Pm2Registry.decoder` picks one.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from logpipe import _proc, diagnostics, identity, record
from logpipe.feedback import is_logpipe_cmdline
from logpipe.sources._pm2_jlist import JlistWorker, run_jlist

if TYPE_CHECKING:
    from logpipe.sources.pm2_formats import JsonChunkDecoder, PrefixDecoder

JLIST_MIN_INTERVAL = 2.0
JLIST_RECHECK = 0.5

ENV_KEYS = ("name", "pm_id", "NODE_APP_INSTANCE", "instance_var", "pm_out_log_path",
            "pm_err_log_path", "pm_log_path", "log_date_format", "log_type", "PM2_HOME")


def pm2_home(option: str | None) -> str:
    """``--pm2 DIR`` → DIR; ``--pm2`` alone → ``$PM2_HOME``, else ``~/.pm2``."""
    if option:
        return os.path.abspath(os.path.expanduser(option))
    env = os.environ.get("PM2_HOME")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.expanduser("~"), ".pm2")


@dataclass(frozen=True, slots=True)
class Pm2App:
    """What logpipe keeps of one PM2 app (nothing from its environment but these keys)."""

    name: str
    pm_id: int | None  # None: from a dump.pm2 of a fork app (PM2 leaves pm_id out of dumps)
    instance: str | None
    out_path: str | None
    err_path: str | None
    log_path: str | None = None  # the merged ``log_file``
    date_format: str | None = None
    log_type: str | None = None
    runs_logpipe: bool = False  # its script or arguments run logpipe (jlist / dump only)

    def paths(self) -> list[tuple[str, str]]:
        """(real path, stream) of each file PM2 writes for this app."""
        out = [(p, s) for p, s in ((self.out_path, "out"), (self.err_path, "err"),
                                    (self.log_path, "all")) if p]
        return out


def _real(path: Any) -> str | None:
    if not isinstance(path, str) or not path or path in ("/dev/null", "NULL"):
        return None
    return os.path.realpath(path)


def app_from_env(env: dict[str, Any]) -> Pm2App | None:
    """A ``pm2_env`` (jlist, dump.pm2) or a process environment → Pm2App (None if not PM2's)."""
    name = env.get("name")
    pm_id = env.get("pm_id")
    if isinstance(pm_id, str) and pm_id.isdigit():
        pm_id = int(pm_id)
    if not isinstance(pm_id, int) or isinstance(pm_id, bool):
        # dump.pm2 has no pm_id: PM2 names per-instance files <name>-out-<pm_id>.log
        out = env.get("pm_out_log_path")
        pm_id = identity.from_filename(out).pm_id if isinstance(out, str) else None
    if not isinstance(name, str) or (pm_id is None and "pm_out_log_path" not in env):
        return None
    inst = env.get("NODE_APP_INSTANCE")
    var = env.get("instance_var")
    if isinstance(var, str) and var and env.get(var) is not None:
        inst = env.get(var)
    fmt = env.get("log_date_format")
    argv = [env.get("pm_exec_path"), *(env.get("args") or [])] if isinstance(
        env.get("args") or [], list) else [env.get("pm_exec_path")]
    words = [a.encode() for a in argv if isinstance(a, str)]
    return Pm2App(
        name=name, pm_id=pm_id,
        instance=str(inst) if isinstance(inst, int | str) and str(inst) != "" else None,
        out_path=_real(env.get("pm_out_log_path")), err_path=_real(env.get("pm_err_log_path")),
        log_path=_real(env.get("pm_log_path")),
        date_format=fmt if isinstance(fmt, str) and fmt else None,
        log_type=env.get("log_type") if isinstance(env.get("log_type"), str) else None,
        runs_logpipe=bool(words) and (is_logpipe_cmdline(words) or any(
            re.search(rb"(^|[\s/;|&(])logpipe(\s|$)", w) for w in words)),
    )


def _json_array(output: bytes) -> Any:
    pos = 0
    while True:
        start = output.find(b"[", pos)
        if start < 0:
            return None
        pos = start + 1
        if start > 0 and output[start - 1 : start] not in (b"\n", b"\r"):
            continue  # a '[' inside a banner line
        try:
            return orjson.loads(output[start:])
        except orjson.JSONDecodeError:
            continue


def parse_jlist(output: bytes) -> list[Pm2App]:
    """``pm2 jlist`` stdout (or a ``dump.pm2``) → apps. Tolerates banner lines before the JSON
    array; returns [] when the output is not what PM2 writes."""
    data = _json_array(output)
    apps: list[Pm2App] = []
    if not isinstance(data, list):
        return apps
    for item in data:
        if not isinstance(item, dict):
            continue
        raw_env = item.get("pm2_env")
        env: dict[str, Any] = dict(raw_env) if isinstance(raw_env, dict) else dict(item)
        for key in ("name", "pm_id"):
            if key in item and key not in env:
                env[key] = item[key]
        app = app_from_env(env)
        if app is not None:
            apps.append(app)
    return apps


def apps_from_proc(home: str) -> list[Pm2App]:
    """The live apps of the PM2 at ``home``: ``pids/*.pid`` → ``/proc/<pid>/environ``."""
    apps: list[Pm2App] = []
    real_home = os.path.realpath(home)
    for pid_file in sorted(glob.glob(os.path.join(home, "pids", "*.pid"))):
        try:
            with open(pid_file, "rb") as f:
                pid = int(f.read().strip() or b"0")
        except (OSError, ValueError):
            continue
        env = _proc.read_env(pid, ENV_KEYS) if pid > 0 else None
        if not env or os.path.realpath(env.get("PM2_HOME", real_home)) != real_home:
            continue  # gone, not ours to read, or a recycled pid
        var = env.get("instance_var")
        if var and var != "NODE_APP_INSTANCE":
            env.update(_proc.read_env(pid, (var,)) or {})
        app = app_from_env(dict(env))
        if app is not None:
            apps.append(app)
    return apps


class Pm2Registry:
    """PM2's log directory and who wrote each of its files, for ``origin`` and ``decoder``."""

    def __init__(self, home: str, pm2_bin: str | None = None) -> None:
        self.home = home
        self.logs_dir = os.path.realpath(os.path.join(home, "logs"))
        self._bin = pm2_bin if pm2_bin is not None else shutil.which("pm2")
        self._apps: list[Pm2App] = []
        self._by_path: dict[str, list[tuple[Pm2App, str]]] = {}
        self._at = -1e9
        self._told: set[str] = set()
        self._jlist = JlistWorker(parse_jlist)

    @property
    def apps(self) -> list[Pm2App]:
        """The apps known at the last refresh."""
        return list(self._apps)

    def refresh(self, force: bool = False, min_interval: float = JLIST_MIN_INTERVAL) -> None:
        """Ask the sources again (rate-limited): live processes, then jlist, then dump.pm2.
        ``force`` (start-up) waits for jlist; otherwise jlist runs on the worker thread and its
        previous answer is used, and a new answer is merged at the next call."""
        now = time.monotonic()
        fresh = self._jlist.take_fresh()
        if not force and now - self._at < min_interval:
            if fresh:
                self._merge(self._jlist.answer)  # the worker answered: no new jlist run
            return
        self._at = now
        self._merge(self._from_jlist(wait=force))

    def _merge(self, jlist: list[Pm2App]) -> None:
        merged: dict[object, Pm2App] = {}
        for source in (self._from_dump(), jlist, apps_from_proc(self.home)):
            for app in source:  # later sources win: the live environment is the truth
                key = app.pm_id if app.pm_id is not None else (app.name, app.out_path)
                old = merged.get(key)
                merged[key] = replace(app, runs_logpipe=True) if (
                    old is not None and old.runs_logpipe and old.name == app.name) else app
        known = {(a.name, a.out_path) for a in merged.values() if a.pm_id is not None}
        self._apps = sorted((a for a in merged.values()  # a dump's fork app, also known live
                             if a.pm_id is not None or (a.name, a.out_path) not in known),
                            key=lambda a: (a.pm_id is None, a.pm_id or 0))
        by_path: dict[str, list[tuple[Pm2App, str]]] = {}
        for app in self._apps:
            for path, stream in app.paths():
                by_path.setdefault(path, []).append((app, stream))
        self._by_path = by_path

    def _from_dump(self) -> list[Pm2App]:
        try:
            with open(os.path.join(self.home, "dump.pm2"), "rb") as f:
                return parse_jlist(f.read())
        except OSError:
            return []

    def _from_jlist(self, wait: bool) -> list[Pm2App]:
        """jlist's apps: asked now and waited for (``wait``), else asked on the worker thread
        (one run at a time) while its last answer is used."""
        if self._bin is None or not self.daemon_running():
            return []
        if wait:
            self._jlist.answer = run_jlist(self._bin, self.home, parse_jlist)
        else:
            self._jlist.ask(self._bin, self.home)
        return self._jlist.answer

    def daemon_running(self) -> bool:
        """True when PM2's daemon for this home is up: its ``rpc.sock`` exists and the pid in
        ``pm2.pid`` is alive. ``pm2 jlist`` against a home without a live daemon would start
        one — a collector must never do that."""
        if not os.path.exists(os.path.join(self.home, "rpc.sock")):
            return False
        try:
            with open(os.path.join(self.home, "pm2.pid"), "rb") as f:
                pid = int(f.read().strip() or b"0")
        except (OSError, ValueError):
            return False
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, another user's
        return True

    def extra_paths(self) -> list[str]:
        """Log paths PM2 reports outside its log directory (``out_file``/``error_file``)."""
        return [p for p in sorted(self._by_path) if os.path.dirname(p) != self.logs_dir]

    def owns(self, path: str) -> bool:
        """True for files in PM2's log directory or named by a source."""
        real = os.path.realpath(path)
        return os.path.dirname(real) == self.logs_dir or real in self._by_path

    def runs_logpipe(self, path: str) -> bool:
        """True when the app PM2 writes ``path`` for runs logpipe by its script or arguments
        (known from jlist/dump even while it is stopped)."""
        return any(app.runs_logpipe for app, _ in self._lookup(os.path.realpath(path)))

    def _lookup(self, real: str) -> list[tuple[Pm2App, str]]:
        hits = self._by_path.get(real)
        if hits is None:
            # a file no source named yet: most likely an app started since; ask again
            self.refresh(min_interval=JLIST_RECHECK)
            hits = self._by_path.get(real)
        if hits is None:
            # a rotated copy (``api-out.log.1``, ``api-out__2026-…log``): its live file's app
            base = re.sub(r"(\.\d+|__\d{4}-\d\d-\d\d[_T]\d\d-\d\d-\d\d)(?=\.log$)|\.log\..*$", "",
                          real)
            if not base.endswith(".log"):
                base += ".log"
            hits = self._by_path.get(base)
        return hits or []

    def decoder(self, path: str, start: int = 0) -> PrefixDecoder | JsonChunkDecoder | None:
        """The decoder for PM2's format of ``path`` (None for plain files), starting at the raw
        offset ``start``."""
        from logpipe.sources import pm2_formats

        hits = self._lookup(os.path.realpath(path))
        if not hits:
            return None
        app = hits[0][0]
        if app.log_type == "json":
            return pm2_formats.JsonChunkDecoder(app.date_format, start)
        if app.date_format:
            return pm2_formats.PrefixDecoder(app.date_format, start)
        return None

    def origin(self, path: str) -> tuple[dict[str, Any], str]:
        """Defaults for a PM2 file: service, pm_id, instance_id, source, host; plain level
        ``error`` for the error stream. Files that several apps write (``merge_logs`` with
        instances) get the service only."""
        hits = self._lookup(os.path.realpath(path))
        ident = identity.from_filename(path)
        defaults: dict[str, Any] = {record.SOURCE: path, record.SERVICE: ident.service,
                                    record.HOST: identity.hostname()}
        stream = ident.stream or "out"
        apps = {(app.pm_id, app.name, app.instance): app for app, _ in hits}
        if len(apps) == 1:
            app, stream = hits[0]
            defaults[record.SERVICE] = app.name
            pm_id = app.pm_id if app.pm_id is not None else ident.pm_id
            if pm_id is not None:
                defaults[record.PM_ID] = pm_id
            if app.instance is not None:
                defaults[record.INSTANCE_ID] = app.instance
        elif len(apps) > 1:
            defaults[record.SERVICE] = hits[0][0].name
            self._tell(path, f"{path} is written by {len(apps)} PM2 processes (merge_logs): its "
                             "plain lines carry the app name but no pm_id or instance_id")
        else:
            if ident.pm_id is not None:
                defaults[record.PM_ID] = ident.pm_id
            has = "service and pm_id" if ident.pm_id is not None else "service"
            self._tell(path, f"no running PM2 app, pm2 command or {self.home}/dump.pm2 names "
                             f"{path}: its plain lines carry {has} from the file name only, no "
                             "instance_id (run `pm2 save` to keep a dump)")
        return defaults, ("error" if stream == "err" else "info")

    def _tell(self, path: str, message: str) -> None:
        if path not in self._told and len(self._told) < 10_000:
            self._told.add(path)
            diagnostics.warning(message, key=f"pm2-origin:{path}")


def pm2_sanitise(name: str) -> str:
    """PM2 Common.js: ``name.replace(/[^a-zA-Z0-9.\\-]/g, '-')`` — how an app name appears in
    its file names."""
    return "".join(c if c.isascii() and (c.isalnum() or c in ".-") else "-" for c in name)

