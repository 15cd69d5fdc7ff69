"""``logpipe collect``: builds sources from arguments and runs them into the sinks.

Sources (SPEC §3): one tail source for every path/glob and the PM2 log directory, the
``--run`` children, and stdin for ``-``; sinks from ``--to`` (default: NDJSON on stdout). The
pipeline and the signal handling live in :mod:`logpipe.runner`.

Decisions worth knowing:

- A path that does not exist yet (and is not a glob) is **not** an error: a warning goes to
  stderr and the path is watched, so a service that creates its log later is still collected
  — Vector's ``file`` source does the same. A directory given as a path *is* an error (quote a
  glob such as ``'dir/*.log'``), as are bad ``--run`` syntax and an unknown command.
- ``--pm2`` tails ``$PM2_HOME/logs/*.log`` (the option's value, else env ``PM2_HOME``, else
  ``~/.pm2``) plus any ``pm_out_log_path``/``pm_err_log_path`` that ``pm2 jlist`` reports
  outside it (at start-up). ``pm2 jlist`` runs only when PM2's daemon is already up (its
  ``rpc.sock`` exists; ``jlist`` would otherwise *start* a daemon), with a 5 s timeout, at
  most every 2 s and only when a PM2 file is first seen. Only ``name``, ``pm_id``,
  ``NODE_APP_INSTANCE`` and the log paths are kept from its answer: the app environment it
  carries may hold secrets and is never logged.
- The collector never ingests its own output: ``feedback.is_own_output`` is the tail
  source's exclusion hook.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from logpipe import diagnostics, feedback, identity, record
from logpipe.errors import UsageError
from logpipe.multiline import Joiner
from logpipe.sinks import SinkOptions

_GLOB_CHARS = frozenset("*?[")
JLIST_TIMEOUT = 5.0
JLIST_MIN_INTERVAL = 2.0
JLIST_RECHECK = 0.5


@dataclass
class CollectOptions:
    """What ``logpipe collect`` was asked to do (filled by cli.py)."""

    paths: list[str] = field(default_factory=list)
    pm2_home: str | None = None  # None: no --pm2; "": --pm2 with the default home
    runs: list[str] = field(default_factory=list)  # "NAME=COMMAND"
    service: str | None = None
    state_dir: str = ""
    once: bool = False
    to: list[str] = field(default_factory=list)
    max_line_bytes: int = 1 << 20
    sink_options: SinkOptions = field(default_factory=SinkOptions)


def is_glob(path: str) -> bool:
    """True when ``path`` holds glob characters (``*``, ``?``, ``[``)."""
    return not _GLOB_CHARS.isdisjoint(path)


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
    """What logpipe keeps of one ``pm2 jlist`` entry (nothing from its environment but the
    instance number)."""

    name: str
    pm_id: int
    instance: str | None
    out_path: str | None
    err_path: str | None


def parse_jlist(output: bytes) -> list[Pm2App]:
    """``pm2 jlist`` stdout → apps. Tolerates banner lines before the JSON array; returns []
    when the output is not what PM2 writes."""
    data: Any = None
    pos = 0
    while True:
        start = output.find(b"[", pos)
        if start < 0:
            return []
        pos = start + 1
        if start > 0 and output[start - 1 : start] not in (b"\n", b"\r"):
            continue  # a '[' inside a banner line
        try:
            data = orjson.loads(output[start:])
        except orjson.JSONDecodeError:
            continue
        break
    apps: list[Pm2App] = []
    if not isinstance(data, list):
        return apps
    for item in data:
        if not isinstance(item, dict):
            continue
        raw_env = item.get("pm2_env")
        env: dict[str, Any] = raw_env if isinstance(raw_env, dict) else {}
        name = item.get("name", env.get("name"))
        pm_id = item.get("pm_id", env.get("pm_id"))
        if not isinstance(name, str) or not isinstance(pm_id, int):
            continue
        if env.get("log_date_format") or env.get("log_type") == "json":
            # PM2 then prefixes each chunk piece with "<date>: " (also mid-line, where a line
            # spans two chunks) or wraps chunks in JSON (research/collector.md §3): logpipe
            # reads such lines as they are, so say how to get clean records
            what = "log_type json" if env.get("log_type") == "json" else "log_date_format (--time)"
            diagnostics.warning(
                f"PM2 app {name} uses {what}: "
                "logpipe does not strip the date prefixes or unwrap the chunk records; start it "
                "without them (logpipe's records carry their own time)", key=f"pm2-format:{name}")
        inst = env.get("NODE_APP_INSTANCE")
        instance_var = env.get("instance_var")
        if inst is None and isinstance(instance_var, str):
            inst = env.get(instance_var)
        apps.append(Pm2App(
            name=name, pm_id=pm_id,
            instance=str(inst) if isinstance(inst, int | str) and str(inst) != "" else None,
            out_path=_real(env.get("pm_out_log_path")),
            err_path=_real(env.get("pm_err_log_path")),
        ))
    return apps


def _real(path: Any) -> str | None:
    if not isinstance(path, str) or not path or path in ("/dev/null", "NULL"):
        return None
    return os.path.realpath(path)


class Pm2Registry:
    """PM2's log directory and what ``pm2 jlist`` says about its files, for ``origin_for``."""

    def __init__(self, home: str, pm2_bin: str | None = None) -> None:
        self.home = home
        self.logs_dir = os.path.realpath(os.path.join(home, "logs"))
        self._bin = pm2_bin if pm2_bin is not None else shutil.which("pm2")
        self._apps: list[Pm2App] = []
        self._by_path: dict[str, tuple[Pm2App, str]] = {}
        self._at = -1e9
        self._warned = False

    @property
    def apps(self) -> list[Pm2App]:
        """The apps of the last successful ``pm2 jlist``."""
        return list(self._apps)

    def refresh(self, force: bool = False, min_interval: float = JLIST_MIN_INTERVAL) -> None:
        """Re-run ``pm2 jlist`` (rate-limited) when PM2's daemon is up."""
        now = time.monotonic()
        if not force and now - self._at < min_interval:
            return
        self._at = now
        if self._bin is None or not self.daemon_running():
            return
        env = dict(os.environ, PM2_HOME=self.home)
        try:
            proc = subprocess.run([self._bin, "jlist"], capture_output=True, timeout=JLIST_TIMEOUT,
                                  env=env, stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            # the message names the failure only; jlist's output (app env) is never logged
            diagnostics.warning(f"pm2 jlist failed ({type(exc).__name__}); instance ids fall back "
                                "to pm_id", key="pm2-jlist")
            return
        if proc.returncode != 0:
            diagnostics.warning(f"pm2 jlist exited with {proc.returncode}; instance ids fall back "
                                "to pm_id", key="pm2-jlist")
            return
        apps = parse_jlist(proc.stdout)
        self._apps = apps
        by_path: dict[str, tuple[Pm2App, str]] = {}
        for app in apps:
            if app.out_path:
                by_path[app.out_path] = (app, "out")
            if app.err_path:
                by_path[app.err_path] = (app, "err")
        self._by_path = by_path

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
        paths = []
        for path in sorted(self._by_path):
            if os.path.dirname(path) != self.logs_dir:
                paths.append(path)
        return paths

    def owns(self, path: str) -> bool:
        """True for files in PM2's log directory or named by jlist."""
        real = os.path.realpath(path)
        return os.path.dirname(real) == self.logs_dir or real in self._by_path

    def origin(self, path: str) -> tuple[dict[str, Any], str]:
        """Defaults for a PM2 file: service, pm_id, instance_id (jlist's NODE_APP_INSTANCE,
        else the pm_id), source, host; plain level ``error`` for the error stream."""
        real = os.path.realpath(path)
        hit = self._by_path.get(real)
        if hit is None:
            # a file jlist did not name yet: most likely an app started since; ask again
            # unless we just did (new PM2 files are rare, a jlist costs ~0.3 s of node)
            self.refresh(min_interval=JLIST_RECHECK)
            hit = self._by_path.get(real)
        ident = identity.from_filename(path)
        app: Pm2App | None
        pm_id: int | None
        if hit is not None:
            app, stream = hit
            service, pm_id = app.name, app.pm_id
        else:
            app = None
            stream = ident.stream or "out"
            service, pm_id = ident.service, ident.pm_id
            if pm_id is not None:
                app = next((a for a in self._apps if a.pm_id == pm_id), None)
            else:
                # merge_logs file of a fork app: the one app whose sanitised name matches
                named = [a for a in self._apps if _pm2_sanitise(a.name) == ident.service]
                if len(named) == 1:
                    app = named[0]
                    pm_id = app.pm_id
            if app is not None:
                service = app.name
        defaults: dict[str, Any] = {
            record.SOURCE: path,
            record.SERVICE: service,
            record.HOST: identity.hostname(),
        }
        if pm_id is not None:
            defaults[record.PM_ID] = pm_id
            instance = app.instance if app is not None and app.instance is not None else str(pm_id)
            defaults[record.INSTANCE_ID] = instance
        return defaults, ("error" if stream == "err" else "info")


def _pm2_sanitise(name: str) -> str:
    # PM2 Common.js: name.replace(/[^a-zA-Z0-9.\-]/g, '-')
    return "".join(c if c.isascii() and (c.isalnum() or c in ".-") else "-" for c in name)


def file_origin(path: str) -> tuple[dict[str, Any], str]:
    """Defaults for a plain file: service from its name (``api.log`` → api), the PM2-style
    ``-<pm_id>`` suffix as pm_id/instance, plain level ``error`` for stderr-named files."""
    ident = identity.from_filename(path)
    defaults: dict[str, Any] = {
        record.SOURCE: path,
        record.SERVICE: ident.service,
        record.HOST: identity.hostname(),
    }
    if ident.pm_id is not None:
        defaults[record.PM_ID] = ident.pm_id
        defaults[record.INSTANCE_ID] = str(ident.pm_id)
    return defaults, ("error" if ident.stream == "err" else "info")


@dataclass
class Plan:
    """The validated sources of one ``collect`` run."""

    patterns: list[str]
    runs: list[Any]  # RunSpec
    stdin: bool
    pm2: Pm2Registry | None


def plan(opts: CollectOptions) -> Plan:
    """Validate the arguments (UsageError with one clear line) and decide the sources."""
    from logpipe.sources.children import parse_runs

    stdin = False
    patterns: list[str] = []
    for raw in opts.paths:
        if raw == "-":
            if stdin:
                raise UsageError("'-' (stdin) given more than once")
            stdin = True
            continue
        if not raw.strip():
            raise UsageError("empty path given")
        path = os.path.abspath(os.path.expanduser(raw))
        if "**" in path:
            from logpipe.sources.tail import expand_pattern

            try:
                expand_pattern(path)
            except ValueError as exc:
                raise UsageError(f"{exc} ('**' matches up to 8 directory levels)") from None
        if not is_glob(path):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                what = "nothing to read" if opts.once else "watching for it"
                diagnostics.warning(f"{raw} does not exist yet; {what}", key=f"missing:{path}")
            except OSError as exc:
                raise UsageError(f"{raw}: {exc.strerror}") from None
            else:
                if stat.S_ISDIR(st.st_mode):
                    raise UsageError(f"{raw} is a directory; give files or a quoted glob such as "
                                     f"'{raw.rstrip('/')}/*.log'")
                if not stat.S_ISREG(st.st_mode):
                    # the tailer reads regular files only: `cmd | logpipe collect /dev/stdin`
                    # or a FIFO would otherwise collect nothing, silently
                    raise UsageError(f"{raw} is not a regular file (a pipe or a device); for a "
                                     f"pipe or stdin write '-': cmd | logpipe collect -")
        if path not in patterns:
            patterns.append(path)
    runs = parse_runs(opts.runs)
    for spec in runs:
        exe = spec.argv[0]
        if exe == "/bin/sh":
            continue
        found = shutil.which(exe) if os.sep not in exe else (exe if os.access(exe, os.X_OK) else None)
        if found is None:
            raise UsageError(f"--run {spec.name}: command not found: {exe}")
    pm2: Pm2Registry | None = None
    if opts.pm2_home is not None:
        pm2 = Pm2Registry(pm2_home(opts.pm2_home))
        if not os.path.isdir(pm2.logs_dir):
            home = os.path.dirname(pm2.logs_dir)
            # `--pm2 ~/.pm2/logs` (the logs dir, not PM2_HOME) is an easy slip: name the fix
            hint = (f" (PM2_HOME is the directory that holds logs/: did you mean --pm2 "
                    f"{os.path.dirname(home)}?)" if glob.glob(os.path.join(home, "*.log")) else "")
            diagnostics.warning(f"PM2 log directory {pm2.logs_dir} does not exist yet; watching it"
                                f"{hint}", key="pm2-missing")
        pattern = os.path.join(pm2.logs_dir, "*.log")
        if pattern not in patterns:
            patterns.append(pattern)
    if not patterns and not runs and not stdin:
        raise UsageError("nothing to collect: give files or quoted globs, --pm2, "
                         "--run NAME=COMMAND, or - for stdin")
    if patterns:
        state_dir = opts.state_dir or opts.sink_options.state_dir
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"state dir {state_dir}: {exc.strerror}") from None
        if not os.access(state_dir, os.W_OK | os.X_OK):
            raise UsageError(f"state dir {state_dir} is not writable")
    return Plan(patterns=patterns, runs=runs, stdin=stdin, pm2=pm2)


def build_sources(opts: CollectOptions, p: Plan) -> list[Any]:
    """The Source objects for a plan (called inside the event loop)."""
    sources: list[Any] = []
    if p.patterns:
        from logpipe.sources.tail import TailSource

        patterns = list(p.patterns)
        pm2 = p.pm2
        if pm2 is not None:
            pm2.refresh(force=True)
            for extra in pm2.extra_paths():
                if extra not in patterns:
                    patterns.append(extra)

        def origin_for(path: str) -> tuple[dict[str, Any], str]:
            if pm2 is not None and pm2.owns(path):
                return pm2.origin(path)
            return file_origin(path)

        sources.append(TailSource(
            patterns, opts.state_dir or opts.sink_options.state_dir, once=opts.once,
            max_line_bytes=opts.max_line_bytes, origin_for=origin_for,
            is_excluded=_ExclusionNotice(), joiner_factory=Joiner,
        ))
    if p.runs:
        from logpipe.sources.children import ChildrenSource

        sources.append(ChildrenSource(p.runs, once=opts.once, max_line_bytes=opts.max_line_bytes))
    if p.stdin:
        from logpipe.sources.stdin import StdinSource

        # multiline: a traceback piped in (``app 2>&1 | logpipe collect -``) is one record
        sources.append(StdinSource(service=opts.service, max_line=opts.max_line_bytes,
                                   multiline=True))
    return sources


class _ExclusionNotice:
    """``feedback.is_own_output`` that says once per path (on stderr) why a file that a
    pattern matches is not collected — a silent skip would look like lost data."""

    def __init__(self) -> None:
        self._told: set[str] = set()

    def __call__(self, path: str, st: os.stat_result) -> bool:
        own = feedback.is_own_output(path, st)
        if own and path not in self._told and len(self._told) < 10_000:
            self._told.add(path)
            diagnostics.info(f"not collecting {path}: logpipe itself writes it (feedback guard)",
                             key=f"own-output:{path}")
        return own


def build_sinks(opts: CollectOptions) -> Sequence[Any]:
    """``--to`` specs → sinks (default: NDJSON on stdout)."""
    from logpipe import sinks

    return [sinks.build(spec, opts.sink_options) for spec in (opts.to or ["ndjson"])]


def main(opts: CollectOptions) -> int:
    """Run the collector; returns the exit status."""
    from logpipe.runner import run_command

    p = plan(opts)
    return run_command(lambda: build_sources(opts, p), lambda: build_sinks(opts))
