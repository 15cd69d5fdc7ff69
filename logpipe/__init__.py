"""logpipe: structured logging and loss-free log aggregation. Public API only."""

from logpipe._version import __version__

__all__ = ["__version__"]
