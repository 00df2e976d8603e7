"""Replay's readings against a plain-Python oracle written here, on recordings made the way users make them.

The oracle shares nothing with replay or nova.core.spread: it reads the tables with tests/oracle.py's reader,
merges the streams by (time key, stream priority, position) with a plain sort, rebuilds both books by the
contract's reader rule in dicts, keeps the freshest bookTicker (larger update id wins, a tie goes to the
depth book), applies the ledger (a gap, disconnect or stop on a book stream makes that book invalid until its
next snapshot), and computes DESIGN §4 with the formulas written out. Replay must give exactly its readings.

Recordings:
- the synthetic venue recorded in-process by the real recorder, with injected gaps and a disconnect, and a
  second recording run on the same day (module fixture ``synthetic``);
- the real ETHUSDT captures played back by the venue (book and bookTicker);
- a crafted dataset spanning UTC midnight, written with the recorder's own writer.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from nova.core.errors import NovaError
from nova.core.spread import READING_COLUMNS, SpreadParams
from nova.venue import CaptureSource, SyntheticSource, Venue
from recorder.recorder import Recorder, RecorderConfig
from recorder.status import take_readings
from replay import Replay
from tests.helpers import (
    AFTER,
    BEFORE,
    ETH,
    MIDNIGHT,
    realdata_file,
    wait_until_recorded,
    write_midnight_dataset,
)
from tests.oracle import read_table

# the merge priority at equal times (replay.kernel.SEGMENTS spells out the same order)
PRIORITY = {("book", "spot"): 0, ("book", "perp"): 1, ("bbo", "spot"): 2, ("bbo", "perp"): 3,
            ("funding", "perp"): 4, ("trades", "spot"): 5, ("trades", "perp"): 6, ("events", "spot"): 7,
            ("events", "perp"): 8}
TOPS = ("spot_bid", "spot_bid_amount", "spot_ask", "spot_ask_amount", "perp_bid", "perp_bid_amount", "perp_ask",
        "perp_ask_amount")
SIZE = 3.0
BOOKS = ("auto", "sorted")  # replay.engine.BOOKS: the price-indexed book where ticks are known, and the sorted book


@pytest.fixture(params=BOOKS)
def book(request: pytest.FixtureRequest) -> str:
    """Every oracle test runs with both book kinds: their readings must be the oracle's, so each other's."""
    return str(request.param)


def assert_book_kind(r: Replay, book: str) -> None:
    """With ``book='auto'`` on a recording that has its instruments, both books really were price-indexed (the
    summary's note names any market that fell back to the sorted book)."""
    if book == "auto":
        notes = [n for n in r.summary().notes if "sorted book" in n]
        assert notes == [], notes


# ---- the oracle -----------------------------------------------------------------------------------------------------

@dataclass
class Leg:
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    synced: bool = False  # a snapshot has been applied (rows before the first one are skipped)
    valid: bool = False
    depth_id: int = -1
    quote: tuple[float, float, float, float] = (math.nan,) * 4
    bbo_id: int = -1
    last_ns: int | None = None
    best: dict[str, float | None] = field(default_factory=lambda: {"bid": None, "ask": None})  # None: unknown

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self.best = {"bid": None, "ask": None}

    def set(self, side: str, price: float, amount: float) -> None:
        """price -> amount, 0 removes; the cached best price is kept right (recomputed when it is removed)."""
        levels = self.bids if side == "bid" else self.asks
        better = max if side == "bid" else min
        if amount > 0:
            levels[price] = amount
            if self.best[side] is not None:
                self.best[side] = better(self.best[side], price)
        elif levels.pop(price, None) is not None and price == self.best[side]:
            self.best[side] = None

    def top(self, side: str) -> tuple[float, float]:
        if self.bbo_id > self.depth_id:
            return (self.quote[0], self.quote[1]) if side == "bid" else (self.quote[2], self.quote[3])
        levels = self.bids if side == "bid" else self.asks
        if not levels:
            return math.nan, math.nan
        if self.best[side] is None:
            self.best[side] = max(levels) if side == "bid" else min(levels)
        best = self.best[side]
        return best, levels[best]  # type: ignore[index]

    def vwap(self, side: str, size: float) -> tuple[float, float]:
        """Average price and amount filled taking ``size`` from the depth book, best level first."""
        levels = sorted(self.bids.items(), reverse=True) if side == "bid" else sorted(self.asks.items())
        notional = filled = 0.0
        for price, amount in levels:
            take = min(size - filled, amount)
            notional += take * price
            filled += take
            if filled >= size - size * 1e-12:
                return notional / filled, size
        return (notional / filled, filled) if filled > 0 else (math.nan, 0.0)


def bps(ratio: float) -> float:
    return (ratio - 1.0) * 1e4


def oracle_reading(ts: int, spot: Leg, perp: Leg, funding: float, p: SpreadParams) -> dict[str, Any]:
    """DESIGN §4 written out."""
    sb, sbq = spot.top("bid")
    sa, saq = spot.top("ask")
    pb, pbq = perp.top("bid")
    pa_, paq = perp.top("ask")
    fees = p.fee_spot_bps + p.fee_perp_bps
    r: dict[str, Any] = dict(ts=ts, spot_bid=sb, spot_bid_amount=sbq, spot_ask=sa, spot_ask_amount=saq, perp_bid=pb,
                             perp_bid_amount=pbq, perp_ask=pa_, perp_ask_amount=paq)
    r["basis_bps"] = bps(((pb + pa_) / 2) / ((sb + sa) / 2))
    r["open_bps"] = bps(pb / sa)
    r["close_bps"] = bps(pa_ / sb)
    r["net_open_bps"] = r["open_bps"] - fees
    r["net_close_bps"] = r["close_bps"] + fees
    if p.size > 0:
        (sav, saf), (pbv, pbf) = spot.vwap("ask", p.size), perp.vwap("bid", p.size)
        (sbv, sbf), (pav, paf) = spot.vwap("bid", p.size), perp.vwap("ask", p.size)
        open_ok, close_ok = saf >= p.size and pbf >= p.size, sbf >= p.size and paf >= p.size
        r.update(spot_ask_vwap=sav, perp_bid_vwap=pbv, spot_bid_vwap=sbv, perp_ask_vwap=pav,
                 open_bps_size=bps(pbv / sav) if open_ok else math.nan,
                 close_bps_size=bps(pav / sbv) if close_ok else math.nan, size_filled=open_ok and close_ok)
        r["net_open_bps_size"] = r["open_bps_size"] - fees
        r["net_close_bps_size"] = r["close_bps_size"] + fees
    else:
        r.update({c: math.nan for c in ("spot_ask_vwap", "perp_bid_vwap", "spot_bid_vwap", "perp_ask_vwap",
                                        "open_bps_size", "close_bps_size", "net_open_bps_size",
                                        "net_close_bps_size")}, size_filled=False)
    r["funding_rate"] = funding
    r["funding_annual_pct"] = funding * 3 * 365 * 100
    if spot.last_ns is None or perp.last_ns is None:
        r["skew_ms"], r["stale"] = math.nan, True
    else:
        r["skew_ms"] = abs(spot.last_ns - perp.last_ns) / 1e6
        r["stale"] = r["skew_ms"] > p.stale_ms
    r["valid"] = spot.valid and perp.valid and sb < sa and pb < pa_
    r["opportunity"] = r["valid"] and not r["stale"] and r["net_open_bps"] > p.threshold_bps
    return r


def merged_entries(root: Path, clock: str = "recv") -> list[tuple[int, int, int, str, str, Any]]:
    """(key, priority, position, table, market, payload) of every entry, sorted: the merge order."""
    out = []
    for (table, market), priority in PRIORITY.items():
        rows = read_table(root, table, market)
        items: list[Any] = []
        if table == "book":
            by_msg: dict[int, list[dict]] = {}
            for row in rows:
                by_msg.setdefault(row["msg"], []).append(row)
            items = list(by_msg.values())
        else:
            items = rows
        running = None
        for position, item in enumerate(items):
            first = item[0] if table == "book" else item
            t = first["ts_recv"]
            if clock == "event" and first.get("ts_event") is not None:
                t = first["ts_event"]
            running = t if running is None else max(running, t)
            out.append((running, priority, position, table, market, item))
    out.sort(key=lambda e: e[:3])
    return out


def oracle(root: Path, params: SpreadParams, start: int, end: int, clock: str = "recv") -> list[dict[str, Any]]:
    legs = {"spot": Leg(), "perp": Leg()}
    funding = math.nan
    readings: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    next_date = -(2**63)  # the first entry of the range and of each UTC date always yields a reading
    for key, _, _, table, market, item in merged_entries(root, clock):
        if key >= end:
            break
        leg = legs.get(market, Leg())
        changed = False
        if table == "book":
            usable = [r for r in item if not r["stale"]]
            if usable and (item[0]["snapshot"] or leg.synced):
                if item[0]["snapshot"]:
                    leg.clear()
                    leg.synced = leg.valid = True
                for r in usable:
                    if r["side"] is not None:
                        leg.set(r["side"], r["price"], r["amount"])
                leg.depth_id, leg.last_ns, changed = item[0]["last_id"], key, True
        elif table == "bbo":
            leg.quote = tuple(math.nan if item[c] is None else item[c]
                              for c in ("bid_price", "bid_amount", "ask_price", "ask_amount"))  # type: ignore[assignment]
            leg.bbo_id, leg.last_ns, changed = item["update_id"], key, True
        elif table == "funding":
            funding = item["funding_rate"]
        elif table == "events":
            # who was watching: a book is not valid after a gap, disconnect, stop or a new run's start until its
            # next snapshot; a held bookTicker or funding rate is dropped after a disconnect, error, stop or start
            # of its own stream
            stream, kind = item["stream"], item["kind"]
            if stream == "book" and kind in ("gap", "disconnect", "stop", "start") and leg.valid:
                leg.valid, changed = False, True
            if stream == "bbo" and kind in ("disconnect", "error", "stop", "start") and leg.bbo_id != -1:
                leg.quote, leg.bbo_id, changed = (math.nan,) * 4, -1, True  # type: ignore[assignment]
            if stream == "funding" and kind in ("disconnect", "error", "stop", "start"):
                funding = math.nan
        if key < start:
            continue
        first_of_date = key >= next_date
        if first_of_date:
            next_date = (key // 86_400_000_000_000 + 1) * 86_400_000_000_000
        if last is not None and not changed and not first_of_date:
            continue
        r = oracle_reading(key, legs["spot"], legs["perp"], funding, params)
        if last is not None and not first_of_date and same(r, last, TOPS) and r["valid"] == last["valid"] and (
                params.size == 0 or same(r, last, ("spot_ask_vwap", "perp_bid_vwap", "spot_bid_vwap",
                                                   "perp_ask_vwap", "open_bps_size"))):
            continue
        readings.append(r)
        last = r
    return readings


def same(a: dict, b: dict, columns: tuple[str, ...]) -> bool:
    return all(a[c] == b[c] or (isinstance(a[c], float) and math.isnan(a[c]) and math.isnan(b[c])) for c in columns)


def close(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)


def assert_same_readings(got: pa.Table, want: list[dict[str, Any]]) -> None:
    got_rows = plain(got)
    assert len(got_rows) == len(want), (len(got_rows), len(want))
    for i, (g, w) in enumerate(zip(got_rows, want, strict=True)):
        bad = [c for c in READING_COLUMNS if not close(g[c], w[c])]
        assert not bad, (i, {c: (g[c], w[c]) for c in bad})


def plain(table: pa.Table) -> list[dict[str, Any]]:
    """Readings as dicts; a missing value (NULL in the table) as NaN, as the oracle computes it."""
    rows = table.set_column(0, "ts", table.column("ts").cast(pa.int64())).to_pylist()
    return [{k: math.nan if v is None else v for k, v in row.items()} for row in rows]


# ---- recordings -----------------------------------------------------------------------------------------------------

async def _caught_up(venue: Venue, rec: Recorder, timeout: float = 30.0) -> None:
    """Pause the venue and wait until the recorder holds everything it sent, books live, flushed."""
    venue.pause()
    deadline = time.monotonic() + timeout
    for market, session in rec.sessions.items():
        state = session.states["ETHUSDT"]
        while state.seq.last_id != venue.truth(market, "ETHUSDT")["lastUpdateId"] or not state.seq.live:
            assert time.monotonic() < deadline, "the recorder did not catch up with the venue"
            await asyncio.sleep(0.05)
    await asyncio.sleep(3 * rec.config.flush_s)  # the last rows reach the live books at the next flush


async def _record_synthetic(root: Path) -> dict[str, Any]:
    """Two recording runs on one venue: the first with gaps on both markets and a perp disconnect; the live
    spread reading is taken at the end of the first run, when the venue is paused and everything is in."""
    params = SpreadParams(stale_ms=1e9)  # skew differs between the live view and replay by design (see below)
    async with Venue(SyntheticSource([ETH], seed=11)) as venue:
        rec = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2, spread=params))
        await rec.start()
        try:
            await asyncio.sleep(1.5)
            venue.drop_next("spot", "ETHUSDT")
            await asyncio.sleep(1.0)
            await venue.close_connections("perp")
            await asyncio.sleep(1.5)
            venue.drop_next("perp", "ETHUSDT")
            await asyncio.sleep(1.5)
            await _caught_up(venue, rec)
            live = take_readings(rec, time.time_ns())[ETH]
        finally:
            await rec.stop()
        venue.resume()
        await asyncio.sleep(0.5)  # the recorder is down: nothing watches the books
        second = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2))
        await second.run(duration_s=2.0)
    return {"live": live, "params": params}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("synthetic")
    recorded = asyncio.run(_record_synthetic(root))
    recorded["root"] = root
    recorded["date"] = sorted(p.name[5:] for p in (root / "book").rglob("date=*"))[0]
    return recorded


