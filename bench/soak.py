"""Soak: record 5 symbols (spot + perp) from the synthetic venue at 10x realistic rates for --minutes, with a
fault every minute in rotation, and account for every message.

    python bench/soak.py --minutes 30            # the report in RELIABILITY.md
    python bench/soak.py --minutes 2             # a quick look
    python bench/soak.py --redundant --minutes 4 # two recorders killed in turn, then nova merge
    python bench/soak.py --handovers --minutes 10 # planned cuts only: every one must be a lossless handover
    python bench/soak.py --handovers --listings --minutes 10  # and listings that change under --all

The venue runs in its own process (`nova venue --rate 10`); the recorder runs in a child process of this
script, which samples its RSS and CPU from /proc. Faults rotate every minute through: sequence gap on both
markets, connection close, stalled stream, serverShutdown notice, slow snapshot (plus a gap to need one),
failing snapshot (plus a gap). At the end the venue is paused, the recorder catches up and stops cleanly,
and the script reports, per market: messages the venue wrote to the recorder's sockets, messages the
recorder received, messages on disk, and the unaccounted ones (received but not on disk: must be 0; sent
but not received are the frames in flight when a connection was dropped, each inside a ledgered
disconnect). Also: RSS over time (first 10% vs last 10%, and the peak), reconnect and resync times
p50/p99, CPU per symbol. The last line is one JSON object.

``--handovers``: no faults but the planned cuts a long run meets: the venue closes every connection 60 s after it
opened (Binance's 24 hours, shortened) and sends ``serverShutdown`` (5 s grace) to one market every minute; the
recorder hands over before each (make-before-break). Reports handovers, and what was lost at the cuts: book
chain breaks (``nova check``) and missing trade ids (target 0 for both), besides the usual accounting.

``--listings`` (with or without ``--handovers``): the recorder records ``--all`` (every USDT pair, reading
exchangeInfo every 10 s) and every 30 s the venue's listings change, in rotation: a new pair listed, a recorded
one halted, resumed, the new one delisted. Reports each change and how long the recorder took to start or stop the
symbol (from the ledger), and the same losses: a halt or a delisting is a ledgered stop, not a break.

``--redundant``: two recorders (`nova record --recorder-id a|b`) of the same venue into two roots, each
killed (-9) and restarted in turn every --kill-every seconds (3 s away, then the restart), no venue faults;
then `nova merge a b --into merged`. Reports, per market, what each recorder lacks of the merged recording
within its own first..last ids (book diff messages, trades), and what the merged recording itself lacks
(book chain breaks from `nova check`, holes in the trade ids), plus the book's watched seconds of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SYMBOLS = ["ETH/USDT", "BTC/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"]
PLANNED_AGE_S = 60.0  # --handovers: the venue's connection age limit
LISTING_EVERY_S = 10.0  # --listings: how often the recorder reads exchangeInfo
LISTING_CHANGES = [("list", "ADA/USDT"), ("halt", "SOL/USDT"), ("resume", "SOL/USDT"), ("delist", "ADA/USDT")]
FAULTS = [
    ("gap", "/_venue/fault/drop?market={m}&symbol={s}"),
    ("close", "/_venue/fault/close?market=all"),
    ("stall", "/_venue/fault/stall?market={m}&seconds=8"),
    ("serverShutdown", "/_venue/fault/shutdown?market=all&grace=1"),
    ("slow snapshot", "/_venue/fault/snapshot?market={m}&delay=3&count=3"),
    ("failing snapshot", "/_venue/fault/snapshot?market={m}&fail=2"),
]


def post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10).read()


def get_json(url: str) -> Any:
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def proc_sample(pid: int) -> tuple[float, float, float]:
    """(RSS in MB, CPU seconds, peak RSS so far in MB) of a process, from /proc."""
    with open(f"/proc/{pid}/status") as fh:
        status = {line.split(":", 1)[0]: line.split()[1] for line in fh if line.startswith(("VmRSS:", "VmHWM:"))}
    rss, peak = int(status["VmRSS"]) / 1024, int(status["VmHWM"]) / 1024
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu, peak


async def child(url: str, data: str, result: str, age_s: str, listing_s: str) -> None:
    """The recorder, in-process in this child: records until SIGTERM, then writes its counts. ``age_s`` > 0:
    the connections' age limit it hands over before (a quarter of it ahead); ``listing_s`` > 0: ``--all`` (USDT),
    reading exchangeInfo this often."""
    from nova.core.markets import Symbol
    from recorder.listings import Universe
    from recorder.recorder import Recorder, RecorderConfig

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    age, every = float(age_s), float(listing_s)
    planned: dict[str, Any] = {"max_connection_age_s": age, "handover_lead_s": age / 4} if age > 0 else {}
    if every > 0:
        planned.update(listing=Universe("USDT"), listing_every_s=every)
    rec = Recorder(RecorderConfig(symbols=[Symbol.parse(s) for s in SYMBOLS], data=data, endpoint=url,
                                  stall_s=5.0, live_spread=False, **planned))
    summary = await rec.run(stop)
    Path(result).write_text(json.dumps(summary))


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "n": 0}
    values = sorted(values)
    return {"p50": round(statistics.median(values), 3), "p99": round(values[min(len(values) - 1,
                                                                                  int(len(values) * 0.99))], 3),
            "n": len(values)}


def ledger_times(data: Path) -> dict[str, list[float]]:
    """Reconnect (disconnect -> reconnect) and resync (gap/disconnect -> resync) durations, in seconds."""
    import duckdb

    con = duckdb.connect()
    pattern = str(data / "events" / "**" / "*.parquet")
    rows = con.sql(f"SELECT market, symbol, stream, kind, epoch_ns(ts_recv) AS t FROM read_parquet('{pattern}', "
                   "hive_partitioning = true) ORDER BY t").fetchall()
    out: dict[str, list[float]] = {"reconnect_s": [], "resync_s": []}
    down: dict[tuple, int] = {}
    broken: dict[tuple, int] = {}
    for market, symbol, stream, kind, t in rows:
        key = (market, symbol, stream)
        if kind == "disconnect":
            down.setdefault(key, t)
            broken.setdefault(key, t)
        elif kind == "gap":
            broken.setdefault(key, t)
        elif kind == "reconnect" and key in down:
            out["reconnect_s"].append((t - down.pop(key)) / 1e9)
        elif kind == "resync" and key in broken:
            out["resync_s"].append((t - broken.pop(key)) / 1e9)
    return out


def ledger_errors(data: Path) -> dict[str, int]:
    """The ledger's error rows by what they say (their first words), most frequent first."""
    import duckdb

    pattern = str(data / "events" / "**" / "*.parquet")
    rows = duckdb.connect().execute(f"SELECT regexp_extract(detail, '^[^:;(]*') AS what, count(*) FROM read_parquet("
                                    f"'{pattern}', hive_partitioning = true) WHERE kind = 'error' GROUP BY what "
                                    "ORDER BY 2 DESC LIMIT 8").fetchall()
    return {what: n for what, n in rows}


