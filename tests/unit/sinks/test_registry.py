"""sinks/__init__.py, the registry: a sink spec (``console``, ``file:DIR``, ``splunk``,
``ndjson``) → a configured sink; unknown names and stray ``:`` arguments are usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from logpipe import sinks
from logpipe.errors import UsageError


def test_each_registered_name_builds_its_sink_class(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``ndjson``, ``console`` and ``file:DIR`` build their classes, named as registered; the
    file sink's ``file:~/x`` directory has ``~`` expanded (the shell did not)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    opts = sinks.SinkOptions(state_dir=str(tmp_path / "state"))
    for spec in ("ndjson", "console", "file:~/logs"):
        sink = sinks.build(spec, opts)
        name = spec.partition(":")[0]
        assert sink.name == name
        module, _, cls = sinks.REGISTRY[name].partition(":")
        assert type(sink).__name__ == cls and type(sink).__module__ == module
    file_sink = sinks.build("file:~/logs", opts)
    assert file_sink.directory == str(tmp_path / "logs")  # type: ignore[attr-defined]
    assert set(sinks.REGISTRY) == {"ndjson", "console", "file", "splunk"}


def test_unknown_sink_and_stray_argument_are_usage_errors() -> None:
    """An unknown name lists the choices; ``:ARG`` on a sink other than ``file`` is refused."""
    opts = sinks.SinkOptions(state_dir="/nonexistent")
    with pytest.raises(UsageError, match=r"unknown sink 'nope' \(choose from console, file, "
                                         r"ndjson, splunk\)"):
        sinks.build("nope", opts)
    with pytest.raises(UsageError, match="sink 'console' takes no ':' argument"):
        sinks.build("console:x", opts)


def test_state_dir_defaults_to_the_paths_module(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``SinkOptions()`` takes its state dir from ``paths.default_state_dir`` when made."""
    monkeypatch.setenv("LOGPIPE_STATE_DIR", str(tmp_path / "s"))
    assert sinks.SinkOptions().state_dir == str(tmp_path / "s")
