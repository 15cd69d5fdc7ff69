"""File identity and shared checkpoints, end to end with real ``logpipe collect`` processes:
look-alike files are distinct files, a rotation while the collector is down loses nothing and
repeats nothing, a changed command line re-reads nothing, and ``logpipe rotate`` compresses
what a running collector has delivered (issues 9 and 15)."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from tests._collect_helpers import Collector, run_collect
from tests._rotate_helpers import run_rotate
from tests.helpers import wait_for

BANNER = b"".join(b'{"message": "starting api v1.2, loading config section %d"}\n' % i
                  for i in range(30))


def lines(tag: str, n: int, start: int = 0) -> bytes:
    """``n`` JSON lines ``{"tag": tag, "seq": i}``."""
    return b"".join(b'{"tag": "%s", "seq": %d}\n' % (tag.encode(), i) for i in range(start, start + n))


def per_file(recs: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """(file name, message or tag:seq) → how many times it arrived."""
    out: Counter[tuple[str, str]] = Counter()
    for r in recs:
        body = f"{r['tag']}:{r['seq']}" if "tag" in r else str(r["message"])
        out[(Path(r["source"]).name, body)] += 1
    return out


def expected(files: dict[str, bytes]) -> Counter[tuple[str, str]]:
    """What every line of every file, once, looks like in :func:`per_file`'s terms."""
    out: Counter[tuple[str, str]] = Counter()
    for name, data in files.items():
        for line in data.splitlines():
            r = orjson.loads(line)
            out[(name, f"{r['tag']}:{r['seq']}" if "tag" in r else r["message"])] += 1
    return out


def checkpointed_inodes() -> set[int]:
    """The inodes the state dir's checkpoint files know."""
    out: set[int] = set()
    for p in (Path(os.environ["LOGPIPE_STATE_DIR"]) / "tail").glob("*.json"):
        try:
            out |= {e["ino"] for e in orjson.loads(p.read_bytes())["files"]}
        except (OSError, ValueError):
            continue  # replaced while read: the next poll sees the new one
    return out


def lookalikes() -> dict[str, bytes]:
    """Three identical crash logs (one per PM2 instance), files that are prefixes of each
    other, and a banner-only file."""
    crash = BANNER + lines("crash", 20)
    return {
        "api-error-0.log": crash, "api-error-1.log": crash, "api-error-2.log": crash,
        "p-short.log": BANNER + lines("p", 10), "p-long.log": BANNER + lines("p", 40),
        "p-banner.log": BANNER,
    }


def test_lookalike_files_every_line_once(tmp_path: Path) -> None:
    """Identical files and files that are prefixes of each other are distinct files: with
    ``--once`` and live (files appearing while the collector runs), every line of every file
    arrives exactly once; nothing is held back."""
    files = lookalikes()
    once_dir = tmp_path / "once"
    once_dir.mkdir()
    for name, data in files.items():
        (once_dir / name).write_bytes(data)
    rc, recs, err = run_collect(["--once", str(once_dir / "*.log")])
    assert rc == 0, err
    assert per_file(recs) == expected(files)
    assert b"holding it back" not in err

    live = tmp_path / "live"
    live.mkdir()
    c = Collector([str(live / "*.log")])
    try:
        for name, data in files.items():  # one after another, as a crash loop writes them
            (live / name).write_bytes(data)
        want = sum(expected(files).values())
        wait_for(lambda: len(c.snapshot()) >= want, 30, message=f"{want} records")
        # the prefix files grow apart later: still every line once
        with open(live / "p-short.log", "ab") as f:
            f.write(lines("p", 5, start=100))
        wait_for(lambda: len(c.snapshot()) >= want + 5, 30, message=f"{want + 5} records")
        assert c.terminate() == 0
    finally:
        c.kill()
    files["p-short.log"] += lines("p", 5, start=100)
    assert per_file(c.snapshot()) == expected(files)


