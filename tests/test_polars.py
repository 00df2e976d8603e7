"""polars reads the dataset (nova.analysis.polars_frames): every table as DuckDB reads the same files, and the book
at an instant as the core's book (nova.core.book driven by the rebuild rule) and the validity rule
(nova.core.validity.book_spans) say, at every message of generated recordings and next to every ledgered break.
"""

from __future__ import annotations

import bisect
import math
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nova.analysis.polars_frames import book_at, rebuild, scan
from nova.analysis.sql import connect
from nova.core.book import L2Book, side_codes, usable
from nova.core.contract import BOOK, PARTITION_KEYS
from nova.core.dataset import Dataset
from nova.core.errors import NovaError
from nova.core.markets import Market
from nova.core.validity import NO_SNAPSHOT, REASONS, book_spans, valid_at
from recorder.rows import event_row, table_batch
from recorder.writer import DatasetWriter
from tests.helpers import AFTER, ETH, MIDNIGHT, ts_sql, write_midnight_dataset
from tests.s3server import S3Server

TS = pl.Datetime("ns", "UTC")


@pytest.fixture(scope="module")
def midnight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("polars") / "data"
    write_midnight_dataset(root)
    return root


# ---- scan: every table as DuckDB reads the same files -------------------------------------------------------------

def duckdb_figures(data: Dataset, table: str, where: str = "") -> list[tuple]:
    """Rows, first and last receive time (ns) per market and date, by DuckDB over the table's visible files."""
    files = [path for path, _ in data.table_files(table)]
    con = duckdb.connect()
    return con.execute(f"SELECT market, date::VARCHAR, count(*), min(epoch_ns(ts_recv)), max(epoch_ns(ts_recv)) "
                       f"FROM read_parquet(?, hive_partitioning = true) {where} GROUP BY ALL ORDER BY ALL",
                       [files]).fetchall()


def polars_figures(frame: pl.LazyFrame) -> list[tuple]:
    return (frame.group_by("market", pl.col("date").cast(pl.String))
            .agg(pl.len().cast(pl.Int64), first=pl.col("ts_recv").min().dt.epoch("ns"),
                 last=pl.col("ts_recv").max().dt.epoch("ns"))
            .sort("market", "date").collect().rows())


def test_every_table_reads_as_duckdb_reads_it(midnight: Path) -> None:
    data = Dataset(midnight)
    assert {"book", "bbo", "funding", "events"} <= set(data.tables())
    for table in data.tables():
        frame = scan(midnight, table)
        schema = frame.collect_schema()
        assert [n for n in schema.names() if n in PARTITION_KEYS] == list(PARTITION_KEYS)
        assert schema["date"] == pl.Date and schema["ts_recv"] == TS
        assert all(dtype == TS for dtype in schema.values() if isinstance(dtype, pl.Datetime)), (table, schema)
        want = duckdb_figures(data, table)
        assert polars_figures(frame) == want and sum(r[2] for r in want) > 0, table
    assert len({r[1] for r in duckdb_figures(data, "book")}) == 2  # both dates, both markets


def test_filters_narrow_the_files(midnight: Path) -> None:
    data = Dataset(midnight)
    got = polars_figures(scan(midnight, "book", market="PERP", symbol="ETHUSDT", date=AFTER))
    assert got == duckdb_figures(data, "book", f"WHERE market = 'perp' AND date = '{AFTER}'")
    assert got and all(r[0] == "perp" and r[1] == AFTER for r in got)
    empty = scan(midnight, "book", symbol="BTC/USDT")
    assert empty.collect().height == 0 and empty.collect_schema() == scan(midnight, "book").collect_schema()
    assert scan(midnight, "book", exchange="okx").collect().height == 0
    assert scan(midnight, "trades").collect().height == 0  # a table this recording does not have: no rows


def test_hidden_files_and_odd_roots_are_not_read(midnight: Path, tmp_path: Path) -> None:
    """A journal, a half-written temporary and staging never count, and a root whose path holds ``key=value``
    folders does not grow partition columns of its own."""
    root = tmp_path / "run=7" / "data"
    shutil.copytree(midnight, root)
    want = polars_figures(scan(midnight, "book"))
    partition = Dataset(root).partitions("book", "spot")[0]
    real = Path(Dataset(root).files(partition)[0][0])
    for hidden in (".20261124T235940.000Z-abc.arrows", ".20261124T235940.000Z-abc.parquet.tmp", "_staged.parquet"):
        shutil.copy(real, real.with_name(hidden))
    frame = scan(root, "book")
    assert polars_figures(frame) == want
    assert "run" not in frame.collect_schema().names()
    assert frame.filter(pl.col("date") == pl.lit(AFTER).str.to_date()).collect().height == sum(
        r[2] for r in want if r[1] == AFTER)


