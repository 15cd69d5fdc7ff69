"""Joins Python tracebacks and indented continuation lines into the record that started them.

Only non-JSON writers need this: logpipe's logger (and structlog) put a traceback inside one
JSON line, but a crash before logging is configured, ``traceback.print_exc()`` or a plain
``logging`` formatter writes it as many physical lines on stderr (research/collector.md §1.2,
"What the best do" 8).

The rules are Fluent Bit's built-in ``python`` multiline parser (flb_ml_parser_python.c),
written as a small state machine over bytes, plus what it misses:

- a group starts at ``Traceback (most recent call last):`` (exactly that line), or at an
  exception group's ``+ Exception Group Traceback (most recent call last):``;
- inside a traceback every indented line (``  File …``, code lines, ``^^^^`` markers) continues
  it; the first non-indented line is the ``ExcType: msg`` line and ends the traceback body;
- a chained traceback (``During handling of the above exception, another exception
  occurred:`` / ``The above exception was the direct cause of the following exception:``,
  with the blank lines Python prints around it) continues the same group;
- an indented line that follows a plain (non-JSON, non-blank) line joins it — the
  Filebeat/Vector ``^[[:space:]]`` "continue after" rule for wrapped messages;
- a JSON line (starts with ``{``) is never joined and ends any pending group; with nothing
  pending it is returned at once, without a regex or a state change (the hot path);
- a group is capped at 500 lines or 2 MiB (Filebeat's ``max_lines: 500``; Fluent Bit's 2 MB
  multiline buffer cap); what follows the cap starts a new group;
- held lines must be flushed after ``idle_deadline`` (≤ 1 s idle; Fluent Bit waits 4 s and
  Filebeat 5 s, which delays every plain line that long — research asks for ≤ 1 s).

A traceback that follows a plain line is *not* joined to it (Fluent Bit's rule): an unrelated
earlier line ("starting worker") would otherwise swallow a later crash — unless that line is an
error line (:data:`ERROR_LINE`: stdlib's ``ERROR:shop.payments:payment failed``, or ``ERROR`` /
``CRITICAL`` / ``FATAL`` as a word near its start), which is what ``logging.exception`` prints
right before its traceback.

A Node.js crash report (``file.js:LINE``, the source line, a caret line, then the ``Error:``
with its ``at`` lines and, last, ``Node.js vX``) is one group: it starts when a location line
(:data:`NODE_LOCATION`) is followed by any line and then a caret-only line, and ends with the
``Node.js v`` line (or a JSON line, the caps, or the idle deadline). When the caret line does
not come, the held lines go out one by one, as plain lines would. Physical lines are
joined with ``\\n``; a trailing ``\\r`` (CRLF writers) is dropped from each joined line.
Every byte of every line comes out exactly once, in order: joins only replace the newline
between lines.
"""

from __future__ import annotations

import re
import time

#: Fluent Bit's python parser start state: ``^Traceback \(most recent call last\):$``
TRACEBACK_START = b"Traceback (most recent call last):"
#: PEP 654 exception groups print their header indented, with a ``+`` gutter.
GROUP_START = b"+ Exception Group Traceback (most recent call last):"
#: Lines Python prints between chained tracebacks (traceback.py ``_cause_message`` /
#: ``_context_message``).
CHAIN_LINES = (
    b"During handling of the above exception, another exception occurred:",
    b"The above exception was the direct cause of the following exception:",
)

#: A plain line after which a traceback belongs to it (``logging.exception``'s message line).
ERROR_LINE = re.compile(
    rb"^(?:ERROR|CRITICAL|FATAL|EXCEPTION)[:\s]|^.{0,80}?[\s\[|](?:ERROR|CRITICAL|FATAL)[\]\s:|]").match
#: The first line of a Node.js crash report: where it was thrown (``/app/x.js:12``,
#: ``node:internal/…:288``, ``file:///…:3``, ``[eval]:1``, ``C:\app\x.js:12``).
NODE_LOCATION = re.compile(rb"^(?:/|file://|node:|\[eval\]|[A-Za-z]:\\)\S*:\d+\r?$").match
#: The caret line under the source line.
NODE_CARET = re.compile(rb"^[ \t]*\^+[ \t]*\r?$").match
#: The last line of the report.
NODE_FOOTER = b"Node.js v"

MAX_LINES = 500
MAX_BYTES = 2 << 20
IDLE_SECONDS = 0.5

# states
_IDLE = 0  # nothing held
_PLAIN = 1  # a plain line (+ indented continuations) held
_TB = 2  # inside a traceback body: indented lines continue, first unindented line ends it
_AFTER = 3  # traceback complete; held in case a chain (or an indented note) follows
_CHAIN = 4  # saw "During handling…": blank lines and the next Traceback line continue
_EGROUP = 5  # exception group: every indented line continues
_NODE_LOC = 6  # a Node.js location line held: the source line comes next
_NODE_SRC = 7  # location + source held: a caret line makes it a crash report
_NODE = 8  # inside a Node.js crash report: everything up to "Node.js vX" continues

