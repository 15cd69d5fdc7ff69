"""The file sink's background maintenance: one thread compresses a log's rotated files (zstd,
through :mod:`logpipe.rotate`) and applies ``--retain``, off the write path."""

from __future__ import annotations

import os
import queue
import threading
import time

from logpipe import diagnostics, rotate


class Compressor:
    """One background thread: compress rotated files of a log and apply retention."""

    def __init__(self, compress: bool, retain: int | None, state_dir: str) -> None:
        self.compress = compress
        self.retain = retain
        self.state_dir = state_dir
        self._q: queue.Queue[str | None] = queue.Queue()
        self._queued: set[str] = set()
        self._mu = threading.Lock()
        self.compressed = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.deleted = 0
        self._thread = threading.Thread(target=self._run, name="logpipe-file-zstd", daemon=True)
        self._thread.start()

    def submit(self, log_path: str) -> None:
        with self._mu:
            if log_path in self._queued:
                return
            self._queued.add(log_path)
        self._q.put(log_path)

    def finish(self) -> None:
        """Process everything queued, then stop (blocking)."""
        self._q.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            log_path = self._q.get()
            if log_path is None:
                return
            with self._mu:
                self._queued.discard(log_path)
            try:
                self._maintain(log_path)
            except Exception as exc:  # noqa: BLE001 - never kill the thread; files stay for later
                diagnostics.warning(f"file sink: cannot compress/retain {log_path}: {exc}",
                                    key=f"file-zstd:{log_path}")

    def _maintain(self, log_path: str) -> None:
        directory = os.path.dirname(log_path)
        with rotate.dir_lock(directory, None):
            rotate.clean_stale_temps(log_path)
            now = time.time()
            if self.compress:
                doomed = {f.path for f in rotate.retention_victims(log_path, self.retain, None, now)}
                for f in rotate.rotated_files(log_path):
                    if f.compressed or f.path in doomed:
                        continue
                    res = rotate.compress_rotated(f.path, long_matching=False)
                    if res is not None:
                        self.compressed += 1
                        self.bytes_in += res.bytes_in
                        self.bytes_out += res.bytes_out
            deleted, _ = rotate.apply_retention(log_path, self.retain, None, now, self.state_dir)
            self.deleted += len(deleted)
