"""Recording the real ETHUSDT captures played back by the venue: the book rebuilt from the recording equals
Binance's own rules applied to the raw capture (tests/oracle.py) at every message both have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nova.venue import CaptureSource
from recorder.recorder import Recorder, RecorderConfig
from tests.helpers import ETH, realdata_file, wait_until_recorded
from tests.oracle import read_table, rebuild_from_rows, replay_capture


async def test_recording_of_real_captures_matches_the_oracle(make_venue: Any, tmp_path: Path) -> None:
    spot = [realdata_file("spot_ethusdt_20240808.gz"), realdata_file("spot_ethusdt_20240809.gz")]
    perp = [realdata_file("usdm_ethusdt_20240808.gz")]
    source = CaptureSource(spot, perp, speed=None)
    venue = await make_venue(source)
    # Only the book is compared here; recording every bookTicker and trade too would triple the run time.
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(tmp_path), endpoint=venue.url, flush_s=0.2,
                                  tables=("book",), snapshot_limit={"spot": 1000, "perp": 1000}))
    await rec.start()
    try:
        await wait_until_recorded(rec, venue, source)
    finally:
        await rec.stop()
    for market, files in (("spot", spot), ("perp", perp)):
        compared, applied = compare_in_lockstep(replay_capture(files, market),
                                                rebuild_from_rows(read_table(tmp_path, "book", market)))
        assert applied > 6000 and compared >= applied - 1, (market, compared, applied)
        events = read_table(tmp_path, "events", market)
        assert not [e for e in events if e["kind"] == "gap"]


def compare_in_lockstep(oracle: Any, recorded: Any) -> tuple[int, int]:
    """Walk both rebuilds in update-id order and compare the whole book wherever their last ids meet;
    returns (messages compared, messages the oracle applied)."""
    compared = 0
    seen = 0

    def advance() -> Any:
        nonlocal seen
        item = next(oracle, None)
        seen += item is not None
        return item

    want = advance()
    for first_row, bids, asks in recorded:
        if first_row["stale"] or first_row["snapshot"]:
            continue
        while want is not None and want[1]["u"] < first_row["last_id"]:
            want = advance()
        if want is not None and want[1]["u"] == first_row["last_id"]:
            book = want[2]
            assert bids == book.bids and asks == book.asks, first_row["last_id"]
            compared += 1
    while want is not None:
        want = advance()
    return compared, seen
