"""_filelocks.py: per-identity OFD byte-range locks — held against another process, gone with
it on ``kill -9``."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from logpipe._filelocks import FileLocks
from tests.helpers import wait_for

_HOLDER = """
import sys, time
from logpipe._filelocks import FileLocks
locks = FileLocks(sys.argv[1])
assert locks.acquire((7, 8))
print("held", flush=True)
time.sleep(600)  # the scenario: a collector that holds the file until it is killed
"""


def test_lock_held_by_another_process_until_it_is_killed(tmp_path: Path) -> None:
    """A file identity held by another process (a real one) is refused here, another identity
    is free; after that process is SIGKILLed the identity can be taken (OFD locks die with
    their open file description)."""
    lock = str(tmp_path / "files.lock")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, lock], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        mine = FileLocks(lock)
        assert not mine.acquire((7, 8))
        assert mine.acquire((7, 9))
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        wait_for(lambda: mine.acquire((7, 8)), timeout=5, message="the dead holder's lock to go")
        mine.close()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_unusable_lock_file_refuses_nothing(tmp_path: Path) -> None:
    """A lock file that cannot be opened (its directory is missing) makes every file free
    rather than refusing to read: the per-command-line lock still guards the rest."""
    locks = FileLocks(str(tmp_path / "missing" / "files.lock"))
    assert locks.acquire((1, 2))
    locks.release((1, 2))
    locks.close()
