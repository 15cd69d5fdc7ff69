"""``logpipe status``: is logpipe keeping up? Per tailed file, per process and sink, from the
state dir alone — the files running processes publish (:mod:`logpipe._statusfile`) and the
tail checkpoints compared with the files on disk — and an exit status for cron and monitors.

A person is needed (exit 1) when: data is behind and no process is running to deliver it (no
running collector's checkpoint holds a file with undelivered bytes — checkpoints merged by file
identity, as the collector merges them; a process died, or
stopped, with records left in its spool); the oldest undelivered line or spooled record is older
than ``--max-lag``; a sink's last error is more recent than its last success.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from logpipe import record
from logpipe._statusfile import status_dir
from logpipe.checkpoint import FileState, checkpoint_files, head_matches, merge, read_entries, read_head

#: lines counted at most per file (beyond, "records behind" is a lower bound)
COUNT_CAP = 64 << 20


@dataclass
class Report:
    """Everything ``logpipe status`` shows."""

    files: list[dict[str, Any]] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {"ok": not self.problems, "problems": self.problems, "files": self.files,
                "processes": self.processes}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", "rb") as fh:  # zombie: dead
        return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    return True


def _holder(lock_path: str) -> int | None:
    """The pid of the running collector that holds the checkpoint lock ``lock_path`` (0 when it
    wrote none); ``None`` when no collector holds it."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its collector runs (it wrote its pid there)
        with contextlib.suppress(OSError, ValueError):
            return int(os.pread(fd, 32, 0).decode().strip() or 0)
        return 0
    finally:
        os.close(fd)
    return None


