"""The oracle itself checked against the known properties of the real captures (realdata/SOURCES.md)."""

from __future__ import annotations

from tests.helpers import realdata_file
from tests.oracle import capture_messages, replay_capture


def test_spot_capture_chains_and_matches_book_ticker() -> None:
    paths = [realdata_file("spot_ethusdt_20240808.gz"), realdata_file("spot_ethusdt_20240809.gz")]
    applied, matched = _check_against_book_ticker(paths, "spot")
    assert applied > 6000  # both days, every diff after the snapshot
    assert matched > 500


def test_perp_capture_chains_and_matches_book_ticker() -> None:
    paths = [realdata_file("usdm_ethusdt_20240808.gz")]
    applied, matched = _check_against_book_ticker(paths, "perp")
    assert applied > 6000
    assert matched > 100


def test_perp_first_applied_diff_ends_at_the_snapshot_id() -> None:
    """Binance's perp rule keeps a diff whose u equals lastUpdateId, which the spot rule would drop."""
    path = realdata_file("usdm_ethusdt_20240808.gz")
    snapshot_id = next(m["lastUpdateId"] for _, m in capture_messages([path]) if "lastUpdateId" in m)
    _, first, _ = next(replay_capture([path], "perp"))
    assert first["u"] == snapshot_id


def _check_against_book_ticker(paths, market: str) -> tuple[int, int]:
    """Rebuild the book and compare its top with every bookTicker carrying the same update id."""
    tickers: dict[int, tuple[float, float, float, float]] = {}
    for _, msg in capture_messages(paths):
        if "u" in msg and "B" in msg and "A" in msg:
            tickers[msg["u"]] = (float(msg["b"]), float(msg["B"]), float(msg["a"]), float(msg["A"]))
    applied = matched = 0
    for _, msg, book in replay_capture(paths, market):
        applied += 1
        ticker = tickers.get(msg["u"])
        if ticker is not None:
            best_bid, best_ask = max(book.bids), min(book.asks)
            assert (best_bid, book.bids[best_bid], best_ask, book.asks[best_ask]) == ticker, msg["u"]
            matched += 1
    return applied, matched
