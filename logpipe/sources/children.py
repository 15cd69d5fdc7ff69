"""``--run NAME=COMMAND`` children: start them, capture stdout/stderr line by line, restart them.

Each child runs in its own session and process group (``start_new_session``), so a terminal's
Ctrl-C reaches only the collector, and stopping a child reaches everything it started — the
process-group semantics of supervisord's ``stopasgroup``/``killasgroup`` and systemd's
``KillMode=control-group``. Its environment gets ``LOGPIPE_SERVICE=NAME`` and
``LOGPIPE_INSTANCE_ID=<i>`` (SPEC §3) so logpipe's logger in the child binds them, and
``PYTHONUNBUFFERED=1`` unless set (a Python child's ``print`` to a pipe is block-buffered
otherwise, so a crash would lose its last lines).

Lifecycle, like supervisord/PM2 with systemd's ``RestartSec`` doubling:

- a child that exits is reported as a record (``warning`` for exit 0, ``error`` for a
  non-zero exit or a signal; ``exit_code``/``signal``, ``restarts``) and restarted after a
  backoff of 1 s doubling to 60 s; the backoff resets once a child has run for 60 s;
- ``once``: every child runs to its exit, is not restarted, its output is drained, ``run``
  returns;
- ``stop()`` (SIGTERM/SIGINT to the collector): SIGTERM to each child's process group, up to
  ``stop_timeout`` (10 s) for the group to exit, then SIGKILL; the pipes are drained to EOF so
  the last lines are delivered, then ``run`` returns.

Limits: a collector killed with SIGKILL cannot stop its children; they get EPIPE/SIGPIPE on
their next write to the closed pipes. A grandchild that starts its own session escapes the
process group. Commands are split with ``shlex.split`` and run without a shell unless they use
shell syntax (see :func:`command_argv`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from logpipe import _proc, identity, record
from logpipe.errors import UsageError
from logpipe.multiline import Joiner
from logpipe.pipeline import Batch, Source
from logpipe.sources._lines import LineAssembler, LineBatch

READ_SIZE = 1 << 16
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
RESET_AFTER = 60.0
STOP_TIMEOUT = 10.0
#: After a child's main process exited, how long its pipes may stay open (a grandchild holding
#: them) before reading stops.
DRAIN_TIMEOUT = 2.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Characters that only mean something to a shell: pipes, redirections, lists, expansions,
# globs, comments, subshells. Quotes are not in the list: shlex handles them itself.
_SHELL_CHARS = frozenset("|&;<>()$`*?[]{}~#!\n")
_ASSIGNMENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")

Emit = Callable[[Batch], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One child to run: ``name`` (service), ``instance`` (0, 1, … per repeated name),
    the command as given and the argv to execute."""

    name: str
    instance: int
    command: str
    argv: tuple[str, ...]


