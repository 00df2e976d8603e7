"""The recorder end to end: real ccxt.pro against the venue over real sockets, the dataset checked by an
independent rebuild (tests/oracle.py) against the venue's truth and against the recorded bookTicker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nova.venue import SyntheticSource
from recorder.recorder import Recorder, RecorderConfig
from tests.helpers import ETH, rebuilt_equals_truth, record_until
from tests.oracle import read_table


def assert_tops_match_bbo(root: Path, market: str, tops: dict[int, tuple]) -> int:
    matched = 0
    for row in read_table(root, "bbo", market):
        top = tops.get(row["update_id"])
        if top is not None:
            assert top == (row["bid_price"], row["bid_amount"], row["ask_price"], row["ask_amount"])
            matched += 1
    return matched


@pytest.mark.parametrize("seed", [2, 17])
async def test_recorded_books_rebuild_to_the_venue_truth(make_venue: Any, tmp_path: Path, seed: int) -> None:
    venue = await make_venue(SyntheticSource([ETH], seed=seed))
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(tmp_path), endpoint=venue.url, flush_s=0.2))
    await rec.start()
    try:
        await record_until(venue, rec)
    finally:
        summary = await rec.stop()
    matched = 0
    for market in ("spot", "perp"):
        tops = rebuilt_equals_truth(tmp_path, market, venue.truth(market, "ETHUSDT"))
        matched += assert_tops_match_bbo(tmp_path, market, tops)
    assert matched > 0
    sent = venue.status()["markets"]
    streamed = ("bbo", "trades", "funding", "liquidations")  # with the book: what arrives over WebSockets
    for market in ("spot", "perp"):
        received = sum(v["messages"] for k, v in summary.items()
                       if k.startswith(market) and k.rsplit("/", 1)[1] in ("book", *streamed))
        assert received == sent[market]["messages_sent"], "every frame the venue sent was received"
        on_disk = len({r["msg"] for r in read_table(tmp_path, "book", market) if not r["snapshot"]})
        on_disk += sum(len(read_table(tmp_path, t, market)) for t in streamed)
        assert on_disk == received, "every message received is on disk"
