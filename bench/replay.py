"""Replay throughput, memory and pacing on a generated day (DESIGN §6: >= 10 M book rows/s with the spread logic).

    python bench/replay.py [--hours 24] [--dir DIR] [--repeat 3] [--peer-python PYTHON]

The dataset: the real ETHUSDT captures (spot and USDT-M, ~6 minutes each) turned into the contract's tables by
the recorder's own code (its sequencer, row builder and DatasetWriter), then tiled to ``--hours`` of one day
(2026-11-24): ~540 k book rows, ~78 k bookTickers and ~20 k trades per tile, each tile opening with its REST
snapshots, plus funding every second and the ledger, and the instruments rows a recorder writes at its start
(tick 0.01 on both markets, as exchangeInfo says for ETHUSDT; replay price-indexes the books with it). A day
is ~134 M book rows. It is built once and cached in ``--dir`` (default: a folder in the system temp directory).

Measured, each in a fresh process (peak RSS is that process's own):
- decode floor: the same columns of the same files read with pyarrow into numpy, one thread, nothing else;
- replay (books + spread, the summary, no output): the engine as ``Replay.run()`` runs it (Parquet decoding
  on a reader thread, the compiled loop on the main thread), and single-threaded (both on one thread); and
  the same with the sorted book instead of the price-indexed one (``Replay(book='sorted')``);
- replay as ``nova replay`` runs it: the same plus the spread series written as Parquet (a third thread);
- memory: the same replay of one hour, to compare with the whole day;
- pacing: ``--speed 1`` over 20 s and ``--speed 10`` over 200 s of data (lateness p50/p99 per reading);
- peer: hftbacktest replaying the same perp book rows, when it imports here or in ``--peer-python`` (it needs
  its own venv: ``python3.11 -m venv /tmp/hbt && /tmp/hbt/bin/pip install hftbacktest``).

Rows/s are book rows processed per wall-clock second (and per CPU second, which is what "one core" costs).
Every replay figure is also given as a ratio to the decode floor and to hftbacktest (same run; the machine
may be shared, so only same-run ratios compare across runs). The last line printed is one JSON object with
every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("NOVA_REALDATA", REPO.parent / "shared" / "realdata")) / "binance"
CAPTURES = {"spot": REALDATA / "spot_ethusdt_20240808.gz", "perp": REALDATA / "usdm_ethusdt_20240808.gz"}
DATE = "2026-11-24"
DATASET_VERSION = 1


# ---- the dataset --------------------------------------------------------------------------------------------------

def capture_tables(market: str, captures: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One capture (or ``captures``, one after the other) through the recorder's sequencer and row builder: the
    tables of one tile."""
    import orjson

    from recorder.rows import book_batch, table_batch
    from recorder.sequencer import NULL, BookSequencer

    seq = BookSequencer(market, 1, ledger=lambda *a: None, request_resync=lambda: None)  # type: ignore[arg-type]
    from recorder.rows import BboRow, TradeRow

    bbo: list[BboRow] = []
    trades: list[TradeRow] = []
    for line in _lines(captures or (CAPTURES[market],)):
        stamp, body = line.split(b" ", 1)
        ts = int(stamp)
        obj = orjson.loads(body)
        d = obj.get("data", obj)
        if "lastUpdateId" in d:
            seq.on_snapshot(ts, d.get("E", NULL), d.get("T", NULL), d["lastUpdateId"],
                            orjson.dumps({"b": d["bids"], "a": d["asks"]}).decode(), 0)
        elif d.get("e") == "depthUpdate":
            prev = d.get("pu", NULL) if market == "perp" else NULL
            seq.on_diff((ts, d["E"], d.get("T", NULL), d["U"], d["u"], prev, orjson.dumps(d).decode()))
        elif "u" in d and "b" in d and "a" in d:
            bbo.append(BboRow(ts_recv=ts, ts_event=d["E"] * 10**6 if market == "perp" else None,
                              update_id=d["u"], bid_price=float(d["b"]), bid_amount=float(d["B"]),
                              ask_price=float(d["a"]), ask_amount=float(d["A"])))
        elif d.get("e") == "trade":
            trades.append(TradeRow(ts_recv=ts, ts_event=d["E"] * 10**6, trade_id=d["t"], price=float(d["p"]),
                                   amount=float(d["q"]), taker_side="sell" if d["m"] else "buy"))
    seq.on_stop()
    book, _, _ = book_batch(seq.take())
    return {"book": book, "bbo": table_batch("bbo", bbo), "trades": table_batch("trades", trades)}


