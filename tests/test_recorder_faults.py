"""The recorder under fire, in-process: dropped messages, closed and aborted connections, stalls, Binance's
serverShutdown notice and failing or slow REST snapshots, all injected by the venue while the real ccxt.pro
client records over real sockets.

Every test ends the same way (``finish``): the venue is paused, the recorder catches up with the venue's
truth on both markets and stops cleanly, and then
- the book rebuilt from the ``book`` rows alone equals the venue's book (so the final resync worked);
- every message the venue wrote to the recorder's sockets is on disk (the dropped ones were never sent, so
  nothing is missing outside the ledgered gaps);
- the ``events`` ledger holds the rows that tell a researcher what happened, in order.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import ccxt

from nova.venue import Venue
from recorder.handover import QUIET_S
from recorder.recorder import Recorder
from tests.helpers import (
    MARKETS,
    STREAMS,
    await_until,
    book_states,
    entries,
    flowing,
    ledger,
    messages_on_disk,
    rebuilt_equals_truth,
    record_until,
    recording,
    streamed_messages,
)
from tests.oracle import read_table

# ---- running a recording ---------------------------------------------------------------------------------------------

async def finish(venue: Venue, rec: Recorder, root: Path) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """Pause the venue, let the recorder reach its truth, stop, and check the recording against the venue.

    Returns the recorder's summary and the ledger of each market.
    """
    await record_until(venue, rec, min_messages=1)
    summary = await rec.stop()
    sent = venue.status()["markets"]
    for market in MARKETS:
        rebuilt_equals_truth(root, market, venue.truth(market, "ETHUSDT"))
        received = streamed_messages(summary, market)
        assert received == sent[market]["messages_sent"], (market, "every frame the venue wrote was received")
        assert messages_on_disk(root, market) == received, (market, "every message received is on disk")
    return summary, {m: ledger(root, m) for m in MARKETS}


def assert_reconnected(events: list[dict], market: str, after: int, streams: tuple[str, ...] | None = None) -> None:
    """Each stream ledgered a disconnect after ``after`` and a reconnect after that; the book was resubscribed
    and resynced from a fresh snapshot."""
    for stream in streams or STREAMS[market]:
        down = entries(events, "disconnect", stream, after)
        assert down, (market, stream, "no disconnect ledgered")
        assert entries(events, "reconnect", stream, down[0]["ts_recv"]), (market, stream, "no reconnect")
    down = entries(events, "disconnect", "book", after)[0]["ts_recv"]
    assert entries(events, "subscribed", "book", down), (market, "book not resubscribed")
    assert entries(events, "resync", "book", down), (market, "book not resynced")


def assert_gap_matches_rows(root: Path, market: str, gap: dict) -> None:
    """The ledgered ids are those of the recorded messages around the hole: the message that broke the chain
    is stored (stale), and the one before it ends where the chain expected to continue."""
    assert gap["expected_id"] is not None and gap["received_id"] is not None, gap
    assert gap["received_id"] > gap["expected_id"], ("ids were skipped: the dropped message's", gap)
    firsts: dict[int, dict] = {}
    for row in read_table(root, "book", market):
        firsts.setdefault(row["msg"], row)
    messages = list(firsts.values())
    key = "first_id" if market == "spot" else "prev_id"
    at = next(i for i, m in enumerate(messages) if not m["snapshot"] and m[key] == gap["received_id"])
    assert messages[at]["stale"], ("the message after a hole is kept but flagged stale", messages[at])
    before = messages[at - 1]
    assert before["last_id"] == gap["expected_id"] - (1 if market == "spot" else 0), (before, gap)


# ---- the tests -----------------------------------------------------------------------------------------------------

async def test_dropped_messages_are_ledgered_gaps_resynced_also_through_failing_slow_snapshots(
        make_venue: Any, tmp_path: Path) -> None:
    async with recording(make_venue, tmp_path) as (venue, rec):
        t_plain = time.time_ns()
        for market in MARKETS:
            venue.drop_next(market, "ETHUSDT")
        await await_until(lambda: all(s.stats["book"].gaps == 1 for s in book_states(rec).values()),
                         lambda: {m: s.stats["book"].gaps for m, s in book_states(rec).items()})
        await flowing(rec, time.time_ns())  # resynced: the next faults must not meet the first resync
        # The second gap's resync meets a slow, then failing spot snapshot and a rate-limited perp one.
        t_faulty = time.time_ns()
        venue.snapshot_fault("spot", delay=1.0, fail=2)
        venue.snapshot_fault("perp", fail=1, status=429)
        for market in MARKETS:
            venue.drop_next(market, "ETHUSDT")
        await await_until(lambda: all(s.stats["book"].gaps == 2 for s in book_states(rec).values()),
                         lambda: {m: s.stats["book"].gaps for m, s in book_states(rec).items()})
        await flowing(rec, time.time_ns())
        summary, events = await finish(venue, rec, tmp_path)

    status = venue.status()["markets"]
    for market, failures in (("spot", 2), ("perp", 1)):
        log = events[market]
        assert status[market]["dropped"] == 2
        gaps = entries(log, "gap", "book")
        assert len(gaps) == 2 == summary[f"{market}/ETH-USDT/book"]["gaps"], gaps
        assert gaps[0]["ts_recv"] >= t_plain and gaps[1]["ts_recv"] >= t_faulty
        for gap in gaps:
            assert_gap_matches_rows(tmp_path, market, gap)
        first_resync = entries(log, "resync", "book", gaps[0]["ts_recv"])[0]
        assert first_resync["ts_recv"] < gaps[1]["ts_recv"], "each gap has its own resync"
        # a failure is ledgered as failed, a 429 as throttled (then retried after the venue's Retry-After)
        failed = [e for e in entries(log, "error", "book", gaps[1]["ts_recv"])
                  if ("snapshot request failed" if market == "spot" else "snapshot request throttled (429)")
                  in e["detail"]]
        assert len(failed) == failures == status[market]["snapshots_failed"], failed
        resync = entries(log, "resync", "book", failed[-1]["ts_recv"])
        assert resync and resync[0]["received_id"] is not None, "resynced once a snapshot came through"
        assert not entries(log, "disconnect"), "a gap is not a disconnect"


async def test_closed_and_aborted_connections_reconnect_and_resync(make_venue: Any, tmp_path: Path) -> None:
    phases = []
    async with recording(make_venue, tmp_path) as (venue, rec):
        for abort_spot in (False, True):  # spot closed cleanly while perp is aborted, then the other way round
            phases.append(time.time_ns())
            await venue.close_connections("spot", abort=abort_spot)
            await venue.close_connections("perp", abort=not abort_spot)
            await flowing(rec, time.time_ns())  # messages from now on can only come over new connections
        summary, events = await finish(venue, rec, tmp_path)

    for market in MARKETS:
        for start, end in zip(phases, [*phases[1:], time.time_ns()], strict=True):
            phase = [e for e in events[market] if e["ts_recv"] < end]
            assert_reconnected(phase, market, start)
        closes = entries(events[market], "disconnect", "book")
        assert {"1001" in e["detail"] for e in closes} == {True, False}, "one clean close (1001), one abort"
        assert summary[f"{market}/ETH-USDT/book"]["reconnects"] == 2
        assert not entries(events[market], "gap"), "a reconnect resyncs; it is not ledgered as a gap"


async def test_stalled_streams_are_detected_and_restarted(make_venue: Any, tmp_path: Path) -> None:
    async with recording(make_venue, tmp_path, stall_s=1.5) as (venue, rec):
        t_stall = time.time_ns()
        for market in MARKETS:
            venue.stall(market, 4)
        await asyncio.sleep(4)
        await flowing(rec, time.time_ns())
        _, events = await finish(venue, rec, tmp_path)

    for market in MARKETS:
        for stream in ("book", "bbo"):  # the busy streams; trades and funding may or may not be restarted
            stalled = [e for e in entries(events[market], "error", stream, t_stall) if "stalled" in e["detail"]]
            assert stalled, (market, stream, "no stall ledgered")
            assert entries(events[market], "disconnect", stream, stalled[0]["ts_recv"]), (market, stream)
        assert_reconnected(events[market], market, t_stall, ("book", "bbo"))


async def test_server_shutdown_without_an_overlap_falls_back_to_a_resync_through_a_slow_failing_snapshot(
        make_venue: Any, tmp_path: Path) -> None:
    """On the notice the recorder starts a handover (make-before-break, tests/test_recorder_handover.py); here the
    feed is paused across the notice and the cut, which comes sooner than a still feed counts as quiet
    (recorder.handover.QUIET_S), so the new connection can show no overlap before the old one goes. The handover
    is abandoned and the cut is what any cut is: ledgered disconnects, a reconnect, and a resync, through a
    snapshot that is slow and fails once."""
    async with recording(make_venue, tmp_path) as (venue, rec):
        t_notice = time.time_ns()
        venue.snapshot_fault("spot", delay=0.5, fail=1)
        venue.snapshot_fault("perp", fail=1)
        venue.pause()
        await asyncio.gather(*(venue.server_shutdown(m, grace_s=QUIET_S / 4) for m in MARKETS))
        await asyncio.sleep(QUIET_S / 2)  # the cut is seen and the handover abandoned before the feed resumes
        venue.resume()
        await flowing(rec, time.time_ns())
        _, events = await finish(venue, rec, tmp_path)

    for market in MARKETS:
        abandoned = [e for e in entries(events[market], "error", "book", t_notice) if "abandoned" in e["detail"]]
        assert abandoned and "serverShutdown" in abandoned[0]["detail"], (market, "the handover said why it stopped")
        assert not entries(events[market], "handover", None, t_notice)
        assert_reconnected(events[market], market, t_notice)
        failed = [e for e in entries(events[market], "error", "book", t_notice)
                  if "snapshot request failed" in e["detail"]]
        assert len(failed) == 1, failed
        assert entries(events[market], "resync", "book", failed[0]["ts_recv"])


async def test_a_still_feed_across_server_shutdown_is_handed_over_not_cut(make_venue: Any, tmp_path: Path) -> None:
    """Nothing moves between the notice and the cut (a halted market, or a still one): no message can overlap, and
    none needs to. Once the new connection has acknowledged every book subscription and the old one has been
    silent for QUIET_S, the recorder switches: a handover, no disconnect, no resync; what comes after the pause
    comes on the new connection and chains on."""
    async with recording(make_venue, tmp_path) as (venue, rec):
        t_notice = time.time_ns()
        venue.pause()
        await asyncio.gather(*(venue.server_shutdown(m, grace_s=QUIET_S * 4) for m in MARKETS))
        await await_until(lambda: all(s.stats["book"].handovers for s in book_states(rec).values()),
                          lambda: {m: s.stats["book"].handovers for m, s in book_states(rec).items()})
        await asyncio.sleep(QUIET_S * 4)  # past the old connections' cut
        venue.resume()
        await flowing(rec, time.time_ns())
        _, events = await finish(venue, rec, tmp_path)
    for market in MARKETS:
        assert entries(events[market], "handover", "book", t_notice), market
        for kind in ("disconnect", "gap", "resync"):
            assert not entries(events[market], kind, None, t_notice), (market, kind)


async def test_a_server_shutdown_that_reaches_a_handovers_new_connection_too_gets_a_second_handover(
        make_venue: Any, tmp_path: Path) -> None:
    """A notice that arrives while a handover is under way reaches its new connection as well, which will be cut
    with the old one: once the new connection is the market's it is handed over in turn, before that cut. (The
    feed is still, so each switch waits recorder.handover.QUIET_S: the second notice lands inside the first.)"""
    async with recording(make_venue, tmp_path) as (venue, rec):
        t_first = time.time_ns()
        venue.pause()
        first = asyncio.ensure_future(venue.server_shutdown("perp", grace_s=QUIET_S * 8))
        await await_until(lambda: rec._handing_over.get("perp") is not None, lambda: "no handover started")
        await asyncio.sleep(QUIET_S / 3)  # the new connection is open and subscribing
        second = asyncio.ensure_future(venue.server_shutdown("perp", grace_s=QUIET_S * 4))
        await await_until(lambda: book_states(rec)["perp"].stats["book"].handovers >= 2,
                          lambda: book_states(rec)["perp"].stats["book"].handovers, timeout=15)
        await asyncio.gather(first, second)  # both cuts have happened
        venue.resume()
        await flowing(rec, time.time_ns())
        _, events = await finish(venue, rec, tmp_path)
    perp = events["perp"]
    assert len(entries(perp, "handover", "book", t_first)) == 2, [e["detail"] for e in perp if e["kind"] != "start"]
    for kind in ("disconnect", "gap", "resync", "error"):
        assert not entries(perp, kind, None, t_first), (kind, entries(perp, kind, None, t_first))


async def test_recorder_hooks_are_called_on_the_pinned_ccxt(make_venue: Any, tmp_path: Path) -> None:
    """Fails if a ccxt upgrade renames the internals the recorder hooks (see recorder/exchange.py)."""
    async with recording(make_venue, tmp_path) as (_, rec):
        calls = {m: dict(rec.sessions[m].exchange.nova_hook_calls) for m in MARKETS}
        messages = {m: {t: s.stats[t].messages for t in STREAMS[m]} for m, s in book_states(rec).items()}
    pinned = f"ccxt {ccxt.__version__}"
    assert calls["spot"].get("publicGetDepth", 0) >= 1, (pinned, calls)
    assert calls["perp"].get("fapiPublicGetDepth", 0) >= 1, (pinned, calls)
    for market in MARKETS:
        assert calls[market].get("handle_order_book_subscription", 0) >= 1, (pinned, calls)
        assert all(n > 0 for n in messages[market].values()), (pinned, messages)