STREAMED = ("bbo", "trades", "funding", "liquidations")  # with the book: the WebSocket streams


def on_disk(data: Path) -> dict[str, int]:
    import duckdb

    con = duckdb.connect()
    counts = {"spot": 0, "perp": 0}
    for table in ("book", *STREAMED):
        pattern = str(data / table / "**" / "*.parquet")
        if not list((data / table).rglob("*.parquet")):
            continue
        what = "count(DISTINCT (symbol, msg)) FILTER (WHERE NOT snapshot)" if table == "book" else "count(*)"
        for market, n in con.sql(f"SELECT market, {what} FROM read_parquet('{pattern}', hive_partitioning = "
                                 "true) GROUP BY market").fetchall():
            counts[market] += n
    return counts


def missing_against(data: Path, union: Path) -> dict[str, dict[str, int]]:
    """Per market: the book diff messages and trades the union holds within the window every source recorded
    (from the latest first id to the earliest last id of the sources) that ``data`` lacks."""
    import duckdb

    con = duckdb.connect()
    out: dict[str, dict[str, int]] = {}
    for market in ("spot", "perp"):
        counts = {}
        for table, ids in (("book", "first_id, last_id"), ("trades", "trade_id")):
            last = ids.split(", ")[-1]
            mine, theirs = (f"read_parquet('{root}/{table}/exchange=binance/market={market}/**/*.parquet', "
                            "hive_partitioning = true)" for root in (data, union))
            flt = "WHERE NOT snapshot" if table == "book" else ""
            counts[f"{table}_missing"] = con.execute(
                f"WITH m AS (SELECT DISTINCT symbol, {ids} FROM {mine} {flt}), "
                f"u AS (SELECT DISTINCT symbol, {ids} FROM {theirs} {flt}), "
                f"w AS (SELECT symbol, min({last}) AS lo, max({last}) AS hi FROM m GROUP BY symbol) "
                f"SELECT count(*) FROM u JOIN w USING (symbol) WHERE u.{last} BETWEEN w.lo AND w.hi "
                f"AND (symbol, {ids}) NOT IN (SELECT (symbol, {ids}) FROM m)").fetchone()[0]
        out[market] = counts
    return out