def test_rotation_while_down_with_the_same_banner_every_line_once(tmp_path: Path) -> None:
    """The collector reads ``a.log``, stops; the app writes on, the file is renamed (by
    ``mv``, a name the glob does not match) and the restarted app writes a new ``a.log`` that
    starts with the same banner. On restart every line of both files arrives exactly once:
    the new file is not taken for the old one, the renamed one is found by identity."""
    log = tmp_path / "a.log"
    log.write_bytes(BANNER + lines("old", 50))
    rc, recs, err = run_collect(["--once", str(log)])
    assert rc == 0 and len(recs) == 80, err
    with open(log, "ab") as f:
        f.write(lines("old", 30, start=50))  # written while the collector was down
    log.rename(tmp_path / "a.log.1")
    log.write_bytes(BANNER + lines("new", 50))
    c = Collector([str(log)])
    try:
        wait_for(lambda: len(c.snapshot()) >= 110, 30, message="110 records")
        assert c.terminate() == 0
    finally:
        c.kill()
    got = per_file(c.snapshot())
    assert all(n == 1 for n in got.values()), [k for k, n in got.items() if n > 1]
    assert sorted(k[1] for k in got if k[0] == "a.log.1") == sorted(f"old:{i}" for i in range(50, 80))
    new = expected({"a.log": BANNER + lines("new", 50)})
    assert Counter({k: n for k, n in got.items() if k[0] == "a.log"}) == new
    assert "renamed while the collector was down" in c.stderr.decode()


