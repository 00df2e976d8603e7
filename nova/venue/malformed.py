"""Malformed payloads: what the venue sends instead of, or next to, a real message when a test asks for bad input.

A recorder is only trustworthy if bad input from the wire never becomes a row. Each kind below models one
way a frame can be wrong. Two families, chosen so the venue's own book (the truth) stays exact:

- **corrupting** kinds take the next real message of the chosen stream and send a damaged copy *instead*
  of it. The real message never reaches the client: on a diff-depth stream its level changes are lost, as
  with a dropped message, and a client must resync from a fresh snapshot to hold the truth again (the venue
  counts these in ``malformed_replaced``, next to ``dropped``).
- **adding** kinds send the real message untouched and an extra frame right after it. Nothing real is lost.

| kind | family | what the frame is (depth / bookTicker / trade, aggTrade / markPrice) |
|---|---|---|
| ``missing-ids`` | corrupting | the ids removed: ``U``, ``u``, ``pu`` / ``u`` / ``t``, ``a`` / ``E``, ``T`` |
| ``missing-data`` | corrupting | the data removed: ``b`` / ``b``, ``B`` / ``p``, ``q`` / ``p``, ``r`` |
| ``string-ids`` | corrupting | the ids above as JSON strings (``"U":"123"``) |
| ``number-levels`` | corrupting | every decimal string as a JSON number (``[[2000.5, 1.2]]``, ``"p":2000.5``) |
| ``non-numeric`` | corrupting | one size (depth: the first level's; ``B``; ``q``; markPrice: ``p``) is ``"abc"`` |
| ``negative`` | corrupting | that value negated (``"-1.20000000"``) |
| ``nan`` | corrupting | that value is ``"NaN"`` |
| ``huge`` | corrupting | that value is ``"1e400"`` (infinite as a float) |
| ``long`` | corrupting | that value is a 30-digit string |
| ``unknown-event`` | adding | ``{"e":"somethingNew","E":…,"s":…}``, an event type Binance does not send |
| ``binary`` | adding | a copy of the real message in a binary frame (Binance sends text frames only) |
| ``oversized`` | adding | a ``size``-byte text frame (default 2 MiB): the message as ``missing-data`` plus padding |
| ``truncated`` | adding | the first half of the real message's text (broken JSON) |

An ``oversized`` frame above ccxt's 10 MiB ``max_msg_size`` makes the client drop the connection.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

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
STREAMS = ("depth", "bookTicker", "trade", "aggTrade", "markPrice")
_ALIASES = {"depth": "depth", "book": "depth", "bookticker": "bookTicker", "bbo": "bookTicker",
            "trade": "trade", "trades": "trade", "aggtrade": "aggTrade", "markprice": "markPrice",
            "funding": "markPrice"}
_IDS = {"depth": ("U", "u", "pu"), "bookTicker": ("u",), "trade": ("t",), "aggTrade": ("a",),
        "markPrice": ("E", "T")}
_DATA = {"depth": ("b",), "bookTicker": ("b", "B"), "trade": ("p", "q"), "aggTrade": ("p", "q"),
         "markPrice": ("p", "r")}
_VALUE = {"bookTicker": "B", "trade": "q", "aggTrade": "q", "markPrice": "p"}  # the value the value kinds damage
_BAD_VALUE = {"non-numeric": "abc", "nan": "NaN", "huge": "1e400", "long": "123456789012345678901234567890"}


def stream_family(name: str) -> str:
    """The family of a stream as a user names it (``depth``, ``bookTicker``, ``bbo``, ``trades``, ...)."""
    family = _ALIASES.get(name.lower())
    if family is None:
        raise ValueError(f"unknown stream {name!r}; use depth, bookTicker, trade, aggTrade or markPrice")
    return family


def family_of_key(key: str) -> str:
    """The family of a venue stream key (``depth@100ms`` -> ``depth``)."""
    return key.split("@", 1)[0]


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown malformed kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind


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
        return _dumps({"e": "somethingNew", "E": int(time.time() * 1000), "s": msg.get("s")}), False
    if kind in ("missing-ids", "string-ids"):
        for name in _IDS[family]:
            if name in msg:
                if kind == "missing-ids":
                    del msg[name]
                else:
                    msg[name] = str(msg[name])
    elif kind in ("missing-data", "oversized"):
        for name in _DATA[family]:
            msg.pop(name, None)
        if kind == "oversized":
            head = _dumps(msg)
            padding = max(0, size - len(head) - len(',"nova_padding":""'))
            return head[:-1] + ',"nova_padding":"' + "x" * padding + '"}', False
    elif kind == "number-levels":
        for name, value in msg.items():
            if name in ("b", "a") and isinstance(value, list):
                msg[name] = [[float(p), float(q)] for p, q in value]
            elif isinstance(value, str) and name not in ("e", "s", "X"):
                msg[name] = float(value)
    else:  # one value damaged
        if family == "depth":
            side = msg["b"] if msg.get("b") else msg.get("a")
            if not side:
                side = msg["b"] = [["1.00", "1.00"]]
            side[0][1] = _bad(kind, side[0][1])
        else:
            name = _VALUE[family]
            msg[name] = _bad(kind, msg[name])
    return _dumps(msg), False


def _bad(kind: str, value: str) -> str:
    if kind == "negative":
        return "-" + value
    return _BAD_VALUE[kind]


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()
