"""The dataset as polars LazyFrames, and the book at an instant rebuilt in polars by the contract's rule.

Why a module for what ``pl.scan_parquet`` nearly does alone: a glob over the tables' folders also picks up what
is not (yet) the dataset (a recorder's open journals, a half-written temporary, on an object store the files a
compaction has replaced but not yet deleted), and the book at an instant needs the rebuild and validity rules
stated exactly as replay and ``nova sql``'s ``book_at`` state them. So ``scan`` lists the files through the core
``Dataset`` (which owns the layout and those rules) and hands the list to polars with the contract's schema, and
``book_at`` is the macro's rule in polars expressions (``rebuild`` is the rule alone, for a user's own rows).

Install with ``pip install 'nova-recorder[polars]'``; nothing else in Nova imports this module.
"""

from __future__ import annotations

import datetime as dt
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from nova.core.contract import EXCHANGE, PARTITION_KEYS, RECORDED_TABLES, SCHEMAS
from nova.core.dataset import SPREAD_TABLE, Dataset
from nova.core.errors import NovaError
from nova.core.markets import MARKETS, Symbol
from nova.core.spread import READING_SCHEMA
from nova.core.stores import endpoint
from nova.core.units import parse_date
from nova.core.validity import BOOK_BREAKS, END_OF_DATA, NO_SNAPSHOT, REASONS, RUN_START, RUN_STOP, reason

try:
    import polars as pl
except ImportError:  # pragma: no cover - exercised only where the extra is not installed
    raise NovaError("nova.analysis.polars_frames needs polars: pip install 'nova-recorder[polars]'") from None

if TYPE_CHECKING:
    import pyarrow as pa

TABLES = (*RECORDED_TABLES, SPREAD_TABLE)
TS = pl.Datetime("ns", "UTC")
HIVE_SCHEMA: dict[str, pl.DataType] = {key: pl.Date() if key == "date" else pl.String() for key in PARTITION_KEYS}
NEVER = 2**63 - 1  # "no later run" in nanoseconds
BOOK_COLUMNS = ["msg", "snapshot", "stale", "side", "price", "amount"]
RESULT_SCHEMA = pl.Schema({"side": pl.String(), "level": pl.UInt32(), "price": pl.Float64(), "amount": pl.Float64(),
                           "valid": pl.Boolean(), "reason": pl.String(), "snapshot_ts": TS,
                           "quote_age_ms": pl.Float64()})


# ---- scanning ------------------------------------------------------------------------------------------------------

def scan(root: str | Path, table: str, *, exchange: str | None = None, market: str | None = None,
         symbol: str | None = None, date: str | dt.date | None = None) -> pl.LazyFrame:
    """A table of the dataset at ``root`` (a folder or ``s3://bucket/prefix``) as a LazyFrame: its visible files,
    with the partition columns ``exchange``, ``market``, ``symbol`` (dashed) and ``date`` (a Date), and every
    timestamp as ``Datetime("ns", "UTC")``. ``market``, ``symbol`` (any spelling the CLI accepts) and ``date``
    narrow the files listed (``exchange`` too, though Nova records only Binance); a selection that matches nothing
    gives an empty frame of the table's columns. Files that lack a column of the contract (written before it
    was added) read it as null."""
    if table not in TABLES:
        raise NovaError(f"{table!r} is not a table of a Nova dataset; choose one of {', '.join(TABLES)}")
    data = Dataset(root)
    data.check_reachable()
    wanted_market = _market(market) if market is not None else None
    wanted_symbol = _symbol(symbol) if symbol is not None else None
    wanted_date = _date(date) if date is not None else None
    partitions = [] if exchange not in (None, EXCHANGE) else data.partitions(table, wanted_market, wanted_symbol,
                                                                                 wanted_date)
    files = [(p, path) for p in partitions for path, _ in data.files(p)]
    schema = _schema(SCHEMAS.get(table, READING_SCHEMA))
    if not files:
        return pl.LazyFrame(schema=schema | HIVE_SCHEMA)
    options: dict[str, Any] = {"schema": schema, "missing_columns": "insert", "extra_columns": "ignore",
                               "glob": False, **_storage(data)}
    if "=" not in data.root:
        frame = pl.scan_parquet([data.uri(path) for _, path in files], hive_partitioning=True,
                                hive_schema=HIVE_SCHEMA, **options)
    else:  # polars would take every key=value folder of the path for a partition: name the values instead
        by_partition: dict[Any, list[str]] = {}
        for p, path in files:
            by_partition.setdefault(p, []).append(data.uri(path))
        frame = pl.concat([pl.scan_parquet(paths, hive_partitioning=False, **options).with_columns(
            exchange=pl.lit(p.exchange), market=pl.lit(p.market), symbol=pl.lit(p.symbol),
            date=pl.lit(dt.date.fromisoformat(p.date))) for p, paths in by_partition.items()])
    return frame.select(*schema, *HIVE_SCHEMA)


def _schema(arrow: pa.Schema) -> dict[str, pl.DataType]:
    """The polars types of a contract schema (dictionary strings become Categorical, as polars reads them)."""
    return dict(pl.from_arrow(arrow.empty_table()).schema)  # type: ignore[union-attr]


