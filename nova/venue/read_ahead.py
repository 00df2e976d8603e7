"""The recording read ahead of the playhead on a thread, printed as it is read.

Why a thread: opening a file or decoding a row group takes tens of ms, which on the event loop would hold every
paced message behind it (pyarrow decodes without the GIL, so the loop keeps its timing meanwhile); and the
printing of each message (``recorded_text``) is done here too, so the loop only sends text when it is due.
Bounded: at most ``depth`` chunks wait, so memory does not follow the length of the range.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from nova.core.handoff import put_until_stopped
from nova.venue.recorded_text import Outgoing
from nova.venue.recording import Entry

Item = tuple[Entry, Outgoing | None]


class ReadAhead:
    """The merged entries, read ahead on a thread in chunks: opening a file or decoding a row group takes tens
    of ms, which on the event loop would hold every paced message behind it (pyarrow decodes without the GIL,
    so the loop keeps its timing meanwhile). Bounded: at most ``depth`` chunks wait."""

    WAIT: Any = object()  # ``next_now``: nothing read yet, await ``next``

    def __init__(self, entries: Iterator[Entry], render: Callable[[Entry], Outgoing | None], from_ns: int,
                 chunk: int = 256, depth: int = 64) -> None:
        """``render`` prints the entries at or after ``from_ns`` (those before only rebuild the books)."""
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._chunk: collections.deque[Item] = collections.deque()
        self._done = False
        self._thread = threading.Thread(target=self._fill, args=(entries, render, from_ns, chunk),
                                        name="nova-serve-reader", daemon=True)
        self._thread.start()

    def _fill(self, entries: Iterator[Entry], render: Callable[[Entry], Outgoing | None], from_ns: int,
              size: int) -> None:
        try:
            batch: list[Item] = []
            for entry in entries:
                batch.append((entry, render(entry) if entry.ts_recv >= from_ns else None))
                if len(batch) >= size:
                    if not self._put(batch):
                        return
                    batch = []
            if batch and not self._put(batch):
                return
            self._put(None)
        except BaseException as exc:  # the loop re-raises it where it reads
            self._put(exc)

    def _put(self, item: Any) -> bool:
        return put_until_stopped(self._queue, item, self._stop)

    def _take(self, item: Any) -> Item | None:
        if item is None:
            self._done = True
            return None
        if isinstance(item, BaseException):
            self._done = True
            raise item
        self._chunk.extend(item)
        return self._chunk.popleft()

    def next_now(self) -> Any:
        """The next (entry, its message) if it is already read (None at the end), else ``WAIT``."""
        if self._chunk:
            return self._chunk.popleft()
        if self._done:
            return None
        try:
            return self._take(self._queue.get_nowait())
        except queue.Empty:
            return self.WAIT

    async def next(self) -> Item | None:
        if self._chunk:
            return self._chunk.popleft()
        if self._done:
            return None
        return self._take(await asyncio.to_thread(self._get))

    def _get(self) -> Any:
        """The next chunk, waiting; None once closed, so that no executor thread is left waiting on a reader that
        has stopped (an interpreter's exit would wait for it)."""
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return None

    def close(self) -> None:
        self._stop.set()
