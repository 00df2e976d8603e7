"""``nova scan``: which symbols and days paid, after fees, and for how long — from the spread tables.

Why from the stored series: replaying a symbol-day costs seconds to minutes, reading its spread series a few
milliseconds, so a scan over months reads what replay already wrote and replays only the pieces that have no
full-day series yet (or one made with another staleness limit or clock), through ``replay.pieces`` (in
parallel, on a pool or a Dask cluster). Fees and the threshold are the scan's own: the net spreads are
re-derived from the gross ones (``net_open = open - fee_spot - fee_perp``, nova.core.spread), so trying other
fees needs no replay.

Every figure counts watched time only: a reading lasts until the next one, and only valid readings (both books
valid by the one rule, nova.core.validity) count; the last reading of a series lasts until the last entry the
replay saw (``UNTIL_KEY`` in the file, written by replay.output), never to the end of a day nobody recorded.
Funding collected is the sum, over the settlements in the range, of the funding rate recorded just before
each (a settlement whose last recorded rate is older than ``FUNDING_FRESH_NS`` is not counted: nobody
watched it; ``settlements_missed`` says how many).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nova.core.dataset import SPREAD_METADATA_KEY, Dataset
from nova.core.errors import NovaError
from nova.core.markets import Symbol
from replay.output import UNTIL_KEY
from replay.pieces import Piece, PieceOptions, PieceResult, Plan, plan, run_pieces
from replay.plan import DAY_NS, date_ns, shift_date
from replay.summary import BASIS_BIN_BPS, BASIS_LIMIT_BPS

FUNDING_FRESH_NS = 60 * 10**9  # the rate that settles must have been seen this close to the settlement
_BINS = int(2 * BASIS_LIMIT_BPS / BASIS_BIN_BPS)
SORT_KEYS = ("minutes_above", "best_net_open_bps", "basis_mean_bps", "funding_bps", "valid_minutes")

SCAN_SCHEMA = pa.schema([
    pa.field("symbol", pa.string()),
    pa.field("date", pa.string()),  # a date, or "FIRST..LAST" for a row per symbol
    pa.field("valid_minutes", pa.float64()),
    pa.field("minutes_above", pa.float64()),  # valid, not stale, net open_bps above the threshold
    pa.field("best_net_open_bps", pa.float64()),
    pa.field("best_net_open_at", pa.timestamp("ns", tz="UTC")),
    pa.field("basis_mean_bps", pa.float64()),  # over valid time
    pa.field("basis_p5_bps", pa.float64()),
    pa.field("basis_p95_bps", pa.float64()),
    pa.field("funding_bps", pa.float64()),  # collected by a short perp over the settlements of the range
    pa.field("settlements", pa.int64()),
    pa.field("settlements_missed", pa.int64()),
    pa.field("replayed", pa.bool_()),  # this scan replayed the piece (no suitable stored series)
])


@dataclass
class Tally:
    """One piece's (or one symbol's) figures, in a form that adds up exactly across days."""

    symbol: str
    date: str
    valid_ns: int = 0
    above_ns: int = 0
    basis_weighted: float = 0.0  # sum of basis * duration over valid time
    best_net_open: float = math.nan
    best_at: int | None = None
    hist: np.ndarray = field(default_factory=lambda: np.zeros(_BINS))  # valid time per basis bin
    funding: float = 0.0
    settlements: int = 0
    missed: int = 0
    replayed: bool = False

    def add(self, other: Tally) -> None:
        self.valid_ns += other.valid_ns
        self.above_ns += other.above_ns
        self.basis_weighted += other.basis_weighted
        if other.best_at is not None and not (other.best_net_open <= self.best_net_open):
            self.best_net_open, self.best_at = other.best_net_open, other.best_at
        self.hist += other.hist
        self.funding += other.funding
        self.settlements += other.settlements
        self.missed += other.missed
        self.replayed = self.replayed or other.replayed

    def quantile(self, q: float) -> float:
        total = self.hist.sum()
        if total <= 0:
            return math.nan
        b = int(np.searchsorted(np.cumsum(self.hist), q * total))
        return round(-BASIS_LIMIT_BPS + (min(b, _BINS - 1) + 0.5) * BASIS_BIN_BPS, 3)

    def row(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "date": self.date, "valid_minutes": self.valid_ns / 60e9,
                "minutes_above": self.above_ns / 60e9, "best_net_open_bps": _nan_none(self.best_net_open),
                "best_net_open_at": self.best_at,
                "basis_mean_bps": self.basis_weighted / self.valid_ns if self.valid_ns else None,
                "basis_p5_bps": _nan_none(self.quantile(0.05)), "basis_p95_bps": _nan_none(self.quantile(0.95)),
                "funding_bps": self.funding, "settlements": self.settlements, "settlements_missed": self.missed,
                "replayed": self.replayed}


def _nan_none(value: float) -> float | None:
    return None if value != value else value


@dataclass
class ScanResult:
    """The ranking (``table``, SCAN_SCHEMA, best first), the pieces replayed on the way and what was left out."""

    table: pa.Table
    replayed: list[PieceResult]
    notes: list[str]


def scan(root: str, symbols: Sequence[str] | str = "all", date: str | None = None, until: str | None = None, *,
         fee_spot: float = 10.0, fee_perp: float = 5.0, threshold: float = 0.0, stale_ms: float = 1000.0,
         by: str = "day", sort: str = "minutes_above", refresh: bool = False, workers: int = 1,
         scheduler: str | None = None, on_done: Callable[[PieceResult, int, int], Any] | None = None,
         stop: Callable[[], bool] | None = None) -> ScanResult:
    """Rank ``symbols`` (a list, or ``all``) on the dates ``date``..``until`` by ``sort``; ``by`` is ``day`` (a
    row per symbol and date) or ``symbol`` (a row per symbol over the range). Pieces with no suitable stored
    series are replayed first (all of them with ``refresh``), with ``workers``/``scheduler`` as in
    ``replay.pieces.run_pieces``."""
    if by not in ("day", "symbol"):
        raise NovaError(f"--by {by} is not a grouping; use day (a row per symbol and date) or symbol")
    if sort not in SORT_KEYS:
        raise NovaError(f"--sort {sort} is not a column to rank by; use one of {', '.join(SORT_KEYS)}")
    options = PieceOptions(fee_spot=fee_spot, fee_perp=fee_perp, threshold=threshold, stale_ms=stale_ms)
    pieces: Plan = plan(root, symbols, date, until)
    data = Dataset(root)
    stale = [p for p in pieces.pieces if refresh or _stored(data, p, stale_ms) is None]
    results = run_pieces(root, stale, options, workers=workers, scheduler=scheduler, on_done=on_done,
                         stop=stop) if stale else []
    failed = [r for r in results if not r.ok]
    notes = list(pieces.notes) + [f"{r.symbol} {r.date}: not scanned, the replay failed: {r.error}" for r in failed]
    skip = {r.piece for r in failed}
    fees = fee_spot + fee_perp
    tallies = []
    for piece in pieces.pieces:
        if piece in skip:
            continue
        path = _stored(data, piece, stale_ms)
        if path is None:  # replayed just now but no series (no reading at all)
            notes.append(f"{piece}: the replay wrote no spread series")
            continue
        tally = _tally(data, path, piece, fees, threshold)
        _add_funding(data, piece, tally)
        tally.replayed = piece in set(stale)
        tallies.append(tally)
    if by == "symbol":
        tallies = _per_symbol(tallies)
    rows = [t.row() for t in tallies]
    table = pa.Table.from_pylist(rows, schema=SCAN_SCHEMA) if rows else SCAN_SCHEMA.empty_table()
    if table.num_rows:
        table = table.sort_by([(sort, "descending"), ("symbol", "ascending"), ("date", "ascending")])
    return ScanResult(table, results, notes)


def _stored(data: Dataset, piece: Piece, stale_ms: float) -> str | None:
    """The stored full-day series of a piece made with this staleness limit on the receive clock, or None."""
    for path, _ in data.files(data.spread_partition(Symbol.parse(piece.symbol), piece.date)):
        try:
            meta = json.loads(data.schema_metadata(path).get(SPREAD_METADATA_KEY, b"{}"))
        except (OSError, pa.ArrowException, ValueError):
            continue
        day = date_ns(piece.date)
        whole = int(meta.get("start_ns", -1)) <= day and int(meta.get("end_ns", -1)) >= day + DAY_NS
        params = meta.get("params") or {}
        if whole and meta.get("clock") == "recv" and params.get("stale_ms") == stale_ms:
            return path
    return None


def _tally(data: Dataset, path: str, piece: Piece, fees: float, threshold: float) -> Tally:
    table = data.read_table(path, columns=["ts", "valid", "stale", "basis_bps", "open_bps"])
    with data.reading(path) as file:
        extra = file.metadata.metadata or {}
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    tally = Tally(piece.symbol, piece.date)
    if ts.shape[0] == 0:
        return tally
    day_end = date_ns(piece.date) + DAY_NS
    until = min(int(extra.get(UNTIL_KEY, ts[-1])), day_end)
    lasted = np.diff(ts, append=max(until, int(ts[-1])))
    valid = table.column("valid").to_numpy(zero_copy_only=False)
    stale = table.column("stale").to_numpy(zero_copy_only=False)
    basis = pc.fill_null(table.column("basis_bps"), math.nan).to_numpy(zero_copy_only=False)
    net_open = pc.fill_null(table.column("open_bps"), math.nan).to_numpy(zero_copy_only=False) - fees
    counted = valid & np.isfinite(basis)
    tally.valid_ns = int(lasted[valid].sum())
    tally.basis_weighted = float((basis[counted] * lasted[counted]).sum())
    tally.hist = np.bincount(np.clip(((basis[counted] + BASIS_LIMIT_BPS) / BASIS_BIN_BPS).astype(np.int64), 0,
                                     _BINS - 1), weights=lasted[counted].astype(np.float64), minlength=_BINS)
    usable = valid & ~stale & np.isfinite(net_open)
    tally.above_ns = int(lasted[usable & (net_open > threshold)].sum())
    if usable.any():
        i = int(np.flatnonzero(usable)[np.argmax(net_open[usable])])
        tally.best_net_open, tally.best_at = float(net_open[i]), int(ts[i])
    return tally


def _add_funding(data: Dataset, piece: Piece, tally: Tally) -> None:
    """Settlements falling on the piece's date and the rate recorded just before each (from that date's and
    the day before's funding rows: the rate settling at midnight was recorded the evening before)."""
    rows = []
    for date in (shift_date(piece.date, -1), piece.date):
        for path, _ in data.files(data.partition("funding", "perp", Symbol.parse(piece.symbol), date)):
            rows.append(data.read_table(path, columns=["ts_recv", "funding_rate", "next_funding_time"]))
    if not rows:
        return
    funding = pa.concat_tables(rows)
    ts = funding.column("ts_recv").cast(pa.int64()).to_numpy()
    rate = pc.fill_null(funding.column("funding_rate"), math.nan).to_numpy(zero_copy_only=False)
    settles = pc.fill_null(funding.column("next_funding_time").cast(pa.int64()), -1).to_numpy(zero_copy_only=False)
    day = date_ns(piece.date)
    for when in np.unique(settles[(settles >= day) & (settles < day + DAY_NS)]):
        before = (settles == when) & (ts < when) & np.isfinite(rate)
        tally.settlements += 1
        if not before.any():
            tally.missed += 1
            continue
        last = int(np.flatnonzero(before)[np.argmax(ts[before])])
        if when - ts[last] > FUNDING_FRESH_NS:
            tally.missed += 1
            continue
        tally.funding += float(rate[last]) * 1e4


def _per_symbol(tallies: list[Tally]) -> list[Tally]:
    out: dict[str, Tally] = {}
    dates: dict[str, list[str]] = {}
    for t in tallies:
        if t.symbol not in out:
            out[t.symbol] = Tally(t.symbol, t.date)
            dates[t.symbol] = []
        out[t.symbol].add(t)
        dates[t.symbol].append(t.date)
    for symbol, tally in out.items():
        span = sorted(dates[symbol])
        tally.date = span[0] if len(span) == 1 else f"{span[0]}..{span[-1]}"
    return list(out.values())
