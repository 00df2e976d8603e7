"""Scheduled fault injection for ``nova venue --fault``, the shell's twin of the ``/_venue/fault`` API.

A fault is written ``KIND[=ARG]:MARKET@WHEN``:

- ``gap:spot@every20s`` drops the next diff-depth message of every spot symbol every 20 s (a sequence gap);
- ``close:perp@30s`` closes every perp connection once, 30 s after start (``abort`` drops them instead,
  with no close frame, like a network failure);
- ``stall=5:spot@every1m`` holds every spot frame for 5 s each minute;
- ``snapshot-delay=3:perp@every1m`` makes the next perp REST snapshot take 3 s;
- ``snapshot-fail=2:spot@45s`` makes the next 2 spot snapshots fail with HTTP 503;
- ``shutdown:all@every2m`` sends Binance's ``serverShutdown`` notice, then closes the connections.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from nova.units import parse_duration
from nova.venue.server import Venue

KINDS = ("gap", "close", "abort", "stall", "snapshot-delay", "snapshot-fail", "shutdown")
_SPEC = re.compile(r"^(?P<kind>[a-z-]+)(?:=(?P<arg>[0-9.]+))?:(?P<market>spot|perp|all)@(?P<every>every)?"
                   r"(?P<when>[0-9a-z.]+)$")


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    market: str
    arg: float | None
    at_s: float
    every: bool

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        m = _SPEC.match(text.strip().lower())
        if m is None or m.group("kind") not in KINDS:
            raise ValueError(f"'{text}' is not a fault; write KIND[=ARG]:MARKET@WHEN, for example "
                             f"gap:spot@every20s (kinds: {', '.join(KINDS)})")
        at = parse_duration(m.group("when"))
        if m.group("every") and at <= 0:
            raise ValueError(f"'{text}' repeats every 0 s; give a positive interval")
        arg = float(m.group("arg")) if m.group("arg") else None
        return cls(m.group("kind"), m.group("market"), arg, at, bool(m.group("every")))


async def apply_fault(venue: Venue, spec: FaultSpec) -> None:
    markets = ("spot", "perp") if spec.market == "all" else (spec.market,)
    for market in markets:
        if spec.kind == "gap":
            for inst in venue.source.instruments:
                if inst.market == market:
                    venue.drop_next(market, inst.symbol.exchange_id)  # type: ignore[arg-type]
        elif spec.kind in ("close", "abort"):
            await venue.close_connections(market, abort=spec.kind == "abort")  # type: ignore[arg-type]
        elif spec.kind == "stall":
            venue.stall(market, spec.arg or 5.0)  # type: ignore[arg-type]
        elif spec.kind == "snapshot-delay":
            venue.snapshot_fault(market, delay=spec.arg or 3.0)  # type: ignore[arg-type]
        elif spec.kind == "snapshot-fail":
            venue.snapshot_fault(market, fail=int(spec.arg or 1))  # type: ignore[arg-type]
        elif spec.kind == "shutdown":
            await venue.server_shutdown(market)  # type: ignore[arg-type]


async def run_schedule(venue: Venue, specs: list[FaultSpec]) -> None:
    """Fire every fault at its time (and again at each interval for ``every``) until cancelled."""

    async def one(spec: FaultSpec) -> None:
        await asyncio.sleep(spec.at_s)
        while True:
            await apply_fault(venue, spec)
            if not spec.every:
                return
            await asyncio.sleep(spec.at_s)

    await asyncio.gather(*(one(s) for s in specs))
