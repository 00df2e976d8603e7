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
