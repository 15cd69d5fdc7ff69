"""The sink registry: names → Sink classes, and the options every sink reads.

Sinks are imported lazily so ``logpipe sink console`` never imports httpx.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING

from logpipe.errors import UsageError
from logpipe.paths import default_state_dir as default_state_dir  # re-exported: callers predate paths.py

if TYPE_CHECKING:
    from logpipe.pipeline import Sink

#: name → "module:Class"
REGISTRY: dict[str, str] = {
    "ndjson": "logpipe.sinks.ndjson:NdjsonSink",
    "console": "logpipe.sinks.console:ConsoleSink",
    "file": "logpipe.sinks.file:FileSink",
    "splunk": "logpipe.sinks.splunk:SplunkSink",
}


@dataclass
class SinkOptions:
    """Every sink's options, filled by the CLI (flags, else ``LOGPIPE_*`` environment)."""

    state_dir: str = field(default_factory=default_state_dir)
    # console
    console_format: str = "text"  # "text" or "json"
    # file
    file_dir: str | None = None
    file_max_size: int | None = None
    file_daily: bool = False
    file_retain: int | None = None
    file_compress: bool = True
    # splunk
    splunk_urls: list[str] = field(default_factory=list)
    splunk_token_file: str | None = None
    splunk_index: str | None = None
    splunk_sourcetype: str = "_json"
    splunk_source: str | None = None
    splunk_host: str | None = None
    splunk_spool_dir: str | None = None
    splunk_spool_max: int | None = None
    splunk_ack: bool = False
    splunk_ca_file: str | None = None
    splunk_insecure: bool = False
    splunk_batch_bytes: int | None = None
    splunk_batch_timeout: float | None = None
    splunk_concurrency: int | None = None
    splunk_drain_timeout: float | None = None


def build(spec: str, options: SinkOptions) -> Sink:
    """``console``, ``file``, ``file:DIR``, ``splunk``, ``ndjson`` → a configured Sink."""
    name, _, arg = spec.partition(":")
    target = REGISTRY.get(name)
    if target is None:
        raise UsageError(f"unknown sink {name!r} (choose from {', '.join(sorted(REGISTRY))})")
    if arg:
        if name != "file":
            raise UsageError(f"sink {name!r} takes no ':' argument (only file:DIR does)")
        # `--to file:~/logs` is one word to the shell, which expands ~ only at a word's start
        options = _replace(options, file_dir=os.path.expanduser(arg))
    module_name, _, cls_name = target.partition(":")
    cls = getattr(import_module(module_name), cls_name)
    sink: Sink = cls.from_options(options)
    return sink


def _replace(options: SinkOptions, **changes: object) -> SinkOptions:
    from dataclasses import replace

    return replace(options, **changes)  # type: ignore[arg-type]
