"""``nova check``: is a recorded day trustworthy? One report row per table, market, symbol and day.

What it verifies, and why each matters to a researcher:
- every visible file reads (a damaged file is named, so it can be restored or skipped);
- no hidden leftovers of a crash (journals a recorder would recover, half-written temporary files);
- the diff-depth id chain (spot ``U == previous u + 1``, perp ``pu == previous u``) over the received
  messages in ``msg`` order, and for every break, whether the ledger explains it: a ``gap`` event for that
  very message, or a disconnect, error, start or stop between the two messages. An unexplained break means
  the recording lost something silently, which must never happen;
- the book rebuilt by the contract's rule is never crossed (best bid >= best ask) while it is valid.
"""

from __future__ import annotations

import bisect
import fcntl
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numba import njit

from nova.book import ASK, BID, NO_SIDE, book_apply, book_best, book_clear, grow_books, new_books, side_codes
from nova.contract import RECORDED_TABLES
from nova.errors import NovaError

_EXPLAINING = ("disconnect", "error", "start", "stop")


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
    breaks: int = 0
    explained: int = 0
    crossed: int = 0
    unreadable: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unreadable or self.leftovers or self.crossed or self.breaks != self.explained)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["ok"] = self.ok
        out["hours_covered"] = round((self.last_ts - self.first_ts) / 3.6e12, 4) if self.first_ts else 0.0
        return out


@njit(nogil=True)
def _rebuild(px: np.ndarray, qty: np.ndarray, n: np.ndarray, starts: np.ndarray, snapshot: np.ndarray,
             stale: np.ndarray, sides: np.ndarray, prices: np.ndarray, amounts: np.ndarray,
             crossed: np.ndarray, first_message: int) -> int:
    """Apply messages from ``first_message``; flag the crossed ones. Returns where a full book stopped it."""
    for m in range(first_message, len(starts) - 1):
        lo, hi = starts[m], starts[m + 1]
        if snapshot[m]:
            book_clear(n, 0)
        if stale[m]:
            continue
        if book_apply(px, qty, n, 0, sides[lo:hi], prices[lo:hi], amounts[lo:hi], 0) < hi - lo:
            return m
        bid, _ = book_best(px, qty, n, 0, BID)
        ask, _ = book_best(px, qty, n, 0, ASK)
        if bid == bid and ask == ask and bid >= ask:
            crossed[m] = True
    return len(starts) - 1


class BookChecker:
    """Carries the book and the id chain of one market's book stream across its files and days."""

    def __init__(self, market: str) -> None:
        self.market = market
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
        sides = side_codes(table.column("side"))
        sides[stale_rows] = NO_SIDE
        prices = table.column("price").fill_null(0.0).to_numpy()
        amounts = table.column("amount").fill_null(0.0).to_numpy()
        crossed = np.zeros(len(starts), np.bool_)
        done = 0
        while (done := _rebuild(self.px, self.qty, self.n, bounds, snapshot, stale, sides, prices, amounts,
                                crossed, done)) < len(starts):
            self.px, self.qty = grow_books(self.px, self.qty, 2 * self.px.shape[2])
        report.crossed += int(crossed.sum())
        if crossed.any():
            report.problems.append(f"book crossed after message {int(msg[starts][np.argmax(crossed)])}")

    def _chain(self, snapshot: np.ndarray, ts: np.ndarray, first: np.ndarray, last: np.ndarray,
               prev: np.ndarray, events: list[dict], report: DayReport) -> None:
        gap_at = {(e["ts_recv"], e["received_id"]) for e in events if e["kind"] == "gap"}
        other = sorted(e["ts_recv"] for e in events if e["kind"] in _EXPLAINING)
        for i in np.flatnonzero(~snapshot):
            if self.prev_last is not None:
                received = int(prev[i]) if self.market == "perp" else int(first[i])
                expected = self.prev_last if self.market == "perp" else self.prev_last + 1
                if received != expected:
                    report.breaks += 1
                    t = int(ts[i])
                    if (t, received) in gap_at or _any_between(other, self.prev_ts or 0, t):
                        report.explained += 1
                    else:
                        report.problems.append(f"unexplained id break at {t}: expected {expected}, "
                                               f"got {received}")
            self.prev_last, self.prev_ts = int(last[i]), int(ts[i])


