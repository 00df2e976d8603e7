"""Finishing what a killed recorder left: its journals and temporaries, and the ``stop`` its ledger lacks.

Why the ledger matters too: a run killed without a clean stop leaves no ``stop`` event, so the market would
seem watched from its last row until the next run's ``start`` (nova.core.validity ends such a run at its last row
anyway, but the ledger should say so). The next recorder on the root, or ``nova recover``, ledgers that
``stop`` at the run's last recorded row of each stream.
"""

from __future__ import annotations

from nova.core.contract import EVENTS
from nova.core.dataset import Dataset
from nova.core.errors import NovaError
from nova.core.lock import RootBusy, RootLock
from nova.core.markets import Market, Symbol
from recorder.rows import records_batch
from recorder.writer import DatasetWriter

CRASH_DETAIL = ("the previous run ended without a clean stop (killed or crashed); nothing was watched after its "
                "last recorded row")


def missing_stops(writer: DatasetWriter, market: Market, symbol: Symbol, streams: list[str]) -> list[tuple[int, str]]:
    """(ts, stream) of the ``stop`` each stream's ledger lacks: at its last recorded row (or last event)."""
    out = []
    for stream in streams:
        last = writer.last_event(market, symbol, stream)
        if last is None or last[1] == "stop":
            continue
        row = writer.last_row_ns(stream, market, symbol) if stream != "events" else None
        out.append((max(last[0] + 1, row or 0), stream))  # after its last event, at its last row
    return out


def recover_root(root: str) -> list[str]:
    """What ``nova recover`` does: under the root's lock, finish journals, delete temporaries and ledger the
    missing stops of every stream. Returns one line per thing done (empty: nothing to do)."""
    dataset = Dataset(root)
    if not dataset.exists():
        raise NovaError(f"the data directory {root} does not exist; point --data at a recording")
    lock = RootLock(dataset.root)
    try:
        lock.acquire()
    except RootBusy:
        raise NovaError(f"a nova record is writing to {root}; it recovers what it needs by itself, so there is "
                        "nothing to do while it runs") from None
    except OSError as exc:
        raise NovaError(f"cannot recover {root}: it is not writable ({exc.strerror}); recover a writable copy "
                        "(the recording itself reads fine as it is)") from None
    try:
        writer = DatasetWriter(root)
        done = writer.recover()
        seen: set[tuple[str, str]] = set()
        for partition in dataset.partitions("events"):
            key = (partition.market, partition.symbol)
            if key in seen or partition.market not in ("spot", "perp"):
                continue
            seen.add(key)
            market, symbol = partition.market, Symbol.parse(partition.symbol)
            streams = sorted({r["stream"] for r in dataset.ledger(market, partition.symbol)})
            stops = missing_stops(writer, market, symbol, streams)  # type: ignore[arg-type]
            if stops:
                rows = [(ts, stream, "stop", None, None, CRASH_DETAIL, None, None, None) for ts, stream in stops]
                writer.write("events", market, symbol, records_batch(EVENTS, sorted(rows)))  # type: ignore[arg-type]
                done.extend(f"ledgered the missing stop of {market} {partition.symbol} {stream}" for _, stream in stops)
        writer.close()
        return done
    finally:
        lock.release()

