"""What a replay found, accumulated chunk by chunk: counts, spread statistics, opportunities, invalid time.

Why streaming statistics: a day holds tens of millions of readings and a week must replay in the memory of
an hour, so nothing here keeps the readings. Basis percentiles come from a fixed histogram (0.01 bps bins
over +-1000 bps, exact beyond that only in min/max); the mean is exact. Per-reading statistics are over valid
readings that changed a top of book (so a busy second weighs more than a quiet one); the time-weighted mean
weighs each valid reading by how long it lasted, so every watched second counts once. Durations (valid and
invalid time, opportunities) are integrated reading to reading: a state lasts until the next reading, and the
last one until the last entry replayed.

Why only top-of-book changes: with ``--size`` the loop also keeps readings where only a size-aware price
moved; they repeat the top of the reading before, and counting them would make the basis statistics depend
on ``--size``. So a reading enters the statistics only when its effective tops or its validity differ from
the previous reading's: exactly the readings a replay without ``--size`` keeps, with the same values.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nova.core.book import kernel
from nova.core.pacing import Lateness
from nova.core.spread import C_BASIS, C_OPEN, C_OPPORTUNITY, C_TOP_FIRST, C_TOP_LAST, C_VALID, N_VALUES
from replay.kernel import (
    K_BBO,
    K_BOOK_MESSAGES,
    K_BOOK_ROWS,
    K_DISCONNECTS,
    K_ENTRIES,
    K_FIRST_KEY,
    K_FUNDING,
    K_GAPS,
    K_LAST_KEY,
    K_LEDGER,
    K_READINGS,
    K_ROWS_SEEN,
    K_TRADES,
    NO_KEY,
)

BASIS_BIN_BPS = 0.01
BASIS_LIMIT_BPS = 1000.0
_BINS = int(2 * BASIS_LIMIT_BPS / BASIS_BIN_BPS)


@dataclass
class ReplaySummary:
    """The figures a replay reports (times in ns since the epoch, durations in seconds, spreads in bps)."""

    symbol: str
    clock: str
    speed: float | None
    first_ns: int | None = None  # first and last entry replayed within the range
    last_ns: int | None = None
    events: int = 0
    book_messages: int = 0
    book_rows: int = 0
    bbo: int = 0
    trades: int = 0
    funding: int = 0
    ledger: int = 0
    readings: int = 0
    valid_readings: int = 0
    gaps: int = 0
    disconnects: int = 0
    valid_s: float = 0.0
    invalid_s: float = 0.0
    basis_mean_bps: float = math.nan
    basis_time_mean_bps: float = math.nan
    basis_p5_bps: float = math.nan
    basis_p50_bps: float = math.nan
    basis_p95_bps: float = math.nan
    best_open_bps: float = math.nan
    best_open_ns: int | None = None
    opportunities: int = 0
    opportunity_s: float = 0.0
    wall_s: float = 0.0
    rows_processed: int = 0  # book rows the loop went through, warm-up included (the work behind rows/s)
    warmup_from_ns: int | None = None
    lateness_p50_ms: float = math.nan
    lateness_p99_ms: float = math.nan
    lateness_max_ms: float = math.nan
    skipped_files: dict[str, str] = field(default_factory=dict)
    output: str | None = None
    sources: dict[str, list[str]] = field(default_factory=dict)  # market -> where the replayed runs came from
    notes: list[str] = field(default_factory=list)  # what the replay decided and the reader should know

    @property
    def span_s(self) -> float:
        if self.first_ns is None or self.last_ns is None:
            return 0.0
        return (self.last_ns - self.first_ns) / 1e9

    @property
    def achieved_speed(self) -> float:
        """Data time replayed per wall-clock second."""
        return self.span_s / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(span_s=self.span_s, achieved_speed=self.achieved_speed, events_per_s=self.events_per_s)
        return out


# accumulator slots (SummaryBuilder._ints / _floats)
(A_HAS_PREV, A_PREV_TS, A_PREV_VALID, A_PREV_OPP, A_INVALID_NS, A_OPP_NS, A_OPPS, A_VALID, A_BEST_TS,
 A_VALID_NS) = range(10)
F_BASIS_SUM, F_BEST_OPEN, F_PREV_BASIS, F_BASIS_TIME_SUM = range(4)


@kernel()
def _accumulate(ts: np.ndarray, values: np.ndarray, ints: np.ndarray, floats: np.ndarray, hist: np.ndarray,
                prev: np.ndarray) -> None:
    """One pass over a chunk of readings (compiled: a day has tens of millions of them). ``prev`` holds the
    last counted reading's values, so only readings that change a top or the validity count."""
    for i in range(ts.shape[0]):
        if ints[A_HAS_PREV] and not _changed(values, i, prev):
            continue
        for c in range(values.shape[1]):
            prev[c] = values[i, c]
        valid = values[i, C_VALID] != 0.0
        opportunity = values[i, C_OPPORTUNITY] != 0.0
        if ints[A_HAS_PREV]:
            lasted = ts[i] - ints[A_PREV_TS]
            if ints[A_PREV_VALID]:
                ints[A_VALID_NS] += lasted
                if floats[F_PREV_BASIS] == floats[F_PREV_BASIS]:
                    floats[F_BASIS_TIME_SUM] += floats[F_PREV_BASIS] * lasted
            else:
                ints[A_INVALID_NS] += lasted
            if ints[A_PREV_OPP]:
                ints[A_OPP_NS] += lasted
        if opportunity and not (ints[A_HAS_PREV] and ints[A_PREV_OPP]):
            ints[A_OPPS] += 1
        ints[A_HAS_PREV], ints[A_PREV_TS] = 1, ts[i]
        ints[A_PREV_VALID], ints[A_PREV_OPP] = valid, opportunity
        basis = values[i, C_BASIS]
        floats[F_PREV_BASIS] = basis if valid and math.isfinite(basis) else math.nan
        if valid and math.isfinite(basis):
            ints[A_VALID] += 1
            floats[F_BASIS_SUM] += basis
            b = int((basis + BASIS_LIMIT_BPS) / BASIS_BIN_BPS)
            hist[min(max(b, 0), hist.shape[0] - 1)] += 1
            opened = values[i, C_OPEN]
            if opened > floats[F_BEST_OPEN] or floats[F_BEST_OPEN] != floats[F_BEST_OPEN]:
                floats[F_BEST_OPEN] = opened
                ints[A_BEST_TS] = ts[i]


