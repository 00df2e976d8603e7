"""Turning captured messages into Arrow record batches of the contract's tables, column by column name.

Rows are built by name: each small table has a row type (``BboRow``, ``TradeRow``, ..., ``EventRow``) whose
fields are the table's columns, spelled as in ``nova.core.contract``, and which can only be made with keyword
arguments (``BboRow(ts_recv=..., bid_price=..., ...)``): a missing or unknown name fails where the row is made.
``table_batch`` then takes every column from the rows by its name, refuses rows whose names are not exactly
the table's, and refuses a value whose type is not the column's (a string under a price, a null under a column
that has none, ``True`` under an id). The book's columns are assembled by name too.
So two columns given under each other's names is the only way to swap them, and tests/test_rows.py holds
every builder to its schema.

Why the levels of a diff-depth message are parsed here, in bulk, and not when the message arrives: a
message carries tens to hundreds of [price, size] string pairs, and touching each of them from Python costs
more than ccxt's whole handling of the message. So the hot path keeps the frame text, and this module turns
a second's worth of texts into columns with the compiled scanner of ``recorder.levels`` (exact, GIL-free).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from msgspec import Struct

from nova.core.contract import (
    BOOK,
    EVENT_KINDS,
    SCHEMAS,
)
from recorder.levels import OK, parse_texts, plain_decimal
from recorder.sequencer import NULL, SNAPSHOT, STALE, BookColumns

# ---- the rows of the small tables, by name ---------------------------------------------------------------------

class Row(Struct, kw_only=True, gc=False):
    """A row of one of the small tables. Field names are the table's column names (tests/test_rows.py checks
    them against nova.core.contract); timestamps are ns integers, labels plain strings, None is null."""


class BboRow(Row, kw_only=True, gc=False):
    ts_recv: int
    ts_event: int | None  # null on spot: Binance's spot bookTicker has no event time
    update_id: int
    bid_price: float
    bid_amount: float
    ask_price: float
    ask_amount: float


class TradeRow(Row, kw_only=True, gc=False):
    ts_recv: int
    ts_event: int
    trade_id: int
    price: float
    amount: float
    taker_side: str  # buy or sell


class FundingRow(Row, kw_only=True, gc=False):
    ts_recv: int
    ts_event: int
    mark_price: float
    index_price: float
    funding_rate: float
    next_funding_time: int


class LiquidationRow(Row, kw_only=True, gc=False):
    ts_recv: int
    ts_event: int
    ts_trade: int
    side: str  # buy or sell
    price: float
    amount: float
    average_price: float
    filled_amount: float
    status: str


class OpenInterestRow(Row, kw_only=True, gc=False):
    ts_recv: int
    ts_event: int
    open_interest: float


class InstrumentRow(Row, kw_only=True, gc=False):
    ts_recv: int
    tick_size: float | None
    step_size: float | None
    min_notional: float | None
    status: str
    contract_type: str | None
    filters: str


class EventRow(Row, kw_only=True, gc=False):
    ts_recv: int
    stream: str
    kind: str
    expected_id: int | None
    received_id: int | None
    detail: str | None
    source: str | None
    recorder_id: str | None
    versions: str | None


ROW_TYPES: dict[str, type[Row]] = {"bbo": BboRow, "trades": TradeRow, "funding": FundingRow,
                                   "liquidations": LiquidationRow, "open_interest": OpenInterestRow,
                                   "instruments": InstrumentRow, "events": EventRow}


def event_row(*, ts_recv: int, stream: str, kind: str, detail: str, expected_id: int | None = None,
              received_id: int | None = None, provenance: tuple[str, str, str] | None = None) -> EventRow:
    """One row of the ledger (``events``): what happened (``kind``, one of contract.EVENT_KINDS) to a stream
    at ``ts_recv`` (ns), the expected and received ids where they apply, and ``provenance`` = (source,
    recorder_id, versions) on ``start`` rows only."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"{kind!r} is not an event kind ({', '.join(EVENT_KINDS)})")
    source, recorder_id, versions = provenance or (None, None, None)
    return EventRow(ts_recv=ts_recv, stream=stream, kind=kind, expected_id=expected_id, received_id=received_id,
                    detail=detail, source=source, recorder_id=recorder_id, versions=versions)

_SIDES = pa.array(["bid", "ask"], pa.string())


