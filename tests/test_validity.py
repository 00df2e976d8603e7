"""The validity rule (nova.core.validity) and its SQL restatement (nova.analysis.macros) agree, on generated ledgers.

The generated datasets are small but awkward on purpose: several runs, one of them killed (no ``stop``),
gaps and disconnects between snapshots, quote-stream errors, a run that starts before the first snapshot,
and instants on and next to every break. Times are whole microseconds, the precision ``nova sql`` shows.
"""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nova.analysis.sql import connect
from nova.core.contract import BBO, BOOK, EVENTS
from nova.core.validity import END_OF_DATA, Span, book_spans, covered_ns, quote_spans, runs, valid_at

US = 1_000
DAY0 = 1_796_515_200 * 10**9  # 2026-12-06 00:00:00 UTC


def _no_rows(run_start: int, next_start: int | None) -> None:
    return None


def test_book_spans_follow_snapshots_and_breaks() -> None:
    ledger = [(100, "start"), (110, "snapshot"), (150, "gap"), (160, "snapshot"), (200, "disconnect"),
              (220, "snapshot"), (300, "stop"), (400, "start"), (420, "snapshot")]
    spans = book_spans(ledger, lambda start, nxt: 450 if start == 400 else None)
    assert spans == [Span(110, 150, "gap"), Span(160, 200, "disconnect"), Span(220, 300, "stop"),
                     Span(420, 451, END_OF_DATA)]
    assert not valid_at(spans, 105) and valid_at(spans, 110) and valid_at(spans, 149)
    assert not valid_at(spans, 150) and not valid_at(spans, 350) and valid_at(spans, 450)
    assert not valid_at(spans, 451)
    assert covered_ns(spans, 0, 1000) == 40 + 40 + 80 + 31


def test_a_killed_run_ends_at_its_last_row_and_a_new_start_breaks() -> None:
    ledger = [(100, "start"), (110, "snapshot"), (400, "start"), (420, "snapshot"), (500, "stop")]
    spans = book_spans(ledger, lambda start, nxt: 300 if start == 100 else 480)
    assert spans == [Span(110, 301, END_OF_DATA), Span(420, 500, "stop")]
    assert runs(ledger)[0].stop_ns is None and runs(ledger)[1].stop_ns == 500


def test_a_break_at_the_snapshot_time_counts() -> None:
    """The recorder ledgers a gap found among the diffs held for a snapshot at the snapshot's own time."""
    assert book_spans([(100, "start"), (110, "snapshot"), (110, "gap"), (150, "snapshot"), (190, "stop")],
                      _no_rows) == [Span(150, 190, "stop")]


def test_quote_spans_start_at_the_first_quote_after_a_break() -> None:
    ledger = [(100, "start"), (200, "error"), (300, "stop"), (400, "start")]
    quotes = [105, 150, 200, 250, 410, 420]  # the quote at 200 is not valid: the error is at its very time
    spans = quote_spans(ledger, quotes, lambda start, nxt: 420 if start == 400 else None)
    assert spans == [Span(105, 200, "error"), Span(250, 300, "stop"), Span(410, 421, END_OF_DATA)]


# ---- the SQL macros against the Python rule -----------------------------------------------------------------------

def _write(root: Path, table: str, market: str, schema: pa.Schema, rows: list[dict]) -> None:
    folder = root / table / "exchange=binance" / f"market={market}" / "symbol=ETH-USDT" / "date=2026-12-06"
    folder.mkdir(parents=True, exist_ok=True)
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    arrays = []
    for f in schema:
        values = columns[f.name]
        if pa.types.is_dictionary(f.type):
            arrays.append(pa.array(values, pa.string()).dictionary_encode().cast(f.type))
        else:
            arrays.append(pa.array(values, f.type))
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), folder / "20261206T000000.000Z-00000000.parquet")