def command_argv(command: str) -> list[str]:
    """The argv for ``command``: ``shlex.split`` and exec directly when it is a plain command
    line; ``/bin/sh -c COMMAND`` when it uses shell syntax (a metacharacter outside quotes such
    as ``|``, ``>``, ``&&``, ``$VAR``, a glob, or a leading ``VAR=value`` assignment).

    Direct exec is preferred because the child's pid is then the program's own pid and
    signals reach it without a shell in between (like supervisord, which never uses a shell);
    a shell is used only where the user clearly asked for shell features.
    Raises UsageError on unbalanced quotes or an empty command.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--run command {command!r}: {exc}") from None
    if not argv:
        raise UsageError("--run needs a command after NAME=")
    if _needs_shell(command) or _ASSIGNMENT_RE.match(argv[0]):
        return ["/bin/sh", "-c", command]
    return argv


def _needs_shell(command: str) -> bool:
    """True when ``command`` has a shell metacharacter outside single/double quotes."""
    quote = ""
    escaped = False
    for ch in command:
        if escaped:
            escaped = False
            continue
        if ch == "\\" and quote != "'":
            escaped = True
            continue
        if quote:
            if ch == quote:
                quote = ""
            elif quote == '"' and ch in "$`":
                return True  # expansion inside double quotes
            continue
        if ch in "'\"":
            quote = ch
            continue
        if ch in _SHELL_CHARS:
            return True
    return False


def parse_runs(runs: Sequence[str]) -> list[RunSpec]:
    """``["api=python api.py", "api=python api.py", "w=worker"]`` → RunSpecs with instances
    0, 1 for ``api`` and 0 for ``w``. Raises UsageError on bad syntax."""
    counts: dict[str, int] = {}
    specs: list[RunSpec] = []
    for item in runs:
        name, sep, command = item.partition("=")
        name = name.strip()
        if not sep or not name or not command.strip():
            raise UsageError(f"--run {item!r}: expected NAME=COMMAND, e.g. --run api='python api.py'")
        if not _NAME_RE.match(name):
            raise UsageError(f"--run {item!r}: NAME may hold letters, digits, '.', '_' and '-' only")
        argv = command_argv(command)
        idx = counts.get(name, 0)
        counts[name] = idx + 1
        specs.append(RunSpec(name, idx, command, tuple(argv)))
    return specs


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


class _Stream:
    """One pipe of one child run: its lines (joined, normalised, batched) emitted as read."""

    __slots__ = ("_emit", "_lines")

    def __init__(self, normaliser: record.LineNormaliser, max_line: int, emit: Emit) -> None:
        self._lines = LineAssembler(normaliser, max_line, Joiner())
        self._emit = emit

    async def pump(self, reader: asyncio.StreamReader) -> None:
        """Read until EOF; flush held lines when the joiner's idle deadline passes."""
        lines = self._lines
        while True:
            deadline = lines.idle_deadline
            if deadline is None:
                chunk = await reader.read(READ_SIZE)
            else:
                try:
                    chunk = await asyncio.wait_for(reader.read(READ_SIZE),
                                                   max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    await self._send(lines.flush_groups())
                    continue
            if not chunk:
                await self.finish()
                return
            await self._send(lines.feed(chunk))

    async def finish(self) -> None:
        """EOF or shutdown: emit the partial last line and whatever the joiner holds."""
        await self._send(self._lines.finish())

    async def _send(self, batches: Iterator[LineBatch]) -> None:
        for b in batches:
            if b.records:
                await self._emit(Batch(b.records, b.lines, source="children"))


class ChildrenSource(Source):
    """Runs every ``--run`` child under supervision and emits their output as records."""

    name = "children"

    def __init__(self, specs: Sequence[RunSpec], *, once: bool = False, max_line_bytes: int = 1 << 20,
                 backoff_initial: float = BACKOFF_INITIAL, backoff_max: float = BACKOFF_MAX,
                 reset_after: float = RESET_AFTER, stop_timeout: float = STOP_TIMEOUT,
                 environ: Mapping[str, str] | None = None) -> None:
        self.specs = list(specs)
        self.once = once
        self.max_line_bytes = max_line_bytes
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.reset_after = reset_after
        self.stop_timeout = stop_timeout
        self._environ = dict(os.environ if environ is None else environ)
        self._stop = asyncio.Event()
        self._host = identity.hostname()

    def stop(self) -> None:
        """Stop every child (SIGTERM to its group, SIGKILL after stop_timeout), drain, return."""
        self._stop.set()

    async def run(self, emit: Emit) -> None:
        """Supervise every child until ``once`` completes or ``stop()``."""
        lock = asyncio.Lock()

        async def serial_emit(batch: Batch) -> None:
            # stdout and stderr of many children share one ordered path into the pipeline
            async with lock:
                await emit(batch)

        tasks = [asyncio.ensure_future(self._supervise(spec, serial_emit)) for spec in self.specs]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # one child's output could not be delivered (pipeline aborted) or we were
            # cancelled: stop every child rather than leave them running unread
            self._stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _env(self, spec: RunSpec) -> dict[str, str]:
        env = dict(self._environ)
        env[identity.ENV_SERVICE] = spec.name
        env[identity.ENV_INSTANCE_ID] = str(spec.instance)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _defaults(self, spec: RunSpec, pid: int | None) -> dict[str, Any]:
        d: dict[str, Any] = {
            record.SOURCE: f"run:{spec.name}",
            record.SERVICE: spec.name,
            record.INSTANCE_ID: str(spec.instance),
            record.HOST: self._host,
        }
        if pid is not None:
            d[record.PID] = pid
        return d

    async def _supervise(self, spec: RunSpec, emit: Emit) -> None:
        delay = self.backoff_initial
        restarts = 0
        while not self._stop.is_set():
            started = time.monotonic()
            status = await self._run_once(spec, emit)
            ran = time.monotonic() - started
            stopped_by_us = self._stop.is_set()
            restart = not (self.once or stopped_by_us)
            if restart and ran >= self.reset_after:
                delay = self.backoff_initial  # it ran long enough to count as healthy
            await emit(self._exit_batch(spec, status, restarts, delay if restart else None,
                                        stopped_by_us))
            if not restart:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
                return  # stop() during the backoff
            delay = min(delay * 2, self.backoff_max)
            restarts += 1

    async def _run_once(self, spec: RunSpec, emit: Emit) -> tuple[int | None, int | None, str | None]:
        """Start the child, pump its pipes, wait for it (or stop it). Returns (pid, returncode,
        error text when it could not start)."""
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ChildProtocol(exited, loop), *spec.argv, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env(spec),
                start_new_session=True,
            )
        except OSError as exc:
            return None, None, f"could not start {spec.argv[0]!r}: {exc.strerror or exc}"
        pid = transport.get_pid()
        try:
            assert protocol.stdout is not None and protocol.stderr is not None
            base = self._defaults(spec, pid)
            out = _Stream(record.LineNormaliser(base, "info"), self.max_line_bytes, emit)
            err = _Stream(record.LineNormaliser(base, "error"), self.max_line_bytes, emit)
            pumps = asyncio.gather(out.pump(protocol.stdout), err.pump(protocol.stderr))
            stopper: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({exited, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if not exited.done() or self._stop.is_set():
                await self._terminate(pid, exited)
            await exited
            rc = transport.get_returncode()
            # Drain the pipes to EOF: the last lines a child writes before it exits must arrive.
            try:
                await asyncio.wait_for(asyncio.shield(pumps), DRAIN_TIMEOUT)
            except TimeoutError:
                # something else in its group still holds the pipes open; keep what we have
                pumps.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pumps
                await out.finish()
                await err.finish()
        finally:
            # Python 3.11's Process.wait() waits for the pipes too, so exit is taken from
            # process_exited instead, and the pipes are closed here whatever happened (a
            # grandchild holding them, or a pipeline that stopped taking records).
            transport.close()
        return pid, rc, None

    async def _terminate(self, pgid: int, waiter: asyncio.Future[None]) -> None:
        """SIGTERM the child's process group; SIGKILL it if anything in it outlives
        stop_timeout."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            if waiter.done() and not _proc.pid_alive(pgid, group=True):
                return
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


    def _exit_batch(self, spec: RunSpec, status: tuple[int | None, int | None, str | None],
                    restarts: int, next_delay: float | None, stopped: bool) -> Batch:
        pid, rc, error = status
        rec = self._defaults(spec, pid)
        rec[record.TIME] = record.now()
        rec["restarts"] = restarts
        if error is not None:
            level, what = "error", error
        elif rc is not None and rc < 0:
            rec["signal"] = _signal_name(-rc)
            level, what = ("info" if stopped else "error"), f"killed by {_signal_name(-rc)}"
        else:
            rec["exit_code"] = rc
            expected = stopped or (self.once and rc == 0)
            level = "info" if expected else ("warning" if rc == 0 else "error")
            what = f"exited with code {rc}"
        if stopped:
            tail = "; stopped by logpipe"
        elif next_delay is not None:
            tail = f"; restarting in {next_delay:g}s"
            rec["restart_in"] = next_delay
        else:
            tail = ""
        rec[record.LEVEL] = level
        # service[instance] are fields of their own (the console sink prints them first)
        rec[record.MESSAGE] = f"child {what}{tail}"
        rec["child_exit"] = True
        return Batch([rec], [record.dumps(rec)], source="children")


class _ChildProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's stream protocol that also reports the child's exit as soon as it happens."""

    def __init__(self, exited: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=READ_SIZE, loop=loop)
        self._exited = exited

    def process_exited(self) -> None:
        super().process_exited()
        if not self._exited.done():
            self._exited.set_result(None)
