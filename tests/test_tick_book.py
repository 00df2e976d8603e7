"""nova.core.tick_book, the price-indexed book replay uses when the tick is known: exact prices, a window that
moves and grows, and the fall back to the sorted book (in the book itself and in a replay, which says so)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nova.core.book import L2Book
from nova.core.tick_book import MAX_SLOTS, TickBook, new_tick_books, tick_grid
from replay import Replay
from tests.helpers import AFTER, BEFORE, MIDNIGHT, write_midnight_dataset
from tests.test_replay_oracle import write_instruments


def both(tick: float, capacity: int = 4) -> tuple[L2Book, TickBook]:
    return L2Book(), TickBook(tick, capacity)


def feed(books: tuple[L2Book, TickBook], rows: list[tuple[str, float, float]]) -> None:
    for book in books:
        book.apply([s for s, _, _ in rows], [p for _, p, _ in rows], [a for _, _, a in rows])


def assert_same(books: tuple[L2Book, TickBook]) -> None:
    sorted_book, tick_book = books
    assert tick_book.to_dict() == sorted_book.to_dict()
    assert len(tick_book) == len(sorted_book)
    for side in ("bid", "ask"):
        for size in (0.5, 3.0, 1e9):
            a, b = sorted_book.vwap(side, size), tick_book.vwap(side, size)
            assert a == b or (math.isnan(a[0]) and math.isnan(b[0]) and a[1] == b[1]), (side, size, a, b)


@pytest.mark.parametrize(("tick", "grid"), [(0.01, (1, 100)), (0.5, (5, 10)), (10.0, (10, 1)), (1e-8, (1, 10**8)),
                                            (0.0025, (25, 10**4)), (1.0, (1, 1))])
def test_a_recorded_tick_is_an_integer_unit_of_a_power_of_ten(tick: float, grid: tuple[int, int]) -> None:
    assert tick_grid(tick) == grid


@pytest.mark.parametrize("tick", [0.0, -0.01, math.nan, math.inf, 1 / 3])
def test_a_tick_that_is_no_short_decimal_is_refused(tick: float) -> None:
    assert tick_grid(tick) is None
    with pytest.raises(ValueError, match="tick size"):
        TickBook(tick)


def test_prices_come_back_as_the_exact_floats_the_exchange_text_parses_to() -> None:
    """Each level's price is recomputed from its slot; it must be the recorded float bit for bit."""
    books = both(0.01)
    texts = [f"{2500 + i * 0.01:.2f}" for i in range(-300, 300, 7)] + ["0.07", "0.29", "1234.56", "4999.99"]
    feed(books, [("bid" if i % 2 else "ask", float(t), 1.0 + i) for i, t in enumerate(texts)])
    prices = [p for side in ("bids", "asks") for p, _ in books[1].to_dict()[side]]
    assert sorted(prices) == sorted(float(t) for t in texts)
    assert books[1].fallback is None
    assert_same(books)


def test_the_window_recentres_and_grows_as_the_market_walks() -> None:
    books = both(0.01, capacity=2)
    mid = 2000.0
    for step in range(400):  # the market walks 40 % up, in messages of levels on both sides of the touch
        mid = round(mid * 1.001, 2)
        rows = [("bid", round(mid - 0.01 * i, 2), 1.0 + i) for i in range(1, 6)]
        rows += [("ask", round(mid + 0.01 * i, 2), 2.0 + i) for i in range(1, 6)]
        rows += [("bid", round(mid * 0.999 - 0.01 * i, 2), 0.0) for i in range(20)]  # levels left behind go
        rows += [("ask", round(mid / 0.999 + 0.01 * i, 2), 0.0) for i in range(20)]
        feed(books, rows)
        if step % 50 == 0:
            assert_same(books)
    assert_same(books)
    assert books[1].fallback is None and 2 < books[1].capacity < MAX_SLOTS


def test_deleting_the_best_finds_the_next_level_however_far() -> None:
    books = both(0.01)
    feed(books, [("bid", 100.0, 1.0), ("bid", 1.5, 2.0), ("ask", 100.01, 1.0), ("ask", 900.0, 3.0)])
    feed(books, [("bid", 100.0, 0.0), ("ask", 100.01, 0.0)])
    assert books[1].best_bid() == (1.5, 2.0) and books[1].best_ask() == (900.0, 3.0)
    assert_same(books)
    feed(books, [("bid", 1.5, 0.0), ("ask", 900.0, 0.0), ("bid", 7.77, 0.0)])  # empty; removing absent levels
    assert len(books[1]) == 0 and math.isnan(books[1].best_bid()[0])
    feed(books, [("ask", 55555.55, 1.0)])  # an empty book re-centres anywhere
    assert_same(books)


