"""The venue's faults, in one registry that both the control API and ``nova venue --fault`` read.

Each ``Fault`` is one entry of ``FAULTS``: its name in ``POST /_venue/fault/{name}``, its query-string
parameters (``Param``: name, how the text becomes a value, the default), how it is applied to a ``Venue``
(``apply``, which also makes the control API's JSON reply), and its command-line kinds (``Kind``). Adding a
fault is adding one entry; the control API and the command line pick it up from here.

On the command line a fault is written ``KIND[=ARG]:MARKET@WHEN``:

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

``MARKET`` ``all`` fires the fault on spot and on perp; a fault about one symbol (``gap``, ``malformed``)
fires for every symbol the venue lists on the market.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from nova.core.units import parse_duration
from nova.venue import malformed as bad

if TYPE_CHECKING:  # the server imports this registry; at run time a Venue is only passed in
    from nova.core.markets import Market
    from nova.venue.server import Venue

Args = dict[str, Any]
Apply = Callable[["Venue", "Market | None", Args], Awaitable[dict[str, Any]]]


# ---- the parts of an entry ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One query-string parameter of a fault: ``convert`` turns its text into the value ``apply`` receives;
    ``default`` is the text used when the request leaves it out (None: the value None)."""

    name: str
    convert: Callable[[str], Any] = str
    default: str | None = None

    def read(self, query: Mapping[str, str]) -> Any:
        """The value of this parameter in ``query``; ValueError (the control API's 400) if it does not convert."""
        text = query.get(self.name, self.default)
        if text is None:
            return None
        try:
            return self.convert(text)
        except ValueError:
            kind = "a whole number" if self.convert is int else "a number" if self.convert is float else "valid"
            raise ValueError(f"{self.name} must be {kind}, not {text!r}") from None


@dataclass(frozen=True)
class Kind:
    """One command-line kind of a fault: ``KIND[=ARG]``.

    ``preset`` holds what the kind means beyond the fault's defaults (``abort`` is ``close`` with
    ``abort=True``); ``arg`` turns ARG into parameters (None: the kind takes no ARG); ``cycle`` names a
    parameter and its choices, taken in turn, one per firing, when ARG leaves that parameter unset.
    """

    name: str
    preset: Mapping[str, Any] = field(default_factory=dict)
    arg: Callable[[str], Args] | None = None
    cycle: tuple[str, tuple[str, ...]] | None = None


@dataclass(frozen=True)
class Fault:
    """One fault of the venue: ``POST /_venue/fault/{name}`` and the command-line ``kinds``.

    ``market_required``: the control API refuses a request without ``market`` (otherwise no market means
    both). ``per_symbol``: the fault is about one symbol (the control API's ``symbol``, default ETHUSDT);
    the command line fires it for every symbol listed on the market. ``perp_only`` says, from the parsed
    arguments, why the fault exists on USDT-M only (None: it exists on both); the command line checks it
    when it reads a spec, the venue's own methods when they are called.
    """

    name: str
    apply: Apply
    params: tuple[Param, ...] = ()
    market_required: bool = True
    per_symbol: bool = False
    perp_only: Callable[[Args], str | None] = lambda args: None
    kinds: tuple[Kind, ...] = ()

    def from_query(self, query: Mapping[str, str]) -> Args:
        """Every parameter, read from a control API query string (defaults where it is silent)."""
        return {p.name: p.read(query) for p in self.params}

    def defaults(self) -> Args:
        """Every parameter at its default, the base a command-line kind builds on."""
        return self.from_query({})


# ---- converters and command-line arguments ------------------------------------------------------------------------

def _flag(text: str) -> bool:
    """A query-string switch: ``1`` or ``true`` turn it on, anything else leaves it off."""
    return text in ("1", "true")


def _optional(text: str) -> str | None:
    """An empty query value means 'not given'."""
    return text or None


class _BadArgument(ValueError):
    """ARG is not the number its kind takes; the message is the rule, which the spec's error puts after
    "the argument of KIND"."""


def _seconds(param: str) -> Callable[[str], Args]:
    """ARG as a positive number of seconds for ``param`` (``stall=5``)."""
    def read(raw: str) -> Args:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 < value < float("inf"):
            raise _BadArgument(f"must be a number of seconds above 0, not '{raw}'")
        return {param: value}
    return read


def _count(param: str) -> Callable[[str], Args]:
    """ARG as a whole count of 1 or more for ``param`` (``snapshot-fail=2``)."""
    def read(raw: str) -> Args:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if not (value >= 1 and value.is_integer()):
            raise _BadArgument(f"must be a number, a whole count of 1 or more, not '{raw}'")
        return {param: int(value)}
    return read