@kernel(inline=True)
def _changed(values: np.ndarray, i: int, prev: np.ndarray) -> bool:
    """Whether reading i shows another top of book or validity than ``prev`` (NaN equals NaN)."""
    for c in range(C_TOP_FIRST, C_TOP_LAST + 1):
        a, b = values[i, c], prev[c]
        if a != b and not (a != a and b != b):
            return True
    return values[i, C_VALID] != prev[C_VALID]


class SummaryBuilder:
    """Feeds on chunks of readings (``ts``, row-major ``values``) and, at the end, the loop's counters."""

    def __init__(self, symbol: str, clock: str, speed: float | None) -> None:
        self.summary = ReplaySummary(symbol, clock, speed)
        self._hist = np.zeros(_BINS, dtype=np.int64)
        self._ints = np.zeros(10, dtype=np.int64)
        self._floats = np.array([0.0, math.nan, math.nan, 0.0])
        self._prev = np.full(N_VALUES, math.nan)

    def add(self, ts: np.ndarray, values: np.ndarray) -> None:
        if ts.shape[0]:
            _accumulate(ts, values, self._ints, self._floats, self._hist, self._prev)

    def finish(self, counters: np.ndarray, wall_s: float, lateness: Lateness | None,
               skipped: dict[str, str], warmup_ns: int | None, output: str | None) -> ReplaySummary:
        s, ints = self.summary, self._ints
        if counters[K_FIRST_KEY] != NO_KEY:
            s.first_ns, s.last_ns = int(counters[K_FIRST_KEY]), int(counters[K_LAST_KEY])
        invalid_ns, opportunity_ns, valid_ns = int(ints[A_INVALID_NS]), int(ints[A_OPP_NS]), int(ints[A_VALID_NS])
        basis_time = float(self._floats[F_BASIS_TIME_SUM])
        if ints[A_HAS_PREV] and s.last_ns is not None:  # the last reading lasts until the last entry
            tail = s.last_ns - int(ints[A_PREV_TS])
            invalid_ns += 0 if ints[A_PREV_VALID] else tail
            valid_ns += tail if ints[A_PREV_VALID] else 0
            if ints[A_PREV_VALID] and math.isfinite(self._floats[F_PREV_BASIS]):
                basis_time += float(self._floats[F_PREV_BASIS]) * tail
            opportunity_ns += tail if ints[A_PREV_OPP] else 0
        s.invalid_s, s.valid_s, s.opportunity_s = invalid_ns / 1e9, valid_ns / 1e9, opportunity_ns / 1e9
        if valid_ns > 0:
            s.basis_time_mean_bps = basis_time / valid_ns
        s.opportunities, s.valid_readings = int(ints[A_OPPS]), int(ints[A_VALID])
        if s.valid_readings:
            s.best_open_bps, s.best_open_ns = float(self._floats[F_BEST_OPEN]), int(ints[A_BEST_TS])
        (s.events, s.book_messages, s.book_rows, s.bbo, s.trades, s.funding, s.ledger, s.gaps, s.disconnects,
         s.readings, s.rows_processed) = (int(counters[k]) for k in (
            K_ENTRIES, K_BOOK_MESSAGES, K_BOOK_ROWS, K_BBO, K_TRADES, K_FUNDING, K_LEDGER, K_GAPS, K_DISCONNECTS,
            K_READINGS, K_ROWS_SEEN))
        if s.valid_readings:
            s.basis_mean_bps = float(self._floats[F_BASIS_SUM]) / s.valid_readings
            cumulative = np.cumsum(self._hist)
            for q, name in ((5, "basis_p5_bps"), (50, "basis_p50_bps"), (95, "basis_p95_bps")):
                b = int(np.searchsorted(cumulative, max(1, math.ceil(q / 100 * s.valid_readings))))
                setattr(s, name, round(-BASIS_LIMIT_BPS + (b + 0.5) * BASIS_BIN_BPS, 3))
        s.wall_s = wall_s
        if lateness is not None and lateness.n:
            s.lateness_p50_ms = lateness.percentile_ns(50) / 1e6
            s.lateness_p99_ms = lateness.percentile_ns(99) / 1e6
            s.lateness_max_ms = lateness.max_ns / 1e6
        s.skipped_files = dict(skipped)
        s.warmup_from_ns = warmup_ns
        s.output = output
        return s


