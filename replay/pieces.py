"""Replaying many symbols and dates at once: (symbol, date) pieces on a local process pool or a Dask cluster.

Why pieces of one symbol and one UTC date: a piece replays exactly as ``Replay(symbol, date)`` does alone (its
books warm up from the last snapshot before midnight, however far back, so they carry across midnight as in a
multi-day replay), it reads only its own files and writes only its own spread partition (atomically), so the
pieces are independent and can run wherever the data root is reachable: another process, another machine. A
piece that fails (a corrupt file, say) is reported with its sentence and the others go on.

Why a process pool by default and Dask for clusters: the replay loop holds the GIL for its compiled part and
its reader thread, so threads do not add cores; processes do. ``concurrent.futures`` gives that on one machine
with nothing to install; Dask distributed (``--scheduler ADDRESS``) is what people already run to spread Python
work over machines, and ``scheduler="local"`` starts a local Dask cluster for the same call.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from nova.core.errors import NovaError
from nova.core.markets import MARKETS, Symbol
from nova.core.units import BadValue
from replay.api import Replay, spread_params
from replay.plan import ReplaySource
from replay.timespan import check_clock, date_range

ALL = "all"


@dataclass(frozen=True, order=True)
class Piece:
    """One symbol (ccxt spelling) on one UTC date."""

    symbol: str
    date: str

    def __str__(self) -> str:
        return f"{self.symbol} {self.date}"


@dataclass(frozen=True)
class PieceOptions:
    """What every piece is replayed with (the knobs of ``Replay`` that make sense for a batch)."""

    size: float = 0.0
    fee_spot: float = 10.0
    fee_perp: float = 5.0
    threshold: float = 0.0
    stale_ms: float = 1000.0
    clock: str = "recv"
    skip_bad: bool = False
    replace: bool = False

    def __post_init__(self) -> None:  # refused here, before any piece runs, with Replay's own sentences
        spread_params(fee_spot=self.fee_spot, fee_perp=self.fee_perp, size=self.size, threshold=self.threshold,
                      stale_ms=self.stale_ms)
        check_clock(self.clock)

    def replay_kwargs(self) -> dict[str, Any]:
        return {"clock": self.clock, "size": self.size, "fee_spot": self.fee_spot, "fee_perp": self.fee_perp,
                "threshold": self.threshold, "stale_ms": self.stale_ms, "skip_bad": self.skip_bad}


@dataclass
class PieceResult:
    """What one piece did: its summary's figures (see ``ReplaySummary``), or the sentence it failed with."""

    symbol: str
    date: str
    error: str | None = None
    events: int = 0
    book_rows: int = 0
    readings: int = 0
    valid_readings: int = 0
    gaps: int = 0
    disconnects: int = 0
    valid_s: float = 0.0
    invalid_s: float = 0.0
    basis_time_mean_bps: float = math.nan
    best_open_bps: float = math.nan
    opportunities: int = 0
    opportunity_s: float = 0.0
    wall_s: float = 0.0
    output: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def piece(self) -> Piece:
        return Piece(self.symbol, self.date)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """The pieces a batch replays, and what was left out and why (a symbol with nothing in the range)."""

    pieces: list[Piece]
    notes: list[str] = field(default_factory=list)

    @property
    def symbols(self) -> list[str]:
        return list(dict.fromkeys(p.symbol for p in self.pieces))


