"""Uploading a spool's finished files to the object store, off the recording path.

Why a thread of its own: the store may be slow or down for minutes, and recording must never wait for it
(DESIGN §6). The writer hands each file it finishes to ``Uploader.add``, which only queues it; this thread
uploads the queue oldest first, retrying the file at its head with exponential backoff and jitter (tenacity)
until the store takes it, so each stream's files reach the store in order. ``backlog`` is what waits (files,
bytes, and why uploads fail), for the status view; ``take_notices`` gives the recorder the ledger rows of a
change (uploads started failing; the backlog drained again), which it writes on the event loop like any other.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import pyarrow as pa
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_when_event_set,
    wait_exponential,
    wait_random,
)

from nova.core.spool import Spool

UPLOAD_STREAM = "upload"
"""The ledger's stream for the recorder's uploads (kinds ``error`` when they start failing, ``reconnect`` when
the backlog has drained): no table is fed by it, so no reader's validity depends on it."""


@dataclass(frozen=True)
class Backlog:
    files: int
    bytes: int
    failing: str | None  # why uploads fail now, or None
    since_ns: int | None  # when they started failing

    def text(self) -> str:
        waiting = f"{self.files} files ({self.bytes / 1e6:,.1f} MB) waiting in the spool"
        return f"{waiting}; uploads failing: {self.failing}" if self.failing else waiting


class Uploader:
    """Uploads a spool into its store on a daemon thread; ``finish`` waits (bounded) for the backlog to drain."""

    def __init__(self, spool: Spool, backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0,
                 streams: Collection[tuple[str, str]] | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        self.spool = spool
        self.streams = streams  # (market, symbol dashed) of the recorder: what it uploads from a shared spool
        self.base, self.cap = backoff_base_s, backoff_cap_s
        self.clock = clock
        self.uploaded = 0
        self._queue: dict[str, int] = {}  # path -> size, in arrival order
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._failing: str | None = None
        self._since: int | None = None
        self._notices: list[tuple[int, str, str]] = []
        self._thread = threading.Thread(target=self._run, name="nova-upload", daemon=True)

    # ---- the recorder's side ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Queue what an earlier run left in the spool, then start uploading."""
        for path, size in self.spool.pending(self.streams):
            self.add(path, size)
        self._thread.start()

    def add(self, path: str, size: int | None = None) -> None:
        """A finished file to upload (called by the writer; it only queues)."""
        with self._lock:
            if path not in self._queue:
                self._queue[path] = size if size is not None else _size(path)
            self._idle.clear()
        self._wake.set()

    def backlog(self) -> Backlog:
        with self._lock:
            return Backlog(len(self._queue), sum(self._queue.values()), self._failing, self._since)

    def take_notices(self) -> list[tuple[int, str, str]]:
        """(ts, kind, detail) of the ledger rows due since the last call."""
        with self._lock:
            out, self._notices = self._notices, []
        return out

    def finish(self, wait_s: float) -> Backlog:
        """Upload what is queued, waiting at most ``wait_s``, then stop; returns what is left (nothing, or the
        files the next start will upload)."""
        if self._thread.is_alive():
            self._wake.set()
            self._idle.wait(wait_s)
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=30)
        return self.backlog()

    # ---- the thread -------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                head = next(iter(self._queue), None)
                if head is None:
                    self._idle.set()
                    self._wake.clear()
            if head is None:
                self._wake.wait(5.0)
                continue
            try:
                self._upload(head)
            except RetryError:
                return  # stopping: the file stays in the spool for the next start
            with self._lock:
                self._queue.pop(head, None)
                self.uploaded += 1
                if not self._queue and self._failing is not None:
                    took = (self.clock() - (self._since or self.clock())) / 1e9
                    self._notices.append((self.clock(), "reconnect",
                                          f"uploads to {self.spool.store.text} work again; the spool's backlog "
                                          f"drained after {took:,.0f} s"))
                    self._failing, self._since = None, None

    def _upload(self, path: str) -> None:
        for attempt in Retrying(retry=retry_if_exception_type((OSError, pa.ArrowException)),
                                wait=wait_exponential(multiplier=self.base, max=self.cap) + wait_random(0, self.base),
                                stop=stop_when_event_set(self._stop), sleep=self._sleep,
                                before_sleep=self._failed, reraise=False):
            with attempt:
                try:
                    self.spool.upload(path)
                except FileNotFoundError:
                    return  # gone from the spool: nothing to upload (already done)

    def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once when the recorder stops."""
        self._stop.wait(seconds)

    def _failed(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = _reason(exc) if exc is not None else "unknown"
        with self._lock:
            if self._failing is None:
                self._since = self.clock()
                files, size = len(self._queue), sum(self._queue.values())
                self._notices.append((self._since, "error",
                                      f"uploads to {self.spool.store.text} failing ({reason}); recording goes on "
                                      f"into the spool {self.spool.path}, {files} files ({size / 1e6:,.1f} MB) "
                                      "waiting; retrying with backoff"))
            self._failing = reason


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
