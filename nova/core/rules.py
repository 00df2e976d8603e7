"""Binance's update-id rules for a local order book, stated once: which diff applies, which is stale, which
breaks the chain.

For a market's diff-depth stream, ``last`` is the ``u`` of the last diff applied (or the snapshot's
``lastUpdateId`` until the first diff after it is applied). Binance documents two rules:

- the **first diff after a snapshot** must straddle it: spot ``U <= lastUpdateId + 1 <= u``; USDT-M
  ``U <= lastUpdateId <= u``. A diff wholly older than the snapshot (spot ``u <= lastUpdateId``, USDT-M
  ``u < lastUpdateId``) is **stale**: skipped, and the snapshot still waits for its first diff;
- every **later diff** must chain to the one before: spot ``U == last + 1``; USDT-M ``pu == last``. A diff with
  ``u <= last`` is stale.

Anything else breaks the chain: a gap, after which the book cannot be trusted until a new snapshot. The recorder's
sequencer judges every message by ``judge``; ``nova check`` re-checks the recorded chain with ``links``. The
tests' oracle (tests/oracle.py) restates the rules on purpose, independently.
"""

from __future__ import annotations

from typing import Final, Literal

APPLY: Final = 0
STALE: Final = 1
GAP: Final = 2
Verdict = Literal[0, 1, 2]


def judge(market: str, first_after_snapshot: bool, last: int, first: int, final: int, prev: int
          ) -> tuple[Verdict, int, int]:
    """(verdict, expected id, received id) for a diff ``[first, final]`` (``U``, ``u``; ``prev`` is ``pu``, USDT-M)
    arriving when the book's last applied id is ``last``. The ids say what a gap expected and got."""
    if market == "spot":
        if first_after_snapshot:
            older, chained = final <= last, first <= last + 1
        else:
            older, chained = final <= last, first == last + 1
        expected, received = last + 1, first
    elif first_after_snapshot:
        older, chained, expected, received = final < last, first <= last, last, first
    else:
        older, chained, expected, received = final <= last, prev == last, last, prev
    if chained and not older:
        return APPLY, expected, received
    if older:
        return STALE, expected, received
    return GAP, expected, received


def links(market: str, last: int, first: int, prev: int) -> tuple[bool, int, int]:
    """(chained, expected, received) for a diff following an applied diff whose ``u`` was ``last``: spot
    ``U == last + 1``, USDT-M ``pu == last``."""
    if market == "spot":
        return first == last + 1, last + 1, first
    return prev == last, last, prev


def rule_text(market: str, first_after_snapshot: bool) -> str:
    """The rule a gap broke, for the ledger."""
    if first_after_snapshot:
        return "first diff to straddle the snapshot id"
    return "U == last u + 1" if market == "spot" else "pu == last u"