def _storage(data: Dataset) -> dict[str, Any]:
    """polars' object-store options from the standard AWS variables, read the way nova.core.stores reads them,
    so that polars reaches the same store (MinIO, R2, a test server) as every other Nova tool."""
    if data.local:
        return {}
    options = {"aws_endpoint_url": endpoint(), "aws_region": os.environ.get("AWS_REGION")
               or os.environ.get("AWS_DEFAULT_REGION"), "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID"),
               "aws_secret_access_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
               "aws_session_token": os.environ.get("AWS_SESSION_TOKEN")}
    url = options["aws_endpoint_url"]
    if url and urlparse(url).scheme == "http":
        options["aws_allow_http"] = "true"
    found = {k: v for k, v in options.items() if v}
    return {"storage_options": found, "credential_provider": None} if found else {}


def _market(market: str) -> str:
    value = str(market).strip().lower()
    if value not in MARKETS:
        raise NovaError(f"market {market!r} is not spot or perp; write the market as 'spot' or 'perp'")
    return value


def _symbol(symbol: str | Symbol) -> str:
    if isinstance(symbol, Symbol):
        return symbol.dashed
    try:
        return Symbol.parse(str(symbol)).dashed
    except ValueError as exc:
        raise NovaError(str(exc)) from None


def _date(date: str | dt.date) -> str:
    if isinstance(date, dt.date):
        return date.isoformat()
    try:
        return parse_date(str(date))
    except ValueError as exc:
        raise NovaError(str(exc)) from None


def _instant(at: int | str | dt.datetime) -> int:
    """Nanoseconds since the epoch of an instant: an int (ns), an aware or UTC-naive datetime, or ISO text."""
    if isinstance(at, numbers.Integral) and not isinstance(at, bool):
        return int(at)
    if isinstance(at, str):
        try:
            at = dt.datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise NovaError(f"{at!r} is not an instant; write it like 2026-11-24T23:59:59.5 (UTC)") from None
    if not isinstance(at, dt.datetime):
        raise NovaError(f"{at!r} is not an instant; give nanoseconds since the epoch, a datetime or ISO text")
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    delta = at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000


def _time(ns: int) -> pl.Expr:
    return pl.lit(ns, dtype=pl.Int64).cast(TS)


# ---- the rebuild rule ----------------------------------------------------------------------------------------------

def rebuild(rows: pl.LazyFrame) -> pl.LazyFrame:
    """The book the ``book`` rows of one stream produce by the contract's rebuild rule (DESIGN §2; nova.core.book
    states it for replay): stale rows are skipped, the last snapshot message clears what came before it, then
    every row sets ``price -> amount`` in message order and a level whose last amount is not positive is gone.
    Gives ``side``, ``level`` (1 = best), ``price`` and ``amount``, bids then asks, best first; no snapshot among
    the rows, no book. Which rows are in effect at an instant, and whether that book may be trusted, is
    ``book_at``'s business."""
    usable = rows.select(BOOK_COLUMNS).filter(~pl.col("stale"))
    anchor = pl.col("msg").filter(pl.col("snapshot")).max()
    latest = (usable.filter(pl.col("msg") >= anchor)
              .filter(pl.col("side").is_not_null() & pl.col("price").is_not_null() & ~pl.col("price").is_nan())
              .with_columns(pl.col("side").cast(pl.String))
              .sort("msg", maintain_order=True)
              .group_by("side", "price", maintain_order=True).agg(pl.col("amount").last()))
    best_first = pl.when(pl.col("side") == "bid").then(-pl.col("price")).otherwise(pl.col("price"))
    return (latest.filter((pl.col("amount") > 0) & ~pl.col("amount").is_nan())
            .sort(pl.col("side") == "ask", best_first)
            .with_columns(level=pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).over("side"))
            .select("side", "level", "price", "amount"))


# ---- the book at an instant ----------------------------------------------------------------------------------------

