"""The data contract between recorder and replay (DESIGN §2): the tables, their schemas and encodings.

Anything that reads or writes the dataset (the recorder's writer, replay, ``nova sql``, a user's notebook)
goes by these definitions, so a change here is a change of the contract and must be made in DESIGN.md too.
Where the files are, what they are called and how they become visible is the dataset's (nova.core.dataset):
``{root}/{table}/exchange={exchange}/market={spot|perp}/symbol={BASE-QUOTE}/date={YYYY-MM-DD}/{name}``, with
the partition values in the path only (hive-aware readers add them as columns).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import pyarrow as pa

EXCHANGE = "binance"
Table = Literal["book", "bbo", "trades", "funding", "liquidations", "open_interest", "instruments", "events",
                "spread", "snapshots"]
RECORDED_TABLES: tuple[Table, ...] = ("book", "bbo", "trades", "funding", "liquidations", "open_interest",
                                      "instruments", "events")
PARTITION_KEYS = ("exchange", "market", "symbol", "date")

TS = pa.timestamp("ns", tz="UTC")
LABEL = pa.dictionary(pa.int8(), pa.string())  # small closed vocabularies: side, taker side, event kind

BOOK = pa.schema([
    pa.field("ts_recv", TS, nullable=False),
    pa.field("ts_event", TS),  # null only for spot REST snapshots, which carry no event time
    pa.field("ts_trade", TS),
    pa.field("first_id", pa.int64(), nullable=False),
    pa.field("last_id", pa.int64(), nullable=False),
    pa.field("prev_id", pa.int64()),
    pa.field("msg", pa.int64(), nullable=False),
    pa.field("snapshot", pa.bool_(), nullable=False),
    pa.field("stale", pa.bool_(), nullable=False),
    pa.field("side", LABEL),  # null (with null price and amount) only in the one row of an empty message
    pa.field("price", pa.float64()),
    pa.field("amount", pa.float64()),
])

BBO = pa.schema([
    pa.field("ts_recv", TS, nullable=False),
    pa.field("ts_event", TS),  # null on spot: Binance's spot bookTicker has no event time
    pa.field("update_id", pa.int64(), nullable=False),
    pa.field("bid_price", pa.float64()),
    pa.field("bid_amount", pa.float64()),
    pa.field("ask_price", pa.float64()),
    pa.field("ask_amount", pa.float64()),
])

TRADES = pa.schema([
    pa.field("ts_recv", TS, nullable=False),
    pa.field("ts_event", TS),
    pa.field("trade_id", pa.int64(), nullable=False),
    pa.field("price", pa.float64(), nullable=False),
    pa.field("amount", pa.float64(), nullable=False),
    pa.field("taker_side", LABEL, nullable=False),  # buy or sell
])

FUNDING = pa.schema([
    pa.field("ts_recv", TS, nullable=False),
    pa.field("ts_event", TS),
    pa.field("mark_price", pa.float64()),
    pa.field("index_price", pa.float64()),
    pa.field("funding_rate", pa.float64()),
    pa.field("next_funding_time", TS),
])

LIQUIDATIONS = pa.schema([  # perp: Binance forceOrder, at most one snapshot per symbol and second
    pa.field("ts_recv", TS, nullable=False),
    pa.field("ts_event", TS),  # E
    pa.field("ts_trade", TS),  # the order's trade time, o.T
    pa.field("side", LABEL, nullable=False),  # buy or sell: the liquidation order's side (sell: a long closed)
    pa.field("price", pa.float64(), nullable=False),
    pa.field("amount", pa.float64(), nullable=False),  # original quantity
    pa.field("average_price", pa.float64()),
    pa.field("filled_amount", pa.float64()),  # accumulated filled quantity
    pa.field("status", LABEL, nullable=False),  # Binance's order status: FILLED, PARTIALLY_FILLED, ...
])

OPEN_INTEREST = pa.schema([  # perp: REST openInterest, polled every --oi-every
    pa.field("ts_recv", TS, nullable=False),
    pa.field("ts_event", TS),  # the response's time
    pa.field("open_interest", pa.float64(), nullable=False),  # in base units
])

INSTRUMENTS = pa.schema([  # what exchangeInfo said about the market, at every start and whenever it changed
    pa.field("ts_recv", TS, nullable=False),
    pa.field("tick_size", pa.float64()),
    pa.field("step_size", pa.float64()),
    pa.field("min_notional", pa.float64()),
    pa.field("status", pa.string()),
    pa.field("contract_type", pa.string()),  # perp: PERPETUAL; null on spot
    pa.field("filters", pa.string()),  # the raw filters array, JSON text
])

EVENT_KINDS = ("start", "subscribed", "snapshot", "gap", "resync", "disconnect", "reconnect", "error", "stop",
               "covered", "handover")  # covered: nova merge, which source watched a stream over which interval;
# handover: a planned reconnect made before the cut, overlapping by ids (not a break: recorder.handover)

EVENTS = pa.schema([
    pa.field("ts_recv", TS, nullable=False),
    pa.field("stream", pa.string(), nullable=False),  # the table the stream feeds: book, bbo, trades, funding
    pa.field("kind", LABEL, nullable=False),
    pa.field("expected_id", pa.int64()),
    pa.field("received_id", pa.int64()),
    pa.field("detail", pa.string()),
    # provenance, on ``start`` rows only (null elsewhere): where the data came from (a stable identity: the
    # exchange, or a venue's own description, so that two runs of one source compare equal), which recorder
    # wrote it, and the versions of the software that did
    pa.field("source", pa.string()),
    pa.field("recorder_id", pa.string()),
    pa.field("versions", pa.string()),
])
PROVENANCE_COLUMNS = ("source", "recorder_id", "versions")

SCHEMAS: dict[str, pa.Schema] = {"book": BOOK, "bbo": BBO, "trades": TRADES, "funding": FUNDING,
                                 "liquidations": LIQUIDATIONS, "open_interest": OPEN_INTEREST,
                                 "instruments": INSTRUMENTS, "events": EVENTS}

SNAPSHOTS = pa.schema([  # derived (nova export snapshots): the depth book every fixed interval, for models
    pa.field("ts", TS, nullable=False),  # the grid instant: the book after every message received by then
    pa.field("ts_recv", TS),  # when the last book message in effect took effect; null before any
    pa.field("last_id", pa.int64()),  # that message's last update id (u)
    pa.field("valid", pa.bool_(), nullable=False),  # nova.core.validity's rule, as book_at applies it
    pa.field("reason", pa.string()),  # why not valid (nova.core.validity.REASONS); null when valid
    # the file's shape (its name without .parquet, nova.core.dataset.snapshot_file_name): several shapes share a
    # partition, and a reader of the whole table (nova sql, Spark) picks one with WHERE shape = '...'
    pa.field("shape", LABEL, nullable=False),
])
"""The fixed columns of a book-snapshot file; ``snapshot_schema`` adds the levels (wide, as tardis's
``book_snapshot_25_100ms``: one row per instant, so a model reads a fixed-width vector without a pivot)."""


def snapshot_level_names(level: int) -> tuple[str, str, str, str]:
    """The columns of level ``level`` (0 = best): bid price, bid amount, ask price, ask amount."""
    return f"bid{level}_price", f"bid{level}_amount", f"ask{level}_price", f"ask{level}_amount"


def snapshot_schema(levels: int) -> pa.Schema:
    """A snapshot file of ``levels`` levels a side: SNAPSHOTS, then each level's four columns (null beyond the
    book's depth and at instants whose book is not valid)."""
    return pa.schema([*SNAPSHOTS, *(pa.field(name, pa.float64()) for i in range(levels)
                                    for name in snapshot_level_names(i))])


