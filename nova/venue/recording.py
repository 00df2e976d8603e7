"""A recorded dataset as one timeline of messages, read streaming through the core's Dataset.

Why a timeline of our own rather than replay's reader: the venue may import only the core (DESIGN §1), and
what it needs differs from replay's: every recorded message of every stream (stale diffs and snapshots too,
since the wire carried them), in the order the recorder received them, row group by row group, so that memory
stays flat however long the range.

One ordering subtlety: the recorder writes diffs that arrived while a snapshot request was in flight *after*
that snapshot (``msg`` order; their ``ts_recv`` is earlier). On the wire they came first, and a client that
is to hold exactly what the recorder held must receive them before the snapshot is served. So the book stream
moves each snapshot behind the diffs that directly follow it with an earlier receive time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from nova.core.dataset import Dataset
from nova.core.markets import Market, Symbol

BATCH_ROWS = 65_536
PY_ROWS = 2_048  # rows turned into Python objects per call: ``to_pylist`` holds the GIL throughout, and the
# event loop's paced sends must not wait behind a 65,536-row conversion (~8 ms); 2,048 rows take ~0.2 ms
QUOTE_TABLES = ("bbo", "trades", "funding", "liquidations", "open_interest")
# at one instant a run's start comes first and its stop last (as in the dataset's ledger order)
_EVENT_RANK = {"start": 0, "stop": 2}


@dataclass(slots=True)
class BookMessage:
    """One recorded depth message (a diff, or a REST snapshot when ``snapshot``), levels as recorded."""

    ts_recv: int
    ts_event: int | None
    ts_trade: int | None
    first_id: int
    last_id: int
    prev_id: int | None
    msg: int
    snapshot: bool
    stale: bool
    sides: list[str]
    prices: list[float]
    amounts: list[float]


@dataclass(frozen=True, slots=True)
class Entry:
    """A timeline entry: what (``table``: a recorded table, or ``events``), of which market, and the row."""

    ts_recv: int
    rank: int
    seq: int
    market: Market
    table: str
    row: Any


def _lists(batch: pa.RecordBatch) -> dict[str, list]:
    out = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        elif pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        out[name] = column.to_pylist()
    return out


def _batches(ds: Dataset, table: str, market: Market, symbol: Symbol, dates: list[str], lo_ns: int
             ) -> Iterator[dict[str, list]]:
    """The columns of one stream over ``dates``, a batch at a time (file by file, row group by row group),
    skipping row groups wholly before ``lo_ns``."""
    for date in dates:
        for partition in ds.partitions(table, market, symbol.dashed, date):
            for path, _ in ds.files(partition):
                wanted = [i for i, g in enumerate(ds.row_groups(path)) if g.last_ns >= lo_ns]
                if wanted:
                    for batch in ds.batches(path, wanted, None, BATCH_ROWS):
                        for offset in range(0, batch.num_rows, PY_ROWS):
                            yield _lists(batch.slice(offset, PY_ROWS))


def table_rows(ds: Dataset, table: str, market: Market, symbol: Symbol, dates: list[str], lo_ns: int
               ) -> Iterator[dict[str, Any]]:
    """The rows of one stream, as dicts by column name (for the small tables)."""
    for columns in _batches(ds, table, market, symbol, dates, lo_ns):
        names = list(columns)
        for i in range(len(columns["ts_recv"])):
            yield {n: columns[n][i] for n in names}


def book_messages(ds: Dataset, market: Market, symbol: Symbol, dates: list[str], lo_ns: int
                  ) -> Iterator[BookMessage]:
    """The book stream's messages from the first snapshot at or after ``lo_ns`` (the anchor of the range).

    Rows are cut into messages column-wise (a message is a run of equal ``msg``), since a day holds millions."""
    current: BookMessage | None = None
    anchored = False
    for c in _batches(ds, "book", market, symbol, dates, lo_ns):
        msg, side, price, amount = c["msg"], c["side"], c["price"], c["amount"]
        n = len(msg)
        i = 0
        while i < n:
            j = i + 1
            while j < n and msg[j] == msg[i]:
                j += 1
            if side[j - 1] is None:  # the one row of a message without level changes
                sides, prices, amounts = [], [], []
            else:
                sides, prices, amounts = side[i:j], price[i:j], amount[i:j]
            if current is not None and msg[i] == current.msg:  # the message began in the previous batch
                current.sides += sides
                current.prices += prices
                current.amounts += amounts
            else:
                if current is not None:
                    yield current
                    current = None
                if anchored or (c["snapshot"][i] and c["ts_recv"][i] >= lo_ns):
                    anchored = True
                    current = BookMessage(c["ts_recv"][i], c["ts_event"][i], c["ts_trade"][i], c["first_id"][i],
                                          c["last_id"][i], c["prev_id"][i], msg[i], c["snapshot"][i],
                                          c["stale"][i], sides, prices, amounts)
            i = j
    if current is not None:
        yield current


def arrival_order(messages: Iterator[BookMessage]) -> Iterator[BookMessage]:
    """Move every snapshot behind the diffs written right after it that were received before it."""
    pending: BookMessage | None = None
    for m in messages:
        if pending is not None:
            if not m.snapshot and m.ts_recv < pending.ts_recv:
                yield m
                continue
            yield pending
            pending = None
        if m.snapshot:
            pending = m
        else:
            yield m
    if pending is not None:
        yield pending


def timeline(ds: Dataset, symbol: Symbol, markets: list[Market], dates: list[str], book_lo: dict[Market, int],
             quote_lo: int, ledgers: dict[Market, list[dict]]) -> Iterator[Entry]:
    """Every stream of every market merged by receive time: book messages from each market's anchor snapshot
    (``book_lo``), quote streams from ``quote_lo``, and the book stream's ledger events."""
    streams: list[Iterator[Entry]] = []
    for market in markets:
        def book(market: Market = market) -> Iterator[Entry]:
            for n, m in enumerate(arrival_order(book_messages(ds, market, symbol, dates, book_lo[market]))):
                yield Entry(m.ts_recv, 1, n, market, "book", m)
        streams.append(book())
        for table in QUOTE_TABLES:
            def quotes(market: Market = market, table: str = table) -> Iterator[Entry]:
                for n, row in enumerate(table_rows(ds, table, market, symbol, dates, quote_lo)):
                    if row["ts_recv"] >= quote_lo:
                        yield Entry(row["ts_recv"], 1, n, market, table, row)
            streams.append(quotes())
        lo = min(book_lo[market], quote_lo)
        streams.append(iter([Entry(e["ts_recv"], _EVENT_RANK.get(e["kind"], 1), n, market, "events", e)
                             for n, e in enumerate(ledgers[market]) if e["ts_recv"] >= lo]))
    return heapq.merge(*streams, key=lambda e: (e.ts_recv, e.rank))