def _any_between(sorted_ts: list[int], lo: int, hi: int) -> bool:
    i = bisect.bisect_right(sorted_ts, lo)
    return i < len(sorted_ts) and sorted_ts[i] <= hi


def _recorder_running(data: Path) -> bool:
    lock = data / ".nova-recorder.lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _partitions(data: Path, table: str) -> dict[tuple[str, str, str], Path]:
    out = {}
    for date_dir in sorted((data / table).glob("exchange=*/market=*/symbol=*/date=*")):
        market = date_dir.parent.parent.name.split("=", 1)[1]
        symbol = date_dir.parent.name.split("=", 1)[1]
        out[(market, symbol, date_dir.name.split("=", 1)[1])] = date_dir
    return out


def _read(path: Path, report: DayReport) -> pa.Table | None:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        report.unreadable.append(str(path))
        report.problems.append(f"{path} does not read ({str(exc).splitlines()[0][:120]})")
        return None


def check(data: Path, date: str | None = None, symbol: str | None = None) -> list[DayReport]:
    """Reports for every table, market, symbol and day (optionally one date and/or one symbol)."""
    if not data.is_dir():
        raise NovaError(f"the data directory {data} does not exist; point --data at a recording")
    dash = symbol.replace("/", "-").upper() if symbol else None
    running = _recorder_running(data)
    reports: list[DayReport] = []
    events: dict[tuple[str, str], list[dict]] = {}  # a break can be explained by the previous day's ledger
    for (market, sym, _), folder in _partitions(data, "events").items():
        for path in sorted(folder.glob("*.parquet")):
            try:
                rows = pq.read_table(path, columns=["ts_recv", "stream", "kind", "received_id"])
            except (OSError, pa.ArrowException):
                continue
            rows = rows.set_column(0, "ts_recv", rows.column("ts_recv").cast(pa.int64()))
            rows = rows.set_column(2, "kind", rows.column("kind").cast(pa.string()))
            events.setdefault((market, sym), []).extend(r for r in rows.to_pylist() if r["stream"] == "book")
    for table in RECORDED_TABLES:
        checkers: dict[tuple[str, str], BookChecker] = {}
        for (market, sym, day), folder in _partitions(data, table).items():
            if (date and day != date) or (dash and sym != dash):
                continue
            report = DayReport(table, market, sym, day)
            reports.append(report)
            for path in sorted(folder.iterdir()):
                if path.name.startswith("."):
                    if path.name.endswith(".parquet.tmp") or (path.name.endswith(".arrows") and not running):
                        report.leftovers.append(str(path))
                        report.problems.append(f"{path} was left by a crash (nova record recovers it on start)")
                    continue
                if path.suffix != ".parquet":
                    continue
                report.files += 1
                content = _read(path, report)
                if content is None or content.num_rows == 0:
                    continue
                report.rows += content.num_rows
                ts = content.column("ts_recv").cast(pa.int64())
                lo, hi = int(np.min(ts.to_numpy())), int(np.max(ts.to_numpy()))
                report.first_ts = lo if report.first_ts is None else min(report.first_ts, lo)
                report.last_ts = hi if report.last_ts is None else max(report.last_ts, hi)
                if table == "book":
                    checker = checkers.setdefault((market, sym), BookChecker(market))
                    checker.check(content, events.get((market, sym), []), report)
                else:
                    report.messages += content.num_rows
    if not reports:
        what = " and ".join(x for x in (f"date {date}" if date else "", f"symbol {symbol}" if symbol else "") if x)
        raise NovaError(f"no recording found in {data}" + (f" for {what}" if what else "") +
                        "; check --data, --date and --symbol")
    return reports


def summarize(reports: list[DayReport]) -> bool:
    return all(r.ok for r in reports)

