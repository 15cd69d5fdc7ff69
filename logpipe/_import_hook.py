"""Run a callback right after a module is first imported (a post-import hook), or now if it was.

Lets ``import logpipe`` stay light — it never imports structlog or ``logging.config`` itself —
and still bridge them whenever the application imports them, before or after logpipe: a finder
at the front of ``sys.meta_path`` recognises the module's name, lets the ordinary finders find
it, and wraps the loader so the callback runs once the module has executed. A callback that
raises is reported on stderr in one line and never breaks the application's import.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importlib.abc would pull in importlib.resources, zipfile, …: 10+ ms
    from importlib.machinery import ModuleSpec

_lock = threading.Lock()
_pending: dict[str, list[Callable[[ModuleType], None]]] = {}


def when_imported(name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` now if ``name`` is imported, else right after it first is."""
    module = sys.modules.get(name)
    if module is not None and not _initializing(module):
        _run(callback, module)
        return
    with _lock:
        _pending.setdefault(name, []).append(callback)
        if not any(isinstance(f, _Finder) for f in sys.meta_path):
            sys.meta_path.insert(0, _Finder())


def _initializing(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _run(callback: Callable[[ModuleType], None], module: ModuleType) -> None:
    try:
        callback(module)
    except Exception as exc:  # noqa: BLE001 - the application's import must go on
        with contextlib.suppress(Exception):  # no stderr: nothing more to do
            sys.stderr.write(f"logpipe: could not bridge {module.__name__}: {exc!r}\n")


class _Finder:
    """Finds nothing itself: for a watched name it asks the other finders and wraps the loader.
    (A plain class: the import system only calls ``find_spec``.)"""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, fullname)  # type: ignore[assignment]  # duck-typed
                return spec
        return None


class _Loader:
    """The module's own loader, plus the callbacks once it has executed."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        with _lock:
            callbacks = _pending.pop(self._name, [])
            if not _pending:
                sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
        module.__loader__ = self._loader  # what importlib.resources & co. expect to see
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        for callback in callbacks:
            _run(callback, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
