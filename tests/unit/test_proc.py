"""_proc.py: /proc scans on real processes — a tree's descendants, chosen env keys only,
argv, age, liveness of a pid and of a process group."""

from __future__ import annotations

import os
import subprocess
import sys

from logpipe import _proc

_TREE = """
import os, subprocess, sys
kid = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
print(kid.pid, flush=True)
sys.stdin.read()  # the scenario: the tree lives until the test closes our stdin
kid.stdin.close(); kid.wait()
"""


def test_scan_sees_a_real_tree_with_only_the_asked_env_keys() -> None:
    """A child (with LP_KEEP and LP_SECRET in its env) that started a grandchild: the scan
    finds both below this process, with argv, a non-negative age, LP_KEEP and nothing else of
    the environment; this process itself is left out unless asked."""
    env = dict(os.environ, LP_KEEP="yes", LP_SECRET="s3cr3t")
    child = subprocess.Popen([sys.executable, "-c", _TREE], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        table = _proc.ProcTable.scan(env_keys=("LP_KEEP",))
        below = {p.pid: p for p in table.descendants(os.getpid())}
        assert child.pid in below and grandchild in below
        assert below[grandchild].ppid == child.pid
        assert below[child.pid].env == {"LP_KEEP": "yes"}
        assert below[child.pid].argv[:2] == (os.fsencode(sys.executable), b"-c")
        assert table.age(child.pid) >= 0 and table.age(-1) == 0.0
        assert os.getpid() not in table.procs
        assert os.getpid() in _proc.ProcTable.scan(exclude_self=False).procs
        assert _proc.read_env(child.pid, ("LP_SECRET",)) == {"LP_SECRET": "s3cr3t"}
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    assert _proc.read_argv(child.pid) is None and _proc.read_env(child.pid, ("LP_KEEP",)) is None


def test_pid_and_group_liveness() -> None:
    """``pid_alive``: this process and its process group are alive; a reaped child's pid and
    its (own, new) group are not."""
    assert _proc.pid_alive(os.getpid()) and _proc.pid_alive(os.getpgrp(), group=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    gone.wait(timeout=30)
    assert not _proc.pid_alive(gone.pid)
    assert not _proc.pid_alive(gone.pid, group=True)
