"""Reading one stream of the plan as numpy column batches, with the merge key of every row.

Why batches of a fixed number of rows: memory stays bounded by the batch size whatever the length of the
range, and pyarrow decodes a batch with the GIL released, so a reader thread overlaps with the replay loop.
Only the columns the loop needs are decoded (``COLUMNS``); a caller that asks for raw events gets every
column, and the Arrow batch along with the numpy view.

The merge key: the receive time (``--clock recv``), or the exchange time (``--clock event``) where the row
has one (spot REST snapshots and spot bookTickers carry none, and the ledger only has receive times). It is
made non-decreasing along the stream with a running maximum: book rows are in ``msg`` order, and the diffs
held back for a snapshot are written right after it with slightly earlier receive times; they take effect
when the snapshot does, so they take its time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nova.core.book import side_codes, usable
from nova.core.validity import BOOK_BREAKS, QUOTE_BREAKS
from replay.kernel import ACT_CLEAR_FUNDING, ACT_CLEAR_QUOTE, ACT_DISCONNECT, ACT_GAP, ACT_INVALIDATE
from replay.plan import ReplaySource, StreamPlan, reason, unreadable

COLUMNS: dict[str, tuple[str, ...]] = {
    "book": ("ts_recv", "msg", "last_id", "snapshot", "stale", "side", "price", "amount"),
    "bbo": ("ts_recv", "update_id", "bid_price", "bid_amount", "ask_price", "ask_amount"),
    "funding": ("ts_recv", "funding_rate"),
    "trades": ("ts_recv",),
    "events": ("ts_recv", "stream", "kind"),
}
"""Columns the replay loop needs per table (plus ``ts_event`` under the exchange clock)."""

COUNTED = {"gap": ACT_GAP, "disconnect": ACT_DISCONNECT}
"""Book-stream ledger kinds the summary counts as crossed."""

BATCH_ROWS = {"book": 1 << 17, "bbo": 1 << 16, "funding": 1 << 14, "trades": 1 << 16, "events": 1 << 12}

Columns = dict[str, np.ndarray]


def needed_columns(table: str, event_clock: bool) -> tuple[str, ...]:
    cols = COLUMNS[table]
    return (*cols, "ts_event") if event_clock and table != "events" else cols


@dataclass
class Batch:
    """A run of entries of one stream, as numpy columns (``key`` included), and what a window needs of them.

    For the book an entry is a message (``lo`` = its first row in ``rows``; it ends where the next one begins)
    and ``rows`` holds the level changes (``side`` with stale rows masked, ``price``, ``amount``). A message
    can be cut by a batch boundary: the next batch then ``continues`` it (its first entry is the rest of the
    message, same key). ``arrow`` keeps the recorded rows when raw events are wanted.
    """

    entries: Columns
    rows: Columns | None = None
    arrow: pa.RecordBatch | None = None
    continues: bool = False

    def __len__(self) -> int:
        return int(self.entries["key"].shape[0])

    @property
    def row_count(self) -> int:
        return int(self.rows["price"].shape[0]) if self.rows is not None else len(self)

    def slice(self, start: int, stop: int) -> Batch:
        """Entries [start, stop) (views, no copy; a book slice takes its messages' rows with it)."""
        entries = {name: values[start:stop] for name, values in self.entries.items()}
        if self.rows is None:
            arrow = self.arrow.slice(start, stop - start) if self.arrow is not None else None
            return Batch(entries, None, arrow)
        lo = self.entries["lo"]
        first = int(lo[start]) if start < len(self) else self.row_count
        last = int(lo[stop]) if stop < len(self) else self.row_count
        entries["lo"] = entries["lo"] - first
        rows = {name: values[first:last] for name, values in self.rows.items()}
        arrow = self.arrow.slice(first, last - first) if self.arrow is not None else None
        return Batch(entries, rows, arrow, self.continues and start == 0)


def _floats(column: pa.Array) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _side_codes(column: pa.Array) -> np.ndarray:
    """nova.core.book side codes; without a copy when the dictionary is the recorder's own ('bid', 'ask')."""
    if isinstance(column, pa.DictionaryArray) and column.null_count == 0:
        words = column.dictionary.to_pylist()
        if words == ["bid", "ask"]:
            return column.indices.to_numpy().astype(np.int8, copy=False)
        if words == ["ask", "bid"]:
            return (1 - column.indices.to_numpy()).astype(np.int8)
    return side_codes(column)


def _running_max(key: np.ndarray, carry: int) -> np.ndarray:
    out = np.maximum(key, carry)  # a new, writable array
    np.maximum.accumulate(out, out=out)
    return out


class StreamReader:
    """Iterates one stream's planned row groups as ``Batch`` es; files that fail mid-read follow ``skip_bad``."""

    def __init__(self, dataset: ReplaySource, plan: StreamPlan, event_clock: bool, skip_bad: bool,
                 raw: bool = False) -> None:
        self.dataset = dataset
        self.plan = plan
        self.event_clock = event_clock and plan.table != "events"
        self.skip_bad = skip_bad
        self.raw = raw
        self.columns = None if raw else list(needed_columns(plan.table, event_clock))
        self._carry = np.iinfo(np.int64).min  # running maximum of the key across batches
        self._last_msg: int | None = None  # book: the message the previous batch ended in

    def __iter__(self) -> Iterator[Batch]:
        size = BATCH_ROWS[self.plan.table]
        for part in self.plan.parts:
            try:
                for batch in self.dataset.data.batches(part.path, list(part.row_groups), self.columns, size):
                    if batch.num_rows:
                        yield self._book(batch) if self.plan.table == "book" else self._other(batch)
            except (OSError, pa.ArrowException) as exc:
                if not self.skip_bad:
                    raise unreadable(part.path, reason(exc)) from None
                self.dataset.bad[part.path] = reason(exc)
                self._last_msg = None  # what follows cannot continue a message of the bad file

    def _keys(self, batch: pa.RecordBatch, at: np.ndarray | None = None) -> np.ndarray:
        ts = batch.column("ts_recv")
        if self.event_clock:
            ts = pc.coalesce(batch.column("ts_event"), ts)
        raw = ts.cast(pa.int64()).to_numpy(zero_copy_only=False)
        key = _running_max(raw if at is None else raw[at], self._carry)
        self._carry = int(key[-1])
        return key

    def _book(self, batch: pa.RecordBatch) -> Batch:
        """Message-level entries: only the level columns are touched per row, the rest at message starts."""
        msg = batch.column("msg").to_numpy()
        starts = np.flatnonzero(msg[1:] != msg[:-1]) + 1
        starts = np.concatenate((np.zeros(1, dtype=np.int64), starts))
        continues = self._last_msg is not None and int(msg[0]) == self._last_msg
        self._last_msg = int(msg[-1])
        sides = _side_codes(batch.column("side"))
        stale = batch.column("stale")
        if pc.any(stale).as_py():
            flags = stale.to_numpy(zero_copy_only=False)
            sides = usable(sides, flags)  # the rebuild rule: stale rows are skipped
            applied = ~np.logical_and.reduceat(flags, starts)
        else:
            applied = np.ones(starts.shape[0], dtype=np.bool_)
        entries = {"key": self._keys(batch, starts), "lo": starts,
                   "last_id": batch.column("last_id").to_numpy()[starts],
                   "snapshot": pc.take(batch.column("snapshot"), starts).to_numpy(zero_copy_only=False),
                   "applied": applied}
        rows = {"side": sides, "price": _floats(batch.column("price")), "amount": _floats(batch.column("amount"))}
        return Batch(entries, rows, batch if self.raw else None, continues)

    def _other(self, batch: pa.RecordBatch) -> Batch:
        entries = CONVERT[self.plan.table](batch)
        entries["key"] = self._keys(batch)
        return Batch(entries, None, batch if self.raw else None)


def _convert_bbo(batch: pa.RecordBatch) -> Columns:
    quote = np.empty((batch.num_rows, 4))
    for i, name in enumerate(("bid_price", "bid_amount", "ask_price", "ask_amount")):
        quote[:, i] = _floats(batch.column(name))  # a missing side is NaN, as the spread kernel expects
    return {"update_id": batch.column("update_id").to_numpy(), "quote": quote}


def _convert_funding(batch: pa.RecordBatch) -> Columns:
    return {"rate": _floats(batch.column("funding_rate"))}


def _convert_events(batch: pa.RecordBatch) -> Columns:
    """The ledger as actions of the loop, by the validity rule (nova.core.validity): a book break invalidates
    the market's book until its next snapshot; a quote break drops the held bookTicker (or funding rate)."""
    actions = np.zeros(batch.num_rows, dtype=np.int8)
    stream = batch.column("stream")
    kinds = batch.column("kind").cast(pa.string())

    def where(name: str, kind_set: frozenset[str] | set[str]) -> np.ndarray:
        hit = pc.and_(pc.equal(stream, name), pc.is_in(kinds, pa.array(sorted(kind_set), pa.string())))
        return hit.to_numpy(zero_copy_only=False)

    actions[where("book", BOOK_BREAKS)] |= ACT_INVALIDATE
    for kind, action in COUNTED.items():
        actions[where("book", {kind})] |= action
    actions[where("bbo", QUOTE_BREAKS)] |= ACT_CLEAR_QUOTE
    actions[where("funding", QUOTE_BREAKS)] |= ACT_CLEAR_FUNDING
    return {"action": actions}


CONVERT: dict[str, Callable[[pa.RecordBatch], Columns]] = {
    "bbo": _convert_bbo, "funding": _convert_funding, "trades": lambda batch: {}, "events": _convert_events}