def merged_breaks(data: Path) -> dict[str, dict[str, int]]:
    """Per market: book chain breaks (nova check; of them, those the ledger does not explain) and gaps in the trade
    ids while the symbol was recorded (from each ledgered start of its trades to the next; a symbol stopped by a
    halt or a delisting is not recorded until it starts again, by design)."""
    import duckdb

    from nova.analysis.check import check

    reports = check(data)
    con = duckdb.connect()
    out = {}
    for market in ("spot", "perp"):
        where = f"exchange=binance/market={market}/**/*.parquet', hive_partitioning = true)"
        trades = con.execute(
            f"WITH t AS (SELECT symbol, trade_id, ts_recv FROM read_parquet('{data}/trades/{where}), "
            f"s AS (SELECT symbol, ts_recv AS started FROM read_parquet('{data}/events/{where} "
            "WHERE stream = 'trades' AND kind = 'start'), "
            "seg AS (SELECT t.symbol, s.started, t.trade_id FROM t ASOF JOIN s ON t.symbol = s.symbol "
            "AND t.ts_recv >= s.started) "
            "SELECT coalesce(sum(n), 0) FROM (SELECT max(trade_id) - min(trade_id) + 1 - count(DISTINCT trade_id) "
            "AS n FROM seg GROUP BY symbol, started)").fetchall()[0][0]
        books = [r for r in reports if r.table == "book" and r.market == market]
        out[market] = {"book_chain_breaks": sum(r.breaks for r in books),
                       "unexplained_breaks": sum(r.breaks - r.explained for r in books),
                       "trade_ids_missing": int(trades),
                       "book_watched_s": round(sum(r.watched_s or 0 for r in books), 1)}
    return out


