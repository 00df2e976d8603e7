"""Scheduled fault injection for ``nova venue --fault``, the shell's twin of the ``/_venue/fault`` API.

A fault is written ``KIND[=ARG]:MARKET@WHEN``:

- ``gap:spot@every20s`` drops the next diff-depth message of every spot symbol every 20 s (a sequence gap);
- ``close:perp@30s`` closes every perp connection once, 30 s after start (``abort`` drops them instead,
  with no close frame, like a network failure);
- ``stall=5:spot@every1m`` holds every spot frame for 5 s each minute;
- ``snapshot-delay=3:perp@every1m`` makes the next perp REST snapshot take 3 s;
- ``snapshot-fail=2:spot@45s`` makes the next 2 spot snapshots fail with HTTP 503;
- ``shutdown:all@every2m`` sends Binance's ``serverShutdown`` notice, then closes the connections;
- ``malformed=nan/bookTicker:perp@every10s`` makes the next perp bookTicker of every symbol malformed
  (``malformed=KIND[/STREAM]``; the stream defaults to ``depth``; a bare ``malformed``, or the kind ``any``
  as in ``malformed=any/trade:spot@every5s``, takes the kinds of ``nova.venue.malformed`` in turn, one per
  firing); ``malformed=nan/forceOrder:perp@every10s`` damages the next liquidation (USDT-M only, like
  ``markPrice``);
- ``oi-fail=2:perp@30s`` makes the next 2 ``/fapi/v1/openInterest`` responses fail with HTTP 503;
- ``oi-delay=3:perp@every1m`` makes the next openInterest response take 3 s;
- ``oi-malformed=nan:perp@every20s`` makes the next openInterest response malformed (a kind of
  ``malformed.OPEN_INTEREST_KINDS``; a bare ``oi-malformed`` or ``oi-malformed=any`` takes them in turn).
  Open interest is a USDT-M endpoint: the ``oi-`` faults take ``:perp`` only.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass

from nova.core.units import parse_duration
from nova.venue import malformed as bad
from nova.venue.server import Venue

KINDS = ("gap", "close", "abort", "stall", "snapshot-delay", "snapshot-fail", "shutdown", "malformed", "oi-fail",
         "oi-delay", "oi-malformed")
OPEN_INTEREST_FAULTS = ("oi-fail", "oi-delay", "oi-malformed")
_SPEC = re.compile(r"^(?P<kind>[a-z-]+)(?:=(?P<arg>[0-9a-z./-]+))?:(?P<market>spot|perp|all)@(?P<every>every)?"
                   r"(?P<when>[0-9a-z.]+)$")


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    market: str
    arg: float | None
    at_s: float
    every: bool
    malformed: str | None = None  # KIND of a ``malformed`` or ``oi-malformed`` fault (None: every kind in turn)
    stream: str = "depth"  # the stream a ``malformed`` fault damages

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        m = _SPEC.match(text.strip().lower())
        if m is None or m.group("kind") not in KINDS:
            raise ValueError(f"'{text}' is not a fault; write KIND[=ARG]:MARKET@WHEN, for example "
                             f"gap:spot@every20s (kinds: {', '.join(KINDS)})")
        at = parse_duration(m.group("when"))
        if m.group("every") and at <= 0:
            raise ValueError(f"'{text}' repeats every 0 s; give a positive interval")
        kind, raw = m.group("kind"), m.group("arg")
        if kind == "malformed":
            what, _, stream = (raw or "").partition("/")
            what = "" if what == "any" else what
            try:
                family = bad.stream_family(stream or "depth")
                if what:
                    bad.check_kind(what)
            except ValueError as exc:
                raise ValueError(f"'{text}': {exc}") from None
            if family in bad.PERP_ONLY and m.group("market") != "perp":
                raise ValueError(f"'{text}': {family} is a USDT-M stream; use :perp")
            return cls(kind, m.group("market"), None, at, bool(m.group("every")), what or None, family)
        if kind in OPEN_INTEREST_FAULTS and m.group("market") != "perp":
            raise ValueError(f"'{text}': openInterest is a USDT-M endpoint; use :perp")
        if kind == "oi-malformed":
            what = "" if raw in (None, "any") else raw
            try:
                if what:
                    bad.check_open_interest_kind(what)
            except ValueError as exc:
                raise ValueError(f"'{text}': {exc}") from None
            return cls(kind, m.group("market"), None, at, bool(m.group("every")), what or None)
        try:
            arg = float(raw) if raw else None
        except ValueError:
            raise ValueError(f"'{text}': the argument of {kind} must be a number") from None
        return cls(kind, m.group("market"), arg, at, bool(m.group("every")))


async def apply_fault(venue: Venue, spec: FaultSpec, firing: int = 0) -> None:
    """Inject one fault; ``firing`` counts the earlier firings of a repeating spec (a bare ``malformed``
    takes the next kind each time)."""
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
        elif spec.kind == "malformed":
            kinds = list(bad.KINDS)
            kind = spec.malformed or kinds[firing % len(kinds)]
            for inst in venue.source.instruments:
                if inst.market == market:
                    venue.inject_malformed(market, inst.symbol.exchange_id, kind, spec.stream)  # type: ignore[arg-type]
        elif spec.kind == "oi-fail":
            venue.open_interest_fault(market, fail=int(spec.arg or 1))  # type: ignore[arg-type]
        elif spec.kind == "oi-delay":
            venue.open_interest_fault(market, delay=spec.arg or 3.0)  # type: ignore[arg-type]
        elif spec.kind == "oi-malformed":
            kinds = list(bad.OPEN_INTEREST_KINDS)
            venue.open_interest_fault(market, malformed=spec.malformed or kinds[firing % len(kinds)])  # type: ignore[arg-type]


async def run_schedule(venue: Venue, specs: list[FaultSpec]) -> None:
    """Fire every fault at its time (and again at each interval for ``every``) until cancelled."""

    async def one(spec: FaultSpec) -> None:
        await asyncio.sleep(spec.at_s)
        for firing in itertools.count():
            await apply_fault(venue, spec, firing)
            if not spec.every:
                return
            await asyncio.sleep(spec.at_s)

    await asyncio.gather(*(one(s) for s in specs))
