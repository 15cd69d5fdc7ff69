"""paths.py: the state dir (SPEC §3: ``$LOGPIPE_STATE_DIR``, else ``$XDG_STATE_HOME/logpipe``,
else ``~/.local/state/logpipe``) and the pipes dir inside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from logpipe import paths


def test_state_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LOGPIPE_STATE_DIR wins; then XDG_STATE_HOME/logpipe; then ~/.local/state/logpipe; an
    empty variable counts as unset."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOGPIPE_STATE_DIR", "/srv/state")
    monkeypatch.setenv("XDG_STATE_HOME", "/xdg")
    assert paths.default_state_dir() == "/srv/state"
    monkeypatch.setenv("LOGPIPE_STATE_DIR", "")
    assert paths.default_state_dir() == "/xdg/logpipe"
    monkeypatch.delenv("LOGPIPE_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", "")
    assert paths.default_state_dir() == str(tmp_path / "home" / ".local" / "state" / "logpipe")


def test_pipes_dir_is_inside_the_state_dir() -> None:
    """The ``collect | sink`` rendezvous lives in ``<state dir>/pipes``."""
    assert paths.pipes_dir("/srv/state") == "/srv/state/pipes"
