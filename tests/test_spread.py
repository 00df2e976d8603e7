"""nova.core.spread against a plain-Python computation of DESIGN §4 written here, on hand-picked and generated books."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from nova.core.book import BID, book_apply, new_books
from nova.core.spread import (
    N_VALUES,
    PERP,
    READING_COLUMNS,
    READING_SCHEMA,
    S_BBO_ID,
    S_DEPTH_ID,
    S_LAST_NS,
    S_VALID,
    SPOT,
    VALUE_COLUMNS,
    Reading,
    SpreadLogic,
    SpreadParams,
    compute_reading,
    new_market_state,
    readings_table,
    same_top,
)

T0 = 1_750_000_000_000_000_000
FLAGS = ("size_filled", "stale", "valid", "opportunity")


@dataclass
class Leg:
    """One market as the oracle sees it: a depth book, the latest bookTicker, ids, time and validity."""

    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    depth_id: int | None = None  # None: no snapshot yet
    bbo: tuple[float, float, float, float] | None = None  # bid, bid amount, ask, ask amount
    bbo_id: int | None = None
    t_ns: int | None = None  # receive time of the latest update; None exactly when there was none
    gap: bool = False  # a gap after the snapshot: invalid until the next one

    def __post_init__(self) -> None:
        if self.depth_id is None:  # no snapshot, no depth book
            self.bids, self.asks = {}, {}
            if self.bbo is None:  # no update at all, so no time either
                self.t_ns = None


def expected(spot: Leg, perp: Leg, funding: float, p: SpreadParams) -> dict[str, float | bool]:
    """DESIGN §4 by hand: freshest source per market, then the formulas, then the flags."""
    out: dict[str, float | bool] = {}
    for name, leg in (("spot", spot), ("perp", perp)):
        use_bbo = leg.bbo is not None and leg.bbo_id is not None and leg.bbo_id > (leg.depth_id or -1)
        if use_bbo:
            assert leg.bbo is not None
            out[f"{name}_bid"], out[f"{name}_bid_amount"], out[f"{name}_ask"], out[f"{name}_ask_amount"] = leg.bbo
        else:
            bid = max(leg.bids) if leg.bids else math.nan
            ask = min(leg.asks) if leg.asks else math.nan
            out[f"{name}_bid"], out[f"{name}_bid_amount"] = bid, leg.bids.get(bid, math.nan)
            out[f"{name}_ask"], out[f"{name}_ask_amount"] = ask, leg.asks.get(ask, math.nan)
    sb, sa, pb, pa_ = out["spot_bid"], out["spot_ask"], out["perp_bid"], out["perp_ask"]
    fees = p.fee_spot_bps + p.fee_perp_bps
    out["basis_bps"] = (((pb + pa_) / 2) / ((sb + sa) / 2) - 1) * 1e4
    out["open_bps"] = (pb / sa - 1) * 1e4
    out["close_bps"] = (pa_ / sb - 1) * 1e4
    out["net_open_bps"] = out["open_bps"] - fees
    out["net_close_bps"] = out["close_bps"] + fees
    out |= expected_size(spot, perp, p)
    out["funding_rate"] = funding
    out["funding_annual_pct"] = funding * 3 * 365 * 100
    if spot.t_ns is None or perp.t_ns is None:
        out["skew_ms"], out["stale"] = math.nan, True
    else:
        out["skew_ms"] = abs(spot.t_ns - perp.t_ns) / 1e6
        out["stale"] = out["skew_ms"] > p.stale_ms
    books_valid = all(leg.depth_id is not None and not leg.gap for leg in (spot, perp))
    out["valid"] = books_valid and all(not math.isnan(x) for x in (sb, sa, pb, pa_)) and sb < sa and pb < pa_
    out["opportunity"] = out["valid"] and not out["stale"] and out["net_open_bps"] > p.threshold_bps
    return out


def walk(levels: dict[float, float], best_first: list[float], size: float) -> tuple[float, float]:
    notional = filled = 0.0
    for price in best_first:
        take = min(size - filled, levels[price])
        notional, filled = notional + take * price, filled + take
        if filled >= size * (1 - 1e-12):
            return notional / filled, size
    return (notional / filled, filled) if filled else (math.nan, 0.0)


def expected_size(spot: Leg, perp: Leg, p: SpreadParams) -> dict[str, float | bool]:
    q = p.size
    names = ("spot_ask_vwap", "perp_bid_vwap", "spot_bid_vwap", "perp_ask_vwap", "open_bps_size", "close_bps_size",
             "net_open_bps_size", "net_close_bps_size")
    if q <= 0:
        return {**dict.fromkeys(names, math.nan), "size_filled": False}
    sa, sa_q = walk(spot.asks, sorted(spot.asks), q)
    pb, pb_q = walk(perp.bids, sorted(perp.bids, reverse=True), q)
    sb, sb_q = walk(spot.bids, sorted(spot.bids, reverse=True), q)
    pa_, pa_q = walk(perp.asks, sorted(perp.asks), q)
    open_ok, close_ok = sa_q >= q and pb_q >= q, sb_q >= q and pa_q >= q
    fees = p.fee_spot_bps + p.fee_perp_bps
    open_bps = (pb / sa - 1) * 1e4 if open_ok else math.nan
    close_bps = (pa_ / sb - 1) * 1e4 if close_ok else math.nan
    return {"spot_ask_vwap": sa, "perp_bid_vwap": pb, "spot_bid_vwap": sb, "perp_ask_vwap": pa_,
            "open_bps_size": open_bps, "close_bps_size": close_bps, "net_open_bps_size": open_bps - fees,
            "net_close_bps_size": close_bps + fees, "size_filled": open_ok and close_ok}


def feed(logic: SpreadLogic, market: str, leg: Leg) -> None:
    """Drive the live-side API the way the recorder does: snapshot, bookTicker, gap."""
    if leg.depth_id is not None:
        sides = ["bid"] * len(leg.bids) + ["ask"] * len(leg.asks)
        prices = [*leg.bids, *leg.asks]
        amounts = [*leg.bids.values(), *leg.asks.values()]
        logic.on_depth(market, sides, prices, amounts, last_id=leg.depth_id, ts_ns=leg.t_ns, snapshot=True)
    if leg.bbo is not None and leg.bbo_id is not None:
        bid, bid_amount, ask, ask_amount = leg.bbo
        logic.on_bbo(market, update_id=leg.bbo_id, bid_price=bid, bid_amount=bid_amount, ask_price=ask,
                     ask_amount=ask_amount, ts_ns=leg.t_ns)
    if leg.gap:
        logic.invalidate(market)


def reading_of(spot: Leg, perp: Leg, funding: float = math.nan, params: SpreadParams | None = None) -> Reading:
    logic = SpreadLogic(params or SpreadParams())
    feed(logic, "spot", spot)
    feed(logic, "perp", perp)
    logic.on_funding(funding)
    return logic.reading(T0)


def assert_reading(got: Reading, want: dict[str, float | bool]) -> None:
    for name in VALUE_COLUMNS:
        g, w = getattr(got, name), want[name]
        if name in FLAGS:
            assert g is bool(w), name
        elif math.isnan(w):
            assert math.isnan(g), (name, g)
        else:
            assert math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), (name, g, w)


def leg(bid: float, ask: float, *, depth_id: int = 10, t_ns: int = T0, amount: float = 1.0, **kw: object) -> Leg:
    return Leg(bids={bid: amount, bid - 1: amount}, asks={ask: amount, ask + 1: amount}, depth_id=depth_id,
               t_ns=t_ns, **kw)  # type: ignore[arg-type]


# --- hand-picked --------------------------------------------------------------------------------------------


def test_formulas_on_a_hand_computed_example() -> None:
    got = reading_of(leg(100.0, 100.1), leg(100.5, 100.6), funding=0.0001)
    assert got.basis_bps == pytest.approx((100.55 / 100.05 - 1) * 1e4)  # 49.975
    assert got.open_bps == pytest.approx(39.96004)  # sell perp 100.5, buy spot 100.1
    assert got.close_bps == pytest.approx(60.0)  # buy perp 100.6, sell spot 100.0
    assert got.net_open_bps == pytest.approx(39.96004 - 15)  # default fees 10 + 5 bps
    assert got.net_close_bps == pytest.approx(60.0 + 15)  # cost to exit, fees added
    assert got.funding_annual_pct == pytest.approx(10.95)  # 0.01% per 8 h
    assert got.valid and not got.stale and got.opportunity and got.skew_ms == 0.0
    assert got.ts == T0


def test_bookticker_wins_when_its_id_is_newer() -> None:
    spot = leg(100.0, 100.1, depth_id=10, bbo=(100.02, 3.0, 100.05, 4.0), bbo_id=11)
    got = reading_of(spot, leg(100.5, 100.6))
    assert (got.spot_bid, got.spot_bid_amount, got.spot_ask, got.spot_ask_amount) == (100.02, 3.0, 100.05, 4.0)
    assert (got.perp_bid, got.perp_ask) == (100.5, 100.6)  # no bookTicker on perp: depth


def test_depth_wins_when_its_id_is_newer_and_on_a_tie() -> None:
    for bbo_id in (9, 10):
        perp = leg(100.5, 100.6, depth_id=10, bbo=(100.55, 1.0, 100.58, 1.0), bbo_id=bbo_id)
        got = reading_of(leg(100.0, 100.1), perp)
        assert (got.perp_bid, got.perp_ask) == (100.5, 100.6), bbo_id


def test_bookticker_alone_gives_prices_but_not_a_valid_reading() -> None:
    """Before the first snapshot the depth book is invalid, whatever the bookTicker says."""
    spot = Leg(bbo=(100.0, 1.0, 100.1, 1.0), bbo_id=5, t_ns=T0)
    got = reading_of(spot, leg(100.5, 100.6))
    assert got.spot_bid == 100.0 and got.open_bps == pytest.approx(39.96004)
    assert not got.valid and not got.opportunity


def test_a_gap_invalidates_until_the_next_snapshot() -> None:
    logic = SpreadLogic()
    feed(logic, "spot", leg(100.0, 100.1))
    feed(logic, "perp", leg(100.5, 100.6))
    assert logic.reading(T0).valid
    logic.invalidate("perp")
    assert not logic.reading(T0).valid
    logic.on_depth("perp", ["bid", "ask"], [100.4, 100.7], [1.0, 1.0], last_id=20, ts_ns=T0, snapshot=True)
    got = logic.reading(T0)
    assert got.valid and (got.perp_bid, got.perp_ask) == (100.4, 100.7)  # the snapshot replaced the book


def test_crossed_or_one_sided_books_are_not_valid() -> None:
    crossed = Leg(bids={101.0: 1.0}, asks={100.0: 1.0}, depth_id=1, t_ns=T0)
    assert not reading_of(crossed, leg(100.5, 100.6)).valid
    crossed_bbo = leg(100.5, 100.6, bbo=(100.7, 1.0, 100.6, 1.0), bbo_id=11)
    assert not reading_of(leg(100.0, 100.1), crossed_bbo).valid
    no_asks = Leg(bids={100.0: 1.0}, depth_id=1, t_ns=T0)
    got = reading_of(no_asks, leg(100.5, 100.6))
    assert not got.valid and math.isnan(got.open_bps) and math.isnan(got.basis_bps)


def test_stale_legs_are_flagged_and_never_an_opportunity() -> None:
    fresh = reading_of(leg(100.0, 100.1, t_ns=T0), leg(100.5, 100.6, t_ns=T0 + 999_000_000))
    assert fresh.skew_ms == pytest.approx(999.0) and not fresh.stale and fresh.opportunity
    stale = reading_of(leg(100.0, 100.1, t_ns=T0 + 1_500_000_000), leg(100.5, 100.6, t_ns=T0))
    assert stale.skew_ms == pytest.approx(1500.0) and stale.stale and stale.valid and not stale.opportunity
    relaxed = reading_of(leg(100.0, 100.1, t_ns=T0 + 1_500_000_000), leg(100.5, 100.6, t_ns=T0),
                         params=SpreadParams(stale_ms=2000))
    assert not relaxed.stale and relaxed.opportunity


def test_opportunity_needs_net_open_above_the_threshold() -> None:
    spot, perp = leg(100.0, 100.1), leg(100.5, 100.6)  # net open = 39.96 - 15 = 24.96 bps
    assert reading_of(spot, perp, params=SpreadParams(threshold_bps=24.9)).opportunity
    assert not reading_of(spot, perp, params=SpreadParams(threshold_bps=25.0)).opportunity
    assert not reading_of(spot, perp, params=SpreadParams(fee_spot_bps=30, fee_perp_bps=10)).opportunity


def test_size_on_a_thin_book() -> None:
    spot = Leg(bids={100.0: 5.0}, asks={100.1: 0.4, 100.2: 0.4, 100.3: 1.0}, depth_id=1, t_ns=T0)
    perp = Leg(bids={100.5: 0.3, 100.4: 0.2}, asks={100.6: 10.0}, depth_id=1, t_ns=T0)
    got = reading_of(spot, perp, params=SpreadParams(size=1.0))
    assert got.spot_ask_vwap == pytest.approx((100.1 * 0.4 + 100.2 * 0.4 + 100.3 * 0.2) / 1.0)
    assert got.perp_bid_vwap == pytest.approx((100.5 * 0.3 + 100.4 * 0.2) / 0.5)  # only 0.5 there
    assert not got.size_filled and math.isnan(got.open_bps_size) and math.isnan(got.net_open_bps_size)
    assert got.close_bps_size == pytest.approx((100.6 / 100.0 - 1) * 1e4)  # the exit legs had the size
    assert got.net_close_bps_size == pytest.approx(got.close_bps_size + 15)
    deep = reading_of(spot, perp, params=SpreadParams(size=0.5))
    assert deep.size_filled and deep.open_bps_size == pytest.approx((deep.perp_bid_vwap / deep.spot_ask_vwap - 1) * 1e4)


def test_size_zero_leaves_the_size_columns_empty() -> None:
    got = reading_of(leg(100.0, 100.1), leg(100.5, 100.6))
    assert not got.size_filled
    assert all(math.isnan(getattr(got, c)) for c in ("spot_ask_vwap", "open_bps_size", "net_close_bps_size"))


def test_a_leg_that_never_updated_is_stale() -> None:
    got = reading_of(leg(100.0, 100.1), Leg())
    assert got.stale and math.isnan(got.skew_ms) and not got.valid and math.isnan(got.perp_bid)


# --- generated books ------------------------------------------------------------------------------------------

GRID = [99.0, 99.5, 99.75, 100.0, 100.25, 100.5, 100.75, 101.0, 101.5]
sizes_st = st.sampled_from([0.1, 0.25, 1.0, 3.0])
book_st = st.dictionaries(st.sampled_from(GRID), sizes_st, max_size=6)


@st.composite
def legs(draw: st.DrawFn) -> Leg:
    bbo = None
    if draw(st.booleans()):
        bid, ask = sorted(draw(st.lists(st.sampled_from(GRID), min_size=2, max_size=2)))
        bbo = (bid, draw(sizes_st), ask, draw(sizes_st))
    return Leg(bids=draw(book_st), asks=draw(book_st), depth_id=draw(st.sampled_from([None, 5, 10])), bbo=bbo,
               bbo_id=draw(st.sampled_from([5, 10, 11])) if bbo else None,
               t_ns=draw(st.sampled_from([T0, T0 + 400_000_000, T0 + 1_000_000_000, T0 + 1_000_000_001])),
               gap=draw(st.booleans()))


params_st = st.builds(SpreadParams, fee_spot_bps=st.sampled_from([0.0, 10.0, 7.5]),
                      fee_perp_bps=st.sampled_from([0.0, 5.0, 2.0]), size=st.sampled_from([0.0, 0.3, 1.0, 5.0]),
                      threshold_bps=st.sampled_from([-200.0, 0.0, 10.0]), stale_ms=st.sampled_from([0.0, 1000.0]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spot=legs(), perp=legs(), funding=st.sampled_from([math.nan, 0.0001, -0.00025]), params=params_st)
def test_generated_states_match_the_plain_computation(spot: Leg, perp: Leg, funding: float,
                                                      params: SpreadParams) -> None:
    assert_reading(reading_of(spot, perp, funding, params), expected(spot, perp, funding, params))


# --- one code path, two callers ----------------------------------------------------------------------------


@njit  # not cached: a cached caller would keep a stale copy of compute_reading after nova/core/spread.py changes
def replay_like(px: np.ndarray, qty: np.ndarray, n: np.ndarray, quotes: np.ndarray, stamps: np.ndarray,
                funding: float, params: np.ndarray, out: np.ndarray) -> None:
    """What replay's compiled loop does: spot and perp as books 0 and 1 of one state, a reading per event."""
    compute_reading(px, qty, n, SPOT, px, qty, n, PERP, quotes, stamps, funding, params, out, 1)


