"""Make-before-break across planned cuts: the venue's connection age limit (Binance's 24 hours, here seconds)
and its ``serverShutdown`` notice. The real ccxt.pro client records over real sockets, in-process.

What must hold after each: the ledger says ``handover`` on every stream and nothing else happened (no gap, no
disconnect, no resync after the first snapshot); the recorded diffs chain by Binance's id rule from the first to
the last, none stale; no trade id is missing or doubled, no bookTicker doubled; and the book rebuilt from the rows
equals the venue's.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nova.venue import SyntheticSource
from recorder.recorder import Recorder, RecorderConfig
from tests.helpers import ETH, MARKETS, STREAMS, entries, flowing, ledger, rebuilt_equals_truth, record_until
from tests.oracle import read_table


async def _record(make_venue: Any, root: Path, during: Callable[[Any, Recorder], Awaitable[None]],
                  venue_config: dict | None = None, **config: Any) -> dict[str, list[dict]]:
    venue = await make_venue(SyntheticSource([ETH], seed=23), **(venue_config or {}))
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2,
                                  tables=STREAMS["perp"], **config))
    await rec.start()
    try:
        await flowing(rec, 0)
        await during(venue, rec)
        await record_until(venue, rec, min_messages=1)
    finally:
        await rec.stop()
    for market in MARKETS:
        rebuilt_equals_truth(root, market, venue.truth(market, "ETHUSDT"))
    return {m: ledger(root, m) for m in MARKETS}


def _assert_nothing_lost(root: Path, events: dict[str, list[dict]], why: str, at_least: int) -> None:
    for market in MARKETS:
        log = events[market]
        handovers = entries(log, "handover", "book")
        assert len(handovers) >= at_least, (market, [e["kind"] for e in log])
        assert all(why in e["detail"] for e in handovers), handovers
        for stream in STREAMS[market]:
            if stream != "open_interest":
                assert len(entries(log, "handover", stream)) == len(handovers), (market, stream)
        for kind in ("gap", "disconnect", "resync", "reconnect"):
            assert entries(log, kind) == [], (market, kind, entries(log, kind))
        assert len(entries(log, "snapshot", "book")) == 1, "one snapshot at the start, none after"

        firsts: dict[int, dict] = {}
        for row in read_table(root, "book", market):
            firsts.setdefault(row["msg"], row)
        diffs = [m for m in firsts.values() if not m["snapshot"]]
        applied = next(i for i, m in enumerate(diffs) if not m["stale"])  # before it: older than the snapshot
        diffs = diffs[applied:]
        assert len(diffs) > 20 and not any(m["stale"] for m in diffs), [m["last_id"] for m in diffs if m["stale"]]
        for before, after in itertools.pairwise(diffs):
            if market == "spot":
                assert after["first_id"] == before["last_id"] + 1, (before, after)
            else:
                assert after["prev_id"] == before["last_id"], (before, after)
        trades = sorted(r["trade_id"] for r in read_table(root, "trades", market))
        assert trades == list(range(trades[0], trades[0] + len(trades))), "a trade missing or doubled"
        bbo = [r["update_id"] for r in read_table(root, "bbo", market)]
        assert len(bbo) == len(set(bbo)) > 10, "a bookTicker doubled"


async def test_handover_before_the_connection_age_limit_loses_nothing(make_venue: Any, tmp_path: Path) -> None:
    async def run(venue: Any, rec: Recorder) -> None:
        began = time.monotonic()
        while (any(s.states["ETHUSDT"].stats["book"].handovers < 2 for s in rec.sessions.values())
               and time.monotonic() - began < 30):
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)

    events = await _record(make_venue, tmp_path, run, {"max_connection_age_s": 3.0}, max_connection_age_s=3.0,
                           handover_lead_s=1.2)
    _assert_nothing_lost(tmp_path, events, "age limit", at_least=2)


async def test_handover_on_server_shutdown_loses_nothing(make_venue: Any, tmp_path: Path) -> None:
    async def run(venue: Any, rec: Recorder) -> None:
        await asyncio.sleep(1.0)
        await asyncio.gather(*(venue.server_shutdown(m, grace_s=3.0) for m in MARKETS))
        await flowing(rec, time.time_ns())

    events = await _record(make_venue, tmp_path, run)
    _assert_nothing_lost(tmp_path, events, "serverShutdown", at_least=1)
    for market in MARKETS:
        assert venue_closed_nothing_live(events[market])


def venue_closed_nothing_live(log: list[dict]) -> bool:
    """The venue's close after the grace met only the connection already handed over: no disconnect."""
    return not entries(log, "disconnect")
