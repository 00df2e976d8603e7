"""``nova check``: is a recorded day trustworthy? One report row per table, market, symbol and day.

What it verifies, and why each matters to a researcher:
- every visible file reads (a damaged file is named, so it can be restored or skipped);
- no hidden leftovers of a crash (journals a recorder would recover, half-written temporary files);
- the diff-depth id chain (spot ``U == previous u + 1``, perp ``pu == previous u``) over the received
  messages in ``msg`` order, and for every break, whether the ledger explains it: a ``gap`` event for that
  very message, or a disconnect, error, start or stop between the two messages. An unexplained break means
  the recording lost something silently, which must never happen;
- the book rebuilt by the contract's rule is never crossed (best bid >= best ask) while it is valid (by
  nova.core.validity's rule: between a snapshot and the next break of the ledger);
- the day's runs came from one source (the ledger's provenance): a partition that mixes sources is not one
  market, whatever its files say.

Each row also says how much of its day was watched: the time the market's book was valid, from the ledger.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from nova.core.book import ASK, BID, apply_message, book_best, grow_books, kernel, new_books, side_codes, usable
from nova.core.contract import RECORDED_TABLES
from nova.core.dataset import Dataset, run_sources
from nova.core.errors import NovaError
from nova.core.rules import links
from nova.core.validity import Span, covered_ns

_EXPLAINING = ("disconnect", "error", "start", "stop")
HELD_NS = 60 * 10**9  # how long a recorder holds diffs behind a snapshot request, at most
DAY_NS = 86_400 * 10**9


@dataclass
class DayReport:
    table: str
    market: str
    symbol: str
    date: str
    files: int = 0
    rows: int = 0
    messages: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    watched_s: float | None = None  # the market's book valid time that day (None: no book recorded)
    sources: list[str] = field(default_factory=list)
    breaks: int = 0
    explained: int = 0
    crossed: int = 0
    unreadable: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unreadable or self.leftovers or self.crossed or self.breaks != self.explained
                    or len(self.sources) > 1)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["ok"] = self.ok
        out["span_s"] = (self.last_ts - self.first_ts) / 1e9 if self.first_ts is not None and self.last_ts else 0.0
        return out


@kernel()
def _rebuild(px: np.ndarray, qty: np.ndarray, n: np.ndarray, starts: np.ndarray, snapshot: np.ndarray,
             stale: np.ndarray, valid: np.ndarray, sides: np.ndarray, prices: np.ndarray, amounts: np.ndarray,
             crossed: np.ndarray, first_message: int) -> int:
    """Apply messages from ``first_message``; flag the ones after which a valid book is crossed. Returns where
    a full book stopped it."""
    for m in range(first_message, len(starts) - 1):
        lo, hi = starts[m], starts[m + 1]
        if stale[m]:  # the rebuild rule: a stale message is skipped, snapshot or not
            continue
        if apply_message(px, qty, n, 0, snapshot[m], sides, prices, amounts, lo, hi) < hi:
            return m
        bid, _ = book_best(px, qty, n, 0, BID)
        ask, _ = book_best(px, qty, n, 0, ASK)
        if valid[m] and bid == bid and ask == ask and bid >= ask:
            crossed[m] = True
    return len(starts) - 1


class BookChecker:
    """Carries the book and the id chain of one market's book stream across its files and days."""

    def __init__(self, market: str, spans: list[Span]) -> None:
        self.market = market
        self.span_starts = np.array([sp.start_ns for sp in spans], dtype=np.int64)
        self.span_ends = np.array([sp.end_ns for sp in spans], dtype=np.int64)
        self.px, self.qty, self.n = new_books(1, 4096)
        self.prev_last: int | None = None
        self.prev_ts: int | None = None

    def check(self, table: pa.Table, events: list[dict], report: DayReport) -> None:
        msg = table.column("msg").to_numpy()
        starts = np.flatnonzero(np.r_[True, msg[1:] != msg[:-1]])
        bounds = np.r_[starts, len(msg)]
        report.messages += len(starts)
        snapshot = table.column("snapshot").to_numpy(zero_copy_only=False)[starts]
        stale_rows = table.column("stale").to_numpy(zero_copy_only=False)
        stale = stale_rows[starts].copy()
        ts = table.column("ts_recv").cast(pa.int64()).to_numpy()[starts]
        first = table.column("first_id").to_numpy()[starts]
        last = table.column("last_id").to_numpy()[starts]
        prev = table.column("prev_id").fill_null(-1).to_numpy()[starts]
        self._chain(snapshot, ts, first, last, prev, events, report)
        sides = usable(side_codes(table.column("side")), stale_rows)
        prices = table.column("price").fill_null(0.0).to_numpy()
        amounts = table.column("amount").fill_null(0.0).to_numpy()
        crossed = np.zeros(len(starts), np.bool_)
        effect = np.maximum.accumulate(ts)  # a message takes effect at the stream's running receive time
        i = np.searchsorted(self.span_starts, effect, side="right") - 1
        valid = (i >= 0) & (effect < self.span_ends[np.maximum(i, 0)])
        done = 0
        while (done := _rebuild(self.px, self.qty, self.n, bounds, snapshot, stale, valid, sides, prices, amounts,
                                crossed, done)) < len(starts):
            self.px, self.qty = grow_books(self.px, self.qty, 2 * self.px.shape[2])
        report.crossed += int(crossed.sum())
        if crossed.any():
            report.problems.append(f"book crossed after message {int(msg[starts][np.argmax(crossed)])}")

    def _chain(self, snapshot: np.ndarray, ts: np.ndarray, first: np.ndarray, last: np.ndarray,
               prev: np.ndarray, events: list[dict], report: DayReport) -> None:
        # a gap is ledgered at the time it took effect, which for a diff held behind a snapshot is the
        # snapshot's (later than the diff's own receive time)
        gap_at: dict[int, list[int]] = {}
        for e in events:
            if e["kind"] == "gap" and e["received_id"] is not None:
                gap_at.setdefault(e["received_id"], []).append(e["ts_recv"])
        other = sorted(e["ts_recv"] for e in events if e["kind"] in _EXPLAINING)
        for i in np.flatnonzero(~snapshot):
            if self.prev_last is not None:
                chained, expected, received = links(self.market, self.prev_last, int(first[i]), int(prev[i]))
                if not chained:
                    report.breaks += 1
                    t = int(ts[i])
                    ledgered = any(t <= g <= t + HELD_NS for g in gap_at.get(received, ()))
                    if ledgered or _any_between(other, self.prev_ts or 0, t):
                        report.explained += 1
                    else:
                        report.problems.append(f"unexplained id break at {t}: expected {expected}, "
                                               f"got {received}")
            self.prev_last, self.prev_ts = int(last[i]), int(ts[i])