def test_the_kernel_from_compiled_code_equals_the_live_reading() -> None:
    spot = leg(100.0, 100.1, depth_id=10, bbo=(100.02, 3.0, 100.05, 4.0), bbo_id=11)
    perp = leg(100.5, 100.6, t_ns=T0 + 5_000_000)
    params = SpreadParams(size=1.5)
    live = reading_of(spot, perp, 0.0001, params)

    px, qty, n = new_books(2, 4)
    quotes, stamps = new_market_state()
    for k, one in ((SPOT, spot), (PERP, perp)):
        sides = np.array([BID] * len(one.bids) + [1] * len(one.asks), dtype=np.int8)
        assert book_apply(px, qty, n, k, sides, np.array([*one.bids, *one.asks]),
                          np.array([*one.bids.values(), *one.asks.values()]), 0) == len(sides)
        stamps[k, S_DEPTH_ID], stamps[k, S_LAST_NS], stamps[k, S_VALID] = one.depth_id, one.t_ns, 1
    quotes[SPOT] = spot.bbo
    stamps[SPOT, S_BBO_ID] = spot.bbo_id
    out = np.full((2, N_VALUES), -7.0)
    replay_like(px, qty, n, quotes, stamps, 0.0001, params.vector(), out)
    assert _same_with_nans(Reading.from_row(T0, out[1]), live)
    assert (out[0] == -7.0).all()  # only the requested row is written