@pytest.mark.parametrize(("call", "words"), [
    (lambda root: scan(root, "boook"), "is not a table"),
    (lambda root: scan(root, "book", market="futures"), "is not spot or perp"),
    (lambda root: scan(root, "book", symbol="ETH"), "is not a symbol"),
    (lambda root: scan(root, "book", date="2026-02-30"), "is not a date"),
    (lambda root: book_at(root, "BTC/USDT", "spot", MIDNIGHT), "has no book recorded"),
    (lambda root: book_at(root, "ETH/USDT", "spot", "noon"), "is not an instant"),
    (lambda root: book_at(root, "ETH/USDT", "spot", MIDNIGHT, levels=0), "levels must be"),
])
def test_bad_input_is_one_sentence(midnight: Path, call: object, words: str) -> None:
    with pytest.raises(NovaError) as caught:
        call(midnight)  # type: ignore[operator]
    text = str(caught.value)
    assert words in text and "\n" not in text


def test_an_object_store_root_reads_as_the_local_copy(midnight: Path, s3_server: S3Server, s3_root: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """polars reaches the store the way nova.core.stores does: here the S3-specific endpoint variable, which
    wins over a general one that points nowhere."""
    bucket_path = s3_root.removeprefix("s3://")
    pafs.copy_files(str(midnight), bucket_path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3_server.filesystem())
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    for table in ("book", "events"):
        assert polars_figures(scan(s3_root, table)) == polars_figures(scan(midnight, table))
    at = MIDNIGHT + 3 * 10**9
    assert book_at(s3_root, "ETH/USDT", "perp", at).equals(book_at(midnight, "ETH/USDT", "perp", at))


# ---- rebuild: the rule alone, against the core's book --------------------------------------------------------------

PRICES = [0.1 + 0.2, 0.3, 99.5, 100.0, 100.5, 2500.01, math.nan]
AMOUNTS = [0.0, 0.0, -1.0, 0.5, 1.0, 17.25, math.nan]
level = st.tuples(st.sampled_from(["bid", "ask"]), st.sampled_from(PRICES), st.sampled_from(AMOUNTS))
message = st.tuples(st.booleans(), st.booleans(), st.lists(level, max_size=6))  # snapshot, stale, levels


def rows_of(messages: list[tuple[bool, bool, list[tuple[str, float, float]]]]) -> pl.DataFrame:
    rows = []
    for msg, (snapshot, stale, levels) in enumerate(messages, start=1):
        empty: list[tuple[str | None, float | None, float | None]] = [(None, None, None)]
        for side, price, amount in levels or empty:  # an empty message leaves one row
            rows.append({"ts_recv": msg, "msg": msg, "snapshot": snapshot, "stale": stale, "side": side,
                         "price": price, "amount": amount})
    schema = {"ts_recv": pl.Int64, "msg": pl.Int64, "snapshot": pl.Boolean, "stale": pl.Boolean,
              "side": pl.Categorical, "price": pl.Float64, "amount": pl.Float64}
    return pl.DataFrame(rows, schema=schema).with_columns(pl.col("ts_recv").cast(TS))


def core_book(messages: list[tuple[bool, bool, list[tuple[str, float, float]]]]) -> L2Book | None:
    """The book by nova.core.book: stale messages skipped, a snapshot clears, nothing before the first snapshot."""
    book: L2Book | None = None
    for snapshot, stale, levels in messages:
        if stale or (book is None and not snapshot):
            continue
        book = book or L2Book(2)
        sides = usable(side_codes([s for s, _, _ in levels]), np.full(len(levels), stale))
        book.apply_message(sides, np.array([p for _, p, _ in levels], dtype=np.float64),
                           np.array([a for _, _, a in levels], dtype=np.float64), snapshot)
    return book


def levels_of(book: L2Book | None) -> list[tuple]:
    if book is None:
        return []
    out = []
    for side in ("bid", "ask"):
        prices, amounts = book.levels(side)
        out += [(side, i + 1, float(p), float(a)) for i, (p, a) in enumerate(zip(prices, amounts, strict=True))]
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(message, max_size=12))
def test_rebuild_is_the_core_rule(messages: list[tuple[bool, bool, list[tuple[str, float, float]]]]) -> None:
    got = rebuild(rows_of(messages).lazy()).collect().rows()
    assert got == levels_of(core_book(messages))