def test_changed_command_line_rereads_nothing(tmp_path: Path) -> None:
    """Offsets belong to files, not to command lines: a running set-up restarted with one more
    glob, then without one, with ``--once`` runs between, delivers 0 lines twice — and the
    per-command-line checkpoint files of command lines no longer running are folded into one
    (the upgrade path: nothing re-read)."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.log").write_bytes(lines("x", 100))
    (b / "y.log").write_bytes(lines("y", 100))
    state = Path(os.environ["LOGPIPE_STATE_DIR"])
    all_recs: list[dict[str, Any]] = []

    def live(*patterns: str, want: int) -> None:
        c = Collector([str(p) for p in patterns])
        try:
            wait_for(lambda: len(c.snapshot()) >= want, 30, message=f"{want} records")
            assert c.terminate() == 0
        finally:
            c.kill()
        all_recs.extend(c.snapshot())

    live(a / "*.log", want=100)
    with open(a / "x.log", "ab") as f:
        f.write(lines("x", 10, start=100))
    live(a / "*.log", b / "*.log", want=110)  # a glob added: only x's new lines, and y
    with open(b / "y.log", "ab") as f:
        f.write(lines("y", 10, start=100))
    rc, recs, err = run_collect(["--once", str(b / "y.log")])  # a --once run between
    assert rc == 0, err
    all_recs.extend(recs)
    with open(a / "x.log", "ab") as f:
        f.write(lines("x", 10, start=110))
    live(a / "*.log", want=10)  # the glob removed again
    rc, recs, err = run_collect(["--once", str(a / "*.log"), str(b / "*.log")])
    assert rc == 0 and recs == [], (recs, err)
    counts = Counter((r["tag"], r["seq"]) for r in all_recs)
    print(f"\nchanged command lines: {len(all_recs)} records, "
          f"{sum(n - 1 for n in counts.values())} re-read")
    assert counts == Counter([("x", i) for i in range(120)] + [("y", i) for i in range(110)])
    # one checkpoint file left per command line still in use: the last one
    assert len(list((state / "tail").glob("*.json"))) == 1


def test_rotate_beside_running_collector_compresses_on_the_second_run(tmp_path: Path) -> None:
    """With a collector running (it keeps a drained rotated file open for a while), the
    README's recipe run back to back — rotate, the writer reopens, rotate again at once —
    compresses the rotated file on the second run instead of postponing it (the run waits a
    moment for the collector's checkpoint); ``--dry-run`` says it would compress a delivered
    file the collector holds, and why; every line is delivered once."""
    from logpipe import checkpoint

    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    glob = str(logs / "*.log")
    w = open(log, "ab", buffering=0)  # noqa: SIM115 - the "app": writes, reopens after the rotation
    w.write(lines("app", 200))
    c = Collector([glob])
    try:
        wait_for(lambda: len(c.snapshot()) >= 200, 30, message="200 records")
        first = run_rotate(glob, "--retain", "7")
        assert first.returncode == 0 and "rotated 1" in first.stdout, (first.stdout, first.stderr)
        w.write(lines("app", 20, start=200))  # into the renamed file: the app has not reopened
        w.close()
        w = open(log, "ab", buffering=0)  # noqa: SIM115 - reopened, as an app would
        w.write(lines("app", 20, start=220))
        second = run_rotate(glob, "--retain", "7", "--max-size", "1G")  # at once, as cron's line
        assert second.returncode == 0, second.stderr
        assert "compressed 1" in second.stdout and "postponed" not in second.stdout, second.stdout
        assert len([p for p in logs.iterdir() if p.name.endswith(".zst")]) == 1
        # the dry run on the next rotation, once the collector has delivered the renamed file
        third = run_rotate(glob, "--retain", "7")
        assert "rotated 1" in third.stdout, third.stdout
        w.write(lines("app", 10, start=240))
        w.close()
        rotated = max(p for p in logs.iterdir() if p.name.startswith("app.log.")
                      and not p.name.endswith(".zst"))
        wait_for(lambda: checkpoint.progress(os.environ["LOGPIPE_STATE_DIR"], rotated.stat(),
                                             str(rotated)) == "delivered", 30,
                 message="the rotated file delivered")
        dry = run_rotate(glob, "--retain", "7", "--max-size", "1G", "--dry-run")
        assert f"would compress {rotated} (pid {c.proc.pid} still reads it, but the collector " \
               "has delivered every line of it)" in dry.stdout, dry.stdout
        wait_for(lambda: len(c.snapshot()) >= 250, 30, message="250 records")
        assert c.terminate() == 0
    finally:
        w.close()
        c.kill()
    assert sorted(r["seq"] for r in c.snapshot()) == list(range(250))


def test_copytruncate_copy_is_held_back_then_read_from_where_delivery_ended(tmp_path: Path) -> None:
    """A copytruncate rotation while the collector runs: the copy (a rotated name, the same
    content) is held back with a diagnostic saying why (or, found after the truncate, taken
    for the copy it is), and read from the byte where the original's delivered lines end:
    every line once."""
    log = tmp_path / "app.log"
    log.write_bytes(BANNER + lines("app", 100))
    c = Collector([str(tmp_path / "app.log*")])
    try:
        wait_for(lambda: len(c.snapshot()) >= 130, 30, message="130 records")
        with open(log, "ab") as f:
            f.write(lines("app", 20, start=100))
        shutil.copyfile(log, tmp_path / "app.log.1")
        wait_for(lambda: len(c.snapshot()) >= 150, 30, message="150 records")
        os.truncate(log, 0)
        with open(log, "ab") as f:
            f.write(lines("app", 10, start=120))
        wait_for(lambda: len(c.snapshot()) >= 160, 30, message="160 records")
        copy_ino = (tmp_path / "app.log.1").stat().st_ino
        wait_for(lambda: copy_ino in checkpointed_inodes(), 30, message="the copy checkpointed")
        assert c.terminate() == 0
    finally:
        c.kill()
    seqs = Counter(r["seq"] for r in c.snapshot() if "seq" in r)
    assert seqs == Counter(range(130))
    err = c.stderr.decode()
    # seen before the truncate (held back) or after it (a copy): said either way, with where
    assert f"{tmp_path / 'app.log.1'}: holding it back" in err or (
        f"{tmp_path / 'app.log.1'}: a copy of {log}" in err)


def test_switching_to_pm2_rereads_nothing(tmp_path: Path) -> None:
    """Files first collected by path, then with ``--pm2`` (another command line over the same
    files): the ``--pm2`` run delivers only the lines written since, none twice."""
    logs = tmp_path / "pm2home" / "logs"
    logs.mkdir(parents=True)
    (logs / "api-out.log").write_bytes(lines("api", 50))
    (logs / "api-error.log").write_bytes(b"plain error line\n")
    rc, recs, err = run_collect(["--once", str(logs / "api-out.log"), str(logs / "api-error.log")])
    assert rc == 0 and len(recs) == 51, err
    with open(logs / "api-out.log", "ab") as f:
        f.write(lines("api", 5, start=50))
    rc, recs, err = run_collect(["--once", "--pm2", str(tmp_path / "pm2home")])
    assert rc == 0, err
    assert [r["seq"] for r in recs] == [50, 51, 52, 53, 54]
