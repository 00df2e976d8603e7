"""Rows by name and typed wire messages (recorder.rows, recorder.wire, recorder.session).

- Every table's builder produces exactly the contract's schema (nova.core.contract.SCHEMAS), and every row type
  has exactly the table's column names, in its order, with Python types that fit the column's Arrow type.
- A row is taken by name: the same values given under the same names in another order make the same batch,
  while a row missing a name, having an unknown name, or holding a value of the wrong type under a name fails.
- The session's handlers put every value of a message under the column it belongs to (a swapped pair fails).
- The typed shapes accept exactly what the recorder's hand-written checks accepted before them: the oracle below
  restates those checks plainly, and generated messages (every field missing or of every wrong type) must get
  the same verdict, one ``error`` naming the field for each refused message and never a row.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nova.core.contract import EVENT_KINDS, SCHEMAS
from nova.core.markets import Symbol
from recorder import wire
from recorder.levels import plain_decimal
from recorder.rows import (
    ROW_TYPES,
    BboRow,
    EventRow,
    TradeRow,
    assemble,
    book_batch,
    event_row,
    table_batch,
)
from recorder.sequencer import NULL, BookSequencer
from recorder.session import MarketSession, SymbolState

ETH = Symbol("ETH", "USDT")
MAX_ID = 2**63 - 1
MAX_MS = MAX_ID // 1_000_000
T0 = 1_767_225_600_000  # ms

BBO_ROW = BboRow(ts_recv=T0 * 10**6, ts_event=None, update_id=7, bid_price=1.5, bid_amount=2.0, ask_price=1.6,
                 ask_amount=3.0)


# ---- the row types and builders against the contract -----------------------------------------------------------------

def _python_type(arrow: pa.DataType) -> type:
    if pa.types.is_timestamp(arrow) or arrow == pa.int64():
        return int
    if pa.types.is_dictionary(arrow) or arrow == pa.string():
        return str
    return {pa.float64(): float, pa.bool_(): bool}[arrow]


@pytest.mark.parametrize("table", list(ROW_TYPES))
def test_each_row_type_has_exactly_its_tables_columns(table: str) -> None:
    schema, row_type = SCHEMAS[table], ROW_TYPES[table]
    assert row_type.__struct_fields__ == tuple(schema.names), "the contract's names, in the contract's order"
    hints = typing.get_type_hints(row_type)
    for f in schema:
        allowed = set(typing.get_args(hints[f.name])) if isinstance(hints[f.name], types.UnionType) \
            else {hints[f.name]}
        assert _python_type(f.type) in allowed, (table, f.name, hints[f.name])
        assert allowed <= {_python_type(f.type), type(None)}, (table, f.name, hints[f.name])
        if type(None) in allowed:
            assert f.nullable, (table, f.name, "a null where the contract has none")


def _sample(table: str) -> dict[str, Any]:
    """A valid row of ``table`` by column name, every value distinct."""
    out: dict[str, Any] = {}
    for i, f in enumerate(SCHEMAS[table]):
        kind = _python_type(f.type)
        out[f.name] = {int: T0 * 10**6 + i, float: 1.25 + i, bool: i % 2 == 0, str: f"v{i}"}[kind]
    if table == "events":
        out["kind"] = "gap"
    return out


@pytest.mark.parametrize("table", list(ROW_TYPES))
def test_each_tables_builder_produces_exactly_the_contract_schema(table: str) -> None:
    values = _sample(table)
    row = ROW_TYPES[table](**values)
    for batch in (table_batch(table, [row]), table_batch(table, [values]), table_batch(table, [])):
        assert batch.schema.equals(SCHEMAS[table], check_metadata=True), table
    got = table_batch(table, [row]).to_pylist()[0]
    for f in SCHEMAS[table]:  # each value under its own name
        expected = values[f.name]
        if pa.types.is_timestamp(f.type):
            assert pa.scalar(expected, f.type).as_py() == got[f.name], f.name
        else:
            assert got[f.name] == expected, f.name


def test_the_book_builder_produces_exactly_the_contract_schema() -> None:
    seq = BookSequencer("perp", 1, ledger=lambda *a: None, request_resync=lambda: None)
    seq.on_snapshot(T0 * 10**6, NULL, NULL, 10, '{"b":[["1.5","2"]],"a":[["1.6","3"]]}', 2)
    seq.on_diff((T0 * 10**6 + 1, T0, T0 - 1, 9, 11, 10, '{"b":[],"a":[["1.6","0"]]}'))
    seq.on_diff((T0 * 10**6 + 2, T0 + 1, NULL, 12, 12, 11, '{"b":[],"a":[]}'))
    batch, malformed, _ = book_batch(seq.take())
    assert batch.schema.equals(SCHEMAS["book"], check_metadata=True) and not malformed
    rows = batch.to_pylist()
    assert [(r["first_id"], r["last_id"], r["prev_id"], r["msg"]) for r in rows] == [
        (10, 10, None, 1), (10, 10, None, 1), (9, 11, 10, 2), (12, 12, 11, 3)]
    assert [(r["side"], r["price"], r["amount"], r["snapshot"]) for r in rows] == [
        ("bid", 1.5, 2.0, True), ("ask", 1.6, 3.0, True), ("ask", 1.6, 0.0, False), (None, None, None, False)]
    assert rows[2]["ts_event"] == pa.scalar(T0 * 10**6, pa.timestamp("ns", "UTC")).as_py()
    assert rows[2]["ts_trade"] == pa.scalar((T0 - 1) * 10**6, pa.timestamp("ns", "UTC")).as_py()
    empty, _, _ = book_batch(seq.take())
    assert empty.schema.equals(SCHEMAS["book"]) and empty.num_rows == 0


def test_the_book_is_assembled_by_column_name() -> None:
    seq = BookSequencer("spot", 1, ledger=lambda *a: None, request_resync=lambda: None)
    seq.on_snapshot(T0 * 10**6, NULL, NULL, 10, '{"b":[["1.5","2"]],"a":[]}', 1)
    batch, _, _ = book_batch(seq.take())
    columns = dict(zip(batch.schema.names, batch.columns, strict=True))
    shuffled = dict(reversed(list(columns.items())))
    assert assemble("book", shuffled).equals(batch), "the order the columns are given in does not matter"
    with pytest.raises(ValueError, match=r"missing \['msg'\]"):
        assemble("book", {k: v for k, v in columns.items() if k != "msg"})
    with pytest.raises(ValueError, match=r"unknown \['message'\]"):
        assemble("book", {**{k: v for k, v in columns.items() if k != "msg"}, "message": columns["msg"]})
    with pytest.raises(TypeError, match=r"book\.price"):
        assemble("book", {**columns, "price": columns["first_id"]})


# ---- rows are taken by name --------------------------------------------------------------------------------------

def test_the_order_names_are_given_in_does_not_matter_but_the_names_do() -> None:
    values = msgspec.structs.asdict(BBO_ROW)
    shuffled = dict(reversed(list(values.items())))
    assert table_batch("bbo", [shuffled]).equals(table_batch("bbo", [BBO_ROW]))
    # bid and ask given under each other's names: the batch holds them where the names say
    swapped = {**values, "bid_price": values["ask_price"], "ask_price": values["bid_price"]}
    got = table_batch("bbo", [swapped]).to_pylist()[0]
    assert (got["bid_price"], got["ask_price"]) == (1.6, 1.5)


def test_a_row_type_is_made_by_name_only() -> None:
    with pytest.raises(TypeError, match="positional"):
        BboRow(T0, None, 7, 1.5, 2.0, 1.6, 3.0)  # type: ignore[misc]
    with pytest.raises(TypeError, match="ask_amount"):
        BboRow(ts_recv=1, ts_event=None, update_id=7, bid_price=1.5, bid_amount=2.0, ask_price=1.6)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="bid_size"):
        BboRow(ts_recv=1, ts_event=None, update_id=7, bid_price=1.5, bid_size=2.0, ask_price=1.6,  # type: ignore[call-arg]
               ask_amount=3.0)


@pytest.mark.parametrize(("change", "error", "says"), [
    ({"drop": "ask_amount"}, ValueError, r"missing \['ask_amount'\]"),
    ({"add": ("bid_size", 2.0)}, ValueError, r"unknown \['bid_size'\]"),
    ({"rename": ("bid_amount", "bid_size")}, ValueError, r"missing \['bid_amount'\], unknown \['bid_size'\]"),
    ({"set": ("bid_price", "1.5")}, TypeError, r"bbo.bid_price takes float or None, got str"),
    ({"set": ("bid_price", 2)}, TypeError, r"bbo.bid_price takes float or None, got int"),
    ({"set": ("update_id", True)}, TypeError, r"bbo.update_id takes int, got bool"),
    ({"set": ("update_id", None)}, TypeError, r"bbo.update_id takes int, got NoneType"),
    ({"set": ("ts_recv", 1.7e18)}, TypeError, r"bbo.ts_recv takes int, got float"),
    ({"set": ("ts_event", "now")}, TypeError, r"bbo.ts_event takes int or None, got str"),
])
def test_a_row_missing_a_name_with_an_unknown_name_or_a_wrong_type_fails(change: dict, error: type, says: str) -> None:
    row = msgspec.structs.asdict(BBO_ROW)
    if "drop" in change:
        del row[change["drop"]]
    elif "add" in change:
        row[change["add"][0]] = change["add"][1]
    elif "rename" in change:
        old, new = change["rename"]
        row[new] = row.pop(old)
    else:
        row[change["set"][0]] = change["set"][1]
    with pytest.raises(error, match=says):
        table_batch("bbo", [msgspec.structs.asdict(BBO_ROW), row])
    if "set" in change:  # the same through the row type, which does not check types when it is made
        with pytest.raises(error, match=says):
            table_batch("bbo", [msgspec.structs.replace(BBO_ROW, **{change["set"][0]: change["set"][1]})])


def test_rows_of_another_table_or_without_names_are_refused() -> None:
    trade = TradeRow(ts_recv=1, ts_event=2, trade_id=3, price=1.5, amount=2.0, taker_side="buy")
    with pytest.raises(ValueError, match="a row of bbo must have exactly its columns"):
        table_batch("bbo", [BBO_ROW, trade])
    with pytest.raises(TypeError, match="built by name"):
        table_batch("bbo", [tuple(msgspec.structs.astuple(BBO_ROW))])
    with pytest.raises(TypeError, match=r"events\.kind takes str"):
        table_batch("events", [msgspec.structs.replace(event_row(ts_recv=1, stream="book", kind="gap", detail=""),
                                                       kind=None)])


def test_event_rows() -> None:
    row = event_row(ts_recv=5, stream="book", kind="stop", detail="recorder stopped")
    assert isinstance(row, EventRow) and (row.expected_id, row.received_id, row.source) == (None, None, None)
    start = event_row(ts_recv=5, stream="book", kind="start", detail="", provenance=("binance", "host", "v"))
    assert (start.source, start.recorder_id, start.versions) == ("binance", "host", "v")
    gap = event_row(ts_recv=6, stream="book", kind="gap", detail="", expected_id=11, received_id=13)
    assert table_batch("events", [start, gap]).to_pylist()[1]["expected_id"] == 11
    assert set(EVENT_KINDS) >= {"start", "stop", "gap"}
    with pytest.raises(ValueError, match="not an event kind"):
        event_row(ts_recv=5, stream="book", kind="stopped", detail="")


# ---- the session's rows: every value under its own column ------------------------------------------------------------

def _session(market: str) -> tuple[MarketSession, SymbolState, list[str]]:
    resyncs: list[str] = []
    session = MarketSession(market, [ETH], {}, lambda m, sym: resyncs.append(sym.exchange_id))  # type: ignore[arg-type]
    return session, session.states["ETHUSDT"], resyncs


def test_each_handler_puts_each_value_under_its_column() -> None:
    ts = T0 * 10**6 + 5
    session, state, _ = _session("perp")
    session.on_bbo("perp", {"e": "bookTicker", "u": 400, "s": "ETHUSDT", "b": "25.35", "B": "31.21", "a": "25.36",
                            "A": "40.66", "T": T0 - 2, "E": T0 - 1}, ts)
    session.on_trade("perp", {"e": "trade", "E": T0, "s": "ETHUSDT", "t": 12345, "p": "0.001", "q": "100",
                              "T": T0 - 3, "m": True}, ts)
    session.on_funding("perp", {"e": "markPriceUpdate", "E": T0, "s": "ETHUSDT", "p": "11794.15", "i": "11784.62",
                                "P": "11784.25", "r": "-0.00038167", "T": T0 + 3600_000}, ts)
    session.on_liquidation("perp", {"e": "forceOrder", "E": T0, "o": {
        "s": "ETHUSDT", "S": "SELL", "o": "LIMIT", "f": "IOC", "q": "0.014", "p": "9910", "ap": "9910.5", "X": "FILLED",
        "l": "0.014", "z": "0.012", "T": T0 - 4}}, ts)
    assert session.on_open_interest(state, {"openInterest": "10659.509", "symbol": "ETHUSDT", "time": T0 - 5}, ts)
    session.on_instrument(state, {"symbol": "ETHUSDT", "status": "TRADING", "contractType": "PERPETUAL", "filters": [
        {"filterType": "PRICE_FILTER", "tickSize": "0.01", "minPrice": "39.86"},
        {"filterType": "LOT_SIZE", "stepSize": "0.001"}, {"filterType": "MIN_NOTIONAL", "notional": "20"}]}, ts)
    session.ledger(state, "book", ts, "gap", 11, 13, "broke pu == last u; resyncing")
    taken = session.take()[0].small()
    expected = {
        "bbo": {"ts_recv": ts, "ts_event": (T0 - 1) * 10**6, "update_id": 400, "bid_price": 25.35, "bid_amount": 31.21,
                "ask_price": 25.36, "ask_amount": 40.66},
        "trades": {"ts_recv": ts, "ts_event": T0 * 10**6, "trade_id": 12345, "price": 0.001, "amount": 100.0,
                   "taker_side": "sell"},
        "funding": {"ts_recv": ts, "ts_event": T0 * 10**6, "mark_price": 11794.15, "index_price": 11784.62,
                    "funding_rate": -0.00038167, "next_funding_time": (T0 + 3600_000) * 10**6},
        "liquidations": {"ts_recv": ts, "ts_event": T0 * 10**6, "ts_trade": (T0 - 4) * 10**6, "side": "sell",
                         "price": 9910.0, "amount": 0.014, "average_price": 9910.5, "filled_amount": 0.012,
                         "status": "FILLED"},
        "open_interest": {"ts_recv": ts, "ts_event": (T0 - 5) * 10**6, "open_interest": 10659.509},
        "instruments": {"ts_recv": ts, "tick_size": 0.01, "step_size": 0.001, "min_notional": 20.0,
                        "status": "TRADING", "contract_type": "PERPETUAL",
                        "filters": '[{"filterType":"PRICE_FILTER","tickSize":"0.01","minPrice":"39.86"},'
                                   '{"filterType":"LOT_SIZE","stepSize":"0.001"},'
                                   '{"filterType":"MIN_NOTIONAL","notional":"20"}]'},
        "events": {"ts_recv": ts, "stream": "book", "kind": "gap", "expected_id": 11, "received_id": 13,
                   "detail": "broke pu == last u; resyncing", "source": None, "recorder_id": None, "versions": None},
    }
    assert set(taken) == set(expected) == set(ROW_TYPES)
    for table, rows in taken.items():
        assert len(rows) == 1 and type(rows[0]) is ROW_TYPES[table], (table, rows)
        assert msgspec.structs.asdict(rows[0]) == expected[table], table
        assert table_batch(table, rows).schema.equals(SCHEMAS[table]), table
    assert state.latest_bbo is not None and state.latest_bbo.bid_price == 25.35
    assert state.latest_funding == -0.00038167


def test_an_instrument_is_recorded_again_only_when_it_changes() -> None:
    session, state, _ = _session("spot")
    entry = {"symbol": "ETHUSDT", "status": "TRADING", "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.01"}]}
    session.on_instrument(state, entry, 1)
    session.on_instrument(state, dict(entry), 2)
    session.on_instrument(state, {**entry, "status": "HALT"}, 3)
    assert [(r.ts_recv, r.status, r.contract_type) for r in state.instruments] == [(1, "TRADING", None),
                                                                                   (3, "HALT", None)]
    session.on_instrument(state, {**entry, "filters": [{"filterType": "PRICE_FILTER", "tickSize": 0.01}]}, 4)
    assert state.events[-1].kind == "error" and len(state.instruments) == 2
    assert "filters.PRICE_FILTER.tickSize: expected a decimal string, got float" in state.events[-1].detail


# ---- the typed shapes accept exactly what the hand-written checks accepted -------------------------------------------

ORDER_STATUSES = {"NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH"}


class Refused(Exception):
    pass


def _get(m: Any, key: str) -> Any:
    if not isinstance(m, dict) or key not in m:
        raise Refused(f"no {key}")
    return m[key]


def _int(v: Any, low: int, high: int) -> int:
    if type(v) is not int or not low <= v <= high:
        raise Refused(v)
    return v


def _dec(v: Any, positive: bool = False) -> float:
    try:
        x = plain_decimal(v)
    except (TypeError, ValueError):
        raise Refused(v) from None
    if positive and x == 0:
        raise Refused(v)
    return x


def _rate(v: Any) -> float:
    if type(v) is not str:
        raise Refused(v)
    x = -_dec(v[1:]) if v.startswith("-") else _dec(v)
    if abs(x) > 1:
        raise Refused(v)
    return x


def oracle(stream: str, market: str, m: Any, ts: int) -> dict | None:
    """The recorder's acceptance rules as the hand-written checks stated them before the typed shapes: the
    row a message makes (by column name), or None when it is refused."""
    ms = 1_000_000
    try:
        if stream == "book":
            first, last, event = _get(m, "U"), _get(m, "u"), _get(m, "E")
            prev = _get(m, "pu") if market == "perp" else NULL
            trade = m.get("T", NULL)
            if not (type(first) is int and type(last) is int and type(event) is int and type(prev) is int
                    and type(trade) is int and 0 < first <= last <= MAX_ID and 0 < event <= MAX_MS
                    and (trade == NULL or 0 < trade <= MAX_MS) and (market == "spot" or 0 <= prev <= MAX_ID)):
                raise Refused("ids")
            if type(_get(m, "b")) is not list or type(_get(m, "a")) is not list:
                raise Refused("levels")
            return {"E": event, "T": trade, "U": first, "u": last, "pu": prev}
        if stream == "bbo":
            return {"ts_recv": ts, "ts_event": _int(_get(m, "E"), 1, MAX_MS) * ms if market == "perp" else None,
                    "update_id": _int(_get(m, "u"), 0, MAX_ID), "bid_price": _dec(_get(m, "b")),
                    "bid_amount": _dec(_get(m, "B")), "ask_price": _dec(_get(m, "a")), "ask_amount": _dec(_get(m, "A"))}
        if stream == "trades":
            if type(_get(m, "m")) is not bool:
                raise Refused("m")
            return {"ts_recv": ts, "ts_event": _int(_get(m, "E"), 1, MAX_MS) * ms,
                    "trade_id": _int(_get(m, "t"), 0, MAX_ID), "price": _dec(_get(m, "p"), True),
                    "amount": _dec(_get(m, "q"), True),
                    "taker_side": "sell" if m["m"] else "buy"}
        if stream == "funding":
            if market != "perp":
                raise Refused("spot")
            return {"ts_recv": ts, "ts_event": _int(_get(m, "E"), 1, MAX_MS) * ms,
                    "mark_price": _dec(_get(m, "p"), True), "index_price": _dec(_get(m, "i")),
                    "funding_rate": _rate(_get(m, "r")),
                    "next_funding_time": _int(_get(m, "T"), 1, MAX_MS) * ms}
        if stream == "liquidations":
            o = _get(m, "o")
            if market != "perp" or not isinstance(o, dict):
                raise Refused("o")
            status, side = _get(o, "X"), _get(o, "S")
            if type(status) is not str or status not in ORDER_STATUSES or side not in ("BUY", "SELL"):
                raise Refused("X")
            amount, filled = _dec(_get(o, "q"), True), _dec(_get(o, "z"))
            if filled > amount:
                raise Refused("z")
            if _get(o, "s") != "ETHUSDT":  # the order's symbol routes the message
                raise Refused("s")
            return {"ts_recv": ts, "ts_event": _int(_get(m, "E"), 1, MAX_MS) * ms,
                    "ts_trade": _int(_get(o, "T"), 1, MAX_MS) * ms, "side": side.lower(),
                    "price": _dec(_get(o, "p"), True), "amount": amount, "average_price": _dec(_get(o, "ap")),
                    "filled_amount": filled, "status": status}
        if stream == "open_interest":
            if _get(m, "symbol") != "ETHUSDT":
                raise Refused("symbol")
            return {"ts_recv": ts, "ts_event": _int(_get(m, "time"), 1, MAX_MS) * ms,
                    "open_interest": _dec(_get(m, "openInterest"))}
    except Refused:
        return None
    raise AssertionError(stream)


VALID = {
    "book": {"e": "depthUpdate", "E": T0, "T": T0 - 1, "s": "ETHUSDT", "U": 100, "u": 120, "pu": 99,
             "b": [["1.5", "2"]], "a": []},
    "bbo": {"u": 400, "s": "ETHUSDT", "b": "25.35", "B": "31.21", "a": "25.36", "A": "40.66", "E": T0},
    "trades": {"e": "trade", "E": T0, "s": "ETHUSDT", "t": 12345, "p": "0.001", "q": "100", "T": T0, "m": True},
    "funding": {"e": "markPriceUpdate", "E": T0, "s": "ETHUSDT", "p": "11794.15", "i": "11784.62",
                "r": "0.00038167", "T": T0 + 1},
    "liquidations": {"e": "forceOrder", "E": T0, "o": {"s": "ETHUSDT", "S": "SELL", "q": "0.014", "p": "9910",
                                                      "ap": "9910", "X": "FILLED", "z": "0.014", "T": T0}},
    "open_interest": {"openInterest": "10659.509", "symbol": "ETHUSDT", "time": T0},
}
PERP_ONLY_STREAMS = {"funding", "liquidations"}  # refused on spot (open interest is polled on perp only)
MISSING = object()
ODD_VALUES = [MISSING, None, True, False, 0, -1, 1, 2, 119, 121, MAX_ID, MAX_ID + 1, MAX_MS, MAX_MS + 1, 2**64,
              1.0, 1.5, math.nan, math.inf, "", "1", "0", "1.5", "-1.5", "-0.5", "2", "NaN", "inf", "1e5", "abc",
              " 1", "1_0", "1234567890123456", "0.0000000000000000000001", "BUY", "buy", "SELL", "FILLED", "FOO",
              "ETHUSDT", [], [["1.5", "2"]], {}, {"s": "ETHUSDT"}]


def _fields(stream: str) -> list[str]:
    keys = [k for k in VALID[stream] if k not in ("s", "e")]
    if stream == "liquidations":
        keys += [f"o.{k}" for k in VALID[stream]["o"]]
    return keys


def _mutations() -> st.SearchStrategy:
    return st.sampled_from(list(VALID)).flatmap(lambda stream: st.tuples(
        st.just(stream), st.sampled_from(["spot", "perp"]),
        st.lists(st.tuples(st.sampled_from(_fields(stream)), st.sampled_from(ODD_VALUES)), min_size=2, max_size=4)))


def _mutate(message: dict, path: str, value: Any) -> None:
    *parents, name = path.split(".")
    owner = message
    for parent in parents:
        owner = owner.get(parent)
        if not isinstance(owner, dict):
            return
    if value is MISSING:
        owner.pop(name, None)
    else:
        owner[name] = value


def _feed(session: MarketSession, state: SymbolState, stream: str, market: str, message: Any, ts: int) -> None:
    if stream == "book":
        session.on_depth(market, message, None, ts)  # type: ignore[arg-type]
    elif stream == "open_interest":
        session.on_open_interest(state, message, ts)
    else:
        getattr(session, {"bbo": "on_bbo", "trades": "on_trade", "funding": "on_funding",
                          "liquidations": "on_liquidation"}[stream])(market, message, ts)


def _same_verdict(stream: str, market: str, changes: list[tuple[str, Any]]) -> bool:
    """Feed a valid message with ``changes`` made; assert the session's verdict and row are the oracle's.
    Returns whether it was accepted."""
    message = msgspec.json.decode(msgspec.json.encode(VALID[stream]))  # a deep copy
    for path, value in changes:
        _mutate(message, path, value)
    session, state, resyncs = _session(market)
    state.seq.on_snapshot(1, NULL, NULL, 100, '{"b":[],"a":[]}', 0)  # a trusted book, so a lost diff is a gap
    ts = T0 * 10**6
    expected = oracle(stream, market, message, ts)
    _feed(session, state, stream, market, message, ts)
    errors = [e for e in state.events if e.kind == "error"]
    if stream == "book":
        shape = wire.PerpDepthUpdate if market == "perp" else wire.SpotDepthUpdate
        try:  # the shape read on its own (wire.read: the shape's problem()) agrees with on_depth's inlined test
            wire.read(shape, message)
            assert expected is not None, message
        except wire.Malformed as exc:
            assert expected is None and errors and str(exc) in errors[0].detail, (message, exc, errors)
        diffs = len(state.seq.out) - 1 + len(state.seq.held)
        if expected is None:
            assert diffs == 0 and len(errors) == 1 and resyncs, (message, errors)
            assert [e.kind for e in state.events if e.stream == "book"][-2:] == ["error", "gap"]
        else:
            assert diffs == 1 and not errors, (message, errors)
            out = state.seq.out
            got = {"E": out.ts_event[-1], "T": out.ts_trade[-1], "U": out.first_id[-1], "u": out.last_id[-1],
                   "pu": out.prev_id[-1]}
            assert got == expected, message
        return expected is not None
    rows = session.take()[0].small()[stream]
    if expected is None:
        assert not rows and len(errors) == 1, (message, errors)
        assert errors[0].stream == stream and errors[0].detail.startswith(f"malformed {stream} message ("), errors
        assert len(errors[0].detail) < 500
    else:
        assert len(rows) == 1 and not errors, (message, errors)
        assert msgspec.structs.asdict(rows[0]) == expected, message
    return expected is not None


@pytest.mark.parametrize("stream", list(VALID))
def test_every_field_missing_or_of_any_odd_value_gets_the_verdict_it_had(stream: str) -> None:
    verdicts = {True: 0, False: 0}
    for market in ("spot", "perp"):
        assert _same_verdict(stream, market, []) == (market == "perp" or stream not in PERP_ONLY_STREAMS)
        for path in _fields(stream):
            for value in ODD_VALUES:
                verdicts[_same_verdict(stream, market, [(path, value)])] += 1
    assert verdicts[True] and verdicts[False], verdicts


@settings(max_examples=1000, deadline=None)
@given(_mutations())
def test_several_changes_at_once_get_the_verdict_they_had(case: tuple) -> None:
    stream, market, changes = case
    _same_verdict(stream, market, changes)


@pytest.mark.parametrize(("stream", "market", "path", "value", "says"), [
    ("book", "perp", "U", "100", "U: ids and times must be positive integers with U <= u, got '100'"),
    ("book", "perp", "pu", True, "pu: ids and times must be positive integers with U <= u, got 'True'"),
    ("book", "spot", "u", 99, "ids and times must be positive integers with U <= u, got U 100 > u 99"),
    ("book", "spot", "E", MAX_MS + 1, f"E: ids and times must be positive integers with U <= u, got '{MAX_MS + 1}'"),
    ("book", "perp", "U", MISSING, "no 'U' field"),
    ("book", "spot", "a", {}, "a: b and a must be arrays of levels, got dict"),
    ("bbo", "perp", "u", "400", "u: expected a non-negative integer, got '400'"),
    ("bbo", "perp", "E", MISSING, "no 'E' field"),
    ("bbo", "spot", "B", 31.21, "B: expected a decimal string, got float"),
    ("bbo", "spot", "a", "NaN", "a: 'NaN' is not a plain decimal"),
    ("bbo", "spot", "A", "-40.66", "A: '-40.66' is not a plain decimal"),
    ("bbo", "spot", "b", "123456789012345678901234567890", "has more digits than a price or size can"),
    ("trades", "spot", "q", "0", "q: '0' is not a valid price or size"),
    ("trades", "spot", "m", 1, "m: expected a boolean, got '1'"),
    ("trades", "spot", "E", "1", "E: expected a time in ms, got '1'"),
    ("funding", "perp", "r", "-2", "r: '-2' is not a funding rate"),
    ("funding", "spot", "r", "0.1", "markPrice is a USDT-M stream"),
    ("liquidations", "perp", "o.X", "DONE", "o.X: 'DONE' is not an order status"),
    ("liquidations", "perp", "o.S", "buy", "o.S: 'buy' is not BUY or SELL"),
    ("liquidations", "perp", "o.z", "1", "o.z: the filled amount exceeds the order's"),
    ("liquidations", "perp", "o.T", MISSING, "no 'T' field in 'o'"),
    ("liquidations", "perp", "o", 5, "no symbol"),  # the order holds the symbol the message is routed by
    ("open_interest", "perp", "symbol", "BTCUSDT", "it is for 'BTCUSDT'"),
    ("open_interest", "perp", "time", None, "time: expected a time in ms, got 'None'"),
])
def test_a_refused_message_is_one_error_naming_the_field(stream: str, market: str, path: str, value: Any,
                                                         says: str) -> None:
    message = msgspec.json.decode(msgspec.json.encode(VALID[stream]))
    _mutate(message, path, value)
    session, state, _ = _session(market)
    _feed(session, state, stream, market, message, T0 * 10**6)
    errors = [e for e in state.events if e.kind == "error"]
    assert len(errors) == 1 and says in errors[0].detail, errors
    assert errors[0].stream == stream and errors[0].detail.startswith(f"malformed {stream} message (")


def test_a_depth_snapshot_is_read_leniently_where_it_was() -> None:
    """A REST snapshot's E and T are kept only when they are valid times (null otherwise), as before."""
    session, state, _ = _session("perp")
    session.on_snapshot("perp", "ETHUSDT", {"lastUpdateId": 7, "E": "soon", "T": T0, "bids": [["1", "2"]],
                                            "asks": []}, 5)
    out = state.seq.out
    assert (out.ts_event[-1], out.ts_trade[-1], out.last_id[-1]) == (NULL, T0, 7)
    for bad, says in (({"lastUpdateId": "7", "bids": [], "asks": []}, "lastUpdateId: lastUpdateId must be"),
                      ({"lastUpdateId": 7, "bids": {}, "asks": []}, "bids: lastUpdateId must be a positive integer"),
                      ([], "the response is not a JSON object")):
        session.on_snapshot("perp", "ETHUSDT", bad, 6)  # type: ignore[arg-type]
        assert says in state.events[-1].detail and state.events[-1].kind == "error"
    assert len(out) == 1


def test_every_shape_is_a_struct_read_in_c() -> None:
    shapes = [wire.SpotDepthUpdate, wire.PerpDepthUpdate, wire.DepthSnapshot, wire.SpotBookTicker,
              wire.PerpBookTicker, wire.Trade, wire.MarkPriceUpdate, wire.ForceOrder, wire.LiquidationOrder,
              wire.OpenInterest, wire.SpotSymbolInfo, wire.PerpSymbolInfo]
    for shape in shapes:
        assert issubclass(shape, msgspec.Struct)
        for path in shape.RULES:
            assert path == "$" or path.split(".")[0] in shape.__struct_fields__, (shape, path)
    depth = wire.read(wire.PerpDepthUpdate, VALID["book"])
    assert (depth.E, depth.T, depth.U, depth.u, depth.pu) == (T0, T0 - 1, 100, 120, 99)
    assert wire.read(wire.SpotDepthUpdate, {k: v for k, v in VALID["book"].items() if k != "T"}).T == NULL
