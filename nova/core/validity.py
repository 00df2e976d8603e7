"""The validity rule: when a recorded market can be trusted, stated once for every reader.

A figure must never come from time nobody watched. A recording is a sequence of runs of a recorder (from a
``start`` to a ``stop`` in the ledger); between runs, and before a stream's first snapshot, nothing was
watching the market. So a reader may use a recorded state at instant ``t`` only when:

- **book** (a stream's depth book): the last snapshot at or before ``t`` exists, and no *book break* is
  ledgered at or after it and at or before ``t`` (a break at the snapshot's own time counts: the recorder
  ledgers what it finds while applying a snapshot at the snapshot's time). Book breaks: ``gap`` (the id
  chain broke, or a message's changes were lost to a malformed frame), ``disconnect``, ``stop`` (the run
  ended) and ``start`` (a new run began: whatever the previous run held is not carried over).
- **quotes** (bookTicker, trades, funding, liquidations, open interest: streams whose every message is a
  whole state): the last message at or before ``t`` exists, and no *quote break* of that stream is ledgered
  at or after it and at or before ``t``. Quote breaks: ``disconnect``, ``error`` (a message of that stream was
  malformed or the stream stalled: the held state may have missed an update), ``stop`` and ``start``.
- **the end of a run**: a run that has no ``stop`` (its recorder was killed, or is still recording and its
  latest files are not finished yet) ends at its last recorded row of the stream; nothing after that row was
  seen, so nothing after it is valid. A recorder that finds such a run on start ledgers its ``stop`` (at
  that row) itself, so the ledger of a finished recording is complete; readers apply the rule anyway.

Replay (``replay.reader``), ``nova sql``'s macros (``nova.analysis.macros``, which restate the rule in SQL and
are held to this module by a test on generated data), ``nova check`` and ``nova ls`` all use these sets and
``book_spans``; the tests' oracle is independent on purpose.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

BOOK_BREAKS = frozenset({"gap", "disconnect", "stop", "start"})
"""Ledger kinds on a ``book`` stream after which the book is not valid until its next snapshot."""

QUOTE_BREAKS = frozenset({"disconnect", "error", "stop", "start"})
"""Ledger kinds on a quote stream (bbo, funding, ...) after which its held message is not valid."""

BOOK_ANCHOR = "snapshot"
"""The ledger kind that makes a book valid again (a snapshot was applied)."""

RUN_START, RUN_STOP = "start", "stop"
END_OF_DATA = "end of data"
"""Why a span ends when its run has no ``stop``: nothing was recorded after its last row."""

NO_SNAPSHOT = "no snapshot yet"

REASONS = {
    "gap": "the book lost a message (ledgered gap) and has not been re-synced",
    "disconnect": "the stream was disconnected",
    "stop": "the recorder had stopped",
    "start": "a new recording run had started and not yet re-synced",
    "error": "the stream reported an error and no message has arrived since",
    END_OF_DATA: "nothing was recorded after this run's last row",
    NO_SNAPSHOT: "no snapshot of this book had been recorded yet",
}
"""One phrase per reason a state is not valid, shared by every reader that explains itself."""

MOMENT = "%Y-%m-%d %H:%M:%S.%f"
"""How a reason names the instant of its break: UTC, to the microsecond, as DuckDB shows an instant."""


def reason(kind: str, ts_ns: int) -> str:
    """Why a state is not valid, in the words every reader uses (replay's export, polars, and ``nova sql``'s
    macros, which build the same text in SQL from REASONS and MOMENT): the phrase, then the break and when."""
    moment = dt.datetime.fromtimestamp(ts_ns // 10**9, dt.UTC) + dt.timedelta(microseconds=ts_ns % 10**9 // 1000)
    return f"{REASONS.get(kind, kind)} ({kind} at {moment.strftime(MOMENT)} UTC)"


@dataclass(frozen=True)
class Span:
    """A stretch of watched time ``[start_ns, end_ns)`` of one stream, and why it ended."""

    start_ns: int
    end_ns: int
    ended_by: str  # a break kind, or END_OF_DATA

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True)
class Run:
    """One recording run of a stream: from its ``start`` to its ``stop`` (or its last row when it has none)."""

    start_ns: int
    stop_ns: int | None
    next_start_ns: int | None


def runs(ledger: Sequence[tuple[int, str]]) -> list[Run]:
    """The runs of a stream from its ledger ``(ts, kind)`` rows in time order."""
    starts = [ts for ts, kind in ledger if kind == RUN_START]
    stops = [ts for ts, kind in ledger if kind == RUN_STOP]
    out = []
    for i, start in enumerate(starts):
        nxt = starts[i + 1] if i + 1 < len(starts) else None
        j = bisect.bisect_left(stops, start)
        stop = stops[j] if j < len(stops) and (nxt is None or stops[j] < nxt) else None
        out.append(Run(start, stop, nxt))
    return out


LastRow = Callable[[int, int | None], int | None]
"""``last_row(run_start, next_start)``: the receive time of the stream's last row in that range, or None."""


