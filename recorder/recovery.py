"""Finishing what a killed recorder left: its journals and temporaries, and the ``stop`` its ledger lacks.

Why the ledger matters too: a run killed without a clean stop leaves no ``stop`` event, so the market would
seem watched from its last row until the next run's ``start`` (nova.core.validity ends such a run at its last row
anyway, but the ledger should say so). The next recorder on the root, or ``nova recover``, ledgers that
``stop`` at the run's last recorded row of each stream.
"""

from __future__ import annotations

from typing import cast

from nova.core.dataset import Dataset, NotWritable
from nova.core.errors import NovaError
from nova.core.lock import RootBusy
from nova.core.markets import Market, Symbol
from recorder.rows import event_row, table_batch
from recorder.writer import DatasetWriter

CRASH_DETAIL = ("the previous run ended without a clean stop (killed or crashed); nothing was watched after its "
                "last recorded row")


def missing_stops(data: Dataset, market: Market, symbol: Symbol, streams: list[str]) -> list[tuple[int, str]]:
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
    """What ``nova recover`` does: under the root's lock, finish journals, delete temporaries and ledger the
    missing stops of every stream. Returns one line per thing done (empty: nothing to do)."""
    dataset = Dataset(root)
    if not dataset.exists():
        raise NovaError(f"the data directory {root} does not exist; point --data at a recording")
    try:
        lock = dataset.lock()
    except RootBusy:
        raise NovaError(f"a nova record is writing to {root}; it recovers what it needs by itself, so there is "
                        "nothing to do while it runs") from None
    except NotWritable as exc:
        raise NovaError(f"cannot recover {root}: it is not writable ({exc.reason}); recover a writable copy "
                        "(the recording itself reads fine as it is)") from None
    try:
        done = dataset.recover()
        writer = DatasetWriter(dataset)
        seen: set[tuple[str, str]] = set()
        for partition in dataset.partitions("events"):
            key = (partition.market, partition.symbol)
            if key in seen or partition.market not in ("spot", "perp"):
                continue
            seen.add(key)
            market, symbol = cast(Market, partition.market), Symbol.parse(partition.symbol)  # a recorded market
            streams = sorted({r["stream"] for r in dataset.ledger(market, partition.symbol)})
            stops = missing_stops(dataset, market, symbol, streams)
            if stops:
                rows = [event_row(ts_recv=ts, stream=stream, kind="stop", detail=CRASH_DETAIL)
                        for ts, stream in sorted(stops)]
                writer.write("events", market, symbol, table_batch("events", rows))
                done.extend(f"ledgered the missing stop of {market} {partition.symbol} {stream}" for _, stream in stops)
        writer.close()
        return done
    finally:
        lock.release()