@dataclass
class Levels:
    """The parsed levels of a run of messages, as numpy arrays (for the live book, which skips Arrow)."""

    sides: np.ndarray  # int8 codes, 0 bid / 1 ask, message by message
    prices: np.ndarray
    amounts: np.ndarray
    per_message: np.ndarray  # number of levels of each message
    flags: np.ndarray  # SNAPSHOT / STALE bits of each message (malformed ones and what follows are STALE)
    last_id: np.ndarray
    ts_recv: np.ndarray


def book_batch(cols: BookColumns) -> tuple[pa.RecordBatch, list[int], Levels]:
    """The rows of the ``book`` table for a run of sequenced messages (one row per level, in msg order).

    Returns the batch, the positions of malformed messages, and the parsed levels. A malformed message keeps
    its place (one row, no levels, stale) and every later message of the run up to the next snapshot is
    marked stale: the book cannot be rebuilt past a message whose changes are unknown, until a snapshot
    (the resync the caller requests when none follows in the run, see ``malformed_details``).
    """
    n = len(cols)
    nb, na, status, side_codes, prices, amounts = parse_texts(cols.texts)
    flags = np.frombuffer(cols.flags, dtype=np.int8).copy() if n else np.zeros(0, np.int8)
    malformed = np.flatnonzero(status != OK).tolist()
    if malformed:
        snapshots = np.flatnonzero(flags & SNAPSHOT)
        for m in malformed:
            after = snapshots[snapshots > m]
            flags[m:int(after[0]) if len(after) else n] |= STALE
    levels = nb + na
    parsed = Levels(side_codes, prices, amounts, levels, flags, np.frombuffer(cols.last_id, dtype=np.int64),
                    np.frombuffer(cols.ts_recv, dtype=np.int64))
    if n == 0:
        return pa.RecordBatch.from_pylist([], schema=BOOK), [], parsed
    rows = np.maximum(levels, 1)  # a message without level changes still leaves one row
    if (levels == 0).any():
        real = np.repeat(levels > 0, rows)
        total = int(rows.sum())
        full_p, full_a = np.full(total, np.nan), np.full(total, np.nan)
        full_s = np.zeros(total, np.int8)
        full_p[real], full_a[real], full_s[real] = prices, amounts, side_codes
        mask = ~real
        prices, amounts, side_codes = full_p, full_a, full_s
    else:
        mask = None

    # Everything per message is computed once per message, then repeated to its rows (65 on average): nulls,
    # ms -> ns and the flag bits, one pass each over the messages instead of over the rows.
    def per_row(values: np.ndarray) -> np.ndarray:
        return np.repeat(values, rows)

    def ints(values: array) -> np.ndarray:
        return np.frombuffer(values, dtype=np.int64)

    def ns_or_null(values: array) -> pa.Array:  # a time in ms, NULL for none
        ms = ints(values)
        null = ms == NULL
        if null.any():
            return pa.array(per_row(np.where(null, 0, ms * 1_000_000)), ts_type, mask=per_row(null))
        return pa.array(per_row(ms * 1_000_000), ts_type)

    ts_type = BOOK.field("ts_recv").type
    prev = ints(cols.prev_id)
    prev_null = prev == NULL
    columns = {
        "ts_recv": pa.array(per_row(ints(cols.ts_recv)), ts_type),
        "ts_event": ns_or_null(cols.ts_event),
        "ts_trade": ns_or_null(cols.ts_trade),
        "first_id": pa.array(per_row(ints(cols.first_id)), pa.int64()),
        "last_id": pa.array(per_row(ints(cols.last_id)), pa.int64()),
        "prev_id": pa.array(per_row(prev), pa.int64(), mask=per_row(prev_null) if prev_null.any() else None),
        "msg": pa.array(per_row(ints(cols.msg)), pa.int64()),
        "snapshot": pa.array(per_row((flags & SNAPSHOT) != 0), pa.bool_()),
        "stale": pa.array(per_row((flags & STALE) != 0), pa.bool_()),
        "side": pa.DictionaryArray.from_arrays(pa.array(side_codes, pa.int8(), mask=mask), _SIDES),
        "price": pa.array(prices, pa.float64(), mask=mask),
        "amount": pa.array(amounts, pa.float64(), mask=mask),
    }
    return assemble("book", columns), malformed, parsed


def assemble(table: str, columns: Mapping[str, pa.Array]) -> pa.RecordBatch:
    """A batch of ``table`` from its columns by name: exactly the schema's names, each of the column's type."""
    schema = SCHEMAS[table]
    _same_names(table, columns.keys())
    for f in schema:
        if columns[f.name].type != f.type:
            raise TypeError(f"{table}.{f.name} is {columns[f.name].type}, the contract says {f.type}")
    return pa.RecordBatch.from_arrays([columns[name] for name in schema.names], schema=schema)