def parse_symbols(text: str | Sequence[str]) -> list[str] | str:
    """``all``, or the symbols of a comma-separated list (``ETH/USDT,BTC/USDT``), each checked and in ccxt
    spelling; NovaError naming the first that is not a symbol."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    if [t.lower() for t in items] == [ALL]:
        return ALL
    if not items:
        raise NovaError("--symbols is empty; give symbols like ETH/USDT,BTC/USDT, or all")
    out = []
    for item in items:
        try:
            out.append(Symbol.parse(item).unified)
        except ValueError as exc:
            raise NovaError(f"--symbols: {exc}") from None
    return list(dict.fromkeys(out))


def plan(root: str, symbols: Sequence[str] | str, date: str | None = None, until: str | None = None) -> Plan:
    """The (symbol, date) pieces of ``symbols`` (a list, or ``all``) recorded on both markets between ``date``
    and ``until`` (inclusive; default: each symbol's last recorded date); NovaError (one sentence) when a listed
    symbol is not recorded or nothing is recorded in the range."""
    source = ReplaySource(root)
    recorded = source.symbols()
    if not recorded:
        raise NovaError(f"nothing is recorded under {source.root_text}; record first (nova record SYMBOL) or point "
                        "--data at a recording")
    chosen_symbols = parse_symbols(symbols) if symbols != ALL else ALL
    wanted = recorded if chosen_symbols == ALL else list(chosen_symbols)
    unknown = [s for s in wanted if s not in recorded]
    if unknown:
        raise NovaError(f"{_names(unknown)} {'is' if len(unknown) == 1 else 'are'} not recorded under "
                        f"{source.root_text}; recorded symbols: {', '.join(recorded)}")
    first, last = date_range(date, until, None)
    pieces: list[Piece] = []
    notes: list[str] = []
    for name in wanted:
        sym = Symbol.parse(name)
        both = [set(source.dates(sym, tables=("book", "bbo"), markets=(m,))) for m in MARKETS]
        dates = sorted(both[0] & both[1])
        missing = [m for m, found in zip(MARKETS, both, strict=True) if not found]
        if missing:
            notes.append(f"{name}: no {' or '.join(missing)} book recorded, left out (replay compares spot with "
                         "perp)")
            continue
        chosen = dates[-1:] if first is None else [d for d in dates if first <= d <= (last or first)]
        if not chosen:
            notes.append(f"{name}: nothing recorded on both markets in the range (recorded: "
                         f"{dates[0]}..{dates[-1]})")
        pieces.extend(Piece(name, d) for d in chosen)
    if not pieces:
        span = "their last dates" if first is None else (first if first == last else f"{first}..{last}")
        why = "; ".join(notes)
        raise NovaError(f"nothing of {_names(wanted)} is recorded on both markets on {span} under "
                        f"{source.root_text}" + (f" ({why})" if why else "") + "; nova ls shows what is recorded")
    return Plan(sorted(pieces), notes)


def _names(symbols: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(symbols[:limit])
    return shown + (f" and {len(symbols) - limit} more" if len(symbols) > limit else "")


def check_workers(workers: int) -> int:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise BadValue("workers", "must be a whole number of processes, 1 or more", workers)
    return workers


# ---- one piece ------------------------------------------------------------------------------------------------------

def run_piece(root: str, piece: Piece, options: PieceOptions) -> PieceResult:
    """Replay one piece into the dataset's spread table. Runs in a worker process (or on a Dask worker), so it
    takes and returns plain picklable values and never raises for the piece's own trouble: a failure is the
    result's ``error`` (one sentence), so one bad day does not stop a month."""
    result = PieceResult(piece.symbol, piece.date)
    started = time.perf_counter()
    try:
        session = Replay(root, piece.symbol, piece.date, **options.replay_kwargs())
        summary = session.run(write=True, replace=options.replace)
    except NovaError as exc:
        result.error = str(exc)
        return result
    except (OSError, MemoryError) as exc:  # a full disk, an unreachable store mid-way: the piece failed, say why
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return result
    for name in ("events", "book_rows", "readings", "valid_readings", "gaps", "disconnects", "valid_s",
                 "invalid_s", "basis_time_mean_bps", "best_open_bps", "opportunities", "opportunity_s", "output"):
        setattr(result, name, getattr(summary, name))
    result.notes = list(summary.notes)
    result.wall_s = time.perf_counter() - started
    return result


# ---- many pieces -----------------------------------------------------------------------------------------------------

class Interrupted(NovaError):
    """The batch was stopped (Ctrl-C) before every piece ran; the pieces that finished are written."""


Done = Callable[[PieceResult, int, int], Any]


def run_pieces(root: str, pieces: Sequence[Piece], options: PieceOptions | None = None, *, workers: int = 1,
               scheduler: str | None = None, on_done: Done | None = None,
               stop: Callable[[], bool] | None = None) -> list[PieceResult]:
    """Replay every piece and return their results in piece order.

    ``workers`` processes on this machine (1: in this process), or, with ``scheduler``, on the Dask cluster at
    that address (``local`` starts a local cluster of ``workers`` processes). ``on_done(result, done, total)``
    is called as pieces finish; ``stop`` is polled, and once true no new piece starts (``Interrupted``)."""
    options = options or PieceOptions()
    check_workers(workers)
    check_clock(options.clock)
    results: dict[Piece, PieceResult] = {}

    def finished(result: PieceResult) -> None:
        results[result.piece] = result
        if on_done is not None:
            on_done(result, len(results), len(pieces))

    if scheduler is not None:
        _run_on_dask(root, pieces, options, workers, scheduler, finished, stop)
    elif workers == 1 or len(pieces) == 1:
        for piece in pieces:
            if stop is not None and stop():
                break
            finished(run_piece(root, piece, options))
    else:
        _run_on_pool(root, pieces, options, workers, finished, stop)
    if len(results) < len(pieces):
        raise Interrupted(f"stopped after {len(results)} of {len(pieces)} pieces; the finished ones are written, "
                          "run the same command again to replay the rest")
    return [results[p] for p in pieces]


def _run_on_pool(root: str, pieces: Sequence[Piece], options: PieceOptions, workers: int,
                 finished: Callable[[PieceResult], None], stop: Callable[[], bool] | None) -> None:
    # spawn, not fork: the parent may hold threads (the CLI's event loop, a replay's reader), which fork copies
    # in whatever state they are in
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(pieces)), mp_context=context) as pool:
        _drain([pool.submit(run_piece, root, p, options) for p in pieces], finished, stop)