def _behind(path: str, offset: int, size: int, now: float) -> tuple[int, float | None]:
    """(records behind, age in seconds of the first undelivered line's time, if it has one)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(min(size - offset, COUNT_CAP))
    except OSError:
        return 0, None
    first = data.split(b"\n", 1)[0]
    t = record.to_epoch(record.parse_line(first).get(record.TIME)) if first else None
    return data.count(b"\n"), (round(now - t, 3) if t is not None else None)


def _checkpoints(state_dir: str) -> list[tuple[list[FileState], int | None]]:
    """Each tail checkpoint file's entries, with its collector's pid while that one runs."""
    out: list[tuple[list[FileState], int | None]] = []
    for cp in checkpoint_files(state_dir):
        try:
            entries = read_entries(cp)
        except (OSError, ValueError):
            continue
        out.append((entries, _holder(cp[: -len(".json")] + ".lock")))
    return out


def _by_file(entries: list[FileState]) -> dict[str, tuple[int, list[FileState]]]:
    """Path → (its size, the live entries that are the file now at that path: same (dev, inode) and a
    fingerprint its first bytes still match — the tailer's rule (its fingerprint grows with a
    short file, so one file can have entries of several lengths), as
    :func:`logpipe.checkpoint.progress` applies it for ``logpipe rotate``."""
    groups: dict[str, list[FileState]] = {}
    for e in entries:
        if not e.retired and e.path:
            groups.setdefault(e.path, []).append(e)
    out: dict[str, tuple[int, list[FileState]]] = {}
    for path, group in groups.items():
        try:
            st = os.stat(path)
        except OSError:
            continue  # rotated away and gone: nothing more to read there
        head = read_head(path, st, max(e.fp_len for e in group)) or b""
        mine = [e for e in group if (e.dev, e.ino) == (st.st_dev, st.st_ino)
                and head_matches(head, e.fp, e.fp_len)]
        if mine:  # else: the path is a newer generation, with its own entry
            out[path] = (st.st_size, mine)
    return out


def tailed_files(state_dir: str, now: float) -> list[dict[str, Any]]:
    """Every file a collector tails, once, as the collectors see it: the checkpoint files merged
    (:func:`logpipe.checkpoint.merge`: per identity, the highest offset any command line
    committed), then per file the highest offset of its entries — so a stopped command line's
    stale offset is not shown beside the live one. The file has a collector running when a
    running collector's checkpoint holds it (that collector's pid is shown)."""
    entries: list[FileState] = []
    live: dict[tuple[int, int, str, int], int] = {}  # identity -> pid of a running holder
    for found, pid in _checkpoints(state_dir):
        entries += found
        if pid is not None:
            for e in found:
                live.setdefault((e.dev, e.ino, e.fp, e.fp_len), pid)
    out: list[dict[str, Any]] = []
    for path, (size, group) in sorted(_by_file(merge(entries)).items()):
        offset = max(e.offset for e in group)
        pids = [live[k] for e in group if (k := (e.dev, e.ino, e.fp, e.fp_len)) in live]
        records, age = _behind(path, offset, size, now) if size > offset else (0, None)
        out.append({"path": path, "service": _service(path), "collector_running": bool(pids),
                    "collector_pid": next((p for p in pids if p), None),
                    "bytes_behind": max(0, size - offset), "records_behind": records,
                    "oldest_undelivered_age": age, "last_read": max(e.seen for e in group)})
    return out


def _service(path: str) -> str:
    from logpipe import identity

    return identity.from_filename(path).service


def processes(state_dir: str) -> list[dict[str, Any]]:
    """What each collect/sink process published, with whether it is still alive."""
    out: list[dict[str, Any]] = []
    for p in sorted(glob.glob(os.path.join(status_dir(state_dir), "*.json"))):
        try:
            with open(p, "rb") as fh:
                doc = orjson.loads(fh.read())
        except (OSError, orjson.JSONDecodeError):
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
            continue
        doc["alive"] = not doc.get("stopped") and _alive(doc["pid"])
        out.append(doc)
    return out


def gather(state_dir: str, max_lag: float, now: float | None = None) -> Report:
    """The report, with its problems."""
    now = time.time() if now is None else now
    rep = Report(tailed_files(state_dir, now), processes(state_dir))
    for f in rep.files:
        if f["bytes_behind"] and not f["collector_running"]:
            rep.problems.append(f"{f['path']}: {f['bytes_behind']} bytes behind and no collector "
                                f"running")
        age = f["oldest_undelivered_age"]
        if age is not None and f["bytes_behind"] and age > max_lag:
            rep.problems.append(f"{f['path']}: oldest undelivered line is {age:.0f}s old")
    for proc in rep.processes:
        for sink in proc.get("sinks", []):
            name = f"{proc['command']} (pid {proc['pid']}) {sink.get('name')}"
            if (sink.get("spool_items") or sink.get("spool_records")) and not proc["alive"]:
                rep.problems.append(f"{name}: {sink.get('spool_items')} batches spooled and the "
                                    f"process is not running")
            age = sink.get("spool_oldest_age")
            if proc["alive"] and age is not None and age > max_lag:
                rep.problems.append(f"{name}: spool {age:.0f}s behind")
            err = sink.get("last_error")
            err_t = err.get("time") if isinstance(err, dict) else None
            ok_t = sink.get("last_success")
            if proc["alive"] and isinstance(err_t, int | float) and (ok_t is None or err_t > ok_t):
                rep.problems.append(f"{name}: last error {err.get('text')!r}")
    return rep


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


def _collector(f: dict[str, Any]) -> str:
    if not f["collector_running"]:
        return "NOT RUNNING"
    return f"running (pid {f['collector_pid']})" if f.get("collector_pid") else "running"


def render(rep: Report, now: float | None = None) -> str:
    """A short table for people."""
    now = time.time() if now is None else now
    lines = ["FILE                                     SERVICE      BEHIND(B) RECORDS  OLDEST  "
             "COLLECTOR"]
    for f in rep.files:
        lines.append(f"{f['path'][-40:]:<40} {f['service'][:12]:<12} {f['bytes_behind']:>9} "
                     f"{f['records_behind']:>7} {_ago(f['oldest_undelivered_age']):>7}  "
                     f"{_collector(f)}")
    lines.append("")
    lines.append("PROCESS              PID    STATE    SINK      DELIVERED RETRIED QUARANT. "
                 "SPOOLED  SPOOL-AGE LAST-ERROR")
    for p in rep.processes:
        state = "alive" if p["alive"] else ("stopped" if p.get("stopped") else "DEAD")
        for s in p.get("sinks") or [{}]:
            err = s.get("last_error") or {}
            lines.append(f"{p['command'][:20]:<20} {p['pid']:<6} {state:<8} "
                         f"{str(s.get('name', '-'))[:9]:<9} {s.get('delivered', 0):>9} "
                         f"{s.get('resent', s.get('retried', 0)):>7} {s.get('quarantined', 0):>8} "
                         f"{s.get('spool_records', s.get('spooled', 0)):>8} "
                         f"{_ago(s.get('spool_oldest_age')):>9} {err.get('text', '-')}")
    lines.append("")
    lines.extend(f"PROBLEM: {p}" for p in rep.problems) if rep.problems else lines.append("OK")
    return "\n".join(lines) + "\n"


def main(state_dir: str, as_json: bool, max_lag: float) -> int:
    """Print the status; 1 when a person is needed, else 0."""
    rep = gather(state_dir, max_lag)
    import sys

    if as_json:
        sys.stdout.buffer.write(orjson.dumps(rep.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(render(rep))
    return 1 if rep.problems else 0