def _malformed_arg(raw: str) -> Args:
    """``KIND[/STREAM]`` of a ``malformed`` fault; the kind ``any`` (or none) takes every kind in turn."""
    what, _, stream = raw.partition("/")
    what = "" if what == "any" else what
    family = bad.stream_family(stream or "depth")
    if what:
        bad.check_kind(what)
    return {"kind": what or None, "stream": family}


def _open_interest_kind(raw: str) -> Args:
    """The kind of an ``oi-malformed`` fault; ``any`` takes every kind in turn."""
    what = "" if raw == "any" else raw
    if what:
        bad.check_open_interest_kind(what)
    return {"malformed": what or None}


def _stream_perp_only(args: Args) -> str | None:
    family = bad.stream_family(args.get("stream") or "depth")
    return f"{family} is a USDT-M stream" if family in bad.PERP_ONLY else None


# ---- what each fault does -----------------------------------------------------------------------------------------

async def _drop(venue: Venue, market: Market | None, args: Args) -> dict[str, Any]:
    assert market is not None
    return {"dropping": venue.drop_next(market, args["symbol"], args["stream"])}


async def _close(venue: Venue, market: Market | None, args: Args) -> dict[str, Any]:
    return {"closed": await venue.close_connections(market, abort=args["abort"])}


async def _stall(venue: Venue, market: Market | None, args: Args) -> dict[str, Any]:
    assert market is not None
    venue.stall(market, args["seconds"])
    return {"stalled": market}


async def _snapshot(venue: Venue, market: Market | None, args: Args) -> dict[str, Any]:
    assert market is not None
    venue.snapshot_fault(market, delay=args["delay"], fail=args["fail"], status=args["status"], count=args["count"])
    return {"snapshot_fault": market}


async def _shutdown(venue: Venue, market: Market | None, args: Args) -> dict[str, Any]:
    """The notice goes out at once; the close follows after the grace period, in the background, so the
    control API answers at once and a schedule keeps its own time."""
    venue._spawn(venue.server_shutdown(market, args["grace"]))
    return {"shutdown": market or "all"}


async def _malformed(venue: Venue, market: Market | None, args: Args) -> dict[str, Any]:
    assert market is not None
    n = venue.inject_malformed(market, args["symbol"], args["kind"], args["stream"], count=args["count"],
                               size=args["size"])
    return {"malformed": n, "kind": args["kind"], "stream": bad.stream_family(args["stream"])}


async def _open_interest(venue: Venue, market: Market | None, args: Args) -> dict[str, Any]:
    assert market is not None
    venue.open_interest_fault(market, delay=args["delay"], fail=args["fail"], status=args["status"],
                              malformed=args["malformed"], count=args["count"])
    return {"openinterest_fault": market}


# ---- the registry -------------------------------------------------------------------------------------------------

_SYMBOL = Param("symbol", default="ETHUSDT")
_COUNT = Param("count", int, "1")
_STATUS = Param("status", int, "503")

FAULTS: Mapping[str, Fault] = MappingProxyType({f.name: f for f in (
    Fault("drop", _drop, (_SYMBOL, Param("stream", default="depth")), per_symbol=True,
          kinds=(Kind("gap"),)),
    Fault("close", _close, (Param("abort", _flag, "0"),), market_required=False,
          kinds=(Kind("close"), Kind("abort", preset={"abort": True}))),
    Fault("stall", _stall, (Param("seconds", float, "5"),),
          kinds=(Kind("stall", arg=_seconds("seconds")),)),
    Fault("snapshot", _snapshot, (Param("delay", float, "0"), Param("fail", int, "0"), _STATUS, _COUNT),
          kinds=(Kind("snapshot-delay", preset={"delay": 3.0}, arg=_seconds("delay")),
                 Kind("snapshot-fail", preset={"fail": 1}, arg=_count("fail")))),
    Fault("shutdown", _shutdown, (Param("grace", float),), market_required=False,
          kinds=(Kind("shutdown"),)),
    Fault("malformed", _malformed, (Param("kind", default=""), Param("stream", default="depth"), _SYMBOL, _COUNT,
                                    Param("size", int, str(bad.OVERSIZED_BYTES))),
          per_symbol=True, perp_only=_stream_perp_only,
          kinds=(Kind("malformed", arg=_malformed_arg, cycle=("kind", tuple(bad.KINDS))),)),
    Fault("openinterest", _open_interest, (Param("delay", float, "0"), Param("fail", int, "0"), _STATUS,
                                           Param("malformed", _optional), _COUNT),
          perp_only=lambda args: "openInterest is a USDT-M endpoint",
          kinds=(Kind("oi-fail", preset={"fail": 1}, arg=_count("fail")),
                 Kind("oi-delay", preset={"delay": 3.0}, arg=_seconds("delay")),
                 Kind("oi-malformed", arg=_open_interest_kind,
                      cycle=("malformed", tuple(bad.OPEN_INTEREST_KINDS))))),
)})
"""Every fault of the venue by its control API name, in the order the API's error reply lists them."""