def book_at(root: str | Path, symbol: str | Symbol, market: str, at: int | str | dt.datetime,
            levels: int | None = None) -> pl.DataFrame:
    """The depth book of ``market`` for ``symbol`` at instant ``at`` (ns since the epoch, a datetime, or ISO
    text; naive means UTC), at most ``levels`` levels a side, exactly as ``nova sql``'s ``book_at`` answers:
    columns side, level, price, amount, valid, reason, snapshot_ts, quote_age_ms.

    In effect at ``at`` are the messages before the first one received after it (a diff the recorder held for a
    snapshot is written after it, so it takes effect with the snapshot, never before), rebuilt by ``rebuild``
    from the last snapshot among them. The book is valid only when that snapshot exists, no book break
    (nova.core.validity) is ledgered at or after it and by ``at``, and ``at`` is not past the end of a run that
    has no ``stop`` (its last book row, unless the run has rows after ``at``). An invalid book is one row with
    ``valid`` false, null levels and the reason."""
    t = _instant(at)
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 1):
        raise NovaError(f"levels must be a whole number of levels of at least 1, not {levels!r}")
    sym, mkt = _symbol(symbol), _market(market)
    data = Dataset(root)
    data.check_reachable()
    if not data.partitions("book", mkt, sym):
        raise NovaError(f"{sym} {mkt} has no book recorded in {root}; symbols with a book there: "
                        f"{', '.join(data.symbols(('book',))) or 'none'}")
    rows = scan(root, "book", market=mkt, symbol=sym)
    ledger = (scan(root, "events", market=mkt, symbol=sym).filter(pl.col("stream") == "book")
              .select(ts=pl.col("ts_recv").dt.epoch("ns"), kind=pl.col("kind").cast(pl.String)))
    span = _span(rows, ledger, t)
    verdict = _verdict(span, t)
    if not verdict["valid"]:
        return pl.DataFrame([{"valid": False, "reason": verdict["reason"], "snapshot_ts": span["snap_ns"]}],
                            schema=RESULT_SCHEMA)
    book = rebuild(rows.filter(pl.col("msg").is_between(span["snap_msg"], span["last_msg"])))
    if levels is not None:
        book = book.filter(pl.col("level") <= levels)
    return book.with_columns(valid=pl.lit(True), reason=pl.lit(None, pl.String),
                             snapshot_ts=_time(span["snap_ns"]),
                             quote_age_ms=pl.lit((t - span["last_ns"]) / 1e6)).collect().cast(RESULT_SCHEMA)


def _span(rows: pl.LazyFrame, ledger: pl.LazyFrame, t: int) -> dict[str, Any]:
    """What ``book_at`` needs to know about the stream at ``t``, in as few passes as the dependencies allow (each
    pass filters on ``ts_recv`` or ``msg``, which Parquet statistics prune): ``last_msg``, the end of the
    messages in effect (the last one received by ``t``, unless a message before it was received after ``t``:
    then the one before that); ``snap_msg`` and ``snap_ns``, the last usable snapshot among them; ``last_ns``,
    the last receive time by ``t``; ``after_ns``, the first one after ``t``; and the stream's ledger."""
    by_t = pl.col("ts_recv") <= _time(t)
    usable_snapshot = pl.col("snapshot") & ~pl.col("stale")
    anchor = pl.col("msg").filter(usable_snapshot).max()
    head, events = pl.collect_all([
        rows.filter(by_t).select(
            last_msg=pl.col("msg").max(), last_ns=pl.col("ts_recv").max().dt.epoch("ns"), snap_msg=anchor,
            snap_ns=pl.col("ts_recv").filter(pl.col("msg") == anchor).max().dt.epoch("ns")),
        ledger])
    span: dict[str, Any] = {**head.row(0, named=True), "ledger": events, "after_ns": None}
    if span["last_msg"] is None:
        return span
    later = rows.filter(~by_t)
    cut, after = pl.collect_all([later.filter(pl.col("msg") <= span["last_msg"]).select(pl.col("msg").min()),
                                 later.select(pl.col("ts_recv").min().dt.epoch("ns"))])
    span["after_ns"] = after.item()
    if cut.item() is not None:  # a diff held for a snapshot received after t: in effect only from that snapshot on
        span["last_msg"] = cut.item() - 1
        earlier = rows.filter(usable_snapshot & (pl.col("msg") <= span["last_msg"]))
        span.update(earlier.select(snap_msg=pl.col("msg").max(), snap_ns=pl.col("ts_recv").filter(
            pl.col("msg") == pl.col("msg").max()).max().dt.epoch("ns")).collect().row(0, named=True))
    return span


def _verdict(span: dict[str, Any], t: int) -> dict[str, Any]:
    """Whether the book in effect at ``t`` may be trusted (nova.core.validity's rule, as the macro states it),
    and if not the reason: the earliest book break from its snapshot to ``t``, or the end of a run that has no
    stop and no row after ``t``."""
    snap_ns, ledger = span["snap_ns"], span["ledger"]
    if snap_ns is None:
        return {"valid": False, "reason": REASONS[NO_SNAPSHOT]}
    starts = ledger.filter(pl.col("kind") == RUN_START).get_column("ts")
    run_start = starts.filter(starts <= snap_ns).max()
    run_next = starts.filter(starts > snap_ns).min()
    run_start = -NEVER if run_start is None else run_start
    run_next = NEVER if run_next is None else run_next
    stopped = ledger.filter((pl.col("kind") == RUN_STOP) & pl.col("ts").is_between(run_start, run_next, "left"))
    outlived = span["after_ns"] is not None and span["after_ns"] < run_next
    breaks = (ledger.filter(pl.col("kind").is_in(sorted(BOOK_BREAKS)) & pl.col("ts").is_between(snap_ns, t))
              .sort("ts", "kind").head(1).rows())
    if stopped.is_empty() and not outlived and span["last_ns"] < t:
        breaks = sorted([*breaks, (span["last_ns"] + 1, END_OF_DATA)])
    if not breaks:
        return {"valid": True, "reason": None}
    ts, kind = breaks[0]
    return {"valid": False, "reason": reason(kind, ts)}
