"""Binance's update-id rules, applied by the recorder itself to one market's diff-depth stream as it arrives.

Why the recorder checks ids instead of trusting ccxt: the recorder bypasses ccxt's book (see exchange.py),
and what it writes must let any reader rebuild the book with one simple rule (skip stale rows, clear on a
new snapshot message, set price -> amount, remove at 0). So every message gets its verdict here:

- a snapshot starts a new epoch of the book;
- a diff that Binance's rules apply after the current snapshot is written as is;
- a diff the rules skip (older than the snapshot, or arriving while the book has no valid snapshot) is
  written with ``stale`` set;
- a diff that breaks the chain (spot ``U != last u + 1``, perp ``pu != last u``) is a gap: it is ledgered
  with the expected and received ids, written stale, and a fresh snapshot is requested (a resync).

Diffs that arrive while a snapshot request is in flight are held back and written right after the
snapshot they follow: Binance's rules apply the newer ones after it, and writing them before it would make
a reader lose them when the snapshot clears the book. Their ``ts_recv`` is therefore a little earlier than
the snapshot's: rows are in ``msg`` order, which is arrival order except for these held diffs.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from nova.core import rules
from nova.core.markets import Market

NULL = -1  # null marker in the integer columns (ids and times are positive)
SNAPSHOT, STALE = 1, 2  # flag bits
HOLD_LIMIT_NS = 60 * 10**9  # a snapshot later than this cannot anchor what was held: write it stale
HOLD_LIMIT_MESSAGES = 50_000

Ledger = Callable[[int, str, int | None, int | None, str], None]  # (ts, kind, expected, received, detail)


@dataclass
class BookColumns:
    """One entry per book message; the level arrays stay as JSON text until the batch is converted."""

    ts_recv: array = field(default_factory=lambda: array("q"))
    ts_event: array = field(default_factory=lambda: array("q"))
    ts_trade: array = field(default_factory=lambda: array("q"))
    first_id: array = field(default_factory=lambda: array("q"))
    last_id: array = field(default_factory=lambda: array("q"))
    prev_id: array = field(default_factory=lambda: array("q"))
    msg: array = field(default_factory=lambda: array("q"))
    flags: array = field(default_factory=lambda: array("b"))
    texts: list[str] = field(default_factory=list)  # JSON holding the message's "b" and "a" arrays

    def __len__(self) -> int:
        return len(self.msg)


# A diff as the sequencer holds it: (ts_recv, E, T, U, u, pu, text).
Diff = tuple[int, int, int, int, int, int, str]


class BookSequencer:
    """Assigns message numbers and stale flags to one market+symbol's book stream, and finds its gaps."""

    def __init__(self, market: Market, next_msg: int, ledger: Ledger, request_resync: Callable[[], None]) -> None:
        self.market = market
        self.next_msg = next_msg
        self.ledger = ledger
        self.request_resync = request_resync
        self.out = BookColumns()
        self.live = False  # a snapshot is in force and the chain holds
        self.synced = False  # the first diff after the snapshot has been applied
        self.last_id = NULL
        self.held: list[Diff] = []
        self.need_resync_ledger = False  # the next snapshot ends a gap or a disconnect
        self.clock = 0  # the largest receive time seen: what the ledger stamps, so it never runs backwards
        self.messages = 0
        self.gaps = 0
        self.stale = 0
        self.snapshots = 0

    def take(self) -> BookColumns:
        """Hand over what was sequenced since the last call (the writer converts and stores it)."""
        out, self.out = self.out, BookColumns()
        return out

    # ---- what arrives ------------------------------------------------------------------------------------
    def on_diff(self, diff: Diff) -> None:
        self.messages += 1
        self.clock = max(self.clock, diff[0])
        if not self.live:
            self.held.append(diff)
            if len(self.held) > HOLD_LIMIT_MESSAGES or diff[0] - self.held[0][0] > HOLD_LIMIT_NS:
                self._release_held_as_stale()
            return
        self._apply(diff)

    def on_snapshot(self, ts: int, event_ms: int, trade_ms: int, last_update_id: int, text: str,
                    levels: int) -> None:
        self.snapshots += 1
        self.clock = max(self.clock, ts)
        self._write(ts, event_ms, trade_ms, last_update_id, last_update_id, NULL, SNAPSHOT, text)
        self.ledger(ts, "snapshot", None, last_update_id, f"{levels} levels")
        if self.need_resync_ledger:
            self.ledger(ts, "resync", None, last_update_id, "book re-synced from a fresh snapshot")
            self.need_resync_ledger = False
        self.live, self.synced, self.last_id = True, False, last_update_id
        held, self.held = self.held, []
        for i, diff in enumerate(held):
            if not self.live:  # a gap among them: the rest wait for the resync, as they would arriving now
                self.held = held[i:]
                break
            self._apply(diff)

    def on_snapshot_requested(self) -> None:
        """A snapshot is on its way: hold what arrives until it lands, so nothing newer is lost behind it."""
        self.live = False

    def invalidate(self, ts: int) -> None:
        """A message turned out malformed after it was sequenced (its levels are read when rows are built):
        nothing after it can be trusted until a new snapshot, including what was sequenced since and not yet
        written. If a snapshot was already sequenced since, it re-anchored the book (Binance's id rules over
        the diffs after it catch anything it lacks), so only what came before it is stale."""
        flags = self.out.flags
        for i in range(len(flags)):
            if flags[i] & SNAPSHOT:
                return
            if not flags[i] & STALE:
                flags[i] |= STALE
                self.stale += 1
        self._lost(ts, "a diff-depth message with malformed levels: its changes are unknown; resyncing")

    def on_malformed(self, ts: int) -> None:
        """A diff-depth message arrived that cannot be sequenced (no ids, wrong types, no level arrays) or a
        frame that could have been one could not be read: its changes are unknown, so nothing after it can
        be applied until a snapshot taken after it."""
        self._lost(ts, "a malformed diff-depth message: its changes are unknown; resyncing")

    def _lost(self, ts: int, detail: str) -> None:
        """The book lost a message's changes. Ledgered as a gap (readers stop trusting the book until the
        next snapshot, as for a broken id chain) when the book was trusted until now."""
        if self.live:
            self.gaps += 1
            self.ledger(ts, "gap", None, None, detail)
        self.live = False
        self.need_resync_ledger = True
        self.request_resync()

    def on_disconnect(self, ts: int) -> None:
        """The connection dropped: nothing after this can chain to what came before until a new snapshot."""
        self._release_held_as_stale()
        self.live = False
        self.need_resync_ledger = True

    def on_stop(self) -> None:
        """A clean stop: whatever is held was received, so it is written (stale: it has no snapshot)."""
        self._release_held_as_stale()

    # ---- the rules ---------------------------------------------------------------------------------------
    def _apply(self, diff: Diff) -> None:
        ts, _, _, first, last, prev, _ = diff
        verdict, expected, received = rules.judge(self.market, not self.synced, self.last_id, first, last, prev)
        if verdict == rules.APPLY:
            self.synced = True
            self.last_id = last
            self._write_diff(diff, 0)
        elif verdict == rules.STALE:
            self._write_diff(diff, STALE)
        else:
            self.gaps += 1
            # stamped with the stream's clock: a held diff breaking the chain right after its snapshot is
            # found at the snapshot's time (its own receive time is earlier), and readers must see the gap
            # after the snapshot it follows (nova.core.validity)
            self.ledger(max(ts, self.clock), "gap", expected, received,
                        f"broke {rules.rule_text(self.market, not self.synced)}; resyncing")
            self._write_diff(diff, STALE)
            self.live = False
            self.need_resync_ledger = True
            self.request_resync()

    def _release_held_as_stale(self) -> None:
        held, self.held = self.held, []
        for diff in held:
            self._write_diff(diff, STALE)

    def _write_diff(self, diff: Diff, flags: int) -> None:
        ts, event_ms, trade_ms, first, last, prev, text = diff
        self._write(ts, event_ms, trade_ms, first, last, prev, flags, text)

    def _write(self, ts: int, event_ms: int, trade_ms: int, first: int, last: int, prev: int, flags: int,
               text: str) -> None:
        out = self.out
        out.ts_recv.append(ts)
        out.ts_event.append(event_ms)
        out.ts_trade.append(trade_ms)
        out.first_id.append(first)
        out.last_id.append(last)
        out.prev_id.append(prev)
        out.msg.append(self.next_msg)
        out.flags.append(flags)
        out.texts.append(text)
        self.next_msg += 1
        if flags & STALE:
            self.stale += 1