KIND_OF: Mapping[str, tuple[Fault, Kind]] = MappingProxyType(
    {kind.name: (fault, kind) for fault in FAULTS.values() for kind in fault.kinds})
"""Every command-line kind, with the fault it belongs to."""
KINDS = tuple(KIND_OF)


def unknown_fault(name: str) -> str:
    """The control API's reply to a fault it does not know."""
    names = list(FAULTS)
    return f"unknown fault {name!r}; use {', '.join(names[:-1])} or {names[-1]}"


# ---- the command line ---------------------------------------------------------------------------------------------

_SPEC = re.compile(r"^(?P<kind>[a-z-]+)(?:=(?P<arg>[0-9a-z./-]+))?:(?P<market>spot|perp|all)@(?P<every>every)?"
                   r"(?P<when>[0-9a-z.]+)$")


@dataclass(frozen=True)
class FaultSpec:
    """A scheduled fault, parsed from ``KIND[=ARG]:MARKET@WHEN``: the kind, the market (``all``: both), the
    arguments of its fault (what ARG and the kind set over the fault's defaults), and when it fires."""

    kind: str
    market: str
    at_s: float
    every: bool
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fault(self) -> Fault:
        return KIND_OF[self.kind][0]

    @property
    def malformed(self) -> str | None:
        """The malformed kind of a ``malformed`` or ``oi-malformed`` fault (None: every kind in turn)."""
        cycle = KIND_OF[self.kind][1].cycle
        return self.args.get(cycle[0]) if cycle else None

    @property
    def stream(self) -> str:
        """The stream a ``malformed`` fault damages."""
        return self.args.get("stream") or "depth"

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Read ``KIND[=ARG]:MARKET@WHEN``; ValueError, quoting ``text``, for anything the fault would refuse."""
        m = _SPEC.match(text.strip().lower())
        if m is None or m.group("kind") not in KIND_OF:
            raise ValueError(f"'{text}' is not a fault; write KIND[=ARG]:MARKET@WHEN, for example "
                             f"gap:spot@every20s (kinds: {', '.join(KINDS)})")
        at = parse_duration(m.group("when"))
        if m.group("every") and at <= 0:
            raise ValueError(f"'{text}' repeats every 0 s; give a positive interval")
        fault, kind = KIND_OF[m.group("kind")]
        args = {**fault.defaults(), **kind.preset}
        raw, market = m.group("arg"), m.group("market")
        if raw is not None and kind.arg is None:
            raise ValueError(f"'{text}': {kind.name} takes no argument; write {kind.name}:{market}@...")
        try:
            if raw is not None and kind.arg is not None:
                args.update(kind.arg(raw))
        except _BadArgument as exc:
            raise ValueError(f"'{text}': the argument of {kind.name} {exc}") from None
        except ValueError as exc:
            raise ValueError(f"'{text}': {exc}") from None
        if kind.cycle and not args.get(kind.cycle[0]):
            args[kind.cycle[0]] = None  # every choice in turn
        why = fault.perp_only(args)
        if why and market != "perp":
            raise ValueError(f"'{text}': {why}; use :perp")
        return cls(kind.name, market, at, bool(m.group("every")), MappingProxyType(args))

    def firing_args(self, firing: int) -> Args:
        """The arguments of the ``firing``-th firing: a parameter left open takes the next of its choices."""
        args = dict(self.args)
        cycle = KIND_OF[self.kind][1].cycle
        if cycle and args.get(cycle[0]) is None:
            choices = cycle[1]
            args[cycle[0]] = choices[firing % len(choices)]
        return args


async def apply_fault(venue: Venue, spec: FaultSpec, firing: int = 0) -> None:
    """Inject one fault; ``firing`` counts the earlier firings of a repeating spec (a bare ``malformed``
    takes the next kind each time)."""
    fault, args = spec.fault, spec.firing_args(firing)
    markets: tuple[Market, ...] = ("spot", "perp") if spec.market == "all" else (spec.market,)  # type: ignore[assignment]
    for market in markets:
        if not fault.per_symbol:
            await fault.apply(venue, market, args)
            continue
        for inst in venue.source.instruments:
            if inst.market == market:
                await fault.apply(venue, market, {**args, "symbol": inst.symbol.exchange_id})


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
