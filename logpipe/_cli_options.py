"""Option types and the sink option group shared by ``collect`` and ``sink``: the console, file
and Splunk flags (each also read from a ``LOGPIPE_*`` variable), the checks on them, and their
translation into :class:`logpipe.sinks.SinkOptions`."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from logpipe.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``100M`` → 104857600. Units K/M/G/T are powers of 1024 (like logrotate and PM2)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 512K, 100M, 2G)")
    return int(float(m[1]) * _UNITS[m[2].lower()])


class SizeParam(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic from click 8.2
    """A byte size such as ``512K``, ``100M``, ``2G``."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            size = parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if size <= 0:
            self.fail("must be greater than zero", param, ctx)
        return size


SIZE = SizeParam()


#: ``--format`` (the console sink).
_CONSOLE_OPTIONS = [
    click.option("--format", "console_format", type=click.Choice(["text", "json"]),
                 default="text", show_default=True, envvar="LOGPIPE_CONSOLE_FORMAT",
                 help="console sink: human text, or NDJSON. [env LOGPIPE_CONSOLE_FORMAT]"),
]
#: ``--dir``, ``--max-size``, ``--daily``, ``--retain``, ``--no-compress`` (the file sink).
_FILE_OPTIONS = [
    click.option("--dir", "file_dir", type=click.Path(file_okay=False), envvar="LOGPIPE_FILE_DIR",
                 help="file sink: directory for <service>.log files. [env LOGPIPE_FILE_DIR]"),
    click.option("--max-size", "file_max_size", type=SIZE, envvar="LOGPIPE_FILE_MAX_SIZE",
                 help="file sink: rotate a file when it reaches SIZE (e.g. 100M). "
                      "[env LOGPIPE_FILE_MAX_SIZE]"),
    click.option("--daily", "file_daily", is_flag=True, envvar="LOGPIPE_FILE_DAILY",
                 help="file sink: also rotate at the first write of each UTC day."),
    click.option("--retain", "file_retain", type=click.IntRange(min=0), envvar="LOGPIPE_FILE_RETAIN",
                 help="file sink: rotated files to keep per log (default: all)."),
    click.option("--no-compress", "file_no_compress", is_flag=True,
                 envvar="LOGPIPE_FILE_NO_COMPRESS",
                 help="file sink: keep rotated files uncompressed."),
]
#: ``--url``, ``--token-file``, … (the Splunk sink).
_SPLUNK_OPTIONS = [
    click.option("--url", "splunk_url", envvar="LOGPIPE_SPLUNK_URL", metavar="URL[,URL…]",
                 help="splunk sink: HEC base URL(s), comma-separated to spread load and fail "
                      "over. The token is read from LOGPIPE_SPLUNK_TOKEN or --token-file, "
                      "never from the command line. [env LOGPIPE_SPLUNK_URL]"),
    click.option("--token-file", "splunk_token_file", type=click.Path(dir_okay=False),
                 envvar="LOGPIPE_SPLUNK_TOKEN_FILE",
                 help="splunk sink: file holding the HEC token. [env LOGPIPE_SPLUNK_TOKEN_FILE]"),
    click.option("--index", "splunk_index", envvar="LOGPIPE_SPLUNK_INDEX",
                 help="splunk sink: target index. [env LOGPIPE_SPLUNK_INDEX]"),
    click.option("--sourcetype", "splunk_sourcetype", default="_json", show_default=True,
                 envvar="LOGPIPE_SPLUNK_SOURCETYPE", help="splunk sink: sourcetype."),
    click.option("--source", "splunk_source", envvar="LOGPIPE_SPLUNK_SOURCE",
                 help="splunk sink: override each event's source (default: the record's)."),
    click.option("--host", "splunk_host", envvar="LOGPIPE_SPLUNK_HOST",
                 help="splunk sink: override each event's host (default: the record's)."),
    click.option("--spool-dir", "splunk_spool_dir", type=click.Path(file_okay=False),
                 envvar="LOGPIPE_SPLUNK_SPOOL_DIR",
                 help="splunk sink: disk spool (default: <state dir>/spool/splunk)."),
    click.option("--spool-max", "splunk_spool_max", type=SIZE, envvar="LOGPIPE_SPLUNK_SPOOL_MAX",
                 help="splunk sink: spool bound; when reached, reading stops (back-pressure). "
                      "Default 1G."),
    click.option("--ack", "splunk_ack", is_flag=True, envvar="LOGPIPE_SPLUNK_ACK",
                 help="splunk sink: indexer acknowledgement; a batch is delivered when acked."),
    click.option("--ca-file", "splunk_ca_file", type=click.Path(dir_okay=False, exists=True),
                 envvar="LOGPIPE_SPLUNK_CA_FILE", help="splunk sink: CA bundle to verify TLS."),
    click.option("--insecure", "splunk_insecure", is_flag=True, envvar="LOGPIPE_SPLUNK_INSECURE",
                 help="splunk sink: do not verify TLS certificates (warns)."),
    click.option("--batch-size", "splunk_batch_bytes", type=SIZE, envvar="LOGPIPE_SPLUNK_BATCH_SIZE",
                 help="splunk sink: max uncompressed bytes per request (default 1000000, as "
                      "Vector's HEC sink; a request HEC refuses as too large is halved)."),
    click.option("--batch-timeout", "splunk_batch_timeout", type=click.FloatRange(min=0.001),
                 envvar="LOGPIPE_SPLUNK_BATCH_TIMEOUT",
                 help="splunk sink: seconds before a partial batch is sent (default 1)."),
    click.option("--drain-timeout", "splunk_drain_timeout", type=click.FloatRange(min=0),
                 envvar="LOGPIPE_SPLUNK_DRAIN_TIMEOUT", metavar="SECONDS",
                 help="splunk sink: on SIGTERM/SIGINT, reading stops and everything read is "
                      "already fsynced in the spool; then deliver for at most SECONDS (at once "
                      "done if every HEC is unreachable) and exit 0, what is left staying "
                      "spooled for the next run (default 5: a few round trips and retries of a "
                      "busy HEC, well under systemd's 90 s stop timeout). At the end of the "
                      "input: deliver while HEC makes progress, give up after SECONDS without. "
                      "PM2 kills after kill_timeout (1.6 s by default): set kill_timeout to "
                      "drain-timeout + 2 s (e.g. 7000 ms), or --drain-timeout 0 to leave "
                      "delivery to the next start."),
    click.option("--concurrency", "splunk_concurrency", type=click.IntRange(min=1),
                 envvar="LOGPIPE_SPLUNK_CONCURRENCY",
                 help="splunk sink: requests in flight (default 4); one source's events go one "
                      "request at a time, in order."),
    click.option("--compression", "splunk_compression", type=click.Choice(["gzip", "none"]),
                 default="gzip", envvar="LOGPIPE_SPLUNK_COMPRESSION", show_default=True,
                 help="splunk sink: request bodies gzipped (level 1, from 1500 bytes) or sent "
                      "as they are (less CPU, ~13x more bytes on the wire)."),
]