def _day_bounds(date: str) -> tuple[int, int]:
    from replay.plan import date_ns

    return date_ns(date), date_ns(date) + 86_400 * 10**9


# ---- the tests ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0.0, SIZE])
def test_synthetic_recording_with_gaps_disconnect_and_two_runs_equals_the_oracle(synthetic: dict, size: float,
                                                                                 book: str) -> None:
    root, date = synthetic["root"], synthetic["date"]
    events = read_table(root, "events", "spot") + read_table(root, "events", "perp")
    kinds = [(e["stream"], e["kind"]) for e in events]
    assert ("book", "gap") in kinds and ("book", "disconnect") in kinds and kinds.count(("book", "start")) == 4
    params = SpreadParams(size=size, threshold_bps=-20.0)
    r = Replay(str(root), "ETH/USDT", date, size=size, threshold=-20.0, book=book)
    got = r.readings_table()
    assert_book_kind(r, book)
    want = oracle(root, params, *_day_bounds(date))
    assert len(want) > 500
    assert_same_readings(got, want)
    s = r.summary()
    assert s.gaps == 2 and s.disconnects >= 1 and s.readings == len(want)
    assert not want[-1]["valid"]  # the recording ends with the recorder's 'stop'
    assert_summary_matches(s, want, last_entry=max(e[0] for e in merged_entries(root)))


