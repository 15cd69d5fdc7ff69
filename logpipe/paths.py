"""Where logpipe keeps its state: the state dir and the fixed places inside it."""

from __future__ import annotations

import os

#: ``<state dir>/pipes``: the pipe-ack rendezvous of ``collect | sink`` (see logpipe.pipeack)
PIPES = "pipes"


def default_state_dir() -> str:
    """``$LOGPIPE_STATE_DIR``, else ``$XDG_STATE_HOME/logpipe``, else ``~/.local/state/logpipe``."""
    env = os.environ.get("LOGPIPE_STATE_DIR")
    if env:
        return env
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        return os.path.join(xdg, "logpipe")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "logpipe")


def pipes_dir(state_dir: str) -> str:
    """The directory where the two ends of a ``collect | sink`` pipe find each other."""
    return os.path.join(state_dir, PIPES)
