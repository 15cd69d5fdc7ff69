"""logpipe._import_hook: a callback runs once a module has been imported — before or after the
hook was set — and a failing callback never breaks the application's import."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

from logpipe import _import_hook


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> str:
    (tmp_path / f"{name}.py").write_text("FIRST = 1\nLAST = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def _watched(name: str) -> bool:
    """The hook still waits for ``name`` (a finder is in ``sys.meta_path`` for it)."""
    finders = [f for f in sys.meta_path if isinstance(f, _import_hook._Finder)]
    return name in _import_hook._pending and bool(finders)


def test_callback_runs_after_the_first_import_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set before the import: the callback gets the fully executed module (its last line ran),
    exactly once; the module's loader is its own again and the hook no longer waits for it."""
    name = _module(tmp_path, monkeypatch, "lp_hook_a")
    seen: list[ModuleType] = []
    _import_hook.when_imported(name, lambda m: seen.append(m))
    assert seen == [] and _watched(name)
    module = importlib.import_module(name)
    importlib.import_module(name)
    assert seen == [module] and module.LAST == 2
    assert not isinstance(module.__spec__.loader, _import_hook._Loader)  # type: ignore[union-attr]
    assert module.__loader__ is module.__spec__.loader  # type: ignore[union-attr]
    assert not _watched(name)


def test_callback_runs_now_when_already_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set after the import: the callback runs at once, with the module; nothing is left waiting."""
    name = _module(tmp_path, monkeypatch, "lp_hook_b")
    module = importlib.import_module(name)
    seen: list[ModuleType] = []
    _import_hook.when_imported(name, seen.append)
    assert seen == [module] and not _watched(name)


def test_failing_callback_is_one_line_and_the_import_succeeds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A callback that raises: the application's import still returns the module; stderr gets
    one line naming the module and the error, no traceback."""
    name = _module(tmp_path, monkeypatch, "lp_hook_c")

    def broken(module: ModuleType) -> None:
        raise RuntimeError("no bridge today")

    _import_hook.when_imported(name, broken)
    module = importlib.import_module(name)
    assert module.FIRST == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"logpipe: could not bridge {name}: RuntimeError('no bridge today')"]
