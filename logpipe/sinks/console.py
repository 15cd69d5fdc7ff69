"""The ``console`` sink: one human line per record on stdout (or NDJSON with ``--format json``).

The line layout and the colour decision are :mod:`logpipe._console`'s (one formatter for the
logger, this sink and ``logpipe logs``): colour only on a terminal, ``NO_COLOR``/``FORCE_COLOR``
respected.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from logpipe._console import ConsoleFormatter, format_value, use_colour, visible
from logpipe.errors import UsageError
from logpipe.pipeline import Batch, Outcome, Sink
from logpipe.sinks.ndjson import stdout_fd, write_all

if TYPE_CHECKING:
    from logpipe.sinks import SinkOptions

__all__ = ["ConsoleFormatter", "ConsoleSink", "format_value", "use_colour", "visible"]


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The console sink's settings, built by the CLI (``--format``, ``LOGPIPE_CONSOLE_FORMAT``)."""

    format: str = "text"  # "text" or "json"


class ConsoleSink(Sink):
    """Human lines (or NDJSON) on standard output; a batch is one full write."""

    name = "console"

    def __init__(self, fmt: str = "text", fd: int | None = None, colour: bool | None = None) -> None:
        if fmt not in ("text", "json"):
            raise UsageError(f"console format must be 'text' or 'json', not {fmt!r}")
        self._format = fmt
        self._fd = fd
        self._colour = colour
        self._formatter: ConsoleFormatter | None = None

    @classmethod
    def from_options(cls, options: SinkOptions) -> ConsoleSink:
        """Standard output, in ``options.console``'s format."""
        return cls(fmt=(options.console or ConsoleConfig()).format)

    async def start(self) -> None:
        """Resolve the descriptor (stdout unless given) and the colour decision."""
        if self._fd is None:
            self._fd = stdout_fd(self.name)
        colour = self._colour if self._colour is not None else use_colour(self._fd)
        self._formatter = ConsoleFormatter(colour)

    async def write(self, batch: Batch) -> Outcome:
        """Format the whole batch, then write it fully (delivered once the bytes are in the OS)."""
        assert self._fd is not None and self._formatter is not None
        fmt = self._formatter
        data = batch.ndjson() if self._format == "json" else fmt.format_many(batch.records)
        await asyncio.to_thread(write_all, self._fd, data, self.name)
        return Outcome.DELIVERED