def sink_options(f: F) -> F:
    """Options of the console, file and splunk sinks; each also reads a LOGPIPE_* variable."""
    opts = [*_CONSOLE_OPTIONS, *_FILE_OPTIONS, *_SPLUNK_OPTIONS]
    for opt in reversed(opts):
        f = opt(f)
    # README: "every option can also come from the environment (see `logpipe sink --help`)", so
    # name the variable in each option's help where the text does not already say it.
    for param in getattr(f, "__click_params__", []):
        if isinstance(param, click.Option) and isinstance(param.envvar, str) \
                and "[env" not in (param.help or ""):
            param.help = f"{param.help} [env {param.envvar}]"
    return f


def state_dir_option(f: F) -> F:
    """``--state-dir`` with the SPEC's default chain."""
    return click.option(
        "--state-dir", type=click.Path(file_okay=False), envvar="LOGPIPE_STATE_DIR",
        help="checkpoints and spools (default $LOGPIPE_STATE_DIR, else $XDG_STATE_HOME/logpipe, "
             "else ~/.local/state/logpipe).",
    )(f)


def build_sink_options(state_dir: str | None, kw: dict[str, Any], specs: list[str]) -> Any:
    """Click keyword arguments → SinkOptions (pops the sink keys from ``kw``): a config object
    for each of the console and file sinks that ``specs`` name, the Splunk flags as given."""
    from logpipe.sinks import SinkOptions, default_state_dir

    names = {spec.partition(":")[0] for spec in specs}
    console_format = kw.pop("console_format")
    file_fields = {k.removeprefix("file_"): kw.pop(k) for k in list(kw) if k.startswith("file_")}
    url = kw.pop("splunk_url")
    fields = {k: kw.pop(k) for k in list(kw) if k.startswith("splunk_")}
    for key in ("splunk_spool_dir", "splunk_token_file"):
        if fields.get(key):
            fields[key] = os.path.expanduser(fields[key])
    urls = [u.strip() for u in (url or "").split(",") if u.strip()]
    if "splunk" in names:
        check_urls(urls)
    options = SinkOptions(
        state_dir=expand_home(state_dir) or default_state_dir(),
        splunk_urls=urls,
        **{k: v for k, v in fields.items() if v is not None},
    )
    if "console" in names:
        from logpipe.sinks.console import ConsoleConfig

        options.console = ConsoleConfig(format=console_format)
    if "file" in names:
        from logpipe.sinks.file import FileConfig

        options.file = FileConfig(directory=expand_home(file_fields["dir"]),
                                  max_size=file_fields["max_size"], daily=file_fields["daily"],
                                  retain=file_fields["retain"],
                                  compress=not file_fields["no_compress"])
    return options


