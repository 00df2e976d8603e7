"""Malformed payloads: what the venue sends instead of, or next to, a real message when a test asks for bad input.

A recorder is only trustworthy if bad input from the wire never becomes a row. Each kind below models one
way a frame can be wrong. Two families, chosen so the venue's own book (the truth) stays exact:

- **corrupting** kinds take the next real message of the chosen stream and send a damaged copy *instead*
  of it. The real message never reaches the client: on a diff-depth stream its level changes are lost, as
  with a dropped message, and a client must resync from a fresh snapshot to hold the truth again (the venue
  counts these in ``malformed_replaced``, next to ``dropped``).
- **adding** kinds send the real message untouched and an extra frame right after it. Nothing real is lost.

| kind | family | what the frame is (depth / bookTicker / trade, aggTrade / markPrice / forceOrder) |
|---|---|---|
| ``missing-ids`` | corrupting | no ids: ``U``, ``u``, ``pu`` / ``u`` / ``t``, ``a`` / ``E``, ``T`` / ``E``, ``o.T`` |
| ``missing-data`` | corrupting | the data removed: ``b`` / ``b``, ``B`` / ``p``, ``q`` / ``p``, ``r`` / ``o`` |
| ``string-ids`` | corrupting | the ids above as JSON strings (``"U":"123"``) |
| ``number-levels`` | corrupting | every decimal string as a JSON number (``[[2000.5, 1.2]]``, ``"p":2000.5``) |
| ``non-numeric`` | corrupting | one value (depth: the first level's size; ``B``; ``q``; ``p``; ``o.q``) is ``"abc"`` |
| ``negative`` | corrupting | that value negated (``"-1.20000000"``) |
| ``nan`` | corrupting | that value is ``"NaN"`` |
| ``huge`` | corrupting | that value is ``"1e400"`` (infinite as a float) |
| ``long`` | corrupting | that value is a 30-digit string |
| ``unknown-event`` | adding | ``{"e":"somethingNew","E":…,"s":…}``, an event type Binance does not send |
| ``binary`` | adding | a copy of the real message in a binary frame (Binance sends text frames only) |
| ``oversized`` | adding | a ``size``-byte text frame (default 2 MiB): the message as ``missing-data`` plus padding |
| ``truncated`` | adding | the first half of the real message's text (broken JSON) |

An ``oversized`` frame above ccxt's 10 MiB ``max_msg_size`` makes the client drop the connection.

The USDT-M ``/fapi/v1/openInterest`` REST body has its own, smaller set (``OPEN_INTEREST_KINDS``): a REST
response is one body, so every kind replaces it (``truncated`` sends half of its text).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from nova.venue.streams import PERP_ONLY_FAMILIES

KINDS: dict[str, str] = {
    "missing-ids": "the message's ids removed",
    "missing-data": "the message's data fields removed",
    "string-ids": "ids as JSON strings",
    "number-levels": "decimal strings as JSON numbers",
    "non-numeric": 'a size of "abc"',
    "negative": "a negative size",
    "nan": 'a size of "NaN"',
    "huge": 'a size of "1e400"',
    "long": "a 30-digit size",
    "unknown-event": "an extra frame with an unknown event type",
    "binary": "an extra copy of the message in a binary frame",
    "oversized": "an extra oversized text frame",
    "truncated": "an extra frame holding half of the message's JSON",
}
ADDING = frozenset({"unknown-event", "binary", "oversized", "truncated"})
OVERSIZED_BYTES = 2 << 20

# Stream families: the venue's stream keys (depth@100ms, markPrice@1s, ...) by the message shape they carry.
STREAMS = ("depth", "bookTicker", "trade", "aggTrade", "markPrice", "forceOrder")
PERP_ONLY = PERP_ONLY_FAMILIES
_ALIASES = {"depth": "depth", "book": "depth", "bookticker": "bookTicker", "bbo": "bookTicker",
            "trade": "trade", "trades": "trade", "aggtrade": "aggTrade", "markprice": "markPrice",
            "funding": "markPrice", "forceorder": "forceOrder", "liquidations": "forceOrder"}
# Field paths per family; "o.T" is the field T of the nested object o (forceOrder carries its order there).
_IDS = {"depth": ("U", "u", "pu"), "bookTicker": ("u",), "trade": ("t",), "aggTrade": ("a",),
        "markPrice": ("E", "T"), "forceOrder": ("E", "o.T")}
_DATA = {"depth": ("b",), "bookTicker": ("b", "B"), "trade": ("p", "q"), "aggTrade": ("p", "q"),
         "markPrice": ("p", "r"), "forceOrder": ("o",)}
_VALUE = {"bookTicker": "B", "trade": "q", "aggTrade": "q", "markPrice": "p",  # the value the value kinds damage
          "forceOrder": "o.q"}
_BAD_VALUE = {"non-numeric": "abc", "nan": "NaN", "huge": "1e400", "long": "123456789012345678901234567890"}
_NOT_NUMBERS = frozenset({"e", "s", "S", "o", "f", "X"})  # string fields that are names, not decimals

# The openInterest REST body ({"openInterest":"10659.509","symbol":"ETHUSDT","time":...}).
OPEN_INTEREST_KINDS: dict[str, str] = {
    "missing-data": "no openInterest field",
    "missing-ids": "no time field",
    "string-ids": "time as a JSON string",
    "number-levels": "openInterest as a JSON number",
    "non-numeric": 'an openInterest of "abc"',
    "negative": "a negative openInterest",
    "nan": 'an openInterest of "NaN"',
    "huge": 'an openInterest of "1e400"',
    "long": "a 30-digit openInterest",
    "truncated": "half of the body's JSON text",
}


def stream_family(name: str) -> str:
    """The family of a stream as a user names it (``depth``, ``bookTicker``, ``bbo``, ``trades``, ...)."""
    family = _ALIASES.get(name.lower())
    if family is None:
        raise ValueError(f"unknown stream {name!r}; use depth, bookTicker, trade, aggTrade, markPrice or "
                         "forceOrder")
    return family


def check_market(family: str, market: str) -> None:
    """Refuse a stream family on a market that does not carry it (markPrice and forceOrder are USDT-M only)."""
    if family in PERP_ONLY and market != "perp":
        raise ValueError(f"{family} is a USDT-M stream; use market=perp")


def family_of_key(key: str) -> str:
    """The family of a venue stream key (``depth@100ms`` -> ``depth``)."""
    return key.split("@", 1)[0]


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown malformed kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind


def check_open_interest_kind(kind: str) -> str:
    if kind not in OPEN_INTEREST_KINDS:
        raise ValueError(f"unknown malformed openInterest kind {kind!r}; use one of "
                         f"{', '.join(OPEN_INTEREST_KINDS)}")
    return kind


def corrupt_open_interest(kind: str, text: str) -> str:
    """A malformed ``/fapi/v1/openInterest`` body in place of the real one (``text``, its JSON)."""
    if kind == "truncated":
        return text[: max(2, len(text) // 2)]
    body: dict[str, Any] = orjson.loads(text)
    if kind == "missing-data":
        body.pop("openInterest", None)
    elif kind == "missing-ids":
        body.pop("time", None)
    elif kind == "string-ids":
        body["time"] = str(body.get("time"))
    elif kind == "number-levels":
        body["openInterest"] = float(body["openInterest"])
    else:
        body["openInterest"] = _bad(check_open_interest_kind(kind), str(body["openInterest"]))
    return _dumps(body)


def corrupt(kind: str, family: str, text: str, size: int = OVERSIZED_BYTES) -> tuple[str | bytes, bool]:
    """The malformed frame for a real message ``text`` of a stream ``family``: (payload, is_binary).

    Whether it replaces the real message or follows it is ``kind in ADDING`` (see the module docstring).
    """
    if kind == "binary":
        return text.encode(), True
    if kind == "truncated":
        return text[: max(2, len(text) // 2)], False
    msg: dict[str, Any] = orjson.loads(text)
    if kind == "unknown-event":
        symbol = msg.get("s") or (msg.get("o") or {}).get("s")
        return _dumps({"e": "somethingNew", "E": int(time.time() * 1000), "s": symbol}), False
    if kind in ("missing-ids", "string-ids"):
        for path in _IDS[family]:
            found = _locate(msg, path)
            if found is not None:
                owner, name = found
                if kind == "missing-ids":
                    del owner[name]
                else:
                    owner[name] = str(owner[name])
    elif kind in ("missing-data", "oversized"):
        for name in _DATA[family]:
            msg.pop(name, None)
        if kind == "oversized":
            head = _dumps(msg)
            padding = max(0, size - len(head) - len(',"nova_padding":""'))
            return head[:-1] + ',"nova_padding":"' + "x" * padding + '"}', False
    elif kind == "number-levels":
        _numbers(msg)
    else:  # one value damaged
        if family == "depth":
            side = msg["b"] if msg.get("b") else msg.get("a")
            if not side:
                side = msg["b"] = [["1.00", "1.00"]]
            side[0][1] = _bad(kind, side[0][1])
        else:
            found = _locate(msg, _VALUE[family])
            if found is None:
                raise ValueError(f"a {family} message without {_VALUE[family]}: {text[:200]}")
            owner, name = found
            owner[name] = _bad(kind, owner[name])
    return _dumps(msg), False


def _locate(msg: dict[str, Any], path: str) -> tuple[dict[str, Any], str] | None:
    """The object holding a dotted field path (``o.T``) and the field's name, or None if it is absent."""
    *parents, name = path.split(".")
    owner: Any = msg
    for parent in parents:
        owner = owner.get(parent) if isinstance(owner, dict) else None
    if not isinstance(owner, dict) or name not in owner:
        return None
    return owner, name


def _numbers(msg: dict[str, Any]) -> None:
    """Every decimal string of a message (nested objects included) as a JSON number, in place."""
    for name, value in msg.items():
        if name in ("b", "a") and isinstance(value, list):
            msg[name] = [[float(p), float(q)] for p, q in value]
        elif isinstance(value, dict):
            _numbers(value)
        elif isinstance(value, str) and name not in _NOT_NUMBERS:
            msg[name] = float(value)


def _bad(kind: str, value: str) -> str:
    if kind == "negative":
        return "-" + value
    return _BAD_VALUE[kind]


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()
