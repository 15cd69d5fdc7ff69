"""_structlog.py: the structlog bridge's own rules, each in a fresh interpreter (the bridge is
process-wide) — never in the logpipe command, shared proxies bounded, a pickled proxy is
structlog's own. (Records through the bridge: tests/e2e/test_python_bridges.py.)"""

from __future__ import annotations

from tests._logger_helpers import lines, run_py


def test_the_logpipe_command_never_installs_the_bridge() -> None:
    """With ``logpipe.cli`` loaded (the collector's process), importing structlog loads no
    logger and leaves structlog unconfigured: the command's stdout is the record stream."""
    proc = run_py("""
        import sys
        import logpipe.cli, logpipe, structlog
        print("bindings" if "logpipe.bindings" in sys.modules else "no bindings")
        print("configured" if structlog.is_configured() else "unconfigured")
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [b"no", b"bindings", b"unconfigured"]


def test_get_logger_shares_one_proxy_per_arguments_up_to_a_bound() -> None:
    """``structlog.get_logger()`` returns one shared proxy per positional arguments (a new one
    with initial values); the shared set stops growing at PROXIES_MAX; every proxy still
    writes a logpipe record, and a pickled proxy comes back as structlog's own class."""
    proc = run_py("""
        import pickle, structlog, logpipe
        from logpipe import _structlog
        a, b = structlog.get_logger(), structlog.get_logger()
        named = structlog.get_logger("x")
        valued = structlog.get_logger(k=1)
        for n in range(_structlog.PROXIES_MAX + 50):
            structlog.get_logger(f"req-{n}")
        print(a is b, named is not a, valued is not structlog.get_logger(k=1),
              len(_structlog._proxies) == _structlog.PROXIES_MAX, flush=True)
        print(type(pickle.loads(pickle.dumps(a))).__module__, flush=True)
        structlog.get_logger(f"req-{_structlog.PROXIES_MAX + 10}").info("beyond", n=1)
        valued.info("valued")
        """)
    assert proc.returncode == 0, proc.stderr
    flags, module, *records = proc.stdout.splitlines()
    assert flags.split() == [b"True"] * 4
    assert module.startswith(b"structlog")
    beyond, valued = lines(b"\n".join(records))
    assert beyond["message"] == "beyond" and beyond["n"] == 1 and "service" in beyond
    assert valued["message"] == "valued" and valued["k"] == 1