def format_ns(ts: int | None) -> str:
    if ts is None:
        return "-"
    stamp = dt.datetime.fromtimestamp(ts // 10**9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp}.{ts % 10**9 // 10**6:03d}"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.3f} s"
    minutes, sec = divmod(round(seconds, 1), 60)  # round first: 59.97 s is "1m00.0s", not "0m60.0s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h{minutes:02d}m{sec:04.1f}s" if hours else f"{minutes}m{sec:04.1f}s"


def summary_rows(s: ReplaySummary) -> list[tuple[str, str]]:
    """The summary as (label, value) lines, the form both the rich table and a log use."""

    def bps(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:,.2f} bps"

    rows = [
        ("time span", f"{format_ns(s.first_ns)} .. {format_ns(s.last_ns)} UTC ({format_duration(s.span_s)}, "
                      f"{s.clock} clock)"),
        ("events", f"{s.events:,} (book {s.book_messages:,} messages / {s.book_rows:,} rows, bbo {s.bbo:,}, "
                   f"trades {s.trades:,}, funding {s.funding:,}, ledger {s.ledger:,})"),
        ("readings", f"{s.readings:,} ({s.valid_readings:,} valid)"),
        ("gaps crossed", f"{s.gaps} gap{'s' * (s.gaps != 1)}, {s.disconnects} disconnect{'s' * (s.disconnects != 1)}"),
        ("valid / invalid time", f"{format_duration(s.valid_s)} / {format_duration(s.invalid_s)}"),
        ("basis mean / p5 / p50 / p95", " / ".join(bps(v) for v in (s.basis_mean_bps, s.basis_p5_bps,
                                                                     s.basis_p50_bps, s.basis_p95_bps))
         + " (valid readings)"),
        ("basis mean over valid time", bps(s.basis_time_mean_bps)),
        ("best open", f"{bps(s.best_open_bps)} at {format_ns(s.best_open_ns)}" if s.best_open_ns else "-"),
        ("opportunities", f"{s.opportunities:,} lasting {format_duration(s.opportunity_s)} in total"),
        ("achieved speed", f"{s.achieved_speed:,.1f}x ({'max' if s.speed is None else f'{s.speed:g}x asked'}; "
                           f"{format_duration(s.wall_s)} wall)"),
        ("events/s", f"{s.events_per_s:,.0f} ({s.rows_processed / s.wall_s:,.0f} book rows/s)" if s.wall_s else "-"),
    ]
    if s.speed is not None:
        rows.append(("pacing lateness p50 / p99", f"{s.lateness_p50_ms:.3f} / {s.lateness_p99_ms:.3f} ms "
                                                  f"(max {s.lateness_max_ms:.3f} ms)"))
    if s.warmup_from_ns is not None and s.first_ns is not None and s.warmup_from_ns < s.first_ns:
        rows.append(("books warmed up from", f"{format_ns(s.warmup_from_ns)} (last snapshot before the start)"))
    if s.skipped_files:
        rows.append(("skipped files", "; ".join(f"{p} ({why})" for p, why in s.skipped_files.items())))
    if s.sources:
        same = len({tuple(v) for v in s.sources.values()}) == 1
        rows.append(("sources", ", ".join(next(iter(s.sources.values()))) + f" ({' and '.join(s.sources)})" if same
                     else "; ".join(f"{m}: {', '.join(v)}" for m, v in s.sources.items())))
    rows.extend(("note", note) for note in s.notes)
    if s.output:
        rows.append(("written to", s.output))
    return rows
