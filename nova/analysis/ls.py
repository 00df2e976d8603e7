"""``nova ls``: what a data root holds, per exchange, market, symbol and day, and how much of it can be trusted.

Why watched time next to the span: a day's files may run from 00:00 to 23:59 and still hold an hour-long hole
between two recording runs, or minutes before a resync. The span (first to last row) cannot say so; the ledger
can. Watched time is the time the market's book was valid by nova.core.validity's rule, which is the time a
figure may come from. Everything is read from footers and the ledger, never from the rows, so listing a
month is quick.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from nova.core.contract import RECORDED_TABLES
from nova.core.dataset import Dataset, FileStats, run_recorders, run_sources
from nova.core.errors import NovaError
from nova.core.validity import covered_ns

DAY_NS = 86_400 * 10**9


@dataclass
class TableFacts:
    files: int = 0
    rows: int = 0
    bytes: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    unreadable: list[str] = field(default_factory=list)

    def add(self, stats: FileStats) -> None:
        self.files += 1
        self.bytes += stats.size
        if stats.error is not None:
            self.unreadable.append(stats.path)
            return
        self.rows += stats.rows
        if stats.first_ns is not None:
            self.first_ns = stats.first_ns if self.first_ns is None else min(self.first_ns, stats.first_ns)
        if stats.last_ns is not None:
            self.last_ns = stats.last_ns if self.last_ns is None else max(self.last_ns, stats.last_ns)


@dataclass
class DayListing:
    """One exchange, market, symbol and UTC day."""

    exchange: str
    market: str
    symbol: str
    date: str
    tables: dict[str, TableFacts] = field(default_factory=dict)
    watched_s: float | None = None  # None: no book recorded (nothing to judge validity by)
    gaps: int = 0
    sources: list[str] = field(default_factory=list)
    recorders: list[str] = field(default_factory=list)

    def _counted(self) -> list[TableFacts]:
        """The recorded tables, which a day's rows and span describe; derived ones (nova export's snapshots)
        only where nothing was recorded (replay's spread partitions)."""
        recorded = [t for name, t in self.tables.items() if name in RECORDED_TABLES]
        return recorded or list(self.tables.values())

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self._counted())

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables.values())

    @property
    def first_ns(self) -> int | None:
        firsts = [t.first_ns for t in self._counted() if t.first_ns is not None]
        return min(firsts) if firsts else None

    @property
    def last_ns(self) -> int | None:
        lasts = [t.last_ns for t in self._counted() if t.last_ns is not None]
        return max(lasts) if lasts else None

    @property
    def mixed_sources(self) -> bool:
        return len(self.sources) > 1

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(rows=self.rows, bytes=self.bytes, first_ns=self.first_ns, last_ns=self.last_ns,
                   mixed_sources=self.mixed_sources)
        return out


def listing(data: Dataset, date: str | None = None, symbol: str | None = None) -> list[DayListing]:
    """Every (exchange, market, symbol, date) of the root, optionally one date and/or one symbol (dashed)."""
    data.check_reachable()
    if not data.exists():
        raise NovaError(f"the data directory {data.text} does not exist; point --data at a recording")
    days: dict[tuple[str, str, str, str], DayListing] = {}
    for table in data.tables():
        for partition in data.partitions(table, symbol=symbol, date=date):
            key = (partition.exchange, partition.market, partition.symbol, partition.date)
            day = days.setdefault(key, DayListing(*key))
            facts = day.tables.setdefault(table, TableFacts())
            for stats in data.all_stats(data.files(partition)):
                facts.add(stats)
    if not days:
        what = " and ".join(x for x in (f"date {date}" if date else "", f"symbol {symbol}" if symbol else "") if x)
        raise NovaError(f"nothing is recorded in {data.text}" + (f" for {what}" if what else "") +
                        "; check --data, --date and --symbol")
    ledgers: dict[tuple[str, str], list[dict]] = {}
    spans: dict[tuple[str, str], list] = {}
    for (_, market, sym, day_text), day in days.items():
        if market not in ("spot", "perp"):
            continue  # the replay output (market=spot-perp) has no ledger of its own
        if (market, sym) not in ledgers:
            ledgers[(market, sym)] = data.ledger(market, sym)
        ledger = ledgers[(market, sym)]
        lo = _day_ns(day_text)
        hi = lo + DAY_NS
        day.sources = run_sources(ledger, lo, hi)
        day.recorders = run_recorders(ledger, lo, hi)
        day.gaps = sum(1 for r in ledger
                       if r.get("stream") == "book" and r["kind"] == "gap" and lo <= r["ts_recv"] < hi)
        if "book" in day.tables:
            if (market, sym) not in spans:
                spans[(market, sym)] = data.book_spans(market, sym, [r for r in ledger if r.get("stream") == "book"])
            day.watched_s = covered_ns(spans[(market, sym)], lo, hi) / 1e9
    return [days[k] for k in sorted(days)]


def _day_ns(date: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()) * 10**9