def _generate(root: Path, seed: int) -> dict[str, tuple[list[tuple[int, str]], list[int], list[int]]]:
    """A dataset of one symbol; returns per market (book ledger, book message times, bbo times) and writes it."""
    rng = random.Random(seed)
    out = {}
    for market in ("spot", "perp"):
        t = DAY0 + rng.randrange(1, 10**6) * US
        events: list[dict] = []
        book: list[dict] = []
        bbo: list[dict] = []
        msg, uid = 1, 1000

        def ledger(stream: str, kind: str, ts: int, events: list[dict] = events) -> None:
            events.append({"ts_recv": ts, "stream": stream, "kind": kind})

        n_runs = rng.randint(2, 4)
        for r in range(n_runs):
            for stream in ("book", "bbo"):
                ledger(stream, "start", t)
            live = False
            for _ in range(rng.randint(20, 60)):
                t += rng.randrange(1, 300_000) * US
                roll = rng.random()
                if roll < 0.15 or (not live and roll < 0.5):
                    uid += 10
                    book.append({"ts_recv": t, "first_id": uid, "last_id": uid, "msg": msg, "snapshot": True,
                                 "stale": False, "side": "bid", "price": 100.0, "amount": 1.0})
                    ledger("book", "snapshot", t)
                    msg += 1
                    live = True
                elif roll < 0.22:
                    ledger("book", rng.choice(["gap", "disconnect"]), t)
                    live = False
                elif roll < 0.27:
                    ledger("bbo", rng.choice(["error", "disconnect"]), t)
                elif roll < 0.3:
                    ledger("book", "error", t)  # not a book break: the book stays valid
                else:
                    uid += 1
                    book.append({"ts_recv": t, "first_id": uid, "last_id": uid, "msg": msg, "snapshot": False,
                                 "stale": not live, "side": "ask", "price": 101.0, "amount": 2.0})
                    msg += 1
                    bbo.append({"ts_recv": t + rng.randrange(0, 3) * US, "update_id": uid, "bid_price": 100.0,
                                "bid_amount": 1.0, "ask_price": 101.0, "ask_amount": 2.0})
            killed = (r < n_runs - 1 and rng.random() < 0.4) or (r == n_runs - 1 and rng.random() < 0.5)
            t += rng.randrange(1, 100_000) * US
            if not killed:
                for stream in ("book", "bbo"):
                    ledger(stream, "stop", t)
            t += rng.randrange(1, 5_000_000) * US
        bbo.sort(key=lambda row: row["ts_recv"])
        _write(root, "events", market, EVENTS, events)
        _write(root, "book", market, BOOK, book)
        _write(root, "bbo", market, BBO, bbo)
        out[market] = ([(e["ts_recv"], e["kind"]) for e in events if e["stream"] == "book"],
                       [b["ts_recv"] for b in book], [b["ts_recv"] for b in bbo],
                       [(e["ts_recv"], e["kind"]) for e in events if e["stream"] == "bbo"])
    return out


def _last_row(times: list[int]) -> object:
    def last(start: int, nxt: int | None) -> int | None:
        inside = [t for t in times if t >= start and (nxt is None or t < nxt)]
        return max(inside) if inside else None
    return last


def _instants(ledger: list[tuple[int, str]], times: list[int], rng: random.Random) -> list[int]:
    """Every ledger time and row time, one microsecond either side, and random instants."""
    marks = [t for t, _ in ledger] + times[:: max(1, len(times) // 15)] + [max(times)]
    out = {m + d * US for m in marks for d in (-1, 0, 1)}
    lo, hi = min(marks) - 10**9, max(marks) + 10**9
    out.update(rng.randrange(lo // US, hi // US) * US for _ in range(40))
    return sorted(out)


BOOK_VALID = "SELECT bool_and(valid) FROM book_at('{market}', 'ETH-USDT', make_timestamptz({t}), 5)"
QUOTE_VALID = ("SELECT valid FROM top_of_book('{market}', 'ETH-USDT', make_timestamptz({t}), "
               "make_timestamptz({t} + 1), INTERVAL 1 MICROSECOND)")


def _verdicts(con: duckdb.DuckDBPyConnection, query: str, market: str, instants: list[int]) -> dict[int, bool]:
    """The macro's verdict at every instant: one query with the macro evaluated per row of a list of instants
    (as fast as ~20 constant queries), and for every 10th instant also a query with the instant as a constant,
    as a user writes it; both must agree."""
    listing = ", ".join(str(t // US) for t in instants)
    per_row = query.format(market=market, t="u.t")
    by_index = dict(con.execute(f"SELECT u.i, ({per_row}) FROM (SELECT unnest([{listing}]) AS t, "
                                f"unnest(range({len(instants)})) AS i) AS u").fetchall())
    got = {t: by_index[i] for i, t in enumerate(instants)}
    for t in instants[::10]:
        assert con.execute(query.format(market=market, t=t // US)).fetchall()[0][0] == got[t], (market, t)
    return got


@pytest.mark.slow  # hundreds of instants a seed
@pytest.mark.parametrize("seed", [1, 2])
def test_the_macros_restate_the_rule(tmp_path: Path, seed: int) -> None:
    truth = _generate(tmp_path, seed)
    con = connect(tmp_path)
    rng = random.Random(seed)
    for market, (book_ledger, book_times, bbo_times, bbo_ledger) in truth.items():
        spans = book_spans(book_ledger, _last_row(book_times))  # type: ignore[arg-type]
        instants = _instants(book_ledger, book_times, rng)
        got = _verdicts(con, BOOK_VALID, market, instants)
        for t in instants:
            assert got[t] == valid_at(spans, t), (market, t, got[t], spans)
        qspans = quote_spans(bbo_ledger, sorted(bbo_times), _last_row(bbo_times))  # type: ignore[arg-type]
        instants = _instants(bbo_ledger, bbo_times, rng)
        got = _verdicts(con, QUOTE_VALID, market, instants)
        for t in instants:
            assert got[t] == valid_at(qspans, t), (market, t, got[t], qspans)
