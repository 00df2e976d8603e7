"""Binance's market-data payloads as typed shapes: one msgspec ``Struct`` per message the recorder reads.

Why shapes instead of dict lookups: what a message must hold (which fields, which types, which ranges) is
written once, as a class, and checked by msgspec in C. The session (recorder.session) converts each
message ccxt already decoded into its shape with ``read``; a message that does not fit raises ``Malformed``
with one sentence naming the field, which the session ledgers as an ``error`` (and never makes a row of).

The rules, which are the recorder's acceptance rules (tests/test_wire_faults.py, tests/test_rows.py):
- ids are JSON integers within int64 (``U``/``u``/``lastUpdateId`` positive, the others non-negative);
  strings, floats and booleans are refused (msgspec's strict mode: ``true`` is not ``1``, ``"5"`` is not 5);
- times are positive JSON integers in ms that still fit an int64 once in ns (a diff's optional ``T`` may also
  be -1, the recorder's own "none", as the hand-written checks allowed);
- a diff's ``U <= u``, and its ``b`` and ``a`` are arrays (their levels stay unparsed text here: the writer's
  worker parses them in bulk, recorder.levels);
- prices, sizes and rates are JSON strings; what is inside them (a plain decimal: no NaN, infinity, sign,
  exponent, at most 15 significant digits) is read by ``recorder.levels.plain_decimal`` when the row is
  built, and an error names the field (``decimal``);
- enumerations (a liquidation's side and status) are closed: anything else is refused.

Fields a shape does not declare are ignored (Binance adds fields; the recorder reads what the contract stores).
Speed: converting a 65-level diff-depth dict costs ~0.35 µs (the level arrays are not walked); with the
inlined ``problem`` test it is a little less than the hand-written checks it replaced (on the real USDT-M
capture: 0.54-0.56 µs against 0.61-0.70 per message, checks plus the sequencer's tuple). The other streams
pay ~0.2-0.3 µs more per message than before (conversion and named rows), at a few hundred messages a second.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from recorder.levels import plain_decimal

MAX_ID = 2**63 - 1  # ids are stored as int64
MAX_MS = (2**63 - 1) // 1_000_000  # times in ms must still fit as ns in an int64
NULL = -1  # an absent id or time (recorder.sequencer's null marker)

PositiveId = Annotated[int, Meta(gt=0, le=MAX_ID)]
Id = Annotated[int, Meta(ge=0, le=MAX_ID)]
TimeMs = Annotated[int, Meta(gt=0, le=MAX_MS)]
Side = Literal["BUY", "SELL"]
OrderStatus = Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH"]

# What a field must be, for the ledger: ``{field}`` is its path (``o.q``), ``{value}`` a preview of what came,
# ``{type}`` its JSON-decoded type.
ID = "{field}: expected a non-negative integer, got {value}"
TIME = "{field}: expected a time in ms, got {value}"
DECIMAL = "{field}: expected a decimal string, got {type}"
TEXT = "{field}: expected a string, got {type}"
OBJECT = "not a JSON object"


class Malformed(ValueError):
    """A message that does not have its shape; the text names the field and what was wrong with it."""


class Shape(Struct, kw_only=True):
    """A Binance payload. ``RULES`` maps a field's path to what the ledger says when its value is refused
    (``"$"``: the message itself); unlisted fields get msgspec's own wording. ``problem`` holds the rules
    that span fields or that types cannot state (``read`` applies it; not a ``__post_init__``, which costs
    0.2 µs per message when msgspec calls back into Python: the diff-depth hot path inlines the check)."""

    RULES: ClassVar[dict[str, str]] = {}
    HAS_PROBLEMS: ClassVar[bool] = False  # True where ``problem`` is overridden (``read`` skips the call otherwise)

    def problem(self) -> str | None:
        """What is wrong with a message that has the right fields and types, or None."""
        return None


# ---- WebSocket streams ------------------------------------------------------------------------------------------

_DEPTH = "{field}: ids and times must be positive integers with U <= u, got {value}"


class SpotDepthUpdate(Shape, kw_only=True):
    """Spot ``<symbol>@depth``: ``{"e":"depthUpdate","E":..,"s":..,"U":..,"u":..,"b":[..],"a":[..]}``."""

    E: TimeMs
    U: PositiveId
    u: PositiveId
    b: Any  # the level arrays: checked to be arrays here, parsed from the frame text by the writer
    a: Any
    T: Annotated[int, Meta(ge=NULL, le=MAX_MS)] = NULL  # USDT-M only; absent (or -1): none. null is refused

    RULES: ClassVar[dict[str, str]] = {"E": _DEPTH, "U": _DEPTH, "u": _DEPTH, "T": _DEPTH, "$": OBJECT}
    HAS_PROBLEMS: ClassVar[bool] = True

    def problem(self) -> str | None:
        # recorder.session.MarketSession.on_depth inlines this test; tests/test_rows.py holds the two together
        if not (self.u >= self.U and self.T != 0 and type(self.b) is list and type(self.a) is list):
            if self.T == 0:
                return _DEPTH.format(field="T", value="'0'")
            if self.u < self.U:
                return f"ids and times must be positive integers with U <= u, got U {self.U} > u {self.u}"
            name, levels = ("b", self.b) if type(self.b) is not list else ("a", self.a)
            return f"{name}: b and a must be arrays of levels, got {type(levels).__name__}"
        return None


class PerpDepthUpdate(SpotDepthUpdate, kw_only=True):
    """USDT-M ``<symbol>@depth@0ms``: the spot fields plus ``T`` (transaction time) and ``pu`` (previous u)."""

    pu: Id

    RULES: ClassVar[dict[str, str]] = {**SpotDepthUpdate.RULES, "pu": _DEPTH}


class SpotDepthHead(SpotDepthUpdate, kw_only=True):
    """A spot diff's frame up to its levels, plus the symbol: what the recorder reads of a diff on the event loop
    (recorder.exchange's frame path; the levels are parsed from the frame text by the writer)."""

    s: str


class PerpDepthHead(PerpDepthUpdate, kw_only=True):
    """A USDT-M diff's frame up to its levels, plus the symbol (see SpotDepthHead)."""

    s: str


DEPTH_FRAME_START = '{"e":"depthUpdate"'  # how Binance's diff frames begin (raw streams, not combined)
LEVELS_START = ',"b":['  # where a diff frame's level arrays begin: the header before it is read alone
HEAD_END = ',"b":[],"a":[]}'  # closes a header cut at LEVELS_START into a complete message of its shape


class SpotBookTicker(Shape, kw_only=True):
    """Spot ``<symbol>@bookTicker``: ``{"u":..,"s":..,"b":..,"B":..,"a":..,"A":..}`` (no event time)."""

    u: Id
    b: str
    B: str
    a: str
    A: str

    RULES: ClassVar[dict[str, str]] = {"u": ID, "b": DECIMAL, "B": DECIMAL, "a": DECIMAL, "A": DECIMAL,
                                       "$": OBJECT}


class PerpBookTicker(SpotBookTicker, kw_only=True):
    """USDT-M ``<symbol>@bookTicker``: the spot fields plus the event time ``E``."""

    E: TimeMs

    RULES: ClassVar[dict[str, str]] = {**SpotBookTicker.RULES, "E": TIME}


class Trade(Shape, kw_only=True):
    """``<symbol>@trade``: ``{"e":"trade","E":..,"s":..,"t":..,"p":..,"q":..,"T":..,"m":..}``."""

    E: TimeMs
    t: Id
    p: str
    q: str
    m: bool  # the buyer is the maker: the taker sold

    RULES: ClassVar[dict[str, str]] = {"E": TIME, "t": ID, "p": DECIMAL, "q": DECIMAL,
                                       "m": "{field}: expected a boolean, got {value}", "$": OBJECT}


class MarkPriceUpdate(Shape, kw_only=True):
    """USDT-M ``<symbol>@markPrice@1s``: mark and index price, funding rate, next funding time."""

    E: TimeMs
    p: str
    i: str
    r: str  # may be negative: "-0.00010000"
    T: TimeMs

    RULES: ClassVar[dict[str, str]] = {"E": TIME, "p": DECIMAL, "i": DECIMAL, "r": DECIMAL, "T": TIME,
                                       "$": OBJECT}


class LiquidationOrder(Shape, kw_only=True):
    """The order inside a ``forceOrder`` message (``o``)."""

    s: str
    S: Side
    q: str
    p: str
    ap: str
    X: OrderStatus
    z: str
    T: TimeMs

    RULES: ClassVar[dict[str, str]] = {"s": TEXT, "S": "{field}: {value} is not BUY or SELL",
                                       "q": DECIMAL, "p": DECIMAL, "ap": DECIMAL,
                                       "X": "{field}: {value} is not an order status", "z": DECIMAL, "T": TIME}


class ForceOrder(Shape, kw_only=True):
    """USDT-M ``<symbol>@forceOrder``: ``{"e":"forceOrder","E":..,"o":{...}}``."""

    E: TimeMs
    o: LiquidationOrder

    RULES: ClassVar[dict[str, str]] = {"E": TIME, "o": "o must be the liquidation order, got {type}",
                                       **{f"o.{k}": v for k, v in LiquidationOrder.RULES.items()}, "$": OBJECT}


# ---- REST responses ---------------------------------------------------------------------------------------------

_SNAPSHOT = "{field}: lastUpdateId must be a positive integer and bids/asks lists, got {value}"
_SNAPSHOT_LISTS = "{field}: lastUpdateId must be a positive integer and bids/asks lists, got {type}"


class DepthSnapshot(Shape, kw_only=True):
    """``GET /api/v3/depth`` and ``/fapi/v1/depth``: ``{"lastUpdateId":..,"bids":[..],"asks":[..]}``; USDT-M
    adds ``E`` and ``T``, which are kept when they are valid times and dropped (null) otherwise."""

    lastUpdateId: PositiveId
    bids: Any
    asks: Any
    E: Any = NULL
    T: Any = NULL

    RULES: ClassVar[dict[str, str]] = {"lastUpdateId": _SNAPSHOT, "$": "the response is not a JSON object"}
    HAS_PROBLEMS: ClassVar[bool] = True

    def problem(self) -> str | None:
        for name, levels in (("bids", self.bids), ("asks", self.asks)):
            if type(levels) is not list:
                return _SNAPSHOT_LISTS.format(field=name, type=type(levels).__name__)
        return None

    @property
    def event_ms(self) -> int:
        return self.E if type(self.E) is int and 0 < self.E <= MAX_MS else NULL

    @property
    def trade_ms(self) -> int:
        return self.T if type(self.T) is int and 0 < self.T <= MAX_MS else NULL


class OpenInterest(Shape, kw_only=True):
    """``GET /fapi/v1/openInterest``: ``{"openInterest":"10659.509","symbol":"ETHUSDT","time":..}``."""

    symbol: str
    openInterest: str
    time: TimeMs

    RULES: ClassVar[dict[str, str]] = {"symbol": TEXT, "openInterest": DECIMAL, "time": TIME,
                                       "$": "the response is not a JSON object"}


_FILTERS = "filters must be a list and status a string, got {field} {value}"


class SpotSymbolInfo(Shape, kw_only=True):
    """One entry of spot ``exchangeInfo``'s ``symbols``: the recorder stores its status and filters."""

    symbol: str
    status: str
    filters: list

    RULES: ClassVar[dict[str, str]] = {"symbol": TEXT, "status": _FILTERS, "filters": _FILTERS,
                                       "$": "a symbol entry must be a JSON object"}


class PerpSymbolInfo(SpotSymbolInfo, kw_only=True):
    """One entry of USDT-M ``exchangeInfo``'s ``symbols``: plus the contract type (``PERPETUAL``)."""

    contractType: str | None = None

    RULES: ClassVar[dict[str, str]] = {**SpotSymbolInfo.RULES,
                                       "contractType": "contractType must be a string, got {value}"}


# ---- reading ----------------------------------------------------------------------------------------------------

S = TypeVar("S", bound=Shape)
_convert = msgspec.convert
_MISSING = re.compile(r"Object missing required field `(.+?)`(?: - at `\$\.(.+)`)?")
_AT = re.compile(r"(.*) - at `\$(?:\.(.+))?`", re.DOTALL)


def read(shape: type[S], message: Any) -> S:
    """``message`` (as ccxt decoded it) as ``shape``, or ``Malformed`` naming the field that does not fit."""
    try:
        value = _convert(message, shape)
    except msgspec.ValidationError as exc:
        raise Malformed(explain(shape, message, str(exc))) from None
    if shape.HAS_PROBLEMS and (problem := value.problem()) is not None:
        raise Malformed(problem)
    return value


def explain(shape: type[Shape], message: Any, text: str) -> str:
    """msgspec's complaint as the ledger's sentence: ``no 'U' field``, ``u: expected a non-negative integer,
    got '123'``, ... (the wording of the recorder's earlier hand-written checks, now with the field's path)."""
    missing = _MISSING.fullmatch(text)
    if missing is not None:
        name, parent = missing.groups()
        return f"no {name!r} field" + (f" in {parent!r}" if parent else "")
    at = _AT.fullmatch(text)
    what, path = (at.group(1), at.group(2) or "$") if at is not None else (text, "$")
    if what.startswith(("Expected `", "Invalid enum value")):  # a wrong type or a value out of its range
        rule = shape.RULES.get(path)
        value = _at(message, path)
        if rule is not None:
            return rule.format(field=path, value=repr(str(value)[:40]), type=type(value).__name__)
        what = what[0].lower() + what[1:]
    return what if path == "$" else f"{path}: {what}"


def _at(message: Any, path: str) -> Any:
    if path == "$":
        return message
    for name in path.split("."):
        message = message.get(name) if isinstance(message, dict) else None
    return message


def decimal(value: str, field: str, positive: bool = False) -> float:
    """A price, size or rate string of a shape as a float, by ``plain_decimal``'s rule (no NaN, infinity,
    sign, exponent or more than 15 significant digits); ``positive``: zero is refused too."""
    if type(value) is str and len(value) <= 15 and (digits := value.replace(".", "", 1)).isascii() \
            and digits.isdigit():
        number = float(value)  # plain_decimal's own fast path (the usual case), without a second call
    else:
        try:
            number = plain_decimal(value)
        except (TypeError, ValueError) as exc:
            raise Malformed(f"{field}: {exc}") from None
    if positive and number == 0:
        raise Malformed(f"{field}: '{value}' is not a valid price or size")
    return number


def rate(value: str, field: str) -> float:
    """A funding rate: a plain decimal with an optional minus sign, at most 1 in size."""
    number = -decimal(value[1:], field) if value.startswith("-") else decimal(value, field)
    if abs(number) > 1:
        raise Malformed(f"{field}: '{value}' is not a funding rate")
    return number
