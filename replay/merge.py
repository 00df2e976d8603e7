"""Cutting the streams into time windows that the compiled loop merges and replays.

Why windows: the loop needs, for a stretch of time, every entry of every stream below some time ``limit`` in
plain arrays. Each stream is read in batches; ``limit`` is the smallest last-buffered key among the streams
still being read, so every entry below it is already buffered everywhere and nothing after it can sort
before it. A window is what lies below ``limit``; the rest stays buffered for the next one. A book message
is never split: its rows share one key, and a message cut by a batch boundary has a key at or above
``limit``.

Why per message: book rows become one entry per message (``msg_lo``/``msg_hi`` into the row arrays), ~50x
fewer entries than rows on the real feed, so the merge touches each book row only inside ``book_apply``.
Why slices: a stream's batches are cut where windows end, and the pieces are copied exactly once, when a
window is laid out for the loop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from nova.core.handoff import put_until_stopped
from replay.kernel import (
    N_SEGMENTS,
    SEG_BBO_PERP,
    SEG_BBO_SPOT,
    SEG_BOOK_PERP,
    SEG_EVENTS_PERP,
    SEG_EVENTS_SPOT,
    SEG_FUNDING,
)
from replay.reader import Batch

NO_LIMIT = np.iinfo(np.int64).max


class StreamBuffer:
    """The read-ahead of one stream: batches not yet handed to a window (kept as slices, never copied)."""

    def __init__(self, batches: Iterable[Batch], end: int) -> None:
        self._batches = iter(batches)
        self._end = end
        self.chunks: list[Batch] = []
        self.done = False  # nothing more will be read: exhausted, or already at or past the end of the range

    def last_key(self) -> int:
        return int(self.chunks[-1].entries["key"][-1])

    def fill(self) -> None:
        batch = next(self._batches, None)
        if batch is None:
            self.done = True
        elif len(batch):
            self.chunks.append(batch)
            if self.last_key() >= self._end:
                self.done = True

    def take(self, limit: int) -> list[Batch]:
        """Remove and return the buffered entries whose key is below ``limit``, as slices in stream order."""
        taken: list[Batch] = []
        while self.chunks:
            chunk = self.chunks[0]
            cut = int(np.searchsorted(chunk.entries["key"], limit, side="left"))
            if cut == len(chunk):
                taken.append(self.chunks.pop(0))
                continue
            if cut:
                taken.append(chunk.slice(0, cut))
                self.chunks[0] = chunk.slice(cut, len(chunk))
            break
        return taken


@dataclass
class Window:
    """One stretch of every stream as the compiled loop takes it (see ``replay.kernel.run_window``)."""

    keys: np.ndarray
    bounds: np.ndarray
    rows: tuple[np.ndarray, ...]  # spot sides, prices, amounts, then perp's (read-only; views when possible)
    msg_lo: np.ndarray
    msg_hi: np.ndarray
    msg_last_id: np.ndarray
    msg_snapshot: np.ndarray
    msg_applied: np.ndarray
    bbo_id: np.ndarray
    bbo_quote: np.ndarray
    funding_rate: np.ndarray
    actions: np.ndarray
    raw: list[pa.RecordBatch | None] = field(default_factory=list)  # per segment, when raw events are wanted
    cache: dict[Any, Any] = field(default_factory=dict)  # what consumers derive from the window, once

    def order(self) -> np.ndarray:
        """Merged order of the entries (indices into ``keys``), the order ``run_window`` processes them in:
        segments are back to back in priority order, so a stable sort by key breaks ties the same way."""
        if "order" not in self.cache:
            self.cache["order"] = np.argsort(self.keys, kind="stable")
        return self.cache["order"]

    def segment_of(self, g: int) -> tuple[int, int]:
        """(segment, position within it) of entry ``g``."""
        s = int(np.searchsorted(self.bounds, g, side="right")) - 1
        return s, g - int(self.bounds[s])


_EMPTY_I8 = np.zeros(0, dtype=np.int8)
_EMPTY_F = np.zeros(0)
_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_B = np.zeros(0, dtype=np.bool_)
_BOOK_ENTRY = ("key", "lo", "last_id", "snapshot", "applied")
_BOOK_ROW = ("side", "price", "amount")


def _cat(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
    return np.concatenate(parts) if parts else empty


def _frozen(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
    """One read-only array of the parts: the part itself when there is one (no copy: a window usually takes
    one slice of each book stream), so that the loop always sees the same (read-only) array type."""
    whole = parts[0] if len(parts) == 1 else _cat(parts, empty)
    if whole.flags.writeable:
        whole = whole.view()
        whole.flags.writeable = False
    return whole


def _book_messages(slices: list[Batch], out: dict[str, list[np.ndarray]], rows_out: dict[str, list[np.ndarray]]
                   ) -> int:
    """Append one market's messages to ``out`` (``lo`` counting from its first row) and their rows to
    ``rows_out``; returns the rows added.

    A slice that ``continues`` the message the previous slice ended in only adds rows to that message: its
    first entry is dropped (and the message counts as applied if either part was)."""
    rows = 0
    for k, part in enumerate(slices):
        e, r = part.entries, part.rows
        assert r is not None
        skip = 1 if part.continues and k > 0 else 0
        if skip and e["applied"][0] and not out["applied"][-1][-1]:
            out["applied"][-1] = out["applied"][-1].copy()
            out["applied"][-1][-1] = True
        for name in _BOOK_ENTRY:
            values = e[name][skip:]
            out[name].append(values + rows if name == "lo" else values)
        for name in _BOOK_ROW:
            rows_out[name].append(r[name])
        rows += part.row_count
    return rows


def build_window(parts: list[list[Batch]], raw: bool) -> Window:
    """Lay the parts of one window out the way ``run_window`` reads them (segments back to back). This is the
    one copy every entry and row goes through."""
    book: dict[str, list[np.ndarray]] = {name: [] for name in _BOOK_ENTRY}
    counts: list[int] = []
    hi: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    for s in range(SEG_BOOK_PERP + 1):
        first = len(book["lo"])
        market: dict[str, list[np.ndarray]] = {name: [] for name in _BOOK_ROW}
        added = _book_messages(parts[s], book, market)
        starts = _cat(book["lo"][first:], _EMPTY_I)
        hi.append(np.append(starts[1:], added) if starts.shape[0] else _EMPTY_I)
        counts.append(int(starts.shape[0]))
        rows += [_frozen(market["side"], _EMPTY_I8), _frozen(market["price"], _EMPTY_F),
                 _frozen(market["amount"], _EMPTY_F)]
    keys = [_cat(book["key"], _EMPTY_I)]
    for s in range(SEG_BOOK_PERP + 1, N_SEGMENTS):
        keys.append(_cat([p.entries["key"] for p in parts[s]], _EMPTY_I))
        counts.append(int(keys[-1].shape[0]))
    bounds = np.zeros(N_SEGMENTS + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])

    def column(first: int, last: int, name: str, empty: np.ndarray) -> np.ndarray:
        return _cat([p.entries[name] for s in range(first, last + 1) for p in parts[s]], empty)

    raw_parts: list[pa.RecordBatch | None] = []
    if raw:
        for s in range(N_SEGMENTS):
            arrows = [p.arrow for p in parts[s] if p.arrow is not None]
            raw_parts.append(pa.concat_batches(arrows) if arrows else None)
    return Window(
        keys=np.concatenate(keys), bounds=bounds,
        rows=tuple(rows), msg_lo=_cat(book["lo"], _EMPTY_I), msg_hi=_cat(hi, _EMPTY_I),
        msg_last_id=_cat(book["last_id"], _EMPTY_I), msg_snapshot=_cat(book["snapshot"], _EMPTY_B),
        msg_applied=_cat(book["applied"], _EMPTY_B),
        bbo_id=column(SEG_BBO_SPOT, SEG_BBO_PERP, "update_id", _EMPTY_I),
        bbo_quote=column(SEG_BBO_SPOT, SEG_BBO_PERP, "quote", np.zeros((0, 4))),
        funding_rate=column(SEG_FUNDING, SEG_FUNDING, "rate", _EMPTY_F),
        actions=column(SEG_EVENTS_SPOT, SEG_EVENTS_PERP, "action", _EMPTY_I8),
        raw=raw_parts,
    )


def windows(streams: Sequence[Iterable[Batch]], end: int, raw: bool = False) -> Iterator[Window]:
    """The windows of the merged streams (one iterable of batches per segment, in segment order)."""
    buffers = [StreamBuffer(s, end) for s in streams]
    while True:
        for b in buffers:
            while not b.done and not b.chunks:
                b.fill()
        reading = [b for b in buffers if not b.done]
        limit = min(b.last_key() for b in reading) if reading else NO_LIMIT
        parts = [b.take(limit) for b in buffers]
        if any(parts):
            yield build_window(parts, raw)
        elif not reading:
            return
        else:  # every buffered entry is at the limit: read further where the limit comes from
            for b in reading:
                if b.last_key() == limit:
                    b.fill()


class Prefetch:
    """Runs an iterator on a background thread, ``depth`` items ahead, so that reading and decoding Parquet
    (GIL-free in pyarrow) overlaps with the replay loop (GIL-free in numba). Exceptions are re-raised in the
    consumer; ``close`` stops the thread early."""

    _DONE = object()

    def __init__(self, items: Iterable[Any], depth: int = 2) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name="nova-replay-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        return put_until_stopped(self._queue, item, self._stop)

    def _run(self, items: Iterable[Any]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