def date_of(ts_ns: int) -> str:
    """The partition date (UTC) of a receive time in ns since the epoch."""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%d")


def parquet_options(table: str, archival: bool = False) -> dict:
    """Writer settings per table, chosen for size and replay read speed (bench/storage.py measures them).

    Prices and sizes repeat, so dictionaries plus zstd beat BYTE_STREAM_SPLIT (2.6x larger) and PLAIN (1.3x)
    on them. Ids and times that change on every row grow by small steps, so DELTA_BINARY_PACKED stores them in
    a few bits. The book's per-message columns are constant over a message's rows: there PLAIN lets zstd see
    each message as one long repeat (on the real capture 0.28 bytes per row for ts_recv, first_id, last_id and
    prev_id against 0.36 delta-packed), while ts_event, ts_trade and msg, whose steps are small and regular,
    stay delta-packed; PLAIN also decodes faster. zstd compresses each page on its own, and pyarrow closes a
    page every 20,000 rows unless told otherwise: pages only bounded by their 1 MiB size (up to ~600 k rows of
    price indices) let it find the repeats a short page cannot see (on the real capture -3.6% in total,
    -5% on price, for no more CPU). The recorder writes at zstd 7 (about 4% smaller than 3 for up to twice
    the CPU in the write, which only runs when a file is finished: rotation, stop); levels above 9 gain under
    1% for 2-20x the CPU. ``archival`` (``nova compact`` of closed days) uses zstd 9.
    """
    delta = {"book": ["ts_event", "ts_trade", "msg"],
             "bbo": ["ts_recv", "ts_event", "update_id"],
             "trades": ["ts_recv", "ts_event", "trade_id"],
             "funding": ["ts_recv", "ts_event", "next_funding_time"],
             "liquidations": ["ts_recv", "ts_event", "ts_trade"],
             "open_interest": ["ts_recv", "ts_event"],
             "instruments": ["ts_recv"],
             "events": ["ts_recv"],
             "spread": ["ts"],
             "snapshots": ["ts", "ts_recv", "last_id"]}.get(table, [])
    plain = {"book": ["ts_recv", "first_id", "last_id", "prev_id"]}.get(table, [])
    schema = SCHEMAS.get(table)
    names = [f.name for f in schema] if schema is not None else []
    return {
        "compression": "zstd",
        "compression_level": 9 if archival else RECORDER_ZSTD_LEVEL,
        "use_dictionary": [n for n in names if n not in delta and n not in plain],
        "column_encoding": {n: "DELTA_BINARY_PACKED" for n in delta} | {n: "PLAIN" for n in plain},
        "write_statistics": True,
        "max_rows_per_page": ROW_GROUP_ROWS,
    }


RECORDER_ZSTD_LEVEL = 7
ROW_GROUP_ROWS = 1 << 20  # large enough for zstd and dictionaries to pay off, small enough to stream
