"""Property-based tests (hypothesis) of the book, the data contract and the level parser.

The recorder's pipeline pieces run in-process on generated feeds: ``BookSequencer`` (Binance's id rules) ->
``rows.book_batch`` (the compiled level parser) -> ``DatasetWriter`` (journals, then Parquet) -> read back
with pyarrow -> rebuilt by the contract's reader rule (``tests/oracle.py``: skip stale, clear on a snapshot,
set price -> amount, remove at 0). That rebuild must equal, at every applied message, a plain dict book that
follows Binance's documented procedure on the same arrivals, and that book must equal the true book of the
generating engine at the message's last id.

A generated feed is built the way the exchange builds it: an engine applies internal updates (each with its
own id; perp ids jump), diff messages coalesce consecutive updates (``[U, u]``, final size per touched level,
perp ``pu`` chaining), REST snapshots read the book after any internal update (so ``lastUpdateId`` can fall
inside a message's range) and arrive late, after diffs sent later than they were taken. Random flush
boundaries cut the stream into batches, and dropped messages (gaps) make the diffs after them stale until
the next snapshot.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nova.core.markets import Symbol
from recorder.levels import MALFORMED, OK, parse_texts, plain_decimal
from recorder.rows import book_batch, malformed_details
from recorder.sequencer import BookSequencer
from recorder.writer import DatasetWriter
from tests.oracle import read_table, rebuild_from_rows

ETH = Symbol("ETH", "USDT")
T0_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
FEEDS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STRINGS = settings(max_examples=100, deadline=None)


# ---- a generated feed ----------------------------------------------------------------------------------------------

@dataclass
class Message:
    first: int
    last: int
    prev: int
    bids: list[list[str]]
    asks: list[list[str]]

    def text(self, market: str) -> str:
        body = {"e": "depthUpdate", "E": 1, "s": "ETHUSDT", "U": self.first, "u": self.last, "b": self.bids,
                "a": self.asks}
        if market == "perp":
            body["pu"] = self.prev
        return orjson.dumps(body).decode()


@dataclass
class Feed:
    market: str
    truth: dict[int, tuple[dict[float, float], dict[float, float]]]  # the book after each internal update id
    snapshots: dict[int, tuple[list[list[str]], list[list[str]]]]  # the REST body (strings, best first) per id
    messages: list[Message]
    arrivals: list[tuple] = field(default_factory=list)  # ("diff", i) | ("request",) | ("snapshot", id) | ("flush",)
    corrupt: set[int] = field(default_factory=set)  # messages that arrive with a malformed size (their changes lost)
    settle_after: int = 0  # arrivals between a flush and the moment the recorder learns what was malformed


def _fmt(units: int, decimals: int) -> str:
    return f"{units / 10**decimals:.{decimals}f}" if decimals else str(units)


@st.composite
def feeds(draw: st.DrawFn, corrupting: bool = False) -> Feed:
    market = draw(st.sampled_from(["spot", "perp"]))
    # Binance pads spot decimals to 8 places; USDT-M writes the instrument's precision.
    px_dec, qty_dec = (8, 8) if market == "spot" else (draw(st.integers(2, 3)), draw(st.integers(0, 4)))
    # Some feeds have sizes with large integer parts ("30000003.00000000": 8 significant digits, 16 written).
    lot = 10**qty_dec * 10_000_001 if draw(st.booleans()) else max(1, 10**qty_dec // 4)
    changes = st.tuples(st.booleans(), st.integers(1, 60), st.integers(0, 6))  # (is bid, ticks off 2000, lots)

    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    strings: dict[tuple[bool, float], tuple[str, str]] = {}  # the level as Binance would write it

    def put(is_bid: bool, ticks: int, lots: int) -> tuple[bool, float]:
        price = _fmt((2000 * 100 + (-ticks if is_bid else ticks)) * 10 ** (px_dec - 2), px_dec)
        size = _fmt(lots * lot, qty_dec)
        key = (is_bid, float(price))
        side = bids if is_bid else asks
        if lots == 0:
            side.pop(key[1], None)
        else:
            side[key[1]] = float(size)
        strings[key] = (price, size)
        return key

    def save(update_id: int) -> None:
        truth[update_id] = (dict(bids), dict(asks))
        alive = [(k, v) for k, v in strings.items() if float(v[1]) != 0]
        snapshots[update_id] = ([list(v) for k, v in sorted(alive, key=lambda kv: -kv[0][1]) if k[0]],
                                [list(v) for k, v in sorted(alive, key=lambda kv: kv[0][1]) if not k[0]])

    truth: dict[int, tuple[dict[float, float], dict[float, float]]] = {}
    snapshots: dict[int, tuple[list[list[str]], list[list[str]]]] = {}
    for is_bid, ticks, lots in draw(st.lists(changes, max_size=12)):
        put(is_bid, ticks, lots or 1)
    update_id = start_id = draw(st.integers(1, 10**12))
    save(start_id)
    messages: list[Message] = []
    for _ in range(draw(st.integers(1, 14))):
        touched: dict[tuple[bool, float], tuple[str, str]] = {}
        first = None
        for _ in range(draw(st.integers(1, 4))):  # internal updates coalesced into this message
            update_id += 1 if market == "spot" else draw(st.integers(1, 900))
            first = update_id if first is None else first
            for change in draw(st.lists(changes, max_size=5)):  # possibly none: an empty message
                key = put(*change)
                touched[key] = strings[key]
            save(update_id)
        b = [list(v) for k, v in sorted(touched.items(), key=lambda kv: -kv[0][1]) if k[0]]
        a = [list(v) for k, v in sorted(touched.items(), key=lambda kv: kv[0][1]) if not k[0]]
        messages.append(Message(first, update_id, messages[-1].last if messages else start_id, b, a))

    # Arrivals: diffs in order (some dropped: gaps), snapshot requests answered late, flush boundaries.
    feed = Feed(market, truth, snapshots, messages)
    ids = sorted(truth)
    dropped = set(draw(st.lists(st.integers(0, len(messages) - 1), max_size=2)))
    if corrupting:
        feed.corrupt = set(draw(st.lists(st.integers(0, len(messages) - 1), min_size=1, max_size=2))) - dropped
        feed.settle_after = draw(st.integers(0, 3))
    position = 0
    snapshots_taken = 0
    while position <= len(messages):
        if draw(st.integers(0, 3)) == 0 or (not snapshots_taken and position == len(messages)):
            # The REST answer reads the book after some internal update at or after the last diff sent
            # when it was asked for, and diffs sent meanwhile can arrive before it.
            floor = messages[position - 1].last if position else start_id
            taken = draw(st.sampled_from([i for i in ids if i >= floor]))
            feed.arrivals.append(("request",))
            for i in range(position, position + draw(st.integers(0, len(messages) - position))):
                if i not in dropped:
                    feed.arrivals.append(("diff", i))
                position += 1
            feed.arrivals.append(("snapshot", taken))
            snapshots_taken += 1
        if position < len(messages):
            if position not in dropped:
                feed.arrivals.append(("diff", position))
            if draw(st.integers(0, 2)) == 0:
                feed.arrivals.append(("flush",))
        position += 1
    return feed


# ---- Binance's procedure, written plainly ----------------------------------------------------------------------------

class PlainBook:
    """Binance's "how to manage a local order book": buffer from the request, load the snapshot, drop what it
    already holds, the first diff must straddle it, then every diff chains; a broken chain restarts."""

    def __init__(self, market: str) -> None:
        self.market = market
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.last = 0
        self.started = False
        self.buffering = True
        self.buffer: list[Message] = []
        self.applied: list[tuple[int, int, dict, dict]] = []  # (U, u, bids, asks) after each applied diff
        self.gaps = 0

    def request(self) -> None:
        self.buffering = True

    def snapshot(self, last: int, bids: dict[float, float], asks: dict[float, float]) -> None:
        self.bids, self.asks, self.last, self.started, self.buffering = dict(bids), dict(asks), last, False, False
        pending, self.buffer = self.buffer, []
        for m in pending:
            self.diff(m)

    def diff(self, m: Message) -> None:
        if self.buffering:
            self.buffer.append(m)
            return
        spot = self.market == "spot"
        if not self.started:
            if (m.last <= self.last) if spot else (m.last < self.last):
                return  # already in the snapshot
            ok = m.first <= self.last + 1 if spot else m.first <= self.last
        else:
            ok = m.first == self.last + 1 if spot else m.prev == self.last
        if not ok:
            self.gaps += 1
            self.buffering = True  # start over: buffer from now, fetch a snapshot
            return
        for side, levels in ((self.bids, m.bids), (self.asks, m.asks)):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)
        self.started, self.last = True, m.last
        self.applied.append((m.first, m.last, dict(self.bids), dict(self.asks)))


# ---- the recorder's pipeline on a feed -------------------------------------------------------------------------------

def record(feed: Feed, root: Path) -> tuple[list[tuple], int]:
    """Run the feed through sequencer -> book_batch -> writer; returns the ledger and the resync requests.

    As in the recorder, the levels are parsed when a flush builds the rows, and what that finds malformed
    reaches the sequencer a little later (``Recorder._settle``: ``malformed_details``, then ``invalidate``),
    after ``feed.settle_after`` more arrivals or before the next flush, whichever comes first."""
    events: list[tuple] = []
    resyncs = [0]
    seq = BookSequencer(feed.market, 1, lambda *e: events.append(e), lambda: resyncs.__setitem__(0, resyncs[0] + 1))
    writer = DatasetWriter(str(root), rotate_s=86_400)
    ts = T0_NS
    settling: list[list] = []  # [arrivals to wait, broken]

    def flush() -> None:
        settle(now=True)  # the recorder settles a flush before it takes the next one
        cols = seq.take()
        if len(cols):
            batch, malformed, _ = book_batch(cols)
            assert sorted(cols.msg[i] for i in malformed) == sorted(
                cols.msg[i] for i, t in enumerate(cols.texts) if '"NaN"' in t), "exactly the damaged ones"
            writer.write("book", feed.market, ETH, batch)  # type: ignore[arg-type]
            if malformed:
                details, broken = malformed_details(cols, malformed)
                assert len(details) == len(malformed) and all("NaN" in d for d in details), details
                settling.append([feed.settle_after, broken])

    def settle(now: bool = False) -> None:
        for item in list(settling):
            item[0] -= 1
            if item[0] < 0 or now:
                settling.remove(item)
                if item[1]:
                    seq.invalidate(ts)

    for arrival in feed.arrivals:
        ts += 1_000_000
        settle()
        if arrival[0] == "diff":
            m = feed.messages[arrival[1]]
            text = m.text(feed.market)
            if arrival[1] in feed.corrupt:
                text = Message(m.first, m.last, m.prev, [*m.bids, ["1.00", "NaN"]], m.asks).text(feed.market)
            seq.on_diff((ts, ts // 10**6, -1, m.first, m.last, m.prev if feed.market == "perp" else -1, text))
        elif arrival[0] == "request":
            seq.on_snapshot_requested()
        elif arrival[0] == "snapshot":
            bids, asks = feed.snapshots[arrival[1]]
            text = orjson.dumps({"b": bids, "a": asks}).decode()  # as the session stores a REST snapshot
            seq.on_snapshot(ts, -1, -1, arrival[1], text, len(bids) + len(asks))
        else:
            flush()
    flush()
    seq.on_stop()
    flush()
    writer.close()
    return events, resyncs[0]


def plain(feed: Feed) -> PlainBook:
    book = PlainBook(feed.market)
    for arrival in feed.arrivals:
        if arrival[0] == "diff":
            book.diff(feed.messages[arrival[1]])
        elif arrival[0] == "request":
            book.request()
        elif arrival[0] == "snapshot":
            book.snapshot(arrival[1], *feed.truth[arrival[1]])
    return book


@FEEDS
@given(feeds())
def test_any_valid_feed_rebuilt_from_parquet_equals_the_book_of_binances_rules(feed: Feed) -> None:
    expected = plain(feed)
    for first, last, bids, asks in expected.applied:  # the plain book is the engine's book at every diff
        assert (bids, asks) == feed.truth[last], (first, last)
    with tempfile.TemporaryDirectory() as tmp:
        events, resyncs = record(feed, Path(tmp))
        rows = read_table(Path(tmp), "book", feed.market)
    arrived = sum(1 for a in feed.arrivals if a[0] in ("diff", "snapshot"))
    msgs = [r["msg"] for r in rows]
    assert msgs == sorted(msgs) and len(set(msgs)) == arrived, "every message on disk once, in msg order"
    applied = []
    for first_row, bids, asks in rebuild_from_rows(rows):
        if first_row["snapshot"]:
            assert (bids, asks) == feed.truth[first_row["last_id"]], "a snapshot row holds its whole book"
        elif not first_row["stale"]:
            applied.append((first_row["first_id"], first_row["last_id"], dict(bids), dict(asks)))
    assert applied == expected.applied, "the rows apply exactly the diffs Binance's rules apply, to the same book"
    gaps = [e for e in events if e[1] == "gap"]
    assert len(gaps) == expected.gaps, (gaps, expected.gaps)
    assert resyncs == expected.gaps, "each gap asks for one resync"
    assert not [e for e in events if e[1] == "gap" and e[2] is None], "a chain break names the ids"


@FEEDS
@given(feeds())
def test_after_a_gap_every_diff_is_stale_until_the_next_snapshot(feed: Feed) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        events, _ = record(feed, Path(tmp))
        rows = read_table(Path(tmp), "book", feed.market)
    # (column, id) of the diff that broke the chain: its U, or for a perp diff that breaks an established
    # chain its pu (the first diff after a snapshot is judged by its U on both markets)
    gap_ids = [("prev_id" if feed.market == "perp" and "straddle" not in e[4] else "first_id", e[3])
               for e in events if e[1] == "gap"]
    broken = False
    seen_gaps = 0
    last_msg = None
    for row in rows:
        if row["msg"] == last_msg:
            continue
        last_msg = row["msg"]
        if row["snapshot"]:
            broken = False
        elif seen_gaps < len(gap_ids) and row[gap_ids[seen_gaps][0]] == gap_ids[seen_gaps][1] and row["stale"] \
                and not broken:
            seen_gaps += 1
            broken = True
        elif broken:
            assert row["stale"], ("a diff after a gap is applied before a snapshot", row)
    assert seen_gaps == len(gap_ids), "every ledgered gap is the stale diff that broke the chain"


@FEEDS
@given(feeds(corrupting=True))
def test_a_malformed_diff_never_yields_a_wrong_book(feed: Feed) -> None:
    """A diff whose levels turn out malformed when its rows are built: it keeps its place (stale, no levels),
    everything after it is stale until a snapshot, and the book is resynced; whatever the rows still apply
    is the true book, at every message."""
    with tempfile.TemporaryDirectory() as tmp:
        events, resyncs = record(feed, Path(tmp))
        rows = read_table(Path(tmp), "book", feed.market)
    damaged = {(feed.messages[i].first, feed.messages[i].last) for i in feed.corrupt
               if ("diff", i) in feed.arrivals}
    after_damage = False
    for first_row, bids, asks in rebuild_from_rows(rows):
        if first_row["snapshot"]:
            after_damage = False
            assert (bids, asks) == feed.truth[first_row["last_id"]]
        elif (first_row["first_id"], first_row["last_id"]) in damaged:
            assert first_row["stale"] and first_row["side"] is None, first_row
            after_damage = True
        elif not first_row["stale"]:
            assert not after_damage, ("a diff after a malformed one applied before a snapshot", first_row)
            assert (bids, asks) == feed.truth[first_row["last_id"]], first_row
    lost = [e for e in events if e[1] == "gap" and e[2] is None]
    assert all("malformed" in e[4] for e in lost)
    assert resyncs >= len(lost)


# ---- the level parser ------------------------------------------------------------------------------------------------

def _expected_ok(s: str) -> bool:
    """The contract for a price or size string: a plain decimal (digits, at most one dot, at least one digit)
    with at most 15 significant digits and at most 22 decimals, not counting the zeros that end the fraction
    (so the mantissa and its power of ten are exact in float64)."""
    m = re.fullmatch(r"([0-9]*)(?:\.([0-9]*))?", s)
    if m is None or not re.search(r"[0-9]", s):
        return False
    whole, fraction = m.group(1), (m.group(2) or "").rstrip("0")
    return len((whole + fraction).lstrip("0")) <= 15 and len(fraction) <= 22


def _one(value: str) -> tuple[int, float]:
    text = '{"b":[["1.5",' + json.dumps(value) + ']],"a":[]}'
    _, _, status, _, _, amounts = parse_texts([text])
    return int(status[0]), float(amounts[0]) if len(amounts) else float("nan")


decimal_strings = st.builds(
    lambda whole, frac, dot: whole + ("." + frac if dot else ""),
    st.text("0123456789", max_size=18) | st.integers(0, 10**16).map(str),
    st.text("0123456789", max_size=26) | st.text("0", max_size=12).map(lambda z: "5" + z),
    st.booleans(),
)


@STRINGS
@given(decimal_strings)
def test_parser_reads_decimal_strings_exactly_as_float_does(s: str) -> None:
    status, value = _one(s)
    ok = _expected_ok(s)
    assert (status == OK) == ok, (s, status)
    if ok:
        assert value == float(s) and np.float64(value).tobytes() == np.float64(float(s)).tobytes(), s
        assert plain_decimal(s) == value  # the bbo, trades and funding rows take the same values


garbage = st.text(alphabet="0123456789.-+eEnNaAiIfF _x", min_size=0, max_size=20)


@STRINGS
@given(garbage)
def test_parser_rejects_what_is_not_a_plain_decimal(s: str) -> None:
    status, _ = _one(s)
    ok = _expected_ok(s)
    assert (status == OK) == ok, (s, status)
    try:
        plain_decimal(s)
        python_ok = True
    except (TypeError, ValueError):
        python_ok = False
    assert python_ok == ok, s


@STRINGS
@given(st.lists(st.one_of(
    st.tuples(st.just("good"), st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 10**6)), max_size=5)),
    st.sampled_from([
        ("bad", '{"b":[[1.5,"2"]],"a":[]}'), ("bad", '{"a":[]}'), ("bad", '{"b":[["1.5","NaN"]],"a":[]}'),
        ("bad", '{"b":[["1.5","-2"]],"a":[]}'), ("bad", '{"b":[["1.5","1e400"]],"a":[]}'),
        ("bad", '{"b":[["1.5","123456789012345678901234567890"]],"a":[]}'), ("bad", '{"b":5,"a":[]}'),
        ("bad", '{"b":[["1.5"]],"a":[]}'), ("bad", '{"b":[["1.5","2",]],"a":[]}'), ("bad", '{"b":[["1.5","2"'),
        ("bad", '{"b":[["1.5","abc"]],"a":[]}'), ("bad", '{"b":[["1.5",""]],"a":[]}'),
        ("bad", '{"b":[["١.5","2"]],"a":[]}'),
    ])), max_size=8))
def test_a_malformed_message_does_not_disturb_its_neighbours(batch: list[tuple]) -> None:
    texts, expected = [], []
    for kind, body in batch:
        if kind == "good":
            levels = [[f"{p / 100:.2f}", f"{q / 1000:.3f}"] for p, q in body]
            texts.append(orjson.dumps({"e": "depthUpdate", "b": levels, "a": levels[:1]}).decode())
            expected.append((OK, [(float(p), float(q)) for p, q in levels + levels[:1]]))
        else:
            texts.append(body)
            expected.append((MALFORMED, []))
    n_bids, n_asks, status, _, prices, amounts = parse_texts(texts)
    assert status.tolist() == [e[0] for e in expected]
    assert list(zip(prices.tolist(), amounts.tolist(), strict=True)) == [lv for e in expected for lv in e[1]]
    assert (n_bids + n_asks).tolist() == [len(e[1]) for e in expected]
