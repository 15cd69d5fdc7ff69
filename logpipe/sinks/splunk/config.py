"""The Splunk sink's settings: defaults (with their reasons), the token, and SplunkConfig."""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from logpipe.errors import UsageError

if TYPE_CHECKING:
    from logpipe.sinks import SinkOptions

ENV_TOKEN = "LOGPIPE_SPLUNK_TOKEN"  # noqa: S105 - the variable's name, not a token
ENV_ACK_TIMEOUT = "LOGPIPE_SPLUNK_ACK_TIMEOUT"
ENV_ACK_INTERVAL = "LOGPIPE_SPLUNK_ACK_INTERVAL"
ENV_DRAIN_TIMEOUT = "LOGPIPE_SPLUNK_DRAIN_TIMEOUT"
ENV_RETRY_MAX = "LOGPIPE_SPLUNK_RETRY_MAX"
ENV_TIMEOUT = "LOGPIPE_SPLUNK_TIMEOUT"

#: ≤ 1,000,000 uncompressed bytes per request or 1 s, as Vector's ``splunk_hec_logs``
#: (research/hec.md §7): safe under Splunk Cloud's commonly stated 1 MB and 6.x's 1,000,000 B
#: max_content_length; larger requests are still split on 413.
DEFAULT_BATCH_BYTES = 1_000_000
DEFAULT_BATCH_TIMEOUT = 1.0
#: requests in flight (Fluent Bit: 2 workers; OTel: 10 consumers)
DEFAULT_CONCURRENCY = 4
DEFAULT_SPOOL_MAX = 1 << 30
#: Splunk's IDXAck guidance: resend when not acknowledged within ~5 minutes (Kafka Connect
#: had to raise its 120 s to 300 s: splunk/kafka-connect-splunk#122).
DEFAULT_ACK_TIMEOUT = 300.0
#: Splunk suggests polling about every 10 s; one small POST per second per endpoint costs
#: nothing and lets an ``--ack`` run finish within a second of its last ack instead of ten.
DEFAULT_ACK_INTERVAL = 1.0
#: after SIGTERM/SIGINT, deliver for at most this long (everything read is already durable in
#: the spool; what is left is sent by the next run). A few round trips and retries of a busy
#: HEC; under PM2's 1.6 s kill_timeout no useful delivery fits, so PM2 users raise kill_timeout
#: (README "Stopping").
DEFAULT_DRAIN_TIMEOUT = 5.0
#: backoff cap (Vector: 30 s) and start
DEFAULT_RETRY_MAX = 30.0
RETRY_BASE = 0.2
DEFAULT_REQUEST_TIMEOUT = 30.0


# --- the token ----------------------------------------------------------------------------------
class Secret:
    """A string that never shows itself: ``repr``/``str``/format give ``[REDACTED]``
    (Vector's ``SensitiveString``, lib/vector-common/src/sensitive_string.rs)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value, for the one place that needs it (the Authorization header)."""
        return self._value

    def scrub(self, text: str) -> str:
        """``text`` with any occurrence of the secret replaced by ``[REDACTED]``."""
        return text.replace(self._value, "[REDACTED]") if self._value else text

    def __repr__(self) -> str:
        return "[REDACTED]"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "[REDACTED]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(Secret)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def read_token(token_file: str | None, environ: dict[str, str] | None = None) -> Secret:
    """The HEC token from ``--token-file`` (whitespace stripped) or ``LOGPIPE_SPLUNK_TOKEN``.

    Never from the command line (it would show in ``ps`` and shell history). Errors name where
    the token came from, never the token.
    """
    env = os.environ if environ is None else environ
    if token_file:
        try:
            with open(token_file, "rb") as f:
                raw = f.read(64 << 10)
        except OSError as exc:
            raise UsageError(f"splunk: cannot read --token-file {token_file}: {exc.strerror}") from None
        value = raw.decode("utf-8", "replace").strip()
        where = f"--token-file {token_file}"
    else:
        value = env.get(ENV_TOKEN, "").strip()
        where = ENV_TOKEN
        if not value:
            raise UsageError(f"splunk: no HEC token: set {ENV_TOKEN} or pass --token-file FILE "
                             "(the token is never taken from the command line)")
    if not value:
        raise UsageError(f"splunk: {where} is empty")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise UsageError(f"splunk: the token in {where} has characters an HTTP header cannot carry")
    return Secret(value)


def env_float(name: str, default: float, minimum: float = 0.001) -> float:
    """A number of seconds from the environment variable ``name`` (UsageError when bad)."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number of seconds") from None
    if not value >= minimum:
        raise UsageError(f"{name} must be at least {minimum}")
    return value


# --- the settings -------------------------------------------------------------------------------
@dataclass
class SplunkConfig:
    """Everything the Splunk sink is told, built by the CLI (:meth:`from_options`) or a test."""

    urls: list[str]
    spool_dir: str
    quarantine_path: str
    spool_max: int = DEFAULT_SPOOL_MAX
    index: str | None = None
    host: str | None = None
    source: str | None = None
    sourcetype: str | None = "_json"
    ack: bool = False
    ca_file: str | None = None
    insecure: bool = False
    batch_bytes: int = DEFAULT_BATCH_BYTES
    batch_timeout: float = DEFAULT_BATCH_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    #: "gzip" (bodies from 1500 bytes) or "none"
    compression: str = "gzip"
    ack_timeout: float = DEFAULT_ACK_TIMEOUT
    ack_interval: float = DEFAULT_ACK_INTERVAL
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    retry_max: float = DEFAULT_RETRY_MAX
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    #: the one-line progress display: None = when stderr is a TTY
    progress: bool | None = None

    @classmethod
    def from_options(cls, options: SinkOptions) -> SplunkConfig:
        """CLI options (flags, else ``LOGPIPE_*``) → config; the tuning knobs come from the env."""
        if not options.splunk_urls:
            raise UsageError("splunk: no HEC URL: pass --url or set LOGPIPE_SPLUNK_URL "
                             "(comma-separated for several indexers)")
        state = options.state_dir
        return cls(
            urls=list(options.splunk_urls),
            spool_dir=options.splunk_spool_dir or os.path.join(state, "spool", "splunk"),
            quarantine_path=os.path.join(state, "quarantine", "splunk.ndjson"),
            spool_max=options.splunk_spool_max or DEFAULT_SPOOL_MAX,
            index=options.splunk_index,
            host=options.splunk_host,
            source=options.splunk_source,
            sourcetype=options.splunk_sourcetype,
            ack=options.splunk_ack,
            ca_file=options.splunk_ca_file,
            insecure=options.splunk_insecure,
            batch_bytes=options.splunk_batch_bytes or DEFAULT_BATCH_BYTES,
            batch_timeout=options.splunk_batch_timeout or DEFAULT_BATCH_TIMEOUT,
            concurrency=options.splunk_concurrency or DEFAULT_CONCURRENCY,
            compression=options.splunk_compression,
            ack_timeout=env_float(ENV_ACK_TIMEOUT, DEFAULT_ACK_TIMEOUT),
            ack_interval=env_float(ENV_ACK_INTERVAL, DEFAULT_ACK_INTERVAL),
            drain_timeout=(options.splunk_drain_timeout if options.splunk_drain_timeout is not None
                           else env_float(ENV_DRAIN_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, minimum=0.0)),
            retry_max=env_float(ENV_RETRY_MAX, DEFAULT_RETRY_MAX),
            request_timeout=env_float(ENV_TIMEOUT, DEFAULT_REQUEST_TIMEOUT),
        )
