"""nova.core.book against a plain-Python dict book: the L2 book both the recorder's live view and replay use.

The property tests run on both kernels behind the one interface: the sorted book (``L2Book``) and the
price-indexed book replay uses when the tick is known (nova.core.tick_book's ``TickBook``), on a tick that puts
most test prices on the grid (0.01) and one that puts many off it (0.25, so that book falls back mid-sequence).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nova.core.book import (
    ASK,
    BID,
    NO_SIDE,
    L2Book,
    book_apply,
    book_best,
    book_clear,
    book_depth,
    book_levels,
    book_set,
    book_vwap,
    grow_books,
    new_books,
    side_codes,
)
from nova.core.tick_book import TickBook

# A small grid so that sequences revisit levels; 0.1 + 0.2 and 0.3 are different floats and must stay two levels.
PRICES = [0.1 + 0.2, 0.3, 99.5, 99.75, 100.0, 100.25, 100.5, 101.0, 2500.01, 2500.02, 1e-8, 65000.0]
AMOUNTS = [0.0, 0.0, 0.001, 0.5, 1.0, 2.0, 17.25]

rows_strategy = st.lists(st.tuples(st.sampled_from(["bid", "ask"]), st.sampled_from(PRICES),
                                   st.sampled_from(AMOUNTS)), max_size=60)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Book = L2Book | TickBook
KINDS = ("sorted", "tick 0.01", "tick 0.25")


def make_book(kind: str, capacity: int) -> Book:
    """A book of ``kind`` (KINDS) starting at ``capacity`` levels (sorted) or slots (price-indexed)."""
    if kind == "sorted":
        return L2Book(capacity)
    return TickBook(float(kind.split()[1]), capacity)


class DictBook:
    """The oracle: a dict per side, exactly the contract's rebuild rule (set price -> amount, remove at 0)."""

    def __init__(self) -> None:
        self.sides: dict[str, dict[float, float]] = {"bid": {}, "ask": {}}

    def apply(self, rows: list[tuple[str, float, float]]) -> None:
        for side, price, amount in rows:
            if amount > 0:
                self.sides[side][price] = amount
            else:
                self.sides[side].pop(price, None)

    def levels(self, side: str) -> list[list[float]]:
        book = self.sides[side]
        return [[p, book[p]] for p in sorted(book, reverse=side == "bid")]

    def best(self, side: str) -> tuple[float, float]:
        levels = self.levels(side)
        return (levels[0][0], levels[0][1]) if levels else (math.nan, math.nan)

    def vwap(self, side: str, size: float) -> tuple[float, float]:
        notional, filled = 0.0, 0.0
        for price, amount in self.levels(side):
            take = min(size - filled, amount)
            notional, filled = notional + take * price, filled + take
            if filled >= size * (1 - 1e-12):  # a shortfall of float rounding is not missing depth
                return notional / filled, size
        return (notional / filled, filled) if filled > 0 else (math.nan, 0.0)


def apply_rows(book: Book, rows: list[tuple[str, float, float]]) -> None:
    book.apply([s for s, _, _ in rows], [p for _, p, _ in rows], [a for _, _, a in rows])


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_matches(book: Book, oracle: DictBook) -> None:
    assert book.to_dict() == {"bids": oracle.levels("bid"), "asks": oracle.levels("ask")}
    assert len(book) == len(oracle.sides["bid"]) + len(oracle.sides["ask"])
    for name, got in (("bid", book.best_bid()), ("ask", book.best_ask())):
        want = oracle.best(name)
        assert same(got[0], want[0]) and same(got[1], want[1])


@pytest.mark.parametrize("kind", KINDS)
@FAST
@given(batches=st.lists(rows_strategy, max_size=8), capacity=st.integers(1, 4))
def test_any_sequence_matches_the_dict_oracle(kind: str, batches: list[list[tuple[str, float, float]]],
                                              capacity: int) -> None:
    book, oracle = make_book(kind, capacity), DictBook()
    for rows in batches:
        apply_rows(book, rows)
        oracle.apply(rows)
        assert_matches(book, oracle)
    for name in ("bid", "ask"):
        prices, amounts = book.levels(name, depth=3)
        assert np.column_stack([prices, amounts]).tolist() == oracle.levels(name)[:3]


