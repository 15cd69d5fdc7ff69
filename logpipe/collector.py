"""``logpipe collect``: builds sources from arguments and runs them into the sinks."""

from __future__ import annotations

from dataclasses import dataclass, field

from logpipe.errors import UsageError
from logpipe.sinks import SinkOptions


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


def main(opts: CollectOptions) -> int:
    """Run the collector; returns the exit status."""
    raise UsageError("collect is not built yet")