def test_a_price_off_the_grid_moves_the_book_to_the_sorted_book_with_every_level() -> None:
    books = both(0.01)
    feed(books, [("bid", 100.0 - 0.01 * i, 1.0 + i) for i in range(50)] + [("ask", 100.5, 2.0)])
    feed(books, [("bid", 99.995, 0.0)])  # removing a price off the grid: a no-op, no fall back
    assert books[1].fallback is None
    feed(books, [("ask", 100.25, 1.0), ("bid", 99.995, 4.0), ("ask", 100.5, 0.0)])  # this one is off the grid
    assert books[1].fallback == "a price off the tick grid of 0.01"
    assert_same(books)
    feed(books, [("bid", 99.999, 1.0), ("bid", 100.0, 0.0)])  # and it goes on as the sorted book
    assert_same(books)


def test_a_book_wider_than_the_window_may_grow_falls_back() -> None:
    books = both(0.01)
    feed(books, [("bid", 1.0, 1.0), ("ask", 2.0, 1.0)])
    feed(books, [("ask", round(1.0 + MAX_SLOTS * 0.01, 2), 1.0)])
    assert books[1].fallback is not None and "wider" in books[1].fallback
    assert_same(books)


def test_snapshots_clear_and_every_book_of_a_state_keeps_its_own_window() -> None:
    book = TickBook(0.5, capacity=2)
    book.apply_message(np.array([0, 1], dtype=np.int8), np.array([10.0, 10.5]), np.array([1.0, 1.0]), True)
    book.apply_message(np.array([0, 1], dtype=np.int8), np.array([500.0, 700.5]), np.array([2.0, 3.0]), True)
    assert book.to_dict() == {"bids": [[500.0, 2.0]], "asks": [[700.5, 3.0]]}
    tq, _, tf = new_tick_books(2, [0.01, None])
    assert tq.shape == (2, 2, tq.shape[2]) and tf[1, 0] == 1.0


# ---- in a replay ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crafted midnight dataset as written: no instruments table (an older recording)."""
    root = tmp_path_factory.mktemp("bare")
    write_midnight_dataset(root)
    return root


def readings_and_notes(root: Path, **options: Any) -> tuple[Any, list[str]]:
    r = Replay(str(root), "ETH/USDT", BEFORE, until=AFTER, size=1.5, **options)
    table = r.readings_table()
    return table, [n for n in r.summary().notes if "sorted book" in n]


def test_without_instruments_replay_says_it_used_the_sorted_book(bare: Path) -> None:
    table, notes = readings_and_notes(bare)
    assert notes == ["sorted book instead of the price-indexed one for spot: no instruments row recorded; "
                     "perp: no instruments row recorded"]
    assert table.num_rows > 100


def test_a_tick_change_or_a_wrong_tick_falls_back_with_the_same_readings(tmp_path: Path) -> None:
    changed, wrong = tmp_path / "changed", tmp_path / "wrong"
    for root in (changed, wrong):
        write_midnight_dataset(root)
    write_instruments(changed, MIDNIGHT - 60 * 10**9, tick=0.01)
    write_instruments(changed, MIDNIGHT + 60 * 10**9, tick=0.1)  # the perp's tick changed within the range
    write_instruments(wrong, MIDNIGHT - 60 * 10**9, tick=0.1)  # the prices are on 0.01: off this grid
    want, _ = readings_and_notes(changed, book="sorted")
    got, notes = readings_and_notes(changed)
    assert got.equals(want)
    assert notes == ["sorted book instead of the price-indexed one for spot: the tick size changed (0.01 -> 0.1); "
                     "perp: the tick size changed (0.01 -> 0.1)"]
    got, notes = readings_and_notes(wrong)
    assert got.equals(want)
    assert len(notes) == 1 and notes[0].count("a price off the tick grid of 0.1") == 2, notes


def test_books_whose_window_must_grow_mid_replay_give_the_sorted_books_readings(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch
                                                                                 ) -> None:
    write_midnight_dataset(tmp_path)
    write_instruments(tmp_path, MIDNIGHT - 60 * 10**9)
    want, _ = readings_and_notes(tmp_path, book="sorted")
    import replay.kernel

    def tiny(k: int, ticks: list[float | None], width: int = 2) -> Any:
        return new_tick_books(k, ticks, 2)  # two slots: every snapshot must grow the window

    monkeypatch.setattr(replay.kernel, "new_tick_books", tiny)
    got, notes = readings_and_notes(tmp_path)
    assert notes == [] and got.equals(want)


def test_an_unknown_book_kind_is_one_sentence(bare: Path) -> None:
    with pytest.raises(ValueError, match="book must be one of auto, sorted"):
        Replay(str(bare), "ETH/USDT", BEFORE, book="heap")
