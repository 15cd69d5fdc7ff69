"""The ``logpipe`` command: collect / sink / rotate / logs / status — parsing and help only.

Every LogpipeError becomes ``logpipe: <one line>`` on stderr with a non-zero exit; the work
itself lives in collector.py, runner.py and rotate.py (imported when a command runs, so
``logpipe --help`` stays fast).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable
from typing import Any

import click

from logpipe._cli_options import (
    SIZE,
    build_sink_options,
    check_sink_specs,
    check_unused_sink_options,
    expand_home,
    sink_options,
    state_dir_option,
)
from logpipe._version import __version__
from logpipe.errors import LogpipeError, UsageError

_GLOB_RE = re.compile(r"[*?[]")


class LogpipeGroup(click.Group):
    """Translates LogpipeError into a one-line message and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LogpipeError as exc:
            click.echo(f"logpipe: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            ctx.exit(130)


@click.group(cls=LogpipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="logpipe")
def main() -> None:
    """Structured logs from every process, collected loss-free and shipped to the console,
    rotated zstd files and Splunk HEC.

    \b
    Quick start:
      logpipe collect --run api="python api.py" --to console --to file:./logs
      logpipe collect --pm2 | logpipe sink splunk   # token: LOGPIPE_SPLUNK_TOKEN
      logpipe rotate '/var/log/app/*.log' --retain 7  # from cron
    """


# --- sink options shared by `collect --to` and `sink` ------------------------------------------
def check_pm2_home(value: str | None) -> None:
    """``--pm2`` takes an optional PM2_HOME, so ``--pm2 'app/*.log'`` or ``--pm2 -`` would
    silently swallow what the user meant as a path to collect: refuse what cannot be a home."""
    if value and (value == "-" or _GLOB_RE.search(value) or os.path.isfile(value)):
        raise UsageError(f"--pm2 {value!r}: PM2_HOME must be a directory; put paths (and -) "
                         f"before --pm2, e.g. logpipe collect {shlex.quote(value)} --pm2")


def _run(fn: Callable[[], int]) -> None:
    """Run a command's work and exit with its status."""
    code = fn()
    sys.exit(code)


# --- collect ------------------------------------------------------------------------------------
@main.command(context_settings={"show_default": True},
              short_help="Tail files, PM2 logs, children or stdin into records (NDJSON or --to).")
@click.argument("paths", nargs=-1, metavar="[PATH_OR_GLOB|-]...")
@click.option("--pm2", "pm2_home", is_flag=False, flag_value="", default=None, metavar="[PM2_HOME]",
              help="tail every file in $PM2_HOME/logs (PM2_HOME defaults to $PM2_HOME or ~/.pm2).")
@click.option("--run", "runs", multiple=True, metavar="NAME=COMMAND",
              help="start COMMAND and collect its stdout/stderr as service NAME; repeat a NAME "
                   "for more instances. Restarted with backoff when it exits (not with --once).")
@click.option("--service", help="service name for stdin ('-') lines that do not say.")
@state_dir_option
@click.option("--once", is_flag=True,
              help="read what is there now (run children to their exit), emit, commit, exit 0.")
@click.option("--to", "to", multiple=True, metavar="SINK",
              help="deliver in-process to SINK instead of NDJSON on stdout: console, "
                   "file:DIR, splunk (repeatable; options below or LOGPIPE_* env).")
@click.option("--max-line-bytes", type=SIZE, default="1M",
              help="longer lines are truncated and flagged (truncated: true).")
@sink_options
def collect(paths: tuple[str, ...], pm2_home: str | None, runs: tuple[str, ...], service: str | None,
            state_dir: str | None, once: bool, to: tuple[str, ...], max_line_bytes: int,
            **kw: Any) -> None:
    """Gather every process's output (files, PM2 logs, children, stdin) as NDJSON records.

    Files and quoted globs are tailed (rotation-aware, restart-safe: checkpoints in the state
    dir); globs are re-scanned for new files every second. Records go to stdout as NDJSON, or
    to the sinks named with --to. logpipe's own diagnostics go to stderr.

    A '**' path component matches up to 8 directory levels (one per pattern). Python
    tracebacks printed as plain text (files, children, stdin) become one record.

    Rotation: rename rotation loses nothing (a renamed file is read to its end). With
    copytruncate (logrotate's, pm2-logrotate's), lines the collector had not read yet when the
    file was truncated are only in the copy: let a glob match the copies too ('app.log*') —
    or rotate with `logpipe rotate` (rename, the default) — else they are lost; lines written
    inside the rotator's copy-to-truncate window are lost either way.

    PM2: the date prefix of --time/log_date_format is stripped (its local time is used where a
    line has none) and log_type json chunk records are unwrapped into the app's own lines.
    With a prefix PM2 itself drops the text after a chunk's last newline: apps that print()
    are safer with log_type json or no prefix. Files of PM2 apps that run logpipe are never
    read (feedback guard).
    """
    from logpipe.collector import CollectOptions
    from logpipe.collector import main as collect_main

    check_pm2_home(pm2_home)
    check_sink_specs(list(to), kw.get("file_dir"))
    check_unused_sink_options(list(to), collect=True)
    sink_opts = build_sink_options(state_dir, kw, list(to))
    opts = CollectOptions(
        paths=list(paths),
        pm2_home=pm2_home,
        runs=list(runs),
        service=service,
        state_dir=sink_opts.state_dir,
        once=once,
        to=list(to),
        max_line_bytes=max_line_bytes,
        sink_options=sink_opts,
    )
    _run(lambda: collect_main(opts))


# --- sink ---------------------------------------------------------------------------------------
@main.command(context_settings={"show_default": True},
              short_help="Deliver records from stdin to console, file, splunk or ndjson.")
@click.argument("names", nargs=-1, metavar="NAME [NAME...]",
                type=click.Choice(["console", "file", "splunk", "ndjson"]))
@state_dir_option
@click.option("--service", help="service name for plain-text lines that do not say.")
@sink_options
def sink(names: tuple[str, ...], state_dir: str | None, service: str | None, **kw: Any) -> None:
    """Read NDJSON records (or plain lines) from stdin and deliver each to every named sink.

    \b
    Sinks:
      console  human-readable lines on stdout (--format json for NDJSON)
      file     DIR/<service>.log, rotated by --max-size/--daily, zstd, --retain N
      splunk   Splunk HTTP Event Collector: batched, gzip, retried, spooled, --ack
      ndjson   the records as NDJSON on stdout

    Exits non-zero only when records could not be delivered or spooled. EOF and SIGTERM flush
    everything.
    """
    from logpipe.runner import sink_main

    if not names:  # click's own message lists the choices over five lines
        raise click.UsageError("name at least one sink: console, file, splunk or ndjson "
                               "(e.g. cmd | logpipe sink console)")
    check_sink_specs(list(names), kw.get("file_dir"))
    check_unused_sink_options(list(names), collect=False)
    sink_opts = build_sink_options(state_dir, kw, list(names))
    _run(lambda: sink_main(list(names), sink_opts, service=service))


# --- rotate -------------------------------------------------------------------------------------
@main.command(context_settings={"show_default": True},
              short_help="Rotate, compress (zstd) and prune log files, from cron.")
@click.argument("paths", nargs=-1, required=True, metavar="PATH_OR_GLOB...")
@click.option("--retain", type=click.IntRange(min=0), default=7,
              help="rotated files to keep per log (0 keeps none: the file just rotated is "
                   "deleted too, once no collector still needs it).")
@click.option("--max-size", type=SIZE, help="rotate files larger than SIZE (e.g. 100M).")
@click.option("--daily", is_flag=True, help="rotate files last rotated on an earlier UTC day.")
@click.option("--max-age", type=click.IntRange(min=0), metavar="DAYS",
              help="also delete rotated files older than DAYS.")
@click.option("--copytruncate", is_flag=True,
              help="copy then truncate in place, for writers that cannot reopen their file. Lines "
                   "written between the copy and the truncate are lost (logrotate's known window).")
@click.option("--no-compress", is_flag=True, help="keep rotated files uncompressed.")
@click.option("--dry-run", is_flag=True, help="print the plan; change nothing.")
@click.option("--state-dir", type=click.Path(file_okay=False), envvar="LOGPIPE_STATE_DIR",
              help="the collector's state dir, so a file it is still draining is compressed "
                   "later (default as for collect: $LOGPIPE_STATE_DIR, else "
                   "$XDG_STATE_HOME/logpipe, else ~/.local/state/logpipe).")
def rotate(paths: tuple[str, ...], retain: int, max_size: int | None, daily: bool,
           max_age: int | None, copytruncate: bool, no_compress: bool, dry_run: bool,
           state_dir: str | None) -> None:
    """Rotate log files from cron: rename (or copytruncate), compress with zstd, keep --retain.

    With neither --max-size nor --daily, every matched non-empty file is rotated (forced).
    Safe beside logpipe's file sink and collector, and against a second run (lock).

    Rotated files: NAME.<UTC YYYYmmddTHHMMSS>[.N].zst beside NAME (so '*.log' never matches
    them). A rotated file another process still has open (a writer that has not reopened yet,
    a collector draining it) is left uncompressed and compressed by the next run. A second run
    waits for the lock ($LOGPIPE_ROTATE_LOCK_WAIT, default 10 s), then exits 3.

    Cron, every 10 minutes (--daily fires once per UTC day: the first run after midnight, or
    after a missed day; --max-size whenever a file is over 100M):

    \b
      */10 * * * * logpipe rotate --daily --max-size 100M --retain 14 '/var/log/app/*.log'

    PM2: rename, make PM2 reopen its files, then a second run compresses what PM2 held.
    cron's PATH has neither logpipe nor pm2 (nor node): give absolute paths, as
    examples/pm2/crontab does:

    \b
      PATH=/usr/local/bin:/usr/bin:/bin
      5 0 * * * R="/opt/venv/bin/logpipe rotate --daily --retain 7 $HOME/.pm2/logs/*.log"; $R && /usr/local/bin/pm2 reloadLogs && $R
    """  # noqa: E501 - a crontab line is one line
    from logpipe.rotate import RotateOptions
    from logpipe.rotate import main as rotate_main
    from logpipe.sinks import default_state_dir

    opts = RotateOptions(
        paths=list(paths), retain=retain, max_size=max_size, daily=daily, max_age_days=max_age,
        copytruncate=copytruncate, compress=not no_compress, dry_run=dry_run,
        state_dir=expand_home(state_dir) or default_state_dir(),
    )
    _run(lambda: rotate_main(opts))



# --- logs ---------------------------------------------------------------------------------------
@main.command(short_help="Read collected logs back: merged in time order, filtered, followed.")
@click.argument("args", nargs=-1, metavar="[SERVICE|FILE|KEY=VALUE]...")
@click.option("--dir", "directory", type=click.Path(file_okay=False), envvar="LOGPIPE_FILE_DIR",
              help="the file sink's directory. [env LOGPIPE_FILE_DIR]")
@click.option("--pm2", "pm2_home", is_flag=False, flag_value="", default=None, metavar="[PM2_HOME]",
              help="read PM2's logs ($PM2_HOME/logs; PM2_HOME defaults to $PM2_HOME or ~/.pm2).")
@click.option("-n", "--lines", type=click.IntRange(min=0), metavar="N",
              help="print only the last N matching records (default: all; 15 with -f).")
@click.option("-f", "--follow", is_flag=True,
              help="keep printing new records, across rotations, until Ctrl-C.")
@click.option("--level", "-p", metavar="LEVEL",
              help="this level and above: debug, info, warning, error, critical.")
@click.option("--since", "-S", metavar="WHEN",
              help="records at or after WHEN: 1h, 30m, 2d, today, yesterday, 2026-12-01, "
                   "2026-12-01T10:00:00Z (UTC unless an offset is given).")
@click.option("--until", "-U", metavar="WHEN", help="records at or before WHEN (as --since).")
@click.option("--grep", "-g", metavar="REGEX",
              help="message matches REGEX (case-insensitive unless it has a capital letter).")
@click.option("--instance", metavar="ID", help="only this instance_id.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="human lines (coloured on a terminal), or NDJSON.")
def logs(args: tuple[str, ...], directory: str | None, pm2_home: str | None, lines: int | None,
         follow: bool, level: str | None, since: str | None, until: str | None,
         grep: str | None, instance: str | None, fmt: str) -> None:
    """Print collected logs: the file sink's directory (live files and their rotated .zst
    history), PM2's logs, or the FILEs named — merged in time order across files and services.

    Arguments: a SERVICE name (api), a DIR (the file sink's directory, as --dir), a FILE
    (anything else with a '/' or that exists), or KEY=VALUE to match any field (status=500,
    user.id=7).

    \b
    Examples:
      logpipe logs api -n 100                 # last 100 records of api
      logpipe logs --level error --since yesterday
      logpipe logs api worker -f              # follow two services, merged by time
      logpipe logs --pm2 api --grep timeout   # PM2's files
      logpipe logs --format json status=500 | jq .path

    --since skips rotated files older than asked without decompressing them (a rotated file's
    name is its rotation time). Ctrl-C and a closed pipe (| head) end it quietly.
    """
    from logpipe.collector import pm2_home as resolve_pm2_home
    from logpipe.logs import LogsOptions
    from logpipe.logs import main as logs_main

    services, files, fields, dirs = [], [], [], []
    for arg in args:
        if "=" in arg and not os.path.exists(arg):
            fields.append(arg)
        elif os.path.isdir(os.path.expanduser(arg)):
            dirs.append(os.path.expanduser(arg))  # `logpipe logs demo-logs`: the directory to read
        elif os.sep in arg or os.path.exists(arg):
            files.append(os.path.expanduser(arg))
        else:
            services.append(arg)
    if dirs:
        given = click.get_current_context().get_parameter_source("directory")
        if len(dirs) > 1 or given == click.core.ParameterSource.COMMANDLINE or files:
            raise UsageError(f"logs: {dirs[0]} is a directory; name one directory (as DIR or --dir), "
                             "or files, not both")
        directory = dirs[0]
    opts = LogsOptions(
        services=services, files=files, directory=expand_home(directory),
        pm2_home=resolve_pm2_home(pm2_home) if pm2_home is not None else None,
        lines=lines, follow=follow, level=level, since=since, until=until, grep=grep,
        fields=fields, instance=instance, fmt=fmt,
    )
    _run(lambda: logs_main(opts))


# --- status -------------------------------------------------------------------------------------
@main.command(short_help="Is logpipe keeping up? Files behind, spools, HEC errors; exit 1 if not.")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output.")
@click.option("--max-lag", type=click.FloatRange(min=0), default=300.0, show_default=True,
              metavar="SECONDS", help="undelivered lines or spooled records older than this "
                                      "need a person.")
def status(state_dir: str | None, as_json: bool, max_lag: float) -> None:
    """Show what running (and dead) collect/sink processes left in the state dir: per tailed
    file the bytes and records behind and the oldest undelivered line's age; per sink delivered,
    retried, quarantined, spooled, spool age, last error.

    Exits 1 when a person is needed (data behind with no process running, lag or spool age over
    --max-lag, a last error newer than the last success), so `logpipe status || alert` works
    from cron.
    """
    from logpipe.paths import default_state_dir
    from logpipe.status import main as status_main

    _run(lambda: status_main(expand_home(state_dir) or default_state_dir(), as_json, max_lag))
