"""The test oracle: Binance's documented local-order-book rules applied to a raw capture, written plainly.

This is deliberately independent of Nova's own code (it parses the capture itself and shares nothing with
``nova.venue`` or the recorder), so that when Nova's book and this one agree, both are right.

Rules (Binance "How to manage a local order book correctly"):
- spot: drop events with ``u <= lastUpdateId``; the first applied event has ``U <= lastUpdateId + 1 <= u``;
  every later event has ``U == previous u + 1``.
- USDT-M: drop events with ``u < lastUpdateId``; the first applied event has ``U <= lastUpdateId <= u``;
  every later event has ``pu == previous u``.
- Sizes are absolute; a size of 0 removes the level.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class OracleGap(AssertionError):
    """The capture breaks Binance's id chain; the oracle refuses to guess."""


def capture_messages(paths: list[Path]) -> Iterator[tuple[int, dict]]:
    """(receive ns, bare payload) for every line of the capture files, in file order."""
    for path in paths:
        with gzip.open(path, "rt") as fh:
            for line in fh:
                ts, body = line.split(" ", 1)
                obj = json.loads(body)
                yield int(ts), obj.get("data", obj) if "stream" in obj else obj


@dataclass
class OracleBook:
    market: str  # "spot" or "perp"
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    last_id: int | None = None
    started: bool = False
    buffered: list[dict] = field(default_factory=list)

    def snapshot(self, snap: dict) -> list[dict]:
        """Load a snapshot; returns the diffs buffered before it, for the caller to apply in order."""
        self.bids = {float(p): float(q) for p, q in snap["bids"] if float(q) > 0}
        self.asks = {float(p): float(q) for p, q in snap["asks"] if float(q) > 0}
        self.last_id = int(snap["lastUpdateId"])
        self.started = False
        pending, self.buffered = self.buffered, []
        return pending

    def apply(self, msg: dict) -> bool:
        """Apply one depthUpdate; False if the rules say to skip it (stale) or to buffer it (no snapshot)."""
        if self.last_id is None:
            self.buffered.append(msg)
            return False
        first, last = msg["U"], msg["u"]
        spot = self.market == "spot"
        if not self.started:
            if (last <= self.last_id) if spot else (last < self.last_id):
                return False
            ok = (first <= self.last_id + 1 <= last) if spot else (first <= self.last_id <= last)
            if not ok:
                raise OracleGap(f"first event [{first}, {last}] does not straddle snapshot {self.last_id}")
            self.started = True
        elif spot and first != self.last_id + 1:
            raise OracleGap(f"spot gap: U={first} after u={self.last_id}")
        elif not spot and msg["pu"] != self.last_id:
            raise OracleGap(f"perp gap: pu={msg['pu']} after u={self.last_id}")
        for side, levels in ((self.bids, msg["b"]), (self.asks, msg["a"])):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)
        self.last_id = last
        return True

    def sorted_levels(self) -> tuple[list[list[float]], list[list[float]]]:
        bids = [[p, self.bids[p]] for p in sorted(self.bids, reverse=True)]
        asks = [[p, self.asks[p]] for p in sorted(self.asks)]
        return bids, asks


def replay_capture(paths: list[Path], market: str) -> Iterator[tuple[int, dict, OracleBook]]:
    """Yield (recv ns, message, book) after every applied depth message; the book object is reused.

    Diffs that arrived before the REST snapshot are buffered and applied when it arrives (they are yielded
    then, with the snapshot's receive time), as Binance's procedure prescribes.
    """
    book = OracleBook(market)
    for recv_ns, msg in capture_messages(paths):
        if "lastUpdateId" in msg and "bids" in msg:
            for buffered in book.snapshot(msg):
                if book.apply(buffered):
                    yield recv_ns, buffered, book
        elif msg.get("e") == "depthUpdate" and book.apply(msg):
            yield recv_ns, msg, book


def final_book(paths: list[Path], market: str) -> OracleBook:
    book = OracleBook(market)
    for _, _, book in replay_capture(paths, market):  # noqa: B007 - we want the last state
        pass
    return book


# ---- rebuilding from a recording (the contract's reader rule, written plainly) -----------------------------------

def read_table(root: Path, table: str, market: str) -> list[dict]:
    """Every row of one market's table in a recording, in stream order (files by name, rows by msg if any)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = root / table / "exchange=binance" / f"market={market}"
    files = sorted(p for p in base.rglob("*.parquet") if not p.name.startswith("."))
    rows: list[dict] = []
    for path in sorted(files, key=lambda p: (p.parent.name, p.name)):
        table_ = pq.read_table(path)
        for i, column in enumerate(table_.schema):
            if pa.types.is_timestamp(column.type):  # int ns, for plain comparisons
                table_ = table_.set_column(i, column.name, table_[column.name].cast(pa.int64()))
            elif pa.types.is_dictionary(column.type):
                table_ = table_.set_column(i, column.name, table_[column.name].cast(pa.string()))
        rows.extend(table_.to_pylist())
    if rows and "msg" in rows[0]:
        rows.sort(key=lambda r: r["msg"])  # stable: rows of one message keep their order
    return rows


def rebuild_from_rows(rows: list[dict]) -> Iterator[tuple[dict, dict[float, float], dict[float, float]]]:
    """Apply DESIGN §2's reader rule (skip stale, clear on a new snapshot message, set price -> amount, remove
    at 0) and yield (first row of the message, bids, asks) after every message; the dicts are reused."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    i = 0
    while i < len(rows):
        msg = rows[i]["msg"]
        j = i
        while j < len(rows) and rows[j]["msg"] == msg:
            j += 1
        if rows[i]["snapshot"]:
            bids.clear()
            asks.clear()
        for row in rows[i:j]:
            if row["stale"] or row["side"] is None:
                continue
            side = bids if row["side"] == "bid" else asks
            if row["amount"] == 0:
                side.pop(row["price"], None)
            else:
                side[row["price"]] = row["amount"]
        yield rows[i], bids, asks
        i = j