def top_changes(want: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The readings the summary's statistics count: those that change a top of book or the validity (with a
    size, the loop also keeps readings where only a size-aware price moved; they must not weigh twice)."""
    out: list[dict[str, Any]] = []
    for w in want:
        if not out or not same(w, out[-1], TOPS) or w["valid"] != out[-1]["valid"]:
            out.append(w)
    return out


def assert_summary_matches(s: Any, all_readings: list[dict[str, Any]], last_entry: int) -> None:
    """The summary's statistics, recomputed from the oracle's readings: a state lasts until the next reading."""
    want = top_changes(all_readings)
    ends = [w["ts"] for w in want[1:]] + [last_entry]
    invalid = sum(end - w["ts"] for w, end in zip(want, ends, strict=True) if not w["valid"]) / 1e9
    opportunity = sum(end - w["ts"] for w, end in zip(want, ends, strict=True) if w["opportunity"]) / 1e9
    runs = sum(1 for i, w in enumerate(want) if w["opportunity"] and (i == 0 or not want[i - 1]["opportunity"]))
    valid = [w for w in want if w["valid"]]
    lasted = [end - w["ts"] for w, end in zip(want, ends, strict=True)]
    valid_ns = sum(d for w, d in zip(want, lasted, strict=True) if w["valid"])
    assert s.valid_s == pytest.approx(valid_ns / 1e9) and s.valid_s + s.invalid_s == pytest.approx(s.span_s)
    assert s.basis_time_mean_bps == pytest.approx(
        sum(w["basis_bps"] * d for w, d in zip(want, lasted, strict=True) if w["valid"]) / valid_ns)
    assert s.invalid_s == pytest.approx(invalid) and 0 < s.invalid_s < s.span_s
    assert s.opportunity_s == pytest.approx(opportunity) and s.opportunities == runs
    assert s.valid_readings == len(valid)
    assert s.basis_mean_bps == pytest.approx(sum(w["basis_bps"] for w in valid) / len(valid))
    assert s.best_open_bps == max(w["open_bps"] for w in valid)
    basis = sorted(w["basis_bps"] for w in valid)
    assert s.basis_p50_bps == pytest.approx(basis[math.ceil(len(basis) / 2) - 1], abs=0.01)


def test_a_window_inside_the_day_starts_from_warmed_up_books(synthetic: dict, book: str) -> None:
    root, date = synthetic["root"], synthetic["date"]
    entries = merged_entries(root)
    first, last = entries[0][0], entries[-1][0]
    start, end = first + (last - first) // 3, first + 2 * (last - first) // 3
    iso = lambda ns: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"  # noqa: E731
    r = Replay(str(root), "ETH/USDT", date, start=iso(start), end=iso(end), book=book)
    got = r.readings_table()
    want = oracle(root, SpreadParams(), start, end)
    assert_same_readings(got, want)
    assert want[0]["ts"] >= start and want[-1]["ts"] < end


def test_exchange_clock_orders_by_event_time(synthetic: dict, book: str) -> None:
    root, date = synthetic["root"], synthetic["date"]
    r = Replay(str(root), "ETH/USDT", date, clock="event", book=book)
    assert_same_readings(r.readings_table(), oracle(root, SpreadParams(), *_day_bounds(date), clock="event"))


def test_readings_frame_says_when_pandas_is_missing(synthetic: dict) -> None:
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(NovaError, match="pandas"):
            Replay(str(synthetic["root"]), "ETH/USDT", synthetic["date"]).readings_frame()
    else:
        frame = Replay(str(synthetic["root"]), "ETH/USDT", synthetic["date"]).readings_frame()
        assert list(frame.columns) == list(READING_COLUMNS)


def test_live_recorder_spread_equals_replay_for_the_same_final_state(synthetic: dict) -> None:
    """One code path: the recorder's status reading at the end of the first run (venue paused, every row in)
    equals replay's last reading before that run's 'stop'. Skew (and so 'stale') is left out of the
    comparison: the live view stamps a leg when it is fed (per flush), replay when the update arrived."""
    root, date, live = synthetic["root"], synthetic["date"], synthetic["live"]
    stops = [e["ts_recv"] for e in read_table(root, "events", "spot") if e["kind"] == "stop"]
    r = Replay(str(root), "ETH/USDT", date, stale_ms=synthetic["params"].stale_ms)
    before_stop = [row for row in plain(r.readings_table()) if row["ts"] < min(stops)]
    last = before_stop[-1]
    assert live.valid and last["valid"]
    for column in READING_COLUMNS:
        if column not in ("ts", "skew_ms"):
            assert close(getattr(live, column), last[column]), (column, getattr(live, column), last[column])


@pytest.mark.slow  # records the real captures through the venue
@pytest.mark.realdata
async def test_real_captures_recorded_through_the_venue_equal_the_oracle(make_venue: Any, tmp_path: Path
                                                                        ) -> None:
    spot = [realdata_file("spot_ethusdt_20240808.gz")]
    perp = [realdata_file("usdm_ethusdt_20240808.gz")]
    source = CaptureSource(spot, perp, speed=None)
    venue = await make_venue(source)
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(tmp_path), endpoint=venue.url, flush_s=0.2,
                                  tables=("book", "bbo"), snapshot_limit={"spot": 1000, "perp": 1000}))
    await rec.start()
    try:
        await wait_until_recorded(rec, venue, source)
    finally:
        await rec.stop()
    date = sorted(p.name[5:] for p in (tmp_path / "book").rglob("date=*"))[0]
    want = oracle(tmp_path, SpreadParams(), *_day_bounds(date))
    assert sum(w["valid"] for w in want) > 5_000
    for book in BOOKS:  # one recording (the slow part) for both book kinds
        r = Replay(str(tmp_path), "ETH/USDT", date, book=book)
        got = await asyncio.to_thread(r.readings_table)
        assert_same_readings(got, want)
        assert_book_kind(r, book)


# ---- a crafted dataset across UTC midnight ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def midnight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("midnight")
    write_midnight_dataset(root)
    write_instruments(root, MIDNIGHT - 60 * 10**9)
    return root


def write_instruments(root: Path, ts: int, tick: float = 0.01) -> None:
    """What a recorder writes at its start from exchangeInfo (the crafted dataset's prices are on this tick)."""
    from recorder.rows import InstrumentRow, table_batch
    from recorder.writer import DatasetWriter

    writer = DatasetWriter(str(root), rotate_s=900)
    for market in ("spot", "perp"):
        row = InstrumentRow(ts_recv=ts, tick_size=tick, step_size=0.0001, min_notional=5.0, status="TRADING",
                            contract_type=None if market == "spot" else "PERPETUAL", filters="[]")
        writer.write("instruments", market, ETH, table_batch("instruments", [row]))
    writer.close()


def test_crafted_dataset_really_spans_midnight(midnight: Path) -> None:
    for table in ("book", "bbo", "funding"):
        dates = {p.name for p in (midnight / table).rglob("date=*")}
        assert dates == {f"date={BEFORE}", f"date={AFTER}"}, (table, dates)


def test_a_range_across_midnight_equals_the_oracle(midnight: Path, book: str) -> None:
    r = Replay(str(midnight), "ETH/USDT", BEFORE, until=AFTER, book=book)
    got = r.readings_table()
    want = oracle(midnight, SpreadParams(), _day_bounds(BEFORE)[0], _day_bounds(AFTER)[1])
    assert_same_readings(got, want)
    ts = [w["ts"] for w in want]
    assert ts[0] < MIDNIGHT < ts[-1] and r.summary().gaps == 1
    assert_book_kind(r, book)


def test_the_day_after_midnight_starts_with_books_from_the_day_before(midnight: Path, book: str) -> None:
    """Replaying only the second date needs the snapshots of the first (the books carry across midnight), and
    the instruments row recorded on the first."""
    r = Replay(str(midnight), "ETH/USDT", AFTER, book=book)
    got = plain(r.readings_table())
    want = oracle(midnight, SpreadParams(), *_day_bounds(AFTER))
    assert_same_readings(r.readings_table(), want)
    assert got[0]["ts"] >= MIDNIGHT and got[0]["valid"]
    assert r.summary().warmup_from_ns is not None and r.summary().warmup_from_ns < MIDNIGHT
    assert_book_kind(r, book)


def test_a_window_across_midnight_with_the_exchange_clock(midnight: Path, book: str) -> None:
    start, end = MIDNIGHT - 5 * 10**9, MIDNIGHT + 5 * 10**9
    r = Replay(str(midnight), "ETH/USDT", BEFORE, until=AFTER, start="23:59:55", end="00:00:05", clock="event",
               book=book)
    assert_same_readings(r.readings_table(), oracle(midnight, SpreadParams(), start, end, clock="event"))


def test_raw_events_interleave_with_readings_in_merge_order(midnight: Path) -> None:
    r = Replay(str(midnight), "ETH/USDT", BEFORE, until=AFTER)
    items = list(r.events())
    events = [i for i in items if hasattr(i, "table")]
    readings = [i for i in items if not hasattr(i, "table")]
    assert len(readings) == r.summary().readings and len(events) == r.summary().events
    keys = [(e.ts, PRIORITY[(e.table, e.market)]) for e in events]
    assert keys == sorted(keys)
    assert [(e.table, e.market) for e in events] == [(t, m) for _, _, _, t, m, _ in merged_entries(midnight)]
    book = next(e for e in events if e.table == "book" and not e.data["snapshot"])
    assert book.data["bids"] and isinstance(book.data["ts_recv"], int)


async def test_async_events_and_readings_equal_the_sync_ones(midnight: Path) -> None:
    r = Replay(str(midnight), "ETH/USDT", AFTER, start="00:00:05", end="00:00:10")
    sync = [(type(i).__name__, i.ts) for i in r.events()]
    got = [(type(i).__name__, i.ts) async for i in r.aevents()]
    assert got == sync and {"Event", "Reading"} <= {name for name, _ in got}
    assert [x.ts async for x in r.areadings()] == [x.ts for x in r.readings()]


def test_callbacks_of_run_see_what_events_yields(midnight: Path) -> None:
    """``on_event`` and ``on_reading`` callbacks of one ``run`` get the entries and readings ``events()`` yields,
    in the same order, and the summary counts them."""
    r = Replay(str(midnight), "ETH/USDT", AFTER, start="00:00:05", end="00:00:10")
    want = [(type(i).__name__, i.ts) for i in r.events()]
    got: list[tuple[str, int]] = []
    r.on_event(lambda e: got.append(("Event", e.ts)))
    r.on_reading(lambda x: got.append(("Reading", x.ts)))
    summary = r.run()
    assert got == want and {"Event", "Reading"} <= {name for name, _ in got}
    assert summary.events == sum(1 for name, _ in got if name == "Event")
    assert summary.readings == sum(1 for name, _ in got if name == "Reading")
    as_dict = json.loads(json.dumps(summary.to_dict()))  # plain JSON types, for a script's log
    assert as_dict["readings"] == summary.readings and as_dict["span_s"] == summary.span_s


async def test_arun_awaits_coroutine_callbacks_in_order(midnight: Path) -> None:
    r = Replay(str(midnight), "ETH/USDT", AFTER, start="00:00:05", end="00:00:10")
    want = [(type(i).__name__, i.ts) for i in r.events()]
    got: list[tuple[str, int]] = []

    async def on_reading(x: Any) -> None:
        await asyncio.sleep(0)  # a bot's awaitable handler: arun must await it before the next item
        got.append(("Reading", x.ts))

    r.on_event(lambda e: got.append(("Event", e.ts)))
    r.on_reading(on_reading)
    summary = await r.arun()
    assert got == want and summary.readings == sum(1 for name, _ in got if name == "Reading")