# ---- book_at: generated recordings, every message, every break ----------------------------------------------------

GRID = [round(3000 + 0.5 * k, 2) for k in range(-12, 13)]


def generate(root: Path, market: Market, seed: int) -> tuple[list[dict], list[tuple[int, str]]]:
    """A recording of one market across midnight, written by the recorder's writer in rotated files: runs (some
    killed, without a stop), stale diffs before a snapshot and after a gap, gaps, disconnects, errors, empty
    messages, a price set twice in one message, diffs held for a snapshot (written after it, received before
    it), and stale snapshots (the recorder never writes one, but the contract allows it in hand-made data, and
    every reader must skip it like any stale message). Returns the messages in ``msg`` order and the book
    stream's ledger."""
    rng = random.Random(seed)
    messages: list[dict] = []
    ledger: list[tuple[int, str]] = []
    t = MIDNIGHT - 6 * 10**9 + rng.randrange(10**6)
    msg = 1

    def add(ts: int, snapshot: bool, stale: bool, levels: list[tuple[str, float, float]]) -> None:
        nonlocal msg
        messages.append({"ts": ts, "msg": msg, "snapshot": snapshot, "stale": stale, "levels": levels})
        msg += 1

    def diff_levels() -> list[tuple[str, float, float]]:
        levels = [(rng.choice(["bid", "ask"]), rng.choice(GRID), rng.choice([0.0, 0.0, 0.25, 1.0, 2.5]))
                  for _ in range(rng.randint(0, 4))]
        if levels and rng.random() < 0.2:
            levels.append((levels[0][0], levels[0][1], rng.choice([0.0, 3.0])))  # the same price again: last wins
        return levels

    def snapshot_levels() -> list[tuple[str, float, float]]:
        return [(side, p, float(rng.randint(1, 9))) for side in ("bid", "ask")
                for p in rng.sample(GRID, rng.randint(1, 8))]

    killed = {1} | ({2} if rng.random() < 0.5 else set())  # runs without a stop: they end at their last row
    for run in range(3):
        t += rng.randrange(10**6, 2 * 10**9)
        ledger.append((t, "start"))
        live = False
        for step in range(rng.randint(25, 40)):
            t += rng.randrange(10**6, 400 * 10**6)
            roll = rng.random()
            if roll < 0.12 or (not live and roll < 0.4) or (run in killed and step == 0):
                held = [t + k * 10**6 for k in range(rng.randint(0, 2))]  # received while the snapshot was asked
                t = (held[-1] if held else t) + rng.randrange(10**6, 50 * 10**6)
                add(t, True, False, snapshot_levels())
                ledger.append((t, "snapshot"))
                broken = bool(held) and rng.random() < 0.3  # a held diff breaks the chain: a gap at the snapshot
                if broken:
                    ledger.append((t, "gap"))
                for ts in held:
                    add(ts, False, broken, diff_levels())
                live = not broken
            elif roll < 0.19 and live and run not in killed:
                ledger.append((t, rng.choice(["gap", "disconnect"])))
                live = False
            elif roll < 0.22:
                ledger.append((t, "error"))  # not a book break
            elif roll < 0.25:
                add(t, True, True, snapshot_levels())  # a stale snapshot: skipped, the book goes on without it
            else:
                add(t, False, not live, diff_levels())
        t += rng.randrange(10**6, 10**8)
        if run not in killed:
            ledger.append((t, "stop"))
    write_book(root, market, messages, ledger)
    return messages, ledger


def write_book(root: Path, market: Market, messages: list[dict], ledger: list[tuple[int, str]]) -> None:
    rows = [{"ts_recv": m["ts"], "first_id": m["msg"], "last_id": m["msg"], "msg": m["msg"],
             "snapshot": m["snapshot"], "stale": m["stale"], "side": side, "price": price, "amount": amount}
            for m in messages for side, price, amount in m["levels"] or [(None, None, None)]]
    columns = []
    for f in BOOK:
        values = [r.get(f.name) for r in rows]
        columns.append(pa.array(values, pa.string()).dictionary_encode().cast(f.type) if pa.types.is_dictionary(f.type)
                       else pa.array(values, f.type))
    writer = DatasetWriter(str(root), rotate_s=2)
    writer.write("book", market, ETH, pa.RecordBatch.from_arrays(columns, schema=BOOK))
    events = [event_row(ts_recv=ts, stream="book", kind=kind, expected_id=None, received_id=None, detail="generated")
              for ts, kind in sorted(ledger)]
    writer.write("events", market, ETH, table_batch("events", events))
    writer.close()


