"""The public surface of ``logpipe`` (httpx's tests/test_exported_members.py style) and what
``import logpipe`` may pull in."""

from __future__ import annotations

from types import ModuleType

import structlog

import logpipe
from logpipe import _version, bindings
from tests._logger_helpers import lines, run_py

PUBLIC = ["__version__", "bind", "configure", "context", "logger", "unbind"]


def test_all_is_exactly_the_public_api() -> None:
    """``logpipe.__all__`` lists exactly the documented names, and each one is there."""
    assert sorted(logpipe.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(logpipe, name) is not None, name
        assert name in dir(logpipe)


def test_every_public_member_is_exported() -> None:
    """Like httpx's test_exported_members: once the lazy names are loaded, every public
    attribute of ``logpipe`` that is not a submodule is in ``__all__`` — nothing leaks (no
    ``Any``, no ``annotations``), nothing is missing."""
    for name in logpipe.__all__:
        getattr(logpipe, name)
    members = sorted(name for name, value in vars(logpipe).items()
                     if not name.startswith("_") and not isinstance(value, ModuleType))
    assert members == sorted(n for n in logpipe.__all__ if not n.startswith("_"))


def test_names_are_the_bindings_objects() -> None:
    """The exported names are the logger module's own objects (one logger per process), and the
    logger is a structlog bound logger."""
    for name in ("bind", "configure", "context", "logger", "unbind"):
        assert getattr(logpipe, name) is getattr(bindings, name)
    assert isinstance(logpipe.logger, structlog.BoundLoggerBase)
    assert logpipe.__version__ == _version.__version__ and isinstance(logpipe.__version__, str)


def test_public_submodules_load_on_first_use() -> None:
    """``logpipe.processors`` and ``logpipe.integrations`` are reachable as attributes of the
    package without importing them by name, and are listed by ``dir()`` (not in ``__all__``:
    they are modules, not members)."""
    proc = run_py(
        """
        import sys, logpipe
        print("logpipe.processors" in sys.modules, "logpipe.integrations" in sys.modules,
              {"processors", "integrations"} <= set(dir(logpipe)), file=sys.stderr)
        print(callable(logpipe.processors.write), len(logpipe.processors.CHAIN),
              logpipe.integrations.__name__, file=sys.stderr)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().splitlines() == ["False False True", "True 7 logpipe.integrations"]


def test_star_import_and_unknown_names() -> None:
    """``from logpipe import *`` gives exactly the public names; an unknown name is an
    AttributeError naming it."""
    ns: dict[str, object] = {}
    exec("from logpipe import *", ns)  # the statement under test
    assert sorted(k for k in ns if k != "__builtins__") == PUBLIC
    try:
        logpipe.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_pulls_in_no_cli_http_or_compression() -> None:
    """In a fresh interpreter ``import logpipe`` imports neither click, httpx, zstandard nor the
    logger, nor structlog (the structlog bridge only watches for it); using the logger then
    loads structlog but still none of click, httpx, zstandard, nor the collector side (cli,
    collector, pipeline, sinks), nor the integrations or the servers they wrap."""
    proc = run_py(
        """
        import logging, sys
        import logpipe
        heavy = ("click", "httpx", "zstandard")
        # importlib.abc would pull in importlib.resources & co. for the structlog hook's sake
        print(sorted(m for m in heavy + ("structlog", "logpipe.bindings", "importlib.abc")
                     if m in sys.modules), file=sys.stderr)
        print(len(logging.getLogger().handlers), file=sys.stderr)
        from logpipe import logger
        logger.info("hello")
        collector_side = ("logpipe.cli", "logpipe.collector", "logpipe.pipeline", "logpipe.sinks",
                          "logpipe.integrations", "uvicorn", "gunicorn", "celery")
        print(sorted(m for m in heavy + collector_side if m in sys.modules), file=sys.stderr)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().splitlines() == ["[]", "0", "[]"]
    assert lines(proc.stdout)[0]["message"] == "hello"


def test_cli_does_not_install_the_logging_bridge() -> None:
    """Importing the ``logpipe`` command's module leaves stdlib ``logging`` alone (its stdout is
    the record stream, so library records must not appear there) — also when structlog is
    imported in that process (the structlog bridge does not load the logger there)."""
    proc = run_py(
        """
        import logging, sys
        import logpipe.cli
        import structlog
        print(len(logging.getLogger().handlers), "logpipe.bindings" in sys.modules, file=sys.stderr)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().strip() == "0 False"