def _lines(paths: tuple[Path, ...]) -> Any:
    """The lines of the gzip captures ``paths``, one file after the other."""
    for path in paths:
        with gzip.open(path, "rb") as fh:
            yield from fh


def _shift(batch: Any, ns: int, ids: int, msgs: int) -> Any:
    """A tile moved ``ns`` later, with update ids ``ids`` and message numbers ``msgs`` higher."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for f, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_timestamp(f.type):
            column = pc.add(column.cast(pa.int64()), pa.scalar(ns, pa.int64())).cast(f.type)
        elif f.name in ("first_id", "last_id", "prev_id", "update_id", "trade_id"):
            column = pc.add(column, pa.scalar(ids, pa.int64()))
        elif f.name == "msg":
            column = pc.add(column, pa.scalar(msgs, pa.int64()))
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def build_dataset(root: Path, hours: float) -> dict[str, Any]:
    """Write (or find, cached) ``hours`` of tiled captures from DATE 00:00 UTC with the recorder's writer."""
    import pyarrow as pa

    from nova.core.markets import Symbol
    from recorder.rows import FundingRow, event_row, table_batch
    from recorder.writer import DatasetWriter

    marker = root / ".bench-dataset.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("hours") == hours and info.get("version") == DATASET_VERSION:
            if not (root / "instruments").exists():  # cached before the instruments were written: add them
                day0 = int(dt.datetime.fromisoformat(DATE).replace(tzinfo=dt.UTC).timestamp()) * 10**9
                write_instruments(root, day0)
            return info
    if root.exists():
        import shutil

        shutil.rmtree(root)
    started = time.perf_counter()
    tiles = {m: capture_tables(m) for m in ("spot", "perp")}
    first = min(int(t[name].column("ts_recv")[0].cast(pa.int64()).as_py()) for t in tiles.values()
                for name in ("book", "bbo"))
    last = max(int(t[name].column("ts_recv")[-1].cast(pa.int64()).as_py()) for t in tiles.values()
               for name in ("book", "bbo", "trades"))
    period = last - first + 10**9
    day0 = int(dt.datetime.fromisoformat(DATE).replace(tzinfo=dt.UTC).timestamp()) * 10**9
    count = max(1, int(hours * 3600e9 // period))
    writer = DatasetWriter(str(root), rotate_s=900)
    symbol = Symbol("ETH", "USDT")
    rows = {"book": 0, "bbo": 0, "trades": 0}
    for i in range(count):
        shift = day0 - first + i * period
        for market, tile in tiles.items():
            ids = tile["book"].column("last_id").to_numpy()
            id_span = int(ids.max() - ids.min()) + 1_000_000
            msgs = int(tile["book"].column("msg").to_numpy().max())
            for table in ("book", "bbo", "trades"):
                batch = _shift(tile[table], shift, i * id_span if table != "trades" else i * 10**8, i * msgs)
                writer.write(table, market, symbol, batch)  # type: ignore[arg-type]
                rows[table] += batch.num_rows
            snapshot_ts = int(tile["book"].column("ts_recv")[0].cast(pa.int64()).as_py()) + shift
            ledger = [event_row(ts_recv=snapshot_ts, stream="book", kind="snapshot", detail="tile")]
            if i == 0:
                ledger.insert(0, event_row(ts_recv=snapshot_ts - 10**6, stream="book", kind="start", detail="bench"))
            writer.write("events", market, symbol, table_batch("events", ledger))
        seconds = range(int((day0 + i * period) // 10**9), int((day0 + (i + 1) * period) // 10**9))
        funding = [FundingRow(ts_recv=s * 10**9 + 3_000_000, ts_event=s * 10**9, mark_price=3000.0,
                              index_price=2999.5, funding_rate=0.0001 + 1e-6 * (s % 7),
                              next_funding_time=day0 + 8 * 3600 * 10**9) for s in seconds]
        writer.write("funding", "perp", symbol, table_batch("funding", funding))
    writer.close()
    write_instruments(root, day0)
    info = {"version": DATASET_VERSION, "hours": hours, "tiles": count, "rows": rows,
            "bytes": sum(p.stat().st_size for p in root.rglob("*.parquet")), "build_s": time.perf_counter() - started}
    marker.write_text(json.dumps(info))
    return info


def write_instruments(root: Path, day0: int) -> None:
    """The instruments row a recorder writes at its start (exchangeInfo of ETHUSDT: tick 0.01 on both markets)."""
    from nova.core.markets import Symbol
    from recorder.rows import InstrumentRow, table_batch
    from recorder.writer import DatasetWriter

    writer = DatasetWriter(str(root), rotate_s=900)
    for market in ("spot", "perp"):
        row = InstrumentRow(ts_recv=day0, tick_size=0.01, step_size=0.0001 if market == "spot" else 0.001,
                            min_notional=5.0 if market == "spot" else 20.0, status="TRADING",
                            contract_type=None if market == "spot" else "PERPETUAL", filters="[]")
        writer.write("instruments", market, Symbol("ETH", "USDT"), table_batch("instruments", [row]))
    writer.close()


# ---- measurements (each in its own process) ------------------------------------------------------------------------

def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def middle_hour(root: Path) -> int:
    """The hour the memory and pacing measures use: 12:00 of a day, the middle of a shorter dataset."""
    hours = float(json.loads((root / ".bench-dataset.json").read_text())["hours"])
    return 12 if hours >= 14 else max(0, int(hours / 2) - 1)


def measure_decode(root: Path) -> dict[str, Any]:
    """The decode floor: every planned file's replay columns read with pyarrow into numpy, one thread."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from replay import Replay
    from replay.reader import BATCH_ROWS, needed_columns

    r = Replay(str(root), "ETH/USDT", DATE)
    plans = r._engine(raw=False).plans
    book_rows = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for (table, _), plan in plans.items():
        for part in plan.parts:
            handle = pq.ParquetFile(part.path)
            for batch in handle.iter_batches(batch_size=BATCH_ROWS[table], row_groups=list(part.row_groups),
                                             columns=list(needed_columns(table, False)), use_threads=False):
                for column in batch.columns:
                    if pa.types.is_dictionary(column.type):
                        column = column.indices
                    column.to_numpy(zero_copy_only=False)
                if table == "book":
                    book_rows += batch.num_rows
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"book_rows": book_rows, "wall_s": wall, "rows_per_s": book_rows / wall, "rows_per_cpu_s": book_rows / cpu,
            "rss_mb": _rss_mb()}


def measure_replay(root: Path, variant: str) -> dict[str, Any]:
    from replay import Replay
    from replay.engine import Engine
    from replay.kernel import K_READINGS, K_ROWS_SEEN
    from replay.summary import SummaryBuilder

    book = "sorted" if variant.startswith("sorted") else "auto"
    Replay(str(root), "ETH/USDT", DATE, start="00:10", end="00:10:01", book=book).run()  # compile/load kernels first
    hour = middle_hour(root)
    window = {"start": f"{hour:02d}:00", "end": f"{hour + 1:02d}:00"} if variant == "one-hour" else {}
    r = Replay(str(root), "ETH/USDT", DATE, book=book, **window)  # type: ignore[arg-type]
    wall, cpu = time.perf_counter(), time.process_time()
    notes: list[str] = []
    if variant.endswith("single-thread"):
        engine = Engine(r.dataset, r.span, r.params, prefetch=False, books=book)
        builder = SummaryBuilder("ETH/USDT", "recv", None)
        for chunk in engine.chunks():
            builder.add(chunk.ts, chunk.values)
        rows, readings = int(engine.state.counters[K_ROWS_SEEN]), int(engine.state.counters[K_READINGS])
        notes = [engine.book_note] if engine.book_note else []
    else:
        summary = r.run(write=variant == "cli")
        rows, readings = summary.rows_processed, summary.readings
        notes = [n for n in summary.notes if "sorted book" in n]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"book_rows": rows, "readings": readings, "wall_s": wall, "cpu_s": cpu, "rows_per_s": rows / wall,
            "rows_per_cpu_s": rows / cpu, "rss_mb": _rss_mb(), "book": book, "notes": notes}


def measure_pacing(root: Path, speed: float, seconds: int) -> dict[str, Any]:
    from replay import Replay

    start = dt.datetime(2026, 11, 24, middle_hour(root), 0, 0)
    end = start + dt.timedelta(seconds=seconds)
    r = Replay(str(root), "ETH/USDT", DATE, start=start.strftime("%H:%M:%S"), end=end.strftime("%H:%M:%S"))
    summary = r.run(speed=speed)
    return {"speed": speed, "data_s": summary.span_s, "wall_s": summary.wall_s, "readings": summary.readings,
            "lateness_p50_ms": summary.lateness_p50_ms, "lateness_p99_ms": summary.lateness_p99_ms,
            "lateness_max_ms": summary.lateness_max_ms}


PEER_ROWS = 10_000_000  # hftbacktest holds its events in memory (64 bytes each): a day would not fit comfortably
# hftbacktest's event flags (hftbacktest.types), spelled out so that the conversion runs without it installed
_DEPTH, _EXCH, _LOCAL, _BUY, _SELL = 1, 1 << 31, 1 << 30, 1 << 29, 1 << 28
_PEER_DTYPE = np.dtype({"names": ["ev", "exch_ts", "local_ts", "px", "qty", "order_id", "ival", "fval"],
                        "formats": ["<u8", "<i8", "<i8", "<f8", "<f8", "<u8", "<i8", "<f8"],
                        "offsets": [0, 8, 16, 24, 32, 40, 48, 56], "itemsize": 64}, align=True)


def peer_events(root: Path) -> Path:
    """The first PEER_ROWS perp book rows (non-stale) as hftbacktest depth events, saved next to the dataset."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    path = root / f".peer-perp-{PEER_ROWS}.npy"
    if path.exists():
        return path
    book = ds.dataset(str(root / "book"), format="parquet", partitioning="hive")
    table = book.to_table(columns=["ts_recv", "ts_event", "side", "price", "amount", "stale", "msg"],
                          filter=(pc.field("market") == "perp") & ~pc.field("stale") & pc.field("side").is_valid())
    table = table.sort_by("msg").slice(0, PEER_ROWS)
    local = np.maximum.accumulate(table.column("ts_recv").cast(pa.int64()).to_numpy())
    exch = np.maximum.accumulate(pc.coalesce(table.column("ts_event"), table.column("ts_recv")).cast(pa.int64())
                                 .to_numpy())
    events = np.zeros(table.num_rows, dtype=_PEER_DTYPE)
    bid = pc.equal(table.column("side").cast(pa.string()), "bid").to_numpy(zero_copy_only=False)
    events["ev"] = np.where(bid, _DEPTH | _EXCH | _LOCAL | _BUY, _DEPTH | _EXCH | _LOCAL | _SELL)
    events["exch_ts"], events["local_ts"] = exch, np.maximum(local, exch)
    events["px"] = table.column("price").to_numpy()
    events["qty"] = table.column("amount").to_numpy()
    np.save(path, events)
    return path


def measure_peer(root: Path) -> dict[str, Any]:
    """hftbacktest's own replay of the events ``peer_events`` wrote (run by a Python that has hftbacktest)."""
    import hftbacktest as hbt

    events = np.load(root / f".peer-perp-{PEER_ROWS}.npy")
    asset = (hbt.BacktestAsset().data(events).linear_asset(1.0).constant_order_latency(0, 0)
             .risk_adverse_queue_model().no_partial_fill_exchange().trading_value_fee_model(0.0, 0.0)
             .tick_size(0.01).lot_size(0.001))
    backtest = hbt.HashMapMarketDepthBacktest([asset])
    started = time.perf_counter()
    while backtest.elapse(60 * 10**9) == 0:  # a minute of data per call; 0 means "not at the end yet"
        pass
    seconds = time.perf_counter() - started
    backtest.close()
    return {"version": hbt.__version__, "events": int(events.shape[0]), "wall_s": seconds,
            "events_per_s": events.shape[0] / seconds}


MEASURES = {
    "decode": lambda root: measure_decode(root),
    "replay": lambda root: measure_replay(root, "threads"),
    "replay-single-thread": lambda root: measure_replay(root, "single-thread"),
    "replay-sorted": lambda root: measure_replay(root, "sorted"),
    "replay-sorted-single-thread": lambda root: measure_replay(root, "sorted-single-thread"),
    "replay-cli": lambda root: measure_replay(root, "cli"),
    "replay-one-hour": lambda root: measure_replay(root, "one-hour"),
    "pacing-1": lambda root: measure_pacing(root, 1.0, 20),
    "pacing-10": lambda root: measure_pacing(root, 10.0, 200),
}


def run_measure(name: str, root: Path, python: str = sys.executable) -> dict[str, Any] | None:
    proc = subprocess.run([python, __file__, "--measure", name, "--dir", str(root)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {name}: failed ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_of(name: str, root: Path, repeat: int) -> dict[str, Any]:
    runs = [r for r in (run_measure(name, root) for _ in range(repeat)) if r is not None]
    if not runs:
        raise SystemExit(f"{name} failed every time")
    return max(runs, key=lambda r: r["rows_per_s"])


def measure_peer_figure(args: argparse.Namespace, figures: dict[str, Any]) -> float | None:
    """hftbacktest's events/s on the same perp rows, by ``--peer-python`` or this Python when it has hftbacktest;
    None (and a line saying how to get it) otherwise."""
    import importlib.util

    python = args.peer_python or (sys.executable if importlib.util.find_spec("hftbacktest") else None)
    if python is None:
        print("peer: hftbacktest is not installed here; python3.11 -m venv /tmp/hbt && /tmp/hbt/bin/pip install "
              "hftbacktest, then --peer-python /tmp/hbt/bin/python")
        return None
    peer_events(args.dir)
    peer = run_measure("peer", args.dir, python)
    if peer is None or not peer.get("events_per_s"):
        return None
    print(f"{'peer: hftbacktest ' + peer['version'] + ', perp book in memory':56s} "
          f"{peer['events_per_s'] / 1e6:6.2f} M events/s ({peer['events']:,} events)")
    figures["hftbacktest_events_per_s"] = round(peer["events_per_s"])
    return float(peer["events_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0, help="hours of data to generate (from 00:00 UTC)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "nova-bench-replay")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs of each throughput figure")
    parser.add_argument("--peer-python", help="a Python that has hftbacktest installed (default: this one, if it has)")
    parser.add_argument("--measure", choices=[*MEASURES, "peer"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure == "peer":
        print(json.dumps(measure_peer(args.dir)))
        return
    if args.measure:
        print(json.dumps(MEASURES[args.measure](args.dir)))
        return

    info = build_dataset(args.dir, args.hours)
    print(f"dataset {args.dir}: {info['rows']['book']:,} book rows, {info['rows']['bbo']:,} bbo, "
          f"{info['rows']['trades']:,} trades over {args.hours:g} h ({info['tiles']} tiles), "
          f"{info['bytes'] / 2**20:,.0f} MiB")
    figures: dict[str, Any] = {"bench": "replay", "hours": args.hours, "book_rows": info["rows"]["book"],
                               "target_rows_per_s": 12_000_000, "goal_rows_per_s": 16_000_000}
    decode = best_of("decode", args.dir, args.repeat)
    print(f"{'decode floor (pyarrow -> numpy, same columns)':56s} {decode['rows_per_s'] / 1e6:6.2f} M rows/s wall, "
          f"{decode['rows_per_cpu_s'] / 1e6:6.2f} M rows/CPU-s, {decode['wall_s']:6.2f} s, "
          f"peak RSS {decode['rss_mb']:,.0f} MB")
    figures.update(decode_rows_per_s=round(decode["rows_per_s"]), decode_rows_per_cpu_s=round(decode["rows_per_cpu_s"]),
                   decode_rss_mb=round(decode["rss_mb"]))
    peer_rate = measure_peer_figure(args, figures)
    for name, label in (("replay", "replay --speed max, books + spread (reader thread)"),
                        ("replay-single-thread", "replay --speed max, books + spread, one thread"),
                        ("replay-sorted", "the same with the sorted book (reader thread)"),
                        ("replay-sorted-single-thread", "the same with the sorted book, one thread"),
                        ("replay-cli", "nova replay --speed max (+ Parquet output)")):
        result = best_of(name, args.dir, args.repeat)
        ratios = f"{result['rows_per_s'] / decode['rows_per_s']:.2f}x decode"
        if peer_rate:
            ratios += f", {result['rows_per_s'] / peer_rate:.2f}x hftbacktest"
        print(f"{label:56s} {result['rows_per_s'] / 1e6:6.2f} M rows/s wall ({ratios}), "
              f"{result['rows_per_cpu_s'] / 1e6:6.2f} M rows/CPU-s, {result['wall_s']:6.2f} s, "
              f"peak RSS {result['rss_mb']:,.0f} MB")
        for note in result.get("notes", []):
            print(f"  note: {note}")
        key = name.replace("-", "_")
        figures[f"{key}_rows_per_s"] = round(result["rows_per_s"])
        figures[f"{key}_rows_per_cpu_s"] = round(result["rows_per_cpu_s"])
        figures[f"{key}_rss_mb"] = round(result["rss_mb"])
        figures[f"{key}_to_decode"] = round(result["rows_per_s"] / decode["rows_per_s"], 3)
        if peer_rate:
            figures[f"{key}_to_hftbacktest"] = round(result["rows_per_s"] / peer_rate, 3)
        if "readings" in result:
            figures["readings"] = result["readings"]
    hour = run_measure("replay-one-hour", args.dir)
    if hour is not None:
        label = f"replay of one hour ({middle_hour(args.dir):02d}:00 to the next) for memory"
        print(f"{label:56s} peak RSS {hour['rss_mb']:,.0f} MB")
        figures["one_hour_rss_mb"] = round(hour["rss_mb"])
    for name in ("pacing-1", "pacing-10"):
        result = run_measure(name, args.dir)
        if result is not None:
            print(f"pacing --speed {result['speed']:g}: {result['readings']:,} readings over {result['data_s']:.0f} s "
                  f"of data in {result['wall_s']:.1f} s; lateness p50 {result['lateness_p50_ms']:.3f} ms, "
                  f"p99 {result['lateness_p99_ms']:.3f} ms, max {result['lateness_max_ms']:.1f} ms")
            speed = name.split("-")[1]
            figures[f"speed_{speed}_lateness_p50_ms"] = round(result["lateness_p50_ms"], 4)
            figures[f"speed_{speed}_lateness_p99_ms"] = round(result["lateness_p99_ms"], 4)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