def redundant(args: argparse.Namespace, nova: str) -> None:
    """Two recorders of the same venue into two roots, each killed (-9) and restarted in turn every
    --kill-every seconds, then ``nova merge``: what each lost, and what the merged recording lost."""
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        roots = {name: Path(tmp) / name for name in ("a", "b")}
        venue = subprocess.Popen([nova, "venue", "--port", "0", "--symbols", ",".join(SYMBOLS), "--rate",
                                  str(args.rate), "--seed", "11"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
        assert venue.stdout is not None
        url = venue.stdout.readline().strip()

        def start(name: str) -> subprocess.Popen:
            return subprocess.Popen([nova, "record", *SYMBOLS, "--venue", url, "--data", str(roots[name]),
                                     "--recorder-id", name, "-q"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        recs = {name: start(name) for name in roots}
        kills: list[str] = []
        started = time.monotonic()
        next_kill = started + args.kill_every
        try:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(1)
                if time.monotonic() >= next_kill:
                    name = "ab"[len(kills) % 2]
                    recs[name].kill()
                    recs[name].wait()
                    time.sleep(3)  # away long enough to miss a few hundred messages
                    recs[name] = start(name)
                    kills.append(f"{time.monotonic() - started:.0f}s:{name}")
                    print(f"{time.monotonic() - started:6.0f} s  kill -9 and restart of recorder {name}", flush=True)
                    next_kill += args.kill_every
            post(url + "/_venue/pause")
            time.sleep(8)
            for proc in recs.values():
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=120)
        finally:
            for proc in recs.values():
                if proc.poll() is None:
                    proc.kill()
            venue.send_signal(signal.SIGINT)
            venue.wait(timeout=30)
        merged = Path(tmp) / "merged"
        t0 = time.monotonic()
        subprocess.run([nova, "merge", str(roots["a"]), str(roots["b"]), "--into", str(merged)], check=True,
                       stderr=subprocess.DEVNULL)
        merge_s = time.monotonic() - t0
        report = {"mode": "redundant", "minutes": args.minutes, "rate": args.rate, "symbols": len(SYMBOLS),
                  "kills": kills, "merge_s": round(merge_s, 1),
                  "lost_by": {name: missing_against(root, merged) for name, root in roots.items()},
                  "merged": merged_breaks(merged),
                  "sources": {name: merged_breaks(root) for name, root in roots.items()}}
    print(json.dumps(report))


def listing_reactions(data: Path, changes: list[tuple[float, str, str]]) -> list[dict[str, Any]]:
    """Each listing change of the venue and the recorder's answer in the ledger: the first ``start`` (list,
    resume) or ``stop`` (halt, delist) of the symbol's book on each market after it, and how long after."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(data / "events"), partitioning="hive").to_table(
        columns=["ts_recv", "market", "symbol", "stream", "kind", "detail"]).to_pylist()
    out = []
    for wall, action, symbol in changes:
        kind = "start" if action in ("list", "resume") else "stop"
        answers = {}
        for market in ("spot", "perp"):
            rows = [r for r in table if r["market"] == market and r["symbol"] == symbol.replace("/", "-")
                    and r["stream"] == "book" and r["kind"] == kind and r["ts_recv"].timestamp() >= wall]
            first = min(rows, key=lambda r: r["ts_recv"], default=None)
            answers[market] = None if first is None else round(first["ts_recv"].timestamp() - wall, 1)
        said = "started_after_s" if kind == "start" else "stopped_after_s"
        out.append({"action": action, "symbol": symbol, said: answers})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--redundant", action="store_true",
                        help="two recorders, each killed and restarted in turn, then nova merge (RELIABILITY.md)")
    parser.add_argument("--kill-every", type=float, default=30.0, help="with --redundant: seconds between kills")
    parser.add_argument("--keep", help="record into this folder and keep it")
    parser.add_argument("--handovers", action="store_true",
                        help="planned cuts only: the venue closes connections 60 s after they open and sends "
                        "serverShutdown every minute; the recorder must hand over with nothing lost")
    parser.add_argument("--listings", action="store_true",
                        help="record --all (USDT pairs) while the venue lists, halts, resumes and delists symbols "
                        "every 30 s; reports how fast each change was followed")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(*args.child))
        return
    nova = str(Path(sys.executable).parent / "nova")
    if args.redundant:
        redundant(args, nova)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data, result = Path(args.keep or tmp) / "data", Path(tmp) / "summary.json"
        age = ["--max-connection-age", f"{PLANNED_AGE_S:g}s"] if args.handovers else []
        venue = subprocess.Popen([nova, "venue", "--port", "0", "--symbols", ",".join(SYMBOLS), "--rate",
                                  str(args.rate), "--seed", "11", *age], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
        assert venue.stdout is not None
        url = venue.stdout.readline().strip()
        rec = subprocess.Popen([sys.executable, __file__, "--child", url, str(data), str(result),
                                str(PLANNED_AGE_S if args.handovers else 0),
                                str(LISTING_EVERY_S if args.listings else 0)])
        changes: list[tuple[float, str, str]] = []  # (wall time, action, symbol)
        next_change = time.monotonic() + 30
        samples: list[tuple[float, float, float]] = []
        peak_rss = 0.0
        faults: list[str] = []
        started = time.monotonic()
        next_fault = started + 60
        markets = ["spot", "perp"]
        try:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(2)
                rss, cpu, peak_rss = proc_sample(rec.pid)
                samples.append((time.monotonic() - started, rss, cpu))
                if args.listings and time.monotonic() >= next_change:
                    action, symbol = LISTING_CHANGES[len(changes) % len(LISTING_CHANGES)]
                    post(url + f"/_venue/listing/{action}?symbol={symbol}")
                    changes.append((time.time(), action, symbol))
                    next_change += 60 if action == "delist" else 30  # a minute between a delisting and a relisting
                    print(f"{time.monotonic() - started:6.0f} s  {action} {symbol}", flush=True)
                if time.monotonic() >= next_fault and args.handovers:
                    market = markets[len(faults) % 2]
                    post(url + f"/_venue/fault/shutdown?market={market}&grace=5")
                    faults.append(f"serverShutdown:{market}")
                    next_fault += 60
                    print(f"{time.monotonic() - started:6.0f} s  serverShutdown ({market})  RSS {rss:.0f} MB",
                          flush=True)
                elif time.monotonic() >= next_fault:
                    name, path = FAULTS[len(faults) % len(FAULTS)]
                    market = markets[len(faults) % 2]
                    for sym in SYMBOLS:
                        sid = sym.replace("/", "")
                        if name in ("slow snapshot", "failing snapshot"):
                            post(url + path.format(m=market, s=sid))
                            post(url + f"/_venue/fault/drop?market={market}&symbol={sid}")
                        elif name == "gap":
                            for m in markets:
                                post(url + path.format(m=m, s=sid))
                        elif "{s}" not in path:
                            post(url + path.format(m=market))
                            break
                        else:
                            post(url + path.format(m=market, s=sid))
                            break
                    faults.append(f"{name}:{market}")
                    next_fault += 60
                    print(f"{time.monotonic() - started:6.0f} s  fault {name} ({market})  RSS {rss:.0f} MB", flush=True)
            post(url + "/_venue/pause")
            time.sleep(8)  # let the recorder catch up, and any resync finish
            sent = {m: get_json(url + "/_venue/status")["markets"][m]["messages_sent"] for m in markets}
            rec.send_signal(signal.SIGTERM)
            rec.wait(timeout=120)
        finally:
            if rec.poll() is None:
                rec.kill()
            venue.send_signal(signal.SIGINT)
            venue.wait(timeout=30)
        summary = json.loads(result.read_text())
        received = {m: sum(v["messages"] for k, v in summary.items()  # WebSocket streams (not polled REST)
                           if k.startswith(m + "/") and k.rsplit("/", 1)[1] in STREAMED) for m in markets}
        stored = on_disk(data)
        times = ledger_times(data)
        events = {k: sum(v.get(k, 0) for v in summary.values()) for k in ("gaps", "reconnects", "handovers", "errors")}
        planned = args.handovers or args.listings
        breaks = merged_breaks(data) if planned else None
        said = ledger_errors(data) if planned else None
        followed = listing_reactions(data, changes) if args.listings else None
    tenth = max(1, len(samples) // 10)
    first = statistics.mean(s[1] for s in samples[:tenth])
    last = statistics.mean(s[1] for s in samples[-tenth:])
    cpu_s = samples[-1][2] if samples else 0.0
    report = {
        "minutes": args.minutes, "rate": args.rate, "symbols": len(SYMBOLS), "faults": faults,
        "venue_sent": sent, "recorder_received": received, "on_disk": stored,
        "unaccounted_received_not_on_disk": {m: received[m] - stored[m] for m in markets},
        # with handovers the venue writes the overlap to both connections: the difference is duplicates dropped
        ("duplicates_dropped_in_handovers" if args.handovers else "in_flight_lost_at_ledgered_disconnects"):
            {m: sent[m] - received[m] for m in markets},
        **({"lost_at_planned_cuts": breaks, "ledger_errors": said} if breaks is not None else {}),
        **({"listing_changes": followed} if followed is not None else {}),
        "ledger": events,
        "rss_mb_first_10pct": round(first, 1), "rss_mb_last_10pct": round(last, 1),
        "rss_growth_pct": round((last / first - 1) * 100, 1) if first else None,
        "rss_mb_peak": round(peak_rss, 1),
        "reconnect_s": percentiles(times["reconnect_s"]), "resync_s": percentiles(times["resync_s"]),
        "cpu_s_per_symbol_per_min": round(cpu_s / len(SYMBOLS) / args.minutes, 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