# Deep books: hundreds of levels, messages in Binance's order (each side best first), so that the search from
# one level's slot to the next crosses the short linear scan (up to 32 slots) and the gallop beyond it.
DEEP_PRICES = st.integers(0, 600).map(lambda tick: round(2500.0 + tick * 0.01, 2))
deep_rows = st.lists(st.tuples(st.sampled_from(["bid", "ask"]), DEEP_PRICES, st.sampled_from(AMOUNTS)),
                     min_size=1, max_size=300)


def binance_order(rows: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """One message's levels as Binance sends them: bids from the highest price, then asks from the lowest
    (one change per price and side, the last one kept, as a message carries each level once)."""
    last = {(side, price): amount for side, price, amount in rows}
    bids = sorted(((s, p, a) for (s, p), a in last.items() if s == "bid"), key=lambda r: -r[1])
    asks = sorted(((s, p, a) for (s, p), a in last.items() if s == "ask"), key=lambda r: r[1])
    return bids + asks


@pytest.mark.parametrize("kind", KINDS[:2])  # every price is on the 0.01 grid: the price-indexed path throughout
@FAST
@given(messages=st.lists(deep_rows, min_size=1, max_size=12), capacity=st.sampled_from([1, 16, 1024]))
def test_deep_books_fed_in_binance_order_match_the_dict_oracle(kind: str,
                                                               messages: list[list[tuple[str, float, float]]],
                                                               capacity: int) -> None:
    book, oracle = make_book(kind, capacity), DictBook()
    for rows in messages:
        ordered = binance_order(rows)
        apply_rows(book, ordered)
        oracle.apply(ordered)
        assert_matches(book, oracle)


@pytest.mark.parametrize("kind", KINDS)
@FAST
@given(rows=rows_strategy, size=st.sampled_from([0.0, 0.0005, 0.5, 1.0, 2.5, 20.0, 100.0]))
def test_vwap_matches_a_plain_walk(kind: str, rows: list[tuple[str, float, float]], size: float) -> None:
    book, oracle = make_book(kind, 2), DictBook()
    apply_rows(book, rows)
    oracle.apply(rows)
    for side in ("bid", "ask"):
        avg, filled = book.vwap(side, size)
        want_avg, want_filled = oracle.vwap(side, size) if size > 0 else (math.nan, 0.0)
        assert math.isclose(filled, want_filled, rel_tol=1e-12)
        assert (math.isnan(avg) and math.isnan(want_avg)) or math.isclose(avg, want_avg, rel_tol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_vwap_walks_from_the_best_level_and_reports_a_thin_book(kind: str) -> None:
    book = make_book(kind, 64)
    apply_rows(book, [("ask", 101.0, 1.0), ("ask", 100.0, 1.0), ("ask", 102.0, 2.0), ("bid", 99.0, 0.5)])
    assert book.vwap("ask", 1.5) == pytest.approx(((100.0 * 1.0 + 101.0 * 0.5) / 1.5, 1.5))
    assert book.vwap("ask", 10.0) == pytest.approx(((100.0 + 101.0 + 2 * 102.0) / 4.0, 4.0))  # thin: filled 4
    assert book.vwap("bid", 0.25) == (99.0, 0.25)
    apply_rows(book, [("ask", 0.1, 0.1), ("ask", 0.2, 0.2)])  # 0.1 + 0.2 != 0.3 in floats; still "filled"
    assert book.vwap("ask", 0.3)[1] == 0.3


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_book_answers_with_nans(kind: str) -> None:
    book = make_book(kind, 64)
    assert all(math.isnan(x) for x in (*book.best_bid(), *book.best_ask()))
    avg, filled = book.vwap("bid", 1.0)
    assert math.isnan(avg) and filled == 0.0
    assert len(book) == 0 and book.to_dict() == {"bids": [], "asks": []}
    assert [len(a) for a in book.levels("ask")] == [0, 0]
    apply_rows(book, [("bid", 100.0, 1.0), ("bid", 100.0, 0.0)])
    assert math.isnan(book.best_bid()[0]) and len(book) == 0


def test_capacity_doubles_from_one_level() -> None:
    book, oracle = L2Book(capacity=1), DictBook()
    rows = [("bid" if i % 3 else "ask", 1000.0 + (i * 37 % 101) * 0.25, 1.0 + i) for i in range(300)]
    apply_rows(book, rows)
    oracle.apply(rows)
    assert_matches(book, oracle)
    assert book.capacity >= max(len(oracle.sides["bid"]), len(oracle.sides["ask"]))
    assert book.capacity & (book.capacity - 1) == 0  # 1, 2, 4, ...: only ever doubled


@pytest.mark.parametrize("kind", KINDS)
def test_clear_empties_and_the_book_refills(kind: str) -> None:
    book = make_book(kind, 64)
    apply_rows(book, [("bid", 1.0, 1.0), ("ask", 2.0, 1.0)])
    book.clear()
    assert len(book) == 0 and math.isnan(book.best_ask()[0])
    apply_rows(book, [("ask", 3.0, 1.0)])
    assert book.to_dict() == {"bids": [], "asks": [[3.0, 1.0]]}


def test_deletions_below_the_top_leave_holes_that_readers_skip() -> None:
    """Deleting inside the book keeps the slot (no shift); every reader must still see only live levels."""
    px, qty, n = new_books(1, 8)
    for price in (1.0, 2.0, 3.0, 4.0, 5.0):
        assert book_set(px, qty, n, 0, BID, price, price)
    assert book_set(px, qty, n, 0, BID, 2.0, 0.0)
    assert n[0, BID] == 5 and book_depth(qty, n, 0, BID) == 4  # the slot of 2.0 is a hole
    out_px, out_qty = np.empty(8), np.empty(8)
    written = book_levels(px, qty, n, 0, BID, out_px, out_qty)
    assert out_px[:written].tolist() == [5.0, 4.0, 3.0, 1.0]
    assert book_vwap(px, qty, n, 0, BID, 13.0) == pytest.approx(((25 + 16 + 9 + 1.0) / 13.0, 13.0))
    assert book_set(px, qty, n, 0, BID, 1.5, 7.0)  # its sorted place is the hole: no shift, no new slot
    assert n[0, BID] == 5 and book_depth(qty, n, 0, BID) == 5
    assert book_set(px, qty, n, 0, BID, 3.5, 0.5)  # no hole above: the better levels shift up past the top
    written = book_levels(px, qty, n, 0, BID, out_px, out_qty)
    assert out_px[:written].tolist() == [5.0, 4.0, 3.5, 3.0, 1.5, 1.0]
    assert book_set(px, qty, n, 0, BID, 3.0, 0.0)  # a hole right under 3.5
    for price in (5.0, 4.0, 3.5):  # deleting the top drops it and any holes under it
        assert book_set(px, qty, n, 0, BID, price, 0.0)
    assert book_best(px, qty, n, 0, BID) == (1.5, 7.0) and n[0, BID] == 2


def test_a_full_side_is_compacted_before_it_is_reported_full() -> None:
    px, qty, n = new_books(1, 3)
    for price in (1.0, 2.0, 3.0):
        assert book_set(px, qty, n, 0, ASK, price, 1.0)
    assert not book_set(px, qty, n, 0, ASK, 0.5, 1.0)  # full: a new level does not fit, nothing changes
    assert book_best(px, qty, n, 0, ASK) == (1.0, 1.0) and book_depth(qty, n, 0, ASK) == 3
    assert book_set(px, qty, n, 0, ASK, 2.0, 5.0)  # an existing level still updates when full
    assert book_set(px, qty, n, 0, ASK, 9.0, 0.0)  # removing an absent level is a no-op
    assert book_set(px, qty, n, 0, ASK, 2.0, 0.0)  # a hole, and now a new level fits without growing
    assert book_set(px, qty, n, 0, ASK, 0.5, 4.0)
    out_px, out_qty = np.empty(3), np.empty(3)
    assert book_levels(px, qty, n, 0, ASK, out_px, out_qty) == 3
    assert out_px.tolist() == [0.5, 1.0, 3.0] and out_qty.tolist() == [4.0, 1.0, 1.0]


def test_book_apply_reports_the_row_that_did_not_fit_and_resumes_there() -> None:
    px, qty, n = new_books(2, 2)
    sides = np.array([BID, BID, BID, ASK, ASK, ASK, BID], dtype=np.int8)
    prices = np.array([1.0, 2.0, 3.0, 5.0, 4.0, 6.0, 2.0])
    amounts = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    done = book_apply(px, qty, n, 1, sides, prices, amounts, 0)
    assert done == 2  # the third bid needs a third slot
    while done < len(sides):
        px, qty = grow_books(px, qty, 2 * px.shape[2])
        done = book_apply(px, qty, n, 1, sides, prices, amounts, done)
    book = {s: np.empty(8) for s in (BID, ASK)}
    sizes = np.empty(8)
    assert book_levels(px, qty, n, 1, BID, book[BID], sizes) == 2 and book[BID][:2].tolist() == [3.0, 1.0]
    assert book_levels(px, qty, n, 1, ASK, book[ASK], sizes) == 3 and book[ASK][:3].tolist() == [4.0, 5.0, 6.0]
    assert n[0].tolist() == [0, 0]  # book 0 untouched


def test_books_in_one_state_are_independent() -> None:
    px, qty, n = new_books(3, 4)
    book_set(px, qty, n, 0, BID, 10.0, 1.0)
    book_set(px, qty, n, 1, BID, 20.0, 2.0)
    book_set(px, qty, n, 2, ASK, 30.0, 3.0)
    book_clear(n, 1)
    assert book_best(px, qty, n, 0, BID) == (10.0, 1.0)
    assert all(math.isnan(x) for x in book_best(px, qty, n, 1, BID))
    assert book_best(px, qty, n, 2, ASK) == (30.0, 3.0)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_without_a_side_nan_prices_and_non_positive_amounts(kind: str) -> None:
    """The contract's empty-message row has no side; a masked-out (stale) row is coded NO_SIDE by the caller."""
    book = make_book(kind, 64)
    book.apply(np.array([BID, NO_SIDE, BID, ASK], dtype=np.int8), [1.0, 2.0, math.nan, 3.0], [1.0, 1.0, 1.0, 1.0])
    assert book.to_dict() == {"bids": [[1.0, 1.0]], "asks": [[3.0, 1.0]]}
    book.apply(["bid", "ask"], [1.0, 3.0], [-1.0, math.nan])  # not a positive size: the level goes
    assert len(book) == 0


def test_side_codes_from_every_column_shape_readers_hold() -> None:
    want = [BID, ASK, NO_SIDE, ASK]
    values = ["bid", "ask", None, "ask"]
    dictionary = pa.array(values).dictionary_encode()
    assert side_codes(dictionary).tolist() == want
    assert side_codes(pa.array(values)).tolist() == want
    assert side_codes(pa.chunked_array([pa.array(values[:2]), pa.array(values[2:])])).tolist() == want
    assert side_codes(np.array(values, dtype=object)).tolist() == want
    assert side_codes(values).tolist() == want
    assert side_codes(np.array([0, 1, -1], dtype=np.int64)).dtype == np.int8
    assert side_codes(pa.chunked_array([], type=pa.string())).tolist() == []
    with pytest.raises(ValueError, match="bid"):
        side_codes(["bid", "buy"])
    with pytest.raises(ValueError, match="bid"):
        side_codes(pa.array(["sell"]).dictionary_encode())
    with pytest.raises(ValueError):
        side_codes(np.array([0, 2]))


@pytest.mark.parametrize("kind", KINDS)
def test_mismatched_lengths_are_refused(kind: str) -> None:
    with pytest.raises(ValueError, match="length"):
        make_book(kind, 64).apply(["bid"], [1.0, 2.0], [1.0])