def malformed_details(cols: BookColumns, malformed: list[int]) -> tuple[list[str], bool]:
    """A short ledger detail for each malformed message of a run, and whether the book is still broken at the
    end of the run (no snapshot follows the last malformed message, so the caller must resync)."""
    details = []
    for m in malformed:
        what = "snapshot" if cols.flags[m] & SNAPSHOT else "diff-depth message"
        details.append(f"malformed {what} msg {cols.msg[m]} [U={cols.first_id[m]}, u={cols.last_id[m]}] "
                       f"({level_problem(cols.texts[m])}); book resynced")
    broken = bool(malformed) and not any(cols.flags[i] & SNAPSHOT for i in range(malformed[-1] + 1, len(cols)))
    return details, broken


def level_problem(text: str) -> str:
    """What is wrong with the level arrays of a message the compiled parser refused (for the ledger)."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(message, dict):
        return "not a JSON object"
    for key in ("b", "a"):
        levels = message.get(key)
        if not isinstance(levels, list):
            return f"{key!r} is not an array of levels"
        for level in levels:
            if not (isinstance(level, list) and len(level) == 2):
                return f"a {key!r} level is not [price, size]: {_short(level)}"
            for value in level:
                try:
                    plain_decimal(value)
                except (TypeError, ValueError):
                    return f"a {key!r} level holds {_short(value)}, not a plain decimal string"
    return "not in Binance's compact form"


def _short(value: object) -> str:
    try:
        return orjson.dumps(value)[:40].decode(errors="replace")
    except TypeError:
        return repr(value)[:40]


def table_batch(table: str, rows: Sequence[Row | Mapping[str, Any]]) -> pa.RecordBatch:
    """A batch of one of the small tables (bbo, trades, funding, liquidations, open_interest, instruments,
    events) from rows by name: instances of its row type (``ROW_TYPES``) or mappings of column name to value.

    Raises ValueError when a row's names are not exactly the table's columns (one missing, one unknown), and
    TypeError when a value is not of its column's type: timestamps and ids are ``int`` (not ``bool``), prices
    ``float``, labels and texts ``str``, flags ``bool``, and None only where the contract allows a null.
    """
    schema = SCHEMAS[table]
    if not rows:
        return pa.RecordBatch.from_pylist([], schema=schema)
    get = _getter(table, rows)
    arrays = []
    for f in schema:
        values = list(map(get(f.name), rows))
        _check_types(table, f, values)
        if pa.types.is_dictionary(f.type):
            arrays.append(pa.array(values, pa.string()).dictionary_encode().cast(f.type))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _same_names(table: str, names: Any) -> None:
    expected = SCHEMAS[table].names
    if len(names) != len(expected) or set(names) != set(expected):
        missing = [n for n in expected if n not in names]
        unknown = [n for n in names if n not in expected]
        raise ValueError(f"a row of {table} must have exactly its columns {expected}: "
                         f"missing {missing}, unknown {unknown}")


def _getter(table: str, rows: Sequence[Row | Mapping[str, Any]]) -> Any:
    """How to take a column by name from these rows (attributes of a row type, or keys of mappings), after
    checking that every row has exactly the table's names."""
    kinds = {type(row) for row in rows}
    if all(issubclass(kind, Row) for kind in kinds):
        for kind in kinds:
            _same_names(table, kind.__struct_fields__)
        return attrgetter
    for row in rows:
        if not isinstance(row, Mapping):
            raise TypeError(f"rows of {table} are built by name (a {ROW_TYPES[table].__name__} or a mapping), "
                            f"not {type(row).__name__}")
        _same_names(table, row.keys())
    return itemgetter


_PY_TYPES = {pa.int64(): int, pa.float64(): float, pa.string(): str, pa.bool_(): bool}


def _check_types(table: str, f: pa.Field, values: list) -> None:
    kind = str if pa.types.is_dictionary(f.type) else int if pa.types.is_timestamp(f.type) else _PY_TYPES[f.type]
    found = set(map(type, values))
    allowed = {kind, type(None)} if f.nullable else {kind}
    if not found <= allowed:
        wrong = sorted(t.__name__ for t in found - allowed)
        raise TypeError(f"{table}.{f.name} takes {kind.__name__}{' or None' if f.nullable else ''}, "
                        f"got {', '.join(wrong)}")