def _same_with_nans(a: Reading, b: Reading) -> bool:
    for f in fields(Reading):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if not (x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))):
            return False
    return True


def test_same_top_compares_only_the_effective_tops() -> None:
    out = np.zeros((2, N_VALUES))
    out[:, VALUE_COLUMNS.index("spot_ask")] = math.nan
    out[1, VALUE_COLUMNS.index("basis_bps")] = 3.0
    assert same_top(out, 0, 1)
    out[1, VALUE_COLUMNS.index("perp_ask_amount")] = 2.0
    assert not same_top(out, 0, 1)


# --- output shape ---------------------------------------------------------------------------------------------


def test_reading_fields_table_and_schema_agree() -> None:
    assert tuple(f.name for f in fields(Reading)) == READING_COLUMNS == tuple(READING_SCHEMA.names)
    assert READING_SCHEMA.field("ts").type == pa.timestamp("ns", tz="UTC")
    assert all(READING_SCHEMA.field(name).type == pa.bool_() for name in FLAGS)
    logic = SpreadLogic()
    feed(logic, "spot", leg(100.0, 100.1))
    feed(logic, "perp", leg(100.5, 100.6))
    row = logic.reading(T0)
    values = np.array([[float(getattr(row, c)) for c in VALUE_COLUMNS]] * 2)
    table = readings_table([T0, T0 + 1], values)
    assert table.schema == READING_SCHEMA and table.num_rows == 2
    assert table.column("valid").to_pylist() == [True, True]
    assert table.column("ts").cast(pa.int64()).to_pylist() == [T0, T0 + 1]  # nanoseconds kept exactly
    with pytest.raises(ValueError, match="rows"):
        readings_table([T0], values)


def test_params_vector_and_validation() -> None:
    assert SpreadParams().vector().tolist() == [10.0, 5.0, 0.0, 0.0, 1000.0]
    assert SpreadParams(1, 2, 3, 4, 5).vector().tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    for bad in ({"size": -1.0}, {"stale_ms": -1.0}, {"fee_spot_bps": math.nan}, {"threshold_bps": math.inf}):
        with pytest.raises(ValueError):
            SpreadParams(**bad)
