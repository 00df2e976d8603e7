"""Finding what a replay reads: recorded symbols and dates, and for each stream the files and row groups.

Why planning by Parquet statistics: a replay of one hour of a week-long recording must not open the week.
Every file's footer holds the min/max receive time of each row group (and whether it holds snapshot rows),
so the plan reads footers only and picks the row groups that matter.

Why a warm-up: the books at the start of a range are built from the last snapshot before it, which may be
hours (or, when the recorder ran across midnight, a day) earlier; rows before a snapshot cannot be applied.
So each market's book stream starts at the row group holding its last snapshot message at or before the
start (searching back at most ``WARMUP_DAYS`` earlier dates), and the other streams of both markets start at
the row group covering the earliest of those snapshots, so the freshest bookTicker, the funding rate and
the ledger's invalidations are all known when the range begins. What is processed before the start yields
no reading and is not counted.

Why the tick sizes: each market's book is price-indexed (nova.core.tick_book) when the ``instruments`` table
(exchangeInfo, recorded at every start and whenever it changed) gives one tick size over the whole range read;
otherwise, or when it changed, that market keeps the sorted book (``Planner.ticks`` says why). The tick is only
a speed hint: the price-indexed book checks every price against it exactly and falls back by itself.

All file access goes through the dataset (nova.core.dataset), which owns the layout and the I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from nova.core.dataset import Dataset, MissingColumns, RowGroup, run_sources
from nova.core.errors import NovaError
from nova.core.markets import MARKETS, Market, Symbol
from nova.core.tick_book import tick_grid

WARMUP_DAYS = 2  # Binance closes every connection within 24 h, so a live recording resnapshots at least daily
EVENT_CLOCK_MARGIN_NS = 60 * 10**9  # exchange time vs receive time: how far apart we allow them to be
DAY_NS = 86_400 * 10**9

STREAM_TABLES: dict[str, tuple[Market, ...]] = {"book": MARKETS, "bbo": MARKETS, "funding": ("perp",),
                                                "trades": MARKETS, "events": MARKETS}
INSTRUMENTS = "instruments"  # exchangeInfo as recorded (nova.core.contract.INSTRUMENTS): where the tick sizes are


def date_ns(date: str) -> int:
    """Midnight UTC of a ``YYYY-MM-DD`` date, in ns since the epoch."""
    day = dt.datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    return int(day.timestamp()) * 10**9


def shift_date(date: str, days: int) -> str:
    return (dt.date.fromisoformat(date) + dt.timedelta(days=days)).isoformat()


@dataclass(frozen=True)
class FilePart:
    """Row groups to read from one Parquet file (in order)."""

    path: str
    row_groups: tuple[int, ...]
    rows: int


@dataclass
class StreamPlan:
    """The parts of one stream (a table of one market) a replay reads, in stream order."""

    table: str
    market: Market
    parts: list[FilePart] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)


class ReplaySource:
    """What a replay reads of a data root: the core dataset (nova.core.dataset: listing, footers, reading) and the
    files the replay had to skip (``bad``: path -> why, kept with ``--skip-bad``).

    Footers are kept once read: every pass of a ``Replay`` plans again (the listing may have grown), and a
    visible data file never changes (writers publish a file whole under a new name), so its footer is read
    once per source rather than once per pass (~2 % of a pass over 6 hours on a local disk, more on a store).
    """

    def __init__(self, root: str) -> None:
        self.data = Dataset(root)
        self.data.check_reachable()  # an object store that is not there: one sentence, not "no data"
        self.root_text = self.data.text
        self.bad: dict[str, str] = {}
        self._footers: dict[tuple[str, tuple[str, ...]], list[RowGroup]] = {}

    def symbols(self) -> list[str]:
        """Every symbol with recorded data (ccxt spelling), over the tables a replay reads."""
        return [s.replace("-", "/") for s in self.data.symbols(STREAM_TABLES)]

    def dates(self, symbol: Symbol, tables: tuple[str, ...] = tuple(STREAM_TABLES),
              markets: tuple[Market, ...] = MARKETS) -> list[str]:
        """Dates with at least one visible file of ``symbol`` in any of ``tables`` and ``markets``."""
        return sorted({d for t in tables for d in self.data.dates(symbol.dashed, (t,),
                                                                  [m for m in STREAM_TABLES[t] if m in markets])})

    def stream_files(self, table: str, market: Market, symbol: Symbol, dates: list[str]) -> list[str]:
        """The visible files of one stream on ``dates``, in stream (name) order."""
        return [path for date in dates
                for path, _ in self.data.files(self.data.partition(table, market, symbol, date))]

    def footer(self, path: str, columns: tuple[str, ...]) -> list[RowGroup] | None:
        """Row-group statistics of a file, or None when it is unreadable or lacks ``columns`` (then ``bad``
        says why)."""
        known = self._footers.get((path, columns))
        if known is not None:
            return known
        try:
            groups = self.data.row_groups(path, columns)
            self._footers[(path, columns)] = groups
            return groups
        except MissingColumns as exc:
            self.bad[path] = str(exc)
        except (OSError, pa.ArrowException) as exc:
            self.bad[path] = reason(exc)
        return None

    def run_sources(self, symbol: Symbol, start_ns: int, end_ns: int) -> dict[str, list[str]]:
        """Per market, the sources (ledger provenance) of the recording runs that overlap [start_ns, end_ns)."""
        out: dict[str, list[str]] = {}
        for market in MARKETS:
            found = run_sources(self.data.ledger(market, symbol.dashed), start_ns, end_ns)
            if found:
                out[market] = found
        return out

    def read_row_group(self, path: str, group: int, columns: list[str]) -> pa.Table:
        return self.data.read_row_group(path, group, columns)

    def tick_rows(self, market: Market, symbol: Symbol, begin_ns: int, end_ns: int) -> list[tuple[int, float | None]]:
        """(receive time, tick size) of the instruments rows of one market that were in effect over
        [begin_ns, end_ns): the last one at or before ``begin_ns`` and those after it, in time order. Dates are
        read from the last backwards, stopping at the first that holds a row at or before ``begin_ns`` (a recorder
        writes the row at its start and when exchangeInfo changes, so it may be days old)."""
        partitions = [p for p in self.data.partitions(INSTRUMENTS, market, symbol.dashed) if date_ns(p.date) < end_ns]
        rows: list[tuple[int, float | None]] = []
        for partition in reversed(partitions):  # listed one date at a time: a long recording has many
            for path, _ in self.data.files(partition):
                table = self.data.read_table(path, ["ts_recv", "tick_size"])
                rows.extend(zip(table.column("ts_recv").cast(pa.int64()).to_pylist(),
                                table.column("tick_size").to_pylist(), strict=True))
            if any(ts <= begin_ns for ts, _ in rows):
                break
        rows = sorted(r for r in rows if r[0] < end_ns)
        before = [r for r in rows if r[0] <= begin_ns]
        return before[-1:] + [r for r in rows if r[0] > begin_ns]


def unreadable(path: str, why: str) -> NovaError:
    return NovaError(f"cannot read {path} ({why}); move it away, or run again with --skip-bad to replay without it")


def reason(exc: BaseException) -> str:
    """The first sentence of an exception's message, to fit inside one sentence of ours."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(". ")[0].rstrip(".")[:160]