def _any_between(sorted_ts: list[int], lo: int, hi: int) -> bool:
    i = bisect.bisect_right(sorted_ts, lo)
    return i < len(sorted_ts) and sorted_ts[i] <= hi


def _read(data: Dataset, path: str, report: DayReport) -> pa.Table | None:
    try:
        return data.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        report.unreadable.append(path)
        report.problems.append(f"{path} does not read ({str(exc).splitlines()[0][:120]}); move it away or "
                               "restore it")
        return None


def check(root: Path | str, date: str | None = None, symbol: str | None = None) -> list[DayReport]:
    """Reports for every table, market, symbol and day (optionally one date and/or one symbol, dashed)."""
    data = Dataset(root)
    data.check_reachable()
    if not data.exists():
        raise NovaError(f"the data directory {root} does not exist; point --data at a recording")
    running: dict[tuple[str, str], bool] = {}  # (market, symbol) -> a live recorder claims it
    reports: list[DayReport] = []
    ledgers: dict[tuple[str, str], list[dict]] = {}  # a break can be explained by the previous day's ledger
    spans: dict[tuple[str, str], list[Span]] = {}

    def ledger_of(market: str, sym: str) -> list[dict]:
        if (market, sym) not in ledgers:
            ledgers[(market, sym)] = data.ledger(market, sym)
            spans[(market, sym)] = data.book_spans(market, sym, ledgers[(market, sym)])
        return ledgers[(market, sym)]

    for table in RECORDED_TABLES:
        checkers: dict[tuple[str, str], BookChecker] = {}
        for partition in data.partitions(table, symbol=symbol, date=date):
            market, sym, day = partition.market, partition.symbol, partition.date
            report = DayReport(table, market, sym, day)
            reports.append(report)
            ledger = ledger_of(market, sym)
            lo = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()) * 10**9
            report.sources = run_sources(ledger, lo, lo + DAY_NS)
            if len(report.sources) > 1:
                report.problems.append(f"the day mixes recordings from {len(report.sources)} sources "
                                       f"({'; '.join(report.sources)}): it is not one market; keep each source "
                                       "in its own data directory")
            if data.partitions("book", market, sym, day):
                report.watched_s = covered_ns(spans[(market, sym)], lo, lo + DAY_NS) / 1e9
            if (market, sym) not in running:
                running[(market, sym)] = data.claimed(market, sym) is not None
            for path in data.crash_leftovers(partition, writing=running[(market, sym)]):
                report.leftovers.append(path)
                report.problems.append(f"{path} was left by a crash (nova recover finishes it; so does the "
                                       "next nova record on this directory)")
            for path, _ in data.files(partition):
                report.files += 1
                content = _read(data, path, report)
                if content is None or content.num_rows == 0:
                    continue
                report.rows += content.num_rows
                ts = content.column("ts_recv").cast(pa.int64())
                first, last = int(np.min(ts.to_numpy())), int(np.max(ts.to_numpy()))
                report.first_ts = first if report.first_ts is None else min(report.first_ts, first)
                report.last_ts = last if report.last_ts is None else max(report.last_ts, last)
                if table == "book":
                    checker = checkers.setdefault((market, sym), BookChecker(market, spans[(market, sym)]))
                    checker.check(content, [r for r in ledger if r.get("stream") == "book"], report)
                else:
                    report.messages += content.num_rows
    if not reports:
        what = " and ".join(x for x in (f"date {date}" if date else "", f"symbol {symbol}" if symbol else "") if x)
        raise NovaError(f"no recording found in {root}" + (f" for {what}" if what else "") +
                        "; check --data, --date and --symbol")
    return reports