def instants(messages: list[dict], ledger: list[tuple[int, str]], rng: random.Random) -> list[int]:
    """Every message's receive time, the instants next to every ledgered event and to each run's last row, and
    random ones."""
    times = sorted(m["ts"] for m in messages)
    ends = [times[bisect.bisect_left(times, ts) - 1] + 1 for ts, kind in ledger if kind == "start"] + [times[-1] + 1]
    out = set(times) | set(ends) | {ts + d for ts, _ in ledger for d in (-1, 0, 1)}
    out.update(rng.randrange(times[0] - 10**9, times[-1] + 10**9) for _ in range(20))
    return sorted(out)


def expected_books(messages: list[dict], ledger: list[tuple[int, str]],
                   at: list[int]) -> Iterator[tuple[int, bool, bool, list[tuple]]]:
    """(instant, valid, any snapshot in effect, levels) by the core: in effect at t is the longest prefix of the
    messages (in msg order) all received by t; the book is nova.core.book's over it; validity is book_spans'."""
    times = sorted(m["ts"] for m in messages)

    def last_row(start: int, nxt: int | None) -> int | None:
        inside = [ts for ts in times if ts >= start and (nxt is None or ts < nxt)]
        return max(inside) if inside else None

    spans = book_spans(ledger, last_row)
    reached = np.maximum.accumulate([m["ts"] for m in messages]).tolist()
    book: L2Book | None = None
    done = 0
    for t in at:
        upto = bisect.bisect_right(reached, t)
        for m in messages[done:upto]:
            if m["stale"] or (book is None and not m["snapshot"]):
                continue
            book = book or L2Book(2)
            levels = m["levels"]
            book.apply_message(side_codes([s for s, _, _ in levels]), np.array([p for _, p, _ in levels]),
                               np.array([a for _, _, a in levels]), m["snapshot"])
        done = upto
        yield t, valid_at(spans, t), book is not None, levels_of(book)


@pytest.mark.parametrize(("seed", "market"), [(3, "spot"), (11, "perp")])
def test_book_at_every_message_is_the_core_book(tmp_path: Path, seed: int, market: Market) -> None:
    rng = random.Random(seed)
    seen = {True: 0, False: 0}
    messages, ledger = generate(tmp_path, market, seed)
    for t, valid, synced, levels in expected_books(messages, ledger, instants(messages, ledger, rng)):
        got = book_at(tmp_path, "ETH/USDT", market, t)
        assert got.get_column("valid").unique().to_list() == [valid], (t, got, valid)
        seen[valid] += 1
        if valid:
            assert got.select("side", "level", "price", "amount").rows() == levels, t
            assert got.get_column("reason").is_null().all()
        else:
            assert got.height == 1 and got.get_column("price").is_null().all()
            reason = got.item(0, "reason")
            assert any(reason.startswith(phrase) for phrase in REASONS.values()), reason
            assert (reason == REASONS[NO_SNAPSHOT]) == (not synced), (t, reason)
    assert seen[True] > 50 and seen[False] > 25, seen  # both verdicts were really put to the test
    assert len({p.date for p in Dataset(tmp_path).partitions("book")}) == 2