def check_urls(urls: list[str]) -> None:
    """Each ``--url`` is http(s) with a host and a valid port; else one line naming the URL as
    typed — port and path included, its user info (which may hold a token) and query left out."""
    for url in urls:
        shown = _without_secrets(url)
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed [IPv6 bracket
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"splunk: --url {shown!r} is not an http(s) URL "
                             "(e.g. https://splunk:8088)")
        try:
            port = parts.port
        except ValueError:  # not a number, or past 65535
            port = 0
        if port == 0:
            raise UsageError(f"splunk: --url {shown!r}: bad port (1-65535)")


def _without_secrets(url: str) -> str:
    """``url`` without its user info, query and fragment (text, not parsed: it may be invalid)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    netloc, slash, path = rest.partition("/")
    return f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{path}"


def expand_home(path: str | None) -> str | None:
    """``~/x`` → ``$HOME/x``: no shell expands ``--state-dir=~/x`` or ``file:~/x``, nor a
    LOGPIPE_* value from systemd's ``Environment=`` or docker's ``env``."""
    return os.path.expanduser(path) if path else path


def check_sink_specs(specs: list[str], file_dir: str | None) -> None:
    """Refuse a sink named twice: it would get every record twice (two writers on one file).

    Vector likewise refuses duplicate component ids; ``--to file:A --to file:B`` is fine.
    """
    seen: set[tuple[str, str]] = set()
    for spec in specs:
        name, _, arg = spec.partition(":")
        where = arg or file_dir or ""
        if name == "file" and not where:
            continue  # sinks.build says what is missing
        key = (name, os.path.abspath(os.path.expanduser(where)) if name == "file" else arg)
        if key in seen:
            raise UsageError(f"sink {spec!r} named twice: every record would be delivered twice")
        seen.add(key)


def check_unused_sink_options(specs: list[str], collect: bool) -> None:
    """Refuse a sink option given on the command line for a sink that is not used: it would be
    silently ignored (``logpipe sink console --dir logs``, ``collect --to console --max-size
    10M``, ``--to file:A --dir B``). ``LOGPIPE_*`` variables stay defaults and are not checked."""
    ctx = click.get_current_context()
    names = {spec.partition(":")[0] for spec in specs}
    bare_file = "file" in specs
    for param in ctx.command.params:
        pname = param.name or ""
        sink_name = pname.partition("_")[0]
        if sink_name not in ("console", "file", "splunk") \
                or ctx.get_parameter_source(pname) is not click.core.ParameterSource.COMMANDLINE:
            continue
        flag = param.opts[0]
        if sink_name not in names:
            fix = (f"add --to {'file:DIR' if sink_name == 'file' else sink_name}" if collect
                   else f"e.g. logpipe sink {' '.join([*specs, sink_name])} …")
            raise UsageError(f"{flag} is a {sink_name} sink option, but no {sink_name} sink is "
                             f"named ({fix})")
        if pname == "file_dir" and not bare_file:
            raise UsageError(f"{flag} is not used: each --to file:DIR names its own directory")