def _drain(futures: list[Future[PieceResult]], finished: Callable[[PieceResult], None],
           stop: Callable[[], bool] | None) -> None:
    """Hand over results as they come; on ``stop`` cancel what has not started (running pieces finish)."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        for future in done:
            if not future.cancelled():
                finished(future.result())
        if stop is not None and stop():
            for future in pending:
                future.cancel()
            for future in pending:
                if not future.cancelled():
                    finished(future.result())
            return


def _run_on_dask(root: str, pieces: Sequence[Piece], options: PieceOptions, workers: int, scheduler: str,
                 finished: Callable[[PieceResult], None], stop: Callable[[], bool] | None) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise NovaError("--scheduler needs Dask distributed, which is not installed; pip install "
                        "'nova-recorder[dask]', or leave --scheduler out to use a local process pool") from None
    cluster = None
    try:
        if scheduler == "local":
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout="5s")
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise NovaError(f"cannot reach the Dask scheduler at {scheduler} ({_first_line(exc)}); check the address "
                        "(tcp://HOST:8786) and that the scheduler runs, or leave --scheduler out to use a local "
                        "process pool") from None
    try:
        futures = [client.submit(run_piece, root, p, options, pure=False, key=f"nova-replay-{p.symbol}-{p.date}")
                   for p in pieces]
        stream = as_completed(futures)
        for future in stream:
            finished(future.result())
            if stop is not None and stop():
                client.cancel([f for f in futures if not f.done()])
                break
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def total(results: Sequence[PieceResult]) -> PieceResult:
    """The batch's totals, in the shape of a piece (symbol "total"): counts and times add up, the mean basis is
    weighted by valid time, the best open is the best of all."""
    ok = [r for r in results if r.ok]
    out = PieceResult("total", f"{len(ok)} of {len(results)} pieces")
    for name in ("events", "book_rows", "readings", "valid_readings", "gaps", "disconnects", "valid_s",
                 "invalid_s", "opportunities", "opportunity_s", "wall_s"):
        setattr(out, name, sum(getattr(r, name) for r in ok))
    weighted = [(r.basis_time_mean_bps, r.valid_s) for r in ok
                if r.valid_s > 0 and math.isfinite(r.basis_time_mean_bps)]
    if weighted:
        out.basis_time_mean_bps = sum(b * w for b, w in weighted) / sum(w for _, w in weighted)
    best = [r.best_open_bps for r in ok if math.isfinite(r.best_open_bps)]
    out.best_open_bps = max(best) if best else math.nan
    return out

