"""Turning captured messages into Arrow record batches of the contract's tables.

Why the levels of a diff-depth message are parsed here, in bulk, and not when the message arrives: a
message carries tens to hundreds of [price, size] string pairs, and touching each of them from Python costs
more than ccxt's whole handling of the message. So the hot path keeps the frame text, and this module turns
a second's worth of texts into columns with the compiled scanner of ``recorder.levels`` (exact, GIL-free).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa

from nova.core.contract import BBO, BOOK, EVENTS, FUNDING, INSTRUMENTS, LIQUIDATIONS, OPEN_INTEREST, TRADES
from recorder.levels import OK, parse_texts, plain_decimal
from recorder.sequencer import NULL, SNAPSHOT, STALE, BookColumns

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

    def per_row(values: np.ndarray) -> np.ndarray:
        return np.repeat(values, rows)

    ts_recv = per_row(np.frombuffer(cols.ts_recv, dtype=np.int64))
    event = per_row(np.frombuffer(cols.ts_event, dtype=np.int64))
    trade = per_row(np.frombuffer(cols.ts_trade, dtype=np.int64))
    prev = per_row(np.frombuffer(cols.prev_id, dtype=np.int64))
    row_flags = per_row(flags)
    ts_type = pa.timestamp("ns", tz="UTC")
    arrays = [
        pa.array(ts_recv, ts_type),
        pa.array(np.where(event == NULL, 0, event * 1_000_000), ts_type, mask=event == NULL),
        pa.array(np.where(trade == NULL, 0, trade * 1_000_000), ts_type, mask=trade == NULL),
        pa.array(per_row(np.frombuffer(cols.first_id, dtype=np.int64)), pa.int64()),
        pa.array(per_row(np.frombuffer(cols.last_id, dtype=np.int64)), pa.int64()),
        pa.array(prev, pa.int64(), mask=prev == NULL),
        pa.array(per_row(np.frombuffer(cols.msg, dtype=np.int64)), pa.int64()),
        pa.array((row_flags & SNAPSHOT) != 0, pa.bool_()),
        pa.array((row_flags & STALE) != 0, pa.bool_()),
        pa.DictionaryArray.from_arrays(pa.array(side_codes, pa.int8(), mask=mask), _SIDES),
        pa.array(prices, pa.float64(), mask=mask),
        pa.array(amounts, pa.float64(), mask=mask),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=BOOK), malformed, parsed


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


def records_batch(schema: pa.Schema, rows: list[tuple]) -> pa.RecordBatch:
    """A batch of one of the small tables (bbo, trades, funding, events) from row tuples in schema order.

    Timestamps arrive as ns integers (None for null); labels as plain strings. Trailing nullable columns (the
    ledger's provenance, on every row but a ``start``) may be left out of a row: they are null.
    """
    width = len(schema)
    if any(len(row) != width for row in rows):
        missing = schema.names[min(len(row) for row in rows):]
        if any(not schema.field(name).nullable for name in missing):
            raise ValueError(f"rows of {schema.names} lack the required column(s) {missing}")
        rows = [row + (None,) * (width - len(row)) for row in rows]
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    arrays = []
    for field, values in zip(schema, columns, strict=True):
        if pa.types.is_dictionary(field.type):
            arrays.append(pa.array(values, pa.string()).dictionary_encode().cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


SMALL_SCHEMAS = {"bbo": BBO, "trades": TRADES, "funding": FUNDING, "liquidations": LIQUIDATIONS,
                 "open_interest": OPEN_INTEREST, "instruments": INSTRUMENTS, "events": EVENTS}