@pytest.mark.slow  # ~7 s each
@pytest.mark.parametrize(("seed", "market"), [(3, "spot"), (11, "perp")])
def test_sql_book_at_around_every_break_is_the_core_book(tmp_path: Path, seed: int, market: Market) -> None:
    """``nova sql``'s book_at on the same generated recordings, at whole microseconds (the instants DuckDB
    holds): on both sides of every ledgered break and every stale snapshot, and at 80 of the instants the polars
    test uses; the core's levels and verdict, and the polars answer word for word (reasons included)."""
    rng = random.Random(seed)
    messages, ledger = generate(tmp_path, market, seed)
    assert any(m["snapshot"] and m["stale"] for m in messages), "the readers are put to a stale snapshot"

    def edges(t: int) -> set[int]:
        return {t // 1000 * 1000, -(-t // 1000) * 1000}

    # both microseconds around every break and stale snapshot, and 80 of the other instants
    near = {e for ts, _ in ledger for e in edges(ts)} | {e for m in messages if m["stale"] for e in edges(m["ts"])}
    others = sorted({e for t in instants(messages, ledger, rng) for e in edges(t)} - near)
    at = near | set(rng.sample(others, min(80, len(others))))
    if int(duckdb.__version__.split(".")[0]) < 2:  # DuckDB 1.x reads the files' times in whole microseconds:
        # an instant is only put to it where no message or break falls inside the microsecond after it
        times = [m["ts"] for m in messages] + [ts for ts, _ in ledger]
        at -= {ts // 1000 * 1000 for ts in times if ts % 1000}
    con = connect(tmp_path)
    seen = {True: 0, False: 0}
    for t, valid, _, levels in expected_books(messages, ledger, sorted(at)):
        got = con.execute(f"SELECT side, level, price, amount, valid, reason FROM book_at('{market}', 'ETH/USDT', "
                          f"{ts_sql(t)}, 1000)").fetchall()
        assert {row[4] for row in got} == {valid}, (t, got, valid)
        seen[valid] += 1
        if valid:
            assert [row[:4] for row in got] == levels, t
        framed = book_at(tmp_path, "ETH/USDT", market, t).select("side", "level", "price", "amount", "valid", "reason")
        assert framed.rows() == [tuple(row) for row in got], t
    assert seen[True] > 50 and seen[False] > 25, seen


def test_levels_and_instant_spellings(midnight: Path) -> None:
    at = MIDNIGHT + 2_500_000_000
    full = book_at(midnight, "ETH/USDT", "spot", at)
    top = book_at(midnight, "eth-usdt", "SPOT", "2026-11-25T00:00:02.5Z", levels=2)
    assert top.rows() == full.filter(pl.col("level") <= 2).rows()
    assert top.get_column("level").to_list() == [1, 2, 1, 2] and top.get_column("side").to_list()[0] == "bid"
    bids = full.filter(pl.col("side") == "bid").get_column("price").to_list()
    asks = full.filter(pl.col("side") == "ask").get_column("price").to_list()
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]


def test_book_at_answers_as_the_sql_macro(midnight: Path) -> None:
    """``nova sql``'s book_at and the polars one, at instants (whole microseconds, as DuckDB shows them) across
    the perp's gap and resync, midnight, and the end of the recording."""
    con = connect(midnight)
    rng = random.Random(7)
    gap = MIDNIGHT - 9_900_000_000  # the perp diff that skips ids, 50 ms before its resync snapshot
    at = [gap + k * 10_000_000 for k in range(-1, 7)] + [MIDNIGHT + 20_100_000_000]
    at += [MIDNIGHT + rng.randrange(-20 * 10**6, 20 * 10**6) * 1_000 for _ in range(4)]
    verdicts = set()
    for t in at:
        for market in ("spot", "perp"):
            want = con.execute(f"SELECT side, level, price, amount, valid, reason FROM book_at('{market}', "
                               f"'ETH/USDT', {ts_sql(t)}, 1000)").fetchall()
            got = book_at(midnight, "ETH/USDT", market, t).select("side", "level", "price", "amount", "valid", "reason")
            assert got.rows() == [tuple(r) for r in want], (market, t)
            verdicts.update(got.get_column("valid").to_list())
    assert verdicts == {True, False}


def test_the_readme_query_runs(midnight: Path) -> None:
    """The README's per-minute query: mid and quoted spread from bookTicker, by market."""
    per_minute = (scan(midnight, "bbo", symbol="ETH/USDT")
                  .with_columns(mid=(pl.col("bid_price") + pl.col("ask_price")) / 2,
                                spread_bps=(pl.col("ask_price") / pl.col("bid_price") - 1) * 1e4)
                  .group_by("market", minute=pl.col("ts_recv").dt.truncate("1m"))
                  .agg(pl.col("mid").mean(), pl.col("spread_bps").mean(), quotes=pl.len())
                  .sort("market", "minute").collect())
    assert per_minute.get_column("quotes").sum() == scan(midnight, "bbo").collect().height
    assert per_minute.height == 4 and per_minute.get_column("spread_bps").is_between(0, 10).all()
