"""``--all`` while it runs: which symbols are this recorder's, and what changed in exchangeInfo since last time.

Why the share of the list is a rule, not a list: a recorder that picks up new listings must know, on its own and
without asking anyone, whether a symbol it has never seen is its to record. The shard of a machine and the worker
of a process are decided by a stable hash of the symbol's name (``symbol_hash``): every machine and process
agrees, a new listing falls to exactly one of them, and none of the others moves.

``Changes`` compares what the exchange lists now (``nova.core.markets.listed``: the statuses per market) with
what is being recorded: a symbol that trades on every recorded market and is ours is started; one that stopped
trading on one of them (halted: status BREAK, HALT ...) or left exchangeInfo (delisted) is stopped, with the
reason for the ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from nova.core.markets import TRADING, Market, Symbol, tradable

NAMES = {"spot": "spot", "perp": "USDT-M"}


def symbol_hash(symbol: Symbol) -> int:
    """A stable hash of a symbol's exchange name (the same on every machine and every run)."""
    return int.from_bytes(hashlib.blake2b(symbol.exchange_id.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class Universe:
    """The symbols of ``--all`` that are this recorder's: quoted in ``quote`` (any quote if None), of shard
    ``shard`` = (I, N) of the machines (counted from 1), and of worker ``worker`` = (j, W) of this machine's
    processes (counted from 0). Shard I takes the hashes equal to I-1 modulo N; worker j of those takes the ones
    whose ``hash // N`` is j modulo W (recorder.fleet splits the first list by the same rule)."""

    quote: str | None = None
    shard: tuple[int, int] | None = None
    worker: tuple[int, int] | None = None

    def __contains__(self, symbol: object) -> bool:
        if not isinstance(symbol, Symbol):
            return False
        if self.quote is not None and symbol.quote != self.quote.upper():
            return False
        h = symbol_hash(symbol)
        count = self.shard[1] if self.shard else 1
        if self.shard is not None and h % count != self.shard[0] - 1:
            return False
        return self.worker is None or (h // count) % self.worker[1] == self.worker[0]

    def select(self, symbols: Iterable[Symbol]) -> list[Symbol]:
        """The ones that are ours, sorted by name."""
        return sorted((s for s in symbols if s in self), key=lambda s: s.unified)

    def for_worker(self, index: int, workers: int) -> Universe:
        return Universe(self.quote, self.shard, (index, workers))


@dataclass
class Changes:
    """What to start and what to stop (with why) after one look at exchangeInfo."""

    start: list[Symbol] = field(default_factory=list)
    stop: dict[Symbol, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.start or self.stop)


def changes(statuses: dict[Market, dict[Symbol, str]], recording: Iterable[Symbol], universe: Universe) -> Changes:
    """Compare exchangeInfo's ``statuses`` (per recorded market) with the symbols ``recording``."""
    now = set(recording)
    wanted = set(universe.select(tradable(statuses)))
    out = Changes(start=sorted(wanted - now, key=lambda s: s.unified))
    for symbol in sorted(now - wanted, key=lambda s: s.unified):
        if symbol not in universe:
            continue  # not ours by the rule (given on the command line, say): never stopped by a listing
        reasons = []
        for market, by_symbol in statuses.items():
            status = by_symbol.get(symbol)
            if status is None:
                reasons.append(f"delisted from Binance {NAMES[market]} (gone from exchangeInfo)")
            elif status != TRADING:
                reasons.append(f"not trading on Binance {NAMES[market]} (exchangeInfo status {status})")
        out.stop[symbol] = "; ".join(reasons)
    return out