def book_spans(ledger: Iterable[tuple[int, str]], last_row: LastRow) -> list[Span]:
    """The watched spans of one book stream: from each snapshot to the next book break (or the end of its run).

    ``ledger`` holds the stream's ``(ts_recv, kind)`` rows; ``last_row`` is consulted only for runs without a
    ``stop``. A snapshot before the first ``start`` (a ledger cut by a date filter) counts from itself.
    """
    rows = sorted(ledger)
    ends = []  # implicit breaks: the end of each run that has no stop
    for run in runs(rows):
        if run.stop_ns is None:
            last = last_row(run.start_ns, run.next_start_ns)
            ends.append((run.start_ns if last is None else last) + 1)
    # a break at the very time of its anchor counts (the recorder ledgers a gap found among the diffs held for
    # a snapshot at the snapshot's time): at equal times the snapshot comes first and the break closes it
    events = sorted([*((ts, kind != BOOK_ANCHOR, kind) for ts, kind in rows
                       if kind in BOOK_BREAKS or kind == BOOK_ANCHOR),
                     *((ts, True, END_OF_DATA) for ts in ends)])
    spans: list[Span] = []
    since: int | None = None
    for ts, _, kind in events:
        if kind == BOOK_ANCHOR:
            if since is None:
                since = ts
        elif since is not None:
            if ts > since:
                spans.append(Span(since, ts, kind))
            since = None
    if since is not None:  # a run still open at the end of what the ledger shows (and no data bound given)
        spans.append(Span(since, 2**63 - 1, END_OF_DATA))
    return spans


def covered_ns(spans: Iterable[Span], lo: int, hi: int) -> int:
    """How much of ``[lo, hi)`` the spans cover, in ns."""
    return sum(max(0, min(s.end_ns, hi) - max(s.start_ns, lo)) for s in spans)


def valid_at(spans: Sequence[Span], t: int) -> bool:
    """Whether instant ``t`` lies in one of the (sorted, disjoint) spans."""
    i = bisect.bisect_right([s.start_ns for s in spans], t) - 1
    return i >= 0 and t < spans[i].end_ns


def quote_spans(ledger: Iterable[tuple[int, str]], quotes: Sequence[int], last_row: LastRow) -> list[Span]:
    """The spans in which a quote stream's held message is valid: from a message to the next quote break (or
    the end of its run). ``quotes`` are the stream's receive times, sorted."""
    rows = sorted(ledger)
    ends = []
    for run in runs(rows):
        if run.stop_ns is None:
            last = last_row(run.start_ns, run.next_start_ns)
            ends.append((run.start_ns if last is None else last) + 1)
    breaks = sorted([*((ts, kind) for ts, kind in rows if kind in QUOTE_BREAKS), *((ts, END_OF_DATA) for ts in ends)])
    spans: list[Span] = []
    i = 0  # next quote
    previous = -(2**63)
    for ts, kind in [*breaks, (2**63 - 1, END_OF_DATA)]:
        j = bisect.bisect_right(quotes, previous, lo=i)  # the first quote after the previous break
        if j < len(quotes) and quotes[j] < ts:
            spans.append(Span(quotes[j], ts, kind))
        i = bisect.bisect_left(quotes, ts, lo=j)
        previous = ts
    return spans