@dataclass
class _Candidate:
    path: str
    groups: list[RowGroup]


class Planner:
    """Turns a symbol and a time range into the ``StreamPlan`` of every stream, warm-up included."""

    def __init__(self, dataset: ReplaySource, symbol: Symbol, start_ns: int, end_ns: int, event_clock: bool,
                 columns: dict[str, tuple[str, ...]], skip_bad: bool) -> None:
        self.dataset = dataset
        self.symbol = symbol
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.margin = EVENT_CLOCK_MARGIN_NS if event_clock else 0
        self.columns = columns
        self.skip_bad = skip_bad
        self.warmup_ns: dict[Market, int | None] = {}
        self.recorded: dict[tuple[str, Market], tuple[int, int]] = {}  # stream -> first/last receive time read

    def _candidates(self, table: str, market: Market, dates: list[str]) -> list[_Candidate]:
        out = []
        for path in self.dataset.stream_files(table, market, self.symbol, dates):
            groups = self.dataset.footer(path, self.columns[table])
            if groups is None:
                if not self.skip_bad:
                    raise unreadable(path, self.dataset.bad[path])
                continue
            out.append(_Candidate(path, groups))
            real = [g for g in groups if g.first_ns > -(2**62)]
            if real:
                lo, hi = self.recorded.get((table, market), (2**63 - 1, -(2**63)))
                self.recorded[(table, market)] = (min(lo, min(g.first_ns for g in real)),
                                                  max(hi, max(g.last_ns for g in real)))
        return out

    def overlaps(self) -> bool:
        """Whether any book or bookTicker row group read reaches into [start, end) (by its statistics)."""
        return any(lo < self.end_ns + self.margin and hi >= self.start_ns - self.margin
                   for (table, _), (lo, hi) in self.recorded.items() if table in ("book", "bbo"))

    def _days(self, first: int, last: int) -> list[str]:
        from nova.core.contract import date_of

        days = []
        day = date_of(first)
        while date_ns(day) <= last:
            days.append(day)
            day = shift_date(day, 1)
        return days

    def plan(self) -> dict[tuple[str, Market], StreamPlan]:
        """Every stream's plan. Book streams first: their snapshots decide where the others begin."""
        plans: dict[tuple[str, Market], StreamPlan] = {}
        for market in MARKETS:
            plans[("book", market)] = self._plan_book(market)
        known = [t for t in self.warmup_ns.values() if t is not None]
        begin = min([*known, self.start_ns - self.margin])
        for table, markets in STREAM_TABLES.items():
            if table == "book":
                continue
            for market in markets:
                plans[(table, market)] = self._plan_other(table, market, begin)
        return plans

    def ticks(self, markets: tuple[Market, ...] = MARKETS) -> tuple[tuple[float | None, float | None], list[str]]:
        """Per market (SPOT, PERP order), the tick size its book can be price-indexed by, or None; and for each
        market of ``markets`` left on the sorted book, why (a clause of the replay's note). Call after ``plan``."""
        known = [t for t in self.warmup_ns.values() if t is not None]
        begin = min([*known, self.start_ns - self.margin])
        out: list[float | None] = []
        why: list[str] = []
        for market in MARKETS:
            tick, reason = self._tick(market, begin)
            out.append(tick)
            if tick is None and market in markets:
                why.append(f"{market}: {reason}")
        return (out[0], out[1]), why

    def _tick(self, market: Market, begin: int) -> tuple[float | None, str]:
        try:
            rows = self.dataset.tick_rows(market, self.symbol, begin, self.end_ns + self.margin)
        except (OSError, pa.ArrowException, KeyError) as exc:
            return None, f"its instruments table does not read ({reason(exc)})"
        if not rows:
            return None, "no instruments row recorded"
        ticks = list(dict.fromkeys(t for _, t in rows if t is not None and t == t))
        if not ticks:
            return None, "no tick size recorded"
        if len(ticks) > 1:
            return None, f"the tick size changed ({' -> '.join(f'{t:g}' for t in ticks)})"
        if tick_grid(ticks[0]) is None:
            return None, f"tick size {ticks[0]!r} is not a short decimal"
        return ticks[0], ""

    def _range_days(self, begin: int) -> list[str]:
        return self._days(begin, self.end_ns - 1 + self.margin)

    def _plan_book(self, market: Market) -> StreamPlan:
        first_day = self._days(self.start_ns - self.margin, self.start_ns - self.margin)[0]
        earliest = shift_date(first_day, -WARMUP_DAYS)
        days = self._days(date_ns(earliest), self.end_ns - 1 + self.margin)
        candidates = self._candidates("book", market, days)
        at = self._last_snapshot(candidates)
        plan = StreamPlan("book", market)
        if at is None:
            self.warmup_ns[market] = None
            begin = self.start_ns - self.margin
            start_file, start_group = 0, 0
            for i, c in enumerate(candidates):  # the first row group that reaches the range
                for g, stats in enumerate(c.groups):
                    if stats.last_ns >= begin:
                        start_file, start_group = i, g
                        break
                else:
                    continue
                break
            else:
                start_file = len(candidates)
        else:
            start_file, start_group, ts = at
            self.warmup_ns[market] = ts
        self._add_parts(plan, candidates, start_file, start_group)
        return plan

    def _last_snapshot(self, candidates: list[_Candidate]) -> tuple[int, int, int] | None:
        """(file, row group, receive time) of the last snapshot message that begins at or before the start.

        The row group returned is where that message's first row is (the row group before, when the message
        starts at row 0 and may have begun there: messages never span files, but may span row groups).
        """
        limit = self.start_ns - self.margin
        for i in range(len(candidates) - 1, -1, -1):
            c = candidates[i]
            for g in range(len(c.groups) - 1, -1, -1):
                stats = c.groups[g]
                if stats.first_ns > limit or not stats.has_snapshot:
                    continue
                found = self._snapshot_start(c, g, limit)
                if found is None:
                    continue
                row, ts = found
                return i, (g - 1 if row == 0 and g > 0 else g), ts
        return None

    def _snapshot_start(self, candidate: _Candidate, group: int, limit: int) -> tuple[int, int] | None:
        """(row, receive time) of the last snapshot message of the row group beginning at or before ``limit``."""
        try:
            table = self.dataset.read_row_group(candidate.path, group, ["ts_recv", "msg", "snapshot"])
        except (OSError, pa.ArrowException) as exc:
            if not self.skip_bad:
                raise unreadable(candidate.path, reason(exc)) from None
            self.dataset.bad[candidate.path] = reason(exc)
            return None
        ts = table.column("ts_recv").cast(pa.int64()).to_numpy()
        msg = table.column("msg").to_numpy()
        snap = table.column("snapshot").to_numpy(zero_copy_only=False)
        begins = np.ones(len(msg), dtype=bool)
        begins[1:] = msg[1:] != msg[:-1]
        hits = np.flatnonzero(snap & begins & (ts <= limit))
        if hits.size == 0:
            return None
        row = int(hits[-1])
        return row, int(ts[row])

    def _plan_other(self, table: str, market: Market, begin: int) -> StreamPlan:
        candidates = self._candidates(table, market, self._range_days(begin - DAY_NS))
        start_file, start_group = len(candidates), 0
        for i in range(len(candidates) - 1, -1, -1):  # the last row group that starts at or before ``begin``
            groups = [g for g, s in enumerate(candidates[i].groups) if s.first_ns <= begin]
            if groups:
                start_file, start_group = i, groups[-1]
                break
        else:
            start_file = 0
        plan = StreamPlan(table, market)
        self._add_parts(plan, candidates, start_file, start_group)
        return plan

    def _add_parts(self, plan: StreamPlan, candidates: list[_Candidate], start_file: int, start_group: int) -> None:
        limit = self.end_ns + self.margin
        for i in range(start_file, len(candidates)):
            c = candidates[i]
            first = start_group if i == start_file else 0
            groups = tuple(g for g in range(first, len(c.groups)) if c.groups[g].first_ns < limit)
            if groups:
                plan.parts.append(FilePart(c.path, groups, sum(c.groups[g].rows for g in groups)))
