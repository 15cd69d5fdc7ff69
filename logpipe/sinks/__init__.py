"""The sink registry: names → Sink classes, built from the options the CLI gathered.

Sinks are imported lazily so ``logpipe sink console`` never imports httpx.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from importlib import import_module
from typing import TYPE_CHECKING

from logpipe.errors import UsageError
from logpipe.paths import default_state_dir as default_state_dir  # re-exported: callers predate paths.py

if TYPE_CHECKING:
    from logpipe.pipeline import Sink
    from logpipe.sinks.console import ConsoleConfig
    from logpipe.sinks.file import FileConfig

#: name → "module:Class"
REGISTRY: dict[str, str] = {
    "ndjson": "logpipe.sinks.ndjson:NdjsonSink",
    "console": "logpipe.sinks.console:ConsoleSink",
    "file": "logpipe.sinks.file:FileSink",
    "splunk": "logpipe.sinks.splunk:SplunkSink",
}


@dataclass
class SinkOptions:
    """What the CLI gathered for the sinks (flags, else ``LOGPIPE_*`` environment): the state
    dir, each named sink's own config (None: that sink is not used, or its defaults), and the
    Splunk flags :meth:`logpipe.sinks.splunk.config.SplunkConfig.from_options` turns into its
    config (there, so that ``logpipe sink console`` never imports the Splunk sink)."""

    state_dir: str = field(default_factory=default_state_dir)
    console: ConsoleConfig | None = None
    file: FileConfig | None = None
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
    splunk_compression: str = "gzip"


def build(spec: str, options: SinkOptions) -> Sink:
    """``console``, ``file``, ``file:DIR``, ``splunk``, ``ndjson`` → a configured Sink."""
    name, _, arg = spec.partition(":")
    target = REGISTRY.get(name)
    if target is None:
        raise UsageError(f"unknown sink {name!r} (choose from {', '.join(sorted(REGISTRY))})")
    if arg:
        if name != "file":
            raise UsageError(f"sink {name!r} takes no ':' argument (only file:DIR does)")
        from logpipe.sinks.file import FileConfig

        # `--to file:~/logs` is one word to the shell, which expands ~ only at a word's start
        cfg = replace(options.file or FileConfig(), directory=os.path.expanduser(arg))
        options = replace(options, file=cfg)
    module_name, _, cls_name = target.partition(":")
    cls = getattr(import_module(module_name), cls_name)
    sink: Sink = cls.from_options(options)
    return sink