_INDENT = (32, 9)  # ord(" "), ord("\t")


def _node_location(line: bytes) -> bool:
    """A Node.js crash report's first line? (first-byte test first: plain lines pay ~nothing)"""
    return ((line[:1] in _NODE_FIRST or line[1:2] == b":")
            and NODE_LOCATION(line) is not None)


_NODE_FIRST = (b"/", b"f", b"n", b"[")


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


class Joiner:
    """Per-stream joiner: feed physical lines with ``push``, get logical lines back.

    ``push(line, end_offset)`` returns the logical lines completed by this line, each with the
    offset just after its last physical line (what a checkpoint may commit once it is
    delivered). Lines held back are returned by a later ``push``, by ``flush()`` (EOF,
    shutdown), or by ``poll()`` once ``idle_deadline`` has passed.
    """

    __slots__ = ("_bytes", "_end", "_ends", "_held", "_state", "_tentative", "idle_deadline",
                 "max_bytes", "max_lines", "timeout")

    def __init__(self, *, timeout: float = IDLE_SECONDS, max_lines: int = MAX_LINES,
                 max_bytes: int = MAX_BYTES) -> None:
        self.timeout = min(timeout, 1.0)
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self._state = _IDLE
        self._held: list[bytes] = []
        self._bytes = 0
        self._end = 0
        # blank lines after a finished traceback: part of the group only if a chain line follows
        self._tentative: list[tuple[bytes, int]] = []
        #: end offsets of the lines of a possible Node.js report (given back one by one if not)
        self._ends: list[int] = []
        #: monotonic time after which held lines must be flushed; None when nothing is held
        self.idle_deadline: float | None = None

    @property
    def pending(self) -> int:
        """Number of physical lines held back."""
        return len(self._held) + len(self._tentative)

    def push(self, line: bytes, end_offset: int) -> list[tuple[bytes, int]]:
        """Feed one physical line (no newline); return the logical lines it completes."""
        state = self._state
        first = line[:1]
        if state == _IDLE and first == b"{":
            return [(line, end_offset)]  # hot path: JSON, nothing pending
        if (state == _PLAIN and first > b" " and first != b"{" and len(self._held) == 1
                and not line.startswith(b"Traceback") and not _node_location(line)):
            # plain writers' path: an unindented line ends the held single line and is held
            # in its place (byte > 0x20: neither indented nor blank)
            prev, prev_end = self._held[0], self._end
            self._held[0] = line
            self._bytes = len(line)
            self._end = end_offset
            self.idle_deadline = time.monotonic() + self.timeout
            return [(prev, prev_end)]
        out: list[tuple[bytes, int]] = []
        self._step(line, end_offset, out)
        if self._state == _IDLE:
            self.idle_deadline = None
        else:
            self.idle_deadline = time.monotonic() + self.timeout
        return out

    def _step(self, line: bytes, end: int, out: list[tuple[bytes, int]]) -> None:
        """One line through the state machine: a JSON line ends any group; else the state's
        own step decides whether it joins the held group or starts the next one."""
        state = self._state
        if line[:1] == b"{":
            self._emit(out)
            out.append((line, end))
            return
        if state == _IDLE:
            self._start(line, end, out)
            return
        body = _strip_cr(line)
        indented = bool(body) and body[0] in _INDENT
        blank = not body.strip()
        if state == _PLAIN:
            self._step_plain(line, body, indented and not blank, end, out)
        elif state == _TB:
            self._step_traceback(line, body, indented, blank, end, out)
        elif state == _AFTER:
            self._step_after(line, body, indented, blank, end, out)
        elif state == _CHAIN:
            self._step_chain(line, body, blank, end, out)
        elif state >= _NODE_LOC:
            self._step_node(state, line, body, end, out)
        elif indented and not blank:  # _EGROUP: its indented lines
            self._add(line, end, out)
        else:
            self._next_group(line, end, out)

    def _next_group(self, line: bytes, end: int, out: list[tuple[bytes, int]]) -> None:
        """The held group is complete: give it back and start a new one with ``line``."""
        self._emit(out)
        self._start(line, end, out)

    def _step_plain(self, line: bytes, body: bytes, continued: bool, end: int,
                    out: list[tuple[bytes, int]]) -> None:
        """After a plain line: indented text continues it; ``logging.exception``'s message line
        followed by ``Traceback …`` becomes a traceback group."""
        if continued and not self._is_group_start(body):
            self._add(line, end, out)
        elif body == TRACEBACK_START and ERROR_LINE(self._held[0]):
            self._add(line, end, out)  # logging.exception: message line, then traceback
            if self._state == _PLAIN:
                self._state = _TB
        else:
            self._next_group(line, end, out)

    def _step_traceback(self, line: bytes, body: bytes, indented: bool, blank: bool, end: int,
                        out: list[tuple[bytes, int]]) -> None:
        """Inside a traceback's frames: indented lines join; the unindented exception line
        ends the body (then maybe a chain follows)."""
        if indented and not blank:
            self._add(line, end, out)
        elif blank or body == TRACEBACK_START:
            self._next_group(line, end, out)
        else:
            # the "ExcType: msg" line (or a bare "KeyboardInterrupt") ends the body
            self._add(line, end, out)
            if self._state == _TB:
                self._state = _AFTER

    def _step_after(self, line: bytes, body: bytes, indented: bool, blank: bool, end: int,
                    out: list[tuple[bytes, int]]) -> None:
        """After the exception line: blank lines are held tentatively; a chain line ("During
        handling …") adopts them and continues the group."""
        if blank:
            self._tentative.append((line, end))
        elif body in CHAIN_LINES:
            self._adopt_tentative()
            self._add(line, end, out)
            if self._state == _AFTER:
                self._state = _CHAIN
        elif indented and not self._tentative:
            self._add(line, end, out)  # e.g. an indented note after the exception line
        else:
            self._next_group(line, end, out)

    def _step_chain(self, line: bytes, body: bytes, blank: bool, end: int,
                    out: list[tuple[bytes, int]]) -> None:
        """After a chain line: the next ``Traceback …`` (after blank lines) continues the group."""
        if blank:
            self._tentative.append((line, end))
        elif body == TRACEBACK_START:
            self._adopt_tentative()
            self._add(line, end, out)
            if self._state == _CHAIN:
                self._state = _TB
        else:
            self._next_group(line, end, out)

    def _step_node(self, state: int, line: bytes, body: bytes, end: int,
                   out: list[tuple[bytes, int]]) -> None:
        if state == _NODE_LOC:  # the source line, whatever it is
            self._held.append(line)
            self._bytes += len(line) + 1
            self._ends.append(end)
            self._end = end
            self._state = _NODE_SRC
            return
        if state == _NODE_SRC:
            if NODE_CARET(body):
                self._add(line, end, out)
                if self._state == _NODE_SRC:
                    self._state = _NODE
                return
            if self._continues_plain():  # an indented line after it: the usual plain join
                self._state = _PLAIN
                self._step(line, end, out)
                return
            self._emit(out)  # not a crash report: the held lines go out one by one
            self._start(line, end, out)
            return
        self._add(line, end, out)  # _NODE
        if body.startswith(NODE_FOOTER):
            self._emit(out)

    def _continues_plain(self) -> bool:
        """A held location line + an indented (non-blank) line: a plain line and its
        continuation, as if no crash report had been suspected."""
        held = self._held
        return (len(held) == 2 and held[1][:1] in (b" ", b"\t")
                and bool(_strip_cr(held[1]).strip()))

    @staticmethod
    def _is_group_start(body: bytes) -> bool:
        return body.lstrip(b" \t") == GROUP_START

    def _start(self, line: bytes, end: int, out: list[tuple[bytes, int]]) -> None:
        """``line`` with nothing held: hold it as the start of a group, or pass it through."""
        body = _strip_cr(line)
        if not body.strip():
            out.append((line, end))  # a blank line joins nothing and starts nothing
            return
        if body == TRACEBACK_START:
            state = _TB
        elif body[0] in _INDENT and self._is_group_start(body):
            state = _EGROUP
        elif _node_location(body):
            state = _NODE_LOC
            self._ends = [end]
        else:
            state = _PLAIN
        self._state = state
        self._held = [line]
        self._bytes = len(line)
        self._end = end

    def _add(self, line: bytes, end: int, out: list[tuple[bytes, int]]) -> None:
        if len(self._held) >= self.max_lines or self._bytes + len(line) + 1 > self.max_bytes:
            # cap reached: what is held goes out; the rest of the group starts a new one
            state = self._state
            self._emit(out)
            self._held = [line]
            self._bytes = len(line)
            self._end = end
            self._state = state
            return
        self._held.append(line)
        self._bytes += len(line) + 1
        self._end = end

    def _adopt_tentative(self) -> None:
        for line, end in self._tentative:
            self._held.append(line)
            self._bytes += len(line) + 1
            self._end = end
        self._tentative = []

    def _emit(self, out: list[tuple[bytes, int]]) -> None:
        held = self._held
        if self._state in (_NODE_LOC, _NODE_SRC) and not self._continues_plain():
            # not (yet) a crash report: the held lines go out one by one
            out.extend(zip(held, self._ends, strict=True))
        elif held:
            if len(held) == 1:
                out.append((held[0], self._end))
            else:
                out.append((b"\n".join([_strip_cr(x) for x in held]), self._end))
        if self._tentative:
            out.extend(self._tentative)
            self._tentative = []
        self._held = []
        self._bytes = 0
        self._state = _IDLE

    def flush(self) -> list[tuple[bytes, int]]:
        """Return everything held (EOF, shutdown, idle timeout) and forget it."""
        out: list[tuple[bytes, int]] = []
        self._emit(out)
        self.idle_deadline = None
        return out

    def poll(self, now: float | None = None) -> list[tuple[bytes, int]]:
        """``flush()`` if the idle deadline has passed, else nothing."""
        if self.idle_deadline is None:
            return []
        if (time.monotonic() if now is None else now) < self.idle_deadline:
            return []
        return self.flush()
