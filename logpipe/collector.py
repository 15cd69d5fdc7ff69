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
  ``~/.pm2``) plus any log paths PM2 reports outside it (at start-up); who wrote each file
  and in which of PM2's formats is :mod:`logpipe.sources.pm2`'s business.
- The collector never ingests its own output: ``feedback.is_own_output`` is the tail
  source's exclusion hook. A PM2 log file is also held back until its app has run for
  ``feedback.SETTLE`` seconds (it may be about to exec logpipe), and a file already read stops
  being read once the guard recognises it as logpipe's (``recheck``).
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from logpipe import diagnostics, feedback, identity, record
from logpipe.errors import UsageError
from logpipe.multiline import Joiner
from logpipe.sinks import SinkOptions
from logpipe.sources.pm2 import Pm2App, Pm2Registry, parse_jlist, pm2_home

__all__ = ["CollectOptions", "Pm2App", "Pm2Registry", "build_sinks", "build_sources",
           "file_origin", "is_glob", "main", "parse_jlist", "plan", "pm2_home"]

_GLOB_CHARS = frozenset("*?[")


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

    stdin, patterns = _paths(opts)
    runs = parse_runs(opts.runs)
    _check_runs(runs)
    pm2: Pm2Registry | None = None
    if opts.pm2_home is not None:
        pm2 = _pm2_registry(opts.pm2_home)
        pattern = os.path.join(pm2.logs_dir, "*.log")
        if pattern not in patterns:
            patterns.append(pattern)
    if not patterns and not runs and not stdin:
        raise UsageError("nothing to collect: give files or quoted globs, --pm2, "
                         "--run NAME=COMMAND, or - for stdin")
    if patterns:
        _check_state_dir(opts.state_dir or opts.sink_options.state_dir)
    return Plan(patterns=patterns, runs=runs, stdin=stdin, pm2=pm2)


def _paths(opts: CollectOptions) -> tuple[bool, list[str]]:
    """(stdin given as ``-``, the absolute file patterns once each, in order)."""
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
            _check_file(raw, path, opts.once)
        if path not in patterns:
            patterns.append(path)
    return stdin, patterns


def _check_file(raw: str, path: str, once: bool) -> None:
    """A file named without a glob: a regular file, or one that does not exist yet (said)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        what = "nothing to read" if once else "watching for it"
        diagnostics.warning(f"{raw} does not exist yet; {what}", key=f"missing:{path}")
        return
    except OSError as exc:
        raise UsageError(f"{raw}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{raw} is a directory; give files or a quoted glob such as "
                         f"'{raw.rstrip('/')}/*.log'")
    if not stat.S_ISREG(st.st_mode):
        # the tailer reads regular files only: `cmd | logpipe collect /dev/stdin`
        # or a FIFO would otherwise collect nothing, silently
        raise UsageError(f"{raw} is not a regular file (a pipe or a device); for a "
                         f"pipe or stdin write '-': cmd | logpipe collect -")


def _check_runs(runs: list[Any]) -> None:
    """Every ``--run`` command exists (``/bin/sh -c`` ones are the shell's to check)."""
    for spec in runs:
        exe = spec.argv[0]
        if exe == "/bin/sh":
            continue
        found = shutil.which(exe) if os.sep not in exe else (exe if os.access(exe, os.X_OK) else None)
        if found is None:
            raise UsageError(f"--run {spec.name}: command not found: {exe}")


def _pm2_registry(home_arg: str) -> Pm2Registry:
    """The PM2 registry of ``--pm2 [HOME]``; a logs dir that does not exist yet is said (with
    the fix when HOME looks like the logs dir itself) and watched."""
    pm2 = Pm2Registry(pm2_home(home_arg))
    if not os.path.isdir(pm2.logs_dir):
        home = os.path.dirname(pm2.logs_dir)
        # `--pm2 ~/.pm2/logs` (the logs dir, not PM2_HOME) is an easy slip: name the fix
        hint = (f" (PM2_HOME is the directory that holds logs/: did you mean --pm2 "
                f"{os.path.dirname(home)}?)" if glob.glob(os.path.join(home, "*.log")) else "")
        diagnostics.warning(f"PM2 log directory {pm2.logs_dir} does not exist yet; watching it"
                            f"{hint}", key="pm2-missing")
    return pm2


def _check_state_dir(state_dir: str) -> None:
    """The state dir (checkpoints) exists or can be made, and is writable."""
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"state dir {state_dir}: {exc.strerror}") from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise UsageError(f"state dir {state_dir} is not writable")


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
            is_excluded=_ExclusionNotice(pm2, hold=not opts.once), joiner_factory=Joiner,
            # files already read are re-asked only under --pm2 (a PM2 app that execs logpipe
            # late, via a wrapper): no per-rescan cost for plain file collection
            recheck=_ExclusionNotice(pm2, recheck=True) if pm2 is not None else None,
            decoder_for=(lambda path, start: pm2.decoder(path, start) if pm2.owns(path) else None)
            if pm2 is not None else None,
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
    """``feedback.is_own_output`` (plus, for PM2's files, the apps that run logpipe and the
    start-up hold-back) that says once per path (on stderr) why a file that a pattern matches
    is not collected — a silent skip would look like lost data. With ``recheck`` it answers
    for files already being read, from cached scans only."""

    def __init__(self, pm2: Pm2Registry | None = None, recheck: bool = False,
                 hold: bool = True) -> None:
        self._told: set[str] = set()
        self._pm2 = pm2
        self._recheck = recheck
        self._hold = hold  # ``--once`` reads what is there: no later scan would ask again

    def __call__(self, path: str, st: os.stat_result) -> bool:
        pm2 = self._pm2 if self._pm2 is not None and self._pm2.owns(path) else None
        if self._recheck:
            own = pm2 is not None and feedback.became_own(path, st)
        else:
            own = feedback.is_own_output(path, st) or (pm2 is not None and pm2.runs_logpipe(path))
        if own and path not in self._told and len(self._told) < 10_000:
            self._told.add(path)
            what = "stopped reading" if self._recheck else "not collecting"
            diagnostics.info(f"{what} {path}: logpipe itself writes it (feedback guard)",
                             key=f"own-output:{path}")
        if own or self._recheck or pm2 is None or not self._hold:
            return own
        return not feedback.pm2_settled(path, st)  # held back for now, asked again next scan


def build_sinks(opts: CollectOptions) -> Sequence[Any]:
    """``--to`` specs → sinks (default: NDJSON on stdout)."""
    from logpipe import sinks

    return [sinks.build(spec, opts.sink_options) for spec in (opts.to or ["ndjson"])]


def main(opts: CollectOptions) -> int:
    """Run the collector; returns the exit status."""
    from logpipe.runner import run_command

    p = plan(opts)
    return run_command(lambda: build_sources(opts, p), lambda: build_sinks(opts),
                       status=(opts.state_dir, "collect"))
