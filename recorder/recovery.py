"""Finishing what a killed recorder left: its journals and temporaries, and the ``stop`` its ledger lacks.

Why the ledger matters too: a run killed without a clean stop leaves no ``stop`` event, so the market would
seem watched from its last row until the next run's ``start`` (nova.core.validity ends such a run at its last row
anyway, but the ledger should say so). The next recorder on the root, or ``nova recover``, ledgers that
``stop`` at the run's last recorded row of each stream.
"""

from __future__ import annotations

from typing import cast

import pyarrow as pa

from nova.core.contract import SCHEMAS
from nova.core.dataset import Dataset, NotWritable, reason_of
from nova.core.errors import NovaError
from nova.core.markets import Market, Symbol
from nova.core.spool import Spool
from recorder.rows import event_row, table_batch
from recorder.upload import UPLOAD_STREAM
from recorder.writer import DatasetWriter

CRASH_DETAIL = ("the previous run ended without a clean stop (killed or crashed); nothing was watched after its "
                "last recorded row")


def missing_stops(data: Dataset | Spool, market: Market, symbol: Symbol, streams: list[str]) -> list[tuple[int, str]]:
    """(ts, stream) of the ``stop`` each stream's ledger lacks: at its last recorded row (or last event)."""
    out = []
    for stream in streams:
        last = data.last_event(market, symbol.dashed, stream)
        if last is None or last[1] == "stop":
            continue
        row = data.last_row_ns(stream, market, symbol.dashed) if stream != "events" else None
        out.append((max(last[0] + 1, row or 0), stream))  # after its last event, at its last row
    return out


def recover_root(root: str) -> list[str]:
    """What ``nova recover`` does: stream by stream (market and symbol), claim it, finish its journals, delete
    its temporaries and ledger its missing stops, then give it back. A stream a live recorder claims is skipped
    (its open journals are not leftovers; that recorder recovers what it needs by itself). Returns one line per
    thing done or skipped (empty: nothing to do)."""
    dataset = Dataset(root)
    dataset.check_reachable()
    if not dataset.exists():
        raise NovaError(f"the data directory {root} does not exist; point --data at a recording")
    done: list[str] = []
    streams = sorted({(p.market, p.symbol) for table in SCHEMAS if table != "spread"
                      for p in dataset.partitions(table) if p.market in ("spot", "perp")})
    try:
        claims = dataset.claim([], "nova-recover")
    except NotWritable as exc:  # pragma: no cover - claiming nothing touches nothing
        raise NovaError(f"cannot recover {root}: {exc.reason}") from None
    writer = DatasetWriter(dataset)
    try:
        for market_name, dashed in streams:
            try:
                if not claims.try_acquire(market_name, dashed):
                    done.append(f"skipped {market_name} {dashed}: a nova record is recording it (it recovers "
                                "what it needs by itself)")
                    continue
            except (OSError, pa.ArrowException) as exc:
                raise NovaError(f"cannot recover {root}: it is not writable ({reason_of(exc)}); recover a "
                                "writable copy (the recording itself reads fine as it is)") from None
            try:
                done.extend(dataset.recover([(market_name, dashed)]))
                market, symbol = cast(Market, market_name), Symbol.parse(dashed)  # a recorded market
                ledgered = sorted({r["stream"] for r in dataset.ledger(market, dashed)} - {UPLOAD_STREAM})
                stops = missing_stops(dataset, market, symbol, ledgered)
                if stops:
                    rows = [event_row(ts_recv=ts, stream=stream, kind="stop", detail=CRASH_DETAIL)
                            for ts, stream in sorted(stops)]
                    writer.write("events", market, symbol, table_batch("events", rows))
                    writer.close()
                    done.extend(f"ledgered the missing stop of {market} {dashed} {stream}" for _, stream in stops)
            finally:
                claims.release([(market_name, dashed)])
        return done
    finally:
        writer.close()
        claims.release()
