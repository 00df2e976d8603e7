"""Make-before-break: the gate that merges two connections of a market during a handover, by exchange ids.

The recorder-level tests (a handover across the venue's connection age limit and across serverShutdown, with
an unbroken id chain) are in tests/test_recorder_handover.py; here the gate alone, with every interleaving.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from recorder.handover import Closed, Gate

SYM = "ETHUSDT"


class FakeSession:
    """Records what reaches the session, as (stream, order id)."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int]] = []
        self.other: list[str] = []

    def on_depth(self, market: str, message: dict, raw: Any, ts: int) -> None:
        self.got.append(("book", message["u"]))

    def on_bbo(self, market: str, message: dict, ts: int) -> None:
        self.got.append(("bbo", message["u"]))

    def on_trade(self, market: str, message: dict, ts: int) -> None:
        self.got.append(("trades", message["t"]))

    def on_liquidation(self, market: str, message: dict, ts: int) -> None:
        self.got.append(("liquidations", message["E"]))

    def on_snapshot(self, *args: Any) -> None:
        self.other.append("snapshot")


def depth(u: int) -> dict:
    return {"e": "depthUpdate", "s": SYM, "U": u, "u": u, "b": [], "a": []}


def test_the_new_connections_messages_wait_and_fill_in_after_the_old_ones() -> None:
    session = FakeSession()
    gate = Gate(session, "spot", ["book"])
    for u in range(1, 6):
        gate.primary.on_depth("spot", depth(u), None, u)
    assert not gate.ready([SYM])
    for u in range(4, 9):  # the new connection subscribed while 4 was on its way
        gate.successor.on_depth("spot", depth(u), None, u)
    assert gate.ready([SYM])  # 4 and 5 came on both: no hole between them
    gate.primary.on_depth("spot", depth(6), None, 6)  # the old one still delivers until the switch
    assert gate.switch() == 2  # 7 and 8 came only on the new one
    assert session.got == [("book", u) for u in range(1, 9)]


def test_after_the_switch_what_the_old_one_delivered_is_not_recorded_twice() -> None:
    session = FakeSession()
    gate = Gate(session, "perp", ["book", "trades"])
    for u in range(1, 11):
        gate.primary.on_depth("perp", depth(u), None, u)
        gate.primary.on_trade("perp", {"s": SYM, "t": u}, u)
    for u in range(4, 9):  # the new connection lags behind the old one at the switch
        gate.successor.on_depth("perp", depth(u), None, u)
    assert gate.ready([SYM]) and gate.switch() == 0
    for u in range(9, 13):  # 9 and 10 came on the old one already
        gate.successor.on_depth("perp", depth(u), None, u)
        gate.successor.on_trade("perp", {"s": SYM, "t": u}, u)
    assert [n for s, n in session.got if s == "book"] == list(range(1, 13))
    assert [n for s, n in session.got if s == "trades"] == list(range(1, 13))
    assert gate.caught_up()


def test_no_overlap_is_not_ready() -> None:
    gate = Gate(FakeSession(), "perp", ["book"])
    gate.primary.on_depth("perp", depth(10), None, 1)
    gate.successor.on_depth("perp", depth(12), None, 2)  # 11 fell between the two
    assert not gate.ready([SYM]) and gate.missing([SYM]) == [f"{SYM} book"]


def test_overlap_seen_from_the_old_side_when_the_new_one_is_faster() -> None:
    session = FakeSession()
    gate = Gate(session, "spot", ["book"])
    gate.primary.on_depth("spot", depth(1), None, 1)
    gate.successor.on_depth("spot", depth(2), None, 2)  # the new connection got 2 before the old one
    assert not gate.ready([SYM])
    gate.primary.on_depth("spot", depth(2), None, 3)
    assert gate.ready([SYM])
    gate.switch()
    assert session.got == [("book", 1), ("book", 2)]


@pytest.mark.parametrize("seed", range(20))
def test_any_interleaving_passes_every_message_once_in_order(seed: int) -> None:
    rng = random.Random(seed)
    session = FakeSession()
    gate = Gate(session, "perp", ["book", "bbo", "trades", "liquidations"])
    cut = rng.randrange(5, 40)  # the old connection delivers 1..cut
    join = rng.randrange(1, cut)  # the new one delivers join..60
    old = [(k, n) for n in range(1, cut + 1) for k in ("book", "bbo", "trades")] + [("liquidations", 7)]
    new = [(k, n) for n in range(join, 61) for k in ("book", "bbo", "trades")]
    makers = {"book": lambda n: ("on_depth", ("perp", depth(n), None, n)),
              "bbo": lambda n: ("on_bbo", ("perp", {"s": SYM, "u": n}, n)),
              "trades": lambda n: ("on_trade", ("perp", {"s": SYM, "t": n}, n)),
              "liquidations": lambda n: ("on_liquidation", ("perp", {"e": "forceOrder", "E": n, "o": {"s": SYM}},
                                                                   n))}
    queues = [(gate.primary, sorted(old, key=lambda x: x[1])), (gate.successor, new)]
    while any(q for _, q in queues):
        side, queue = rng.choice([(s, q) for s, q in queues if q])
        stream, n = queue.pop(0)
        method, args = makers[stream](n)
        getattr(side, method)(*args)
    assert gate.ready([SYM])
    gate.switch()
    for stream in ("book", "bbo", "trades"):
        assert [n for s, n in session.got if s == stream] == list(range(1, 61)), (stream, seed)
    assert [n for s, n in session.got if s == "liquidations"] == [7]


def test_the_new_connections_other_calls_are_not_the_sessions_and_a_closed_one_records_nothing() -> None:
    session = FakeSession()
    gate = Gate(session, "spot", ["book"])
    gate.successor.on_snapshot("spot", SYM, {}, 1)  # its own subscription's snapshot: the old one rules
    gate.primary.on_snapshot("spot", SYM, {}, 2)
    assert session.other == ["snapshot"]
    Closed().on_depth("spot", depth(1), None, 1)
    assert session.got == []


def test_a_quiet_symbol_is_not_waited_for_once_the_new_connection_settled_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A halted or delisted symbol sends nothing on either connection: it cannot overlap, and need not. It is left
    out of the wait once the old connection has delivered none of its book since the gate opened (QUIET_S) and
    the new connection has acknowledged (or been refused) its subscription; a symbol that moves must still
    overlap, and a quiet one that starts moving must too."""
    import recorder.handover as handover

    clock = [100.0]
    monkeypatch.setattr(handover.time, "monotonic", lambda: clock[0])
    session = FakeSession()
    gate = Gate(session, "spot", ["book", "bbo"])
    gate.primary.on_depth("spot", depth(1), None, 1)
    gate.successor.on_depth("spot", depth(1), None, 1)  # ETHUSDT overlapped
    assert gate.missing([SYM, "SOLUSDT"], {"SOLUSDT"}) == ["SOLUSDT book"], "quiet, but only just"
    clock[0] += handover.QUIET_S
    assert gate.missing([SYM, "SOLUSDT"], set()) == ["SOLUSDT book"], "not settled on the new connection yet"
    assert gate.ready([SYM, "SOLUSDT"], {"SOLUSDT"})
    gate.primary.on_depth("spot", {**depth(7), "s": "SOLUSDT"}, None, 7)  # it moves again on the old one
    assert gate.missing([SYM, "SOLUSDT"], {"SOLUSDT"}) == ["SOLUSDT book"]
    gate.successor.on_depth("spot", {**depth(7), "s": "SOLUSDT"}, None, 7)
    assert gate.ready([SYM, "SOLUSDT"], {"SOLUSDT"})
