"""``nova merge SRC... --into DST``: redundant recordings of the same streams made into one, without gaps.

Why: the only loss a recorder cannot avoid is what is in flight when its connection drops (DESIGN §6). Two
recorders of the same symbols over different connections rarely lose the same messages, so the union of their
recordings by exchange ids has a break only where every one of them missed the same messages.

How, per market and symbol, a day at a time in date order (one day of one stream of every source in memory):

- **book**: messages are identified by their ids (``first_id``/``last_id``, i.e. ``U``/``u``). The union of the
  sources' diffs is walked in id order with the core's rule (``nova.core.rules.judge``), exactly as the
  recorder's sequencer walks what arrives: a snapshot is taken from a source only where the merged chain needs
  one (at the start, and after each break that remains), and ``stale`` is recomputed on the merged chain, so a
  diff a source had to skip after its own gap is applied when another source continued the chain. A message
  whose levels a source did not know (a malformed frame: one stale row without levels) counts as missing from
  that source. ``msg`` is renumbered 1, 2, ... in the merged order; a message's ``ts_recv`` is the earliest at
  which any source received it. The book is valid only where some source watched it (the union of the sources'
  ``book_spans``): a stretch nobody watched is a break even if the ids happen to chain across it.
- **bbo** by ``update_id``, **trades** by ``trade_id``, **funding**, **liquidations**, **open_interest** by
  event time: one row per id, at the earliest receive time; rows in receive-time order. **instruments** by
  content: every source's rows in time order, a row held by several sources (same time, same content) once.
- **events**: a new ledger, not a copy: per stream a ``start`` (with the sources' common provenance) at the
  earliest start, one ``covered`` row per source and watched interval (who covered what), and the merged
  book's ``snapshot``/``resync``/``gap`` rows, a ``disconnect`` wherever no source was watching, and a
  ``stop`` at the latest end. Validity (``nova.core.validity``) over it is the union of the sources' watched
  time where the merged chain is continuous.
- Two sources holding the same message (same ids) with different content is reported and fails the merge,
  unless ``prefer`` names the source that wins. The whole merge is computed once without writing, so a
  conflict (or any refusal) leaves nothing written.
- What ``DST`` already holds of a stream is one more source, and a partition whose merged content equals what
  it holds is not rewritten: merging again, or merging the output with one of its sources, changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nova.analysis.compact import conform
from nova.core.contract import EVENTS, SCHEMAS, date_of
from nova.core.dataset import Dataset, new_file_name, run_recorders
from nova.core.errors import NovaError
from nova.core.rules import APPLY, GAP, judge, rule_text
from nova.core.validity import END_OF_DATA, LastRow, Span, quote_spans, runs, valid_at

COVERED = "covered"
"""The ledger kind of a merged recording saying which source watched a stream over which interval."""
MERGE_ID = "merge"  # the recorder id in the names of the files nova merge writes
QUOTE_KEYS = {"bbo": "update_id", "trades": "trade_id", "funding": "ts_event", "liquidations": "ts_event",
              "open_interest": "ts_event"}
TABLES = ("book", *QUOTE_KEYS, "instruments")
_FOREVER = 2**63 - 1
_MIX = np.uint64(0x9E3779B97F4A7C15)


class MergeConflict(NovaError):
    """Two sources hold the same message with different content."""


@dataclass
class Result:
    """What the merge did to one partition of the output."""

    table: str
    market: str
    symbol: str
    date: str
    rows: int
    rows_in: dict[str, int] = field(default_factory=dict)  # per source label: the rows it brought
    written: bool = False  # False: the output already held exactly this


@dataclass
class _Source:
    data: Dataset
    label: str  # the root as the ledger names it
    rank: int  # 0 wins a disagreement (--prefer), then the order given


# ---- entry point -----------------------------------------------------------------------------------------------

def merge(sources: Sequence[str], into: str, date: str | None = None, symbol: str | None = None,
          prefer: str | None = None) -> list[Result]:
    """Merge the recordings ``sources`` into ``into`` (symbol dashed); see the module's docstring."""
    srcs = _open_sources(sources, into, prefer)
    dst = Dataset(into)
    pairs = _pairs(srcs, symbol, date)
    if dst.exists():
        srcs.append(_Source(dst, _label(into), len(srcs) + 1))
    _same_provenance(srcs, pairs)
    for write in (False, True):  # the first pass finds every refusal before anything is written
        results = [r for market, sym in pairs for r in _merge_pair(srcs, dst, market, sym, date, write,
                                                                            prefer is None)]
    return results


def _label(root: str) -> str:
    return root if "://" in root else str(Path(root).resolve())


def _open_sources(sources: Sequence[str], into: str, prefer: str | None) -> list[_Source]:
    if not sources:
        raise NovaError("name at least one recording to merge (nova merge SRC... --into DST)")
    labels = [_label(s) for s in sources]
    if _label(into) in labels:
        raise NovaError(f"--into {into} is also one of the recordings to merge; write the merge into a new "
                        "directory")
    if len(set(labels)) < len(labels):
        raise NovaError("a recording is named twice; name each source once")
    if prefer is not None and _label(prefer) not in labels:
        raise NovaError(f"--prefer {prefer} is not one of the recordings to merge; name one of them")
    out = []
    for i, (text, label) in enumerate(zip(sources, labels, strict=True)):
        data = Dataset(text)
        if "://" in text:
            data.check_reachable()
        if not data.exists():
            raise NovaError(f"the recording {text} does not exist; check the path")
        rank = 0 if prefer is not None and label == _label(prefer) else i + 1
        out.append(_Source(data, label, rank))
    return sorted(out, key=lambda s: s.rank)


def _pairs(srcs: list[_Source], symbol: str | None, date: str | None) -> list[tuple[str, str]]:
    """The (market, symbol) streams to merge: every source must hold the same ones."""
    held = []
    for s in srcs:
        found = {(p.market, p.symbol) for p in s.data.partitions("events", symbol=symbol, date=date)}
        if not found:
            what = " and ".join(x for x in (f"symbol {symbol}" if symbol else "", f"date {date}" if date else "")
                                if x)
            raise NovaError(f"{s.label} holds no recording" + (f" of {what}" if what else "") +
                            "; check the sources, --symbol and --date")
        held.append(found)
    for s, found in zip(srcs[1:], held[1:], strict=True):
        if found != held[0]:
            def text(x: set[tuple[str, str]]) -> str:
                return ", ".join(f"{m} {y}" for m, y in sorted(x))
            raise NovaError(f"{srcs[0].label} holds {text(held[0])} but {s.label} holds {text(found)}: only "
                            "recordings of the same symbols merge (use --symbol to pick one)")
    return sorted(held[0])


def _same_provenance(srcs: list[_Source], pairs: list[tuple[str, str]]) -> None:
    for market, sym in pairs:
        seen: dict[str, str] = {}
        for s in srcs:
            for row in s.data.ledger(market, sym):
                if row.get("kind") == "start" and row.get("source"):
                    seen.setdefault(row["source"], s.label)
        if len(seen) > 1:
            (a, where_a), (b, where_b) = list(seen.items())[:2]
            raise NovaError(f"{where_a} recorded {market} {sym} from {a!r} but {where_b} from {b!r}: only "
                            "recordings of the same venue merge")


# ---- one market and symbol ---------------------------------------------------------------------------------------

def _merge_pair(srcs: list[_Source], dst: Dataset, market: str, sym: str, date: str | None, write: bool,
                strict: bool) -> list[Result]:
    ledgers = [s.data.ledger(market, sym) for s in srcs]
    streams = sorted({r["stream"] for lg in ledgers for r in lg if r.get("stream")})
    results: list[Result] = []
    events: list[dict] = []
    for stream in streams:
        events.extend(_frame(srcs, ledgers, market, sym, stream))
    book_events: list[dict] = []
    for table in TABLES:
        days = sorted({p.date for s in srcs for p in s.data.partitions(table, market, sym)})
        if not days:
            continue
        if table == "book":
            walk = _BookWalk(market, _union([_book_spans(s, market, sym, lg) for s, lg in zip(srcs, ledgers,
                                                                                           strict=True)]))
            for day in days:
                out, rows_in = walk.day([_read_day(s, "book", market, sym, day) for s in srcs], srcs, strict)
                if date in (None, day):
                    results.append(_store(dst, "book", market, sym, day, out, rows_in, write))
            book_events = walk.events
        else:
            carried: np.ndarray = np.zeros(0, np.int64)
            for day in days:
                tables = [_read_day(s, table, market, sym, day) for s in srcs]
                out, carried = _merge_quotes(table, tables, srcs, carried, strict)
                if date in (None, day):
                    results.append(_store(dst, table, market, sym, day, out, _rows_in(tables, srcs), write))
    events.extend(book_events)
    events.sort(key=lambda e: (e["ts_recv"], {"start": 0, "stop": 2}.get(e["kind"], 1), e["stream"]))
    by_day: dict[str, list[dict]] = {}
    for e in events:
        by_day.setdefault(date_of(e["ts_recv"]), []).append(e)
    for day, rows in sorted(by_day.items()):
        if date in (None, day):
            table = pa.Table.from_pylist(rows, schema=EVENTS)
            results.append(_store(dst, "events", market, sym, day, table, {}, write))
    return results


def _read_day(s: _Source, table: str, market: str, sym: str, day: str) -> pa.Table:
    schema = SCHEMAS[table]
    parts = [conform(s.data.read_table(path), schema) for p in s.data.partitions(table, market, sym, day)
             for path, _ in s.data.files(p)]
    if not parts:
        return schema.empty_table()
    out = pa.concat_tables(parts)
    if table == "book":
        out = out.take(pc.sort_indices(out, [("msg", "ascending")]))  # stable: a message's rows keep their order
    return out


def _rows_in(tables: list[pa.Table], srcs: list[_Source]) -> dict[str, int]:
    return {s.label: t.num_rows for s, t in zip(srcs, tables, strict=True) if t.num_rows}


def _store(dst: Dataset, table: str, market: str, sym: str, day: str, out: pa.Table, rows_in: dict[str, int],
           write: bool) -> Result:
    """Write a merged partition, unless the output already holds exactly these rows."""
    schema = SCHEMAS[table]
    out = pa.Table.from_arrays([out.column(f.name) for f in schema], schema=schema)
    result = Result(table, market, sym, day, out.num_rows, rows_in)
    partition = dst.partition(table, market, sym, day)
    old = [path for path, _ in dst.files(partition)] if dst.exists() else []
    if old and _plain(pa.concat_tables([conform(dst.read_table(p), SCHEMAS[table]) for p in old])).equals(_plain(out)):
        return result
    result.written = True
    if not write or out.num_rows == 0:
        return result
    first = int(pc.min(out.column("ts_recv").cast(pa.int64())).as_py())

    def write_new(path: str) -> int:
        return dst.write_parquet(path, table, out.to_batches(), archival=True)

    name = new_file_name(first, MERGE_ID)
    if not old:
        write_new(f"{partition.path}/{name}")
    elif dst.replace_files(partition, old, write_new) is None:
        raise NovaError(f"{partition.path} changed while merging into it (is a recorder writing there?); nothing "
                        "of that partition was changed, run the merge again")
    return result


def _plain(t: pa.Table) -> pa.Table:
    """A table with its dictionary columns as plain strings, for comparing content whatever the dictionaries."""
    for i, f in enumerate(t.schema):
        if pa.types.is_dictionary(f.type):
            t = t.set_column(i, f.name, t.column(i).cast(pa.string()))
    return t.combine_chunks()


def _conflict(what: str, key: object, srcs: list[_Source], ranks: Sequence[int]) -> MergeConflict:
    names = [s.label for s in srcs if s.rank in set(ranks)]
    return MergeConflict(f"{' and '.join(names)} disagree on {what} {key}: they hold the same message with "
                         "different content; merge again with --prefer SRC to say which source wins")


# ---- quotes ----------------------------------------------------------------------------------------------------

def _merge_quotes(table: str, tables: list[pa.Table], srcs: list[_Source], carried: np.ndarray,
                  strict: bool) -> tuple[pa.Table, np.ndarray]:
    """One day of a quote table: one row per id (the winning source's, at the earliest receive time)."""
    schema = SCHEMAS[table]
    ranks = np.concatenate([np.full(t.num_rows, s.rank, np.int64) for s, t in zip(srcs, tables, strict=True)])
    whole = pa.concat_tables(tables)
    ts = whole.column("ts_recv").cast(pa.int64()).to_numpy()
    if len(ts) == 0:
        return schema.empty_table(), carried
    if table == "instruments":  # by content: what exchangeInfo said at each start, each row once
        order = np.lexsort((ranks, ts))
        whole = whole.take(order)
        same = _same_as(whole, np.r_[0, np.arange(len(order) - 1)], schema.names)
        same[0] = False
        return whole.filter(pa.array(~same)), carried
    key_name = QUOTE_KEYS[table]
    key = pc.fill_null(whole.column(key_name).cast(pa.int64()), pa.array(ts, pa.int64())).to_numpy()
    content = _row_hash(whole, [n for n in schema.names if n != "ts_recv"])
    fresh = np.flatnonzero(~np.isin(key, carried))  # not already merged into the previous day
    # a row is (id, content, its occurrence among its source's rows with both): the sources' rows with the
    # same triple are one message; a source holding an id without the content another holds disagrees
    order = fresh[np.lexsort((ranks[fresh], content[fresh], key[fresh]))]
    k, h, r = key[order], content[order], ranks[order]
    same_kh = np.r_[False, (k[1:] == k[:-1]) & (h[1:] == h[:-1])]
    same_khr = same_kh & np.r_[False, r[1:] == r[:-1]]
    occurrence = _cumcount(same_khr)
    sources_of_key = _distinct_per_group(k, r)
    sources_of_content = _distinct_per_group(np.stack([k, h]), r)
    disputed = sources_of_content < sources_of_key
    if disputed.any():
        if strict:
            bad = int(np.flatnonzero(disputed)[0])
            lacking = set(r[k == k[bad]].tolist()) - set(r[(k == k[bad]) & (h == h[bad])].tolist())
            raise _conflict(f"{table} {key_name}", int(k[bad]), srcs, [int(r[bad]), min(lacking)])
        best = np.minimum.reduceat(r, np.flatnonzero(np.r_[True, k[1:] != k[:-1]]))
        best_of = np.repeat(best, np.diff(np.r_[np.flatnonzero(np.r_[True, k[1:] != k[:-1]]), len(k)]))
        winner = _distinct_per_group(np.stack([k, h]), r, only=r == best_of) > 0
        keep = ~disputed | winner
        order, k, h, occurrence = order[keep], k[keep], h[keep], occurrence[keep]
    regroup = np.lexsort((ranks[order], occurrence, h, k))
    order, k, h, occurrence = order[regroup], k[regroup], h[regroup], occurrence[regroup]
    head = np.r_[True, (k[1:] != k[:-1]) | (h[1:] != h[:-1]) | (occurrence[1:] != occurrence[:-1])] \
        if len(k) else np.zeros(0, np.bool_)
    starts = np.flatnonzero(head)
    first_ts = np.minimum.reduceat(ts[order], starts) if len(starts) else np.zeros(0, np.int64)
    kept = whole.take(pa.array(order[starts]))
    kept = kept.set_column(0, "ts_recv", pa.array(first_ts, schema.field("ts_recv").type))
    kept = kept.take(pa.array(np.lexsort((k[starts], first_ts))))
    return kept, np.unique(k)


def _cumcount(same_as_previous: np.ndarray) -> np.ndarray:
    """0, 1, 2 ... along each run of rows marked as the same as the one before."""
    idx = np.arange(len(same_as_previous))
    run_start = np.maximum.accumulate(np.where(same_as_previous, 0, idx)) if len(idx) else idx
    return idx - run_start


def _distinct_per_group(groups: np.ndarray, values: np.ndarray, only: np.ndarray | None = None) -> np.ndarray:
    """Per row (rows sorted by group): how many distinct ``values`` the rows of its group (those in ``only``)
    hold."""
    g = groups if groups.ndim == 2 else groups[None, :]
    n = g.shape[1]
    if n == 0:
        return np.zeros(0, np.int64)
    gid = np.cumsum(np.r_[True, (g[:, 1:] != g[:, :-1]).any(axis=0)]) - 1
    mask = np.ones(n, np.bool_) if only is None else only
    pairs = np.unique(np.stack([gid[mask], values[mask]]), axis=1)
    return np.bincount(pairs[0], minlength=int(gid[-1]) + 1)[gid]


def _row_hash(t: pa.Table, columns: list[str]) -> np.ndarray:
    """A 64-bit hash of each row's ``columns`` (nulls distinct from any value), comparable within one table."""
    h = np.zeros(t.num_rows, np.uint64)
    with np.errstate(over="ignore"):
        for name in columns:
            col = t.column(name)
            if pa.types.is_dictionary(col.type):
                col = col.cast(pa.string())
            if pa.types.is_string(col.type):
                values = pc.fill_null(pc.index_in(col, pc.unique(col)), -1).to_numpy().astype(np.uint64)
            elif pa.types.is_floating(col.type):
                values = col.fill_null(np.nan).to_numpy().view(np.uint64)
            else:
                values = col.cast(pa.int64()).fill_null(-1).to_numpy().view(np.uint64)
            nulls = pc.is_null(col).to_numpy(zero_copy_only=False).astype(np.uint64)
            h = (h ^ values ^ (nulls << np.uint64(63))) * _MIX
            h ^= h >> np.uint64(31)
    return h


def _same_as(t: pa.Table, ref: np.ndarray, columns: list[str]) -> np.ndarray:
    """Per row of ``t``: whether its ``columns`` equal those of row ``ref[i]`` (nulls equal nulls)."""
    same = np.ones(t.num_rows, np.bool_)
    for name in columns:
        col = t.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        other = col.take(pa.array(ref))
        eq = pc.fill_null(pc.equal(col, other), False)
        both_null = pc.and_(pc.is_null(col), pc.is_null(other))
        same &= pc.or_(eq, both_null).to_numpy(zero_copy_only=False)
    return same


# ---- the book --------------------------------------------------------------------------------------------------

def _book_spans(s: _Source, market: str, sym: str, ledger: list[dict]) -> list[Span]:
    return s.data.book_spans(market, sym, [r for r in ledger if r.get("stream") == "book"])


def _union(spans: list[list[Span]]) -> list[Span]:
    """The union of several sources' watched spans, as sorted disjoint spans."""
    out: list[Span] = []
    for sp in sorted((x for xs in spans for x in xs), key=lambda x: x.start_ns):
        if out and sp.start_ns <= out[-1].end_ns:
            if sp.end_ns > out[-1].end_ns:
                out[-1] = Span(out[-1].start_ns, sp.end_ns, sp.ended_by)
        else:
            out.append(sp)
    return out


class _BookWalk:
    """The merged book chain of one market, carried from day to day."""

    def __init__(self, market: str, watched: list[Span]) -> None:
        self.market = market
        self.watched = watched
        self.live = False
        self.synced = False
        self.last = -1
        self.until = 0  # the end of the watched span the book is live in
        self.clock = 0  # the merged stream's running receive time (when a message takes effect)
        self.msg = 0
        self.broken_at = -1  # the time of the last break ledgered
        self.seen: np.ndarray = np.zeros((0, 2), np.int64)  # the previous day's diff ids
        self.events: list[dict] = []

    def _event(self, ts: int, kind: str, expected: int | None, received: int | None, detail: str) -> None:
        self.events.append(_row(ts, "book", kind, detail, expected=expected, received=received))

    def _break(self, ts: int, kind: str, expected: int | None, received: int | None, detail: str) -> None:
        self._event(ts, kind, expected, received, detail)
        self.live = False
        self.broken_at = ts

    def day(self, tables: list[pa.Table], srcs: list[_Source], strict: bool) -> tuple[pa.Table, dict[str, int]]:
        whole = pa.concat_tables(tables)
        ranks = np.concatenate([np.full(t.num_rows, s.rank, np.int64) for s, t in zip(srcs, tables, strict=True)])
        rows_in = _rows_in(tables, srcs)
        if whole.num_rows == 0:
            return SCHEMAS["book"].empty_table(), rows_in
        m = _messages(whole, ranks)
        # diffs: one copy per (first_id, last_id), known copies first, then by rank
        diff = ~m.snapshot
        old = _in_pairs(m.first, m.last, self.seen) & diff
        keep = ~old & (diff | ~m.unknown)  # a snapshot without levels is of no use to anyone
        idx = np.flatnonzero(keep)
        is_diff = diff[idx]
        # the position in the chain: diffs by u; a snapshot L where the first diff it may anchor comes
        # (spot: after the diffs with u <= L, which it makes stale; USDT-M: before the diff with u == L)
        tie = np.where(is_diff, 1, 2 if self.market == "spot" else 0)
        second = np.where(is_diff, m.first[idx], m.hash_[idx].view(np.int64))
        order = idx[np.lexsort((m.rank[idx], m.unknown[idx], second, tie, m.last[idx]))]
        out_msgs: list[int] = []
        out_stale: list[bool] = []
        out_ts: list[int] = []
        i = 0
        n = len(order)
        while i < n:
            j = i + 1
            a = order[i]
            while j < n and (not m.snapshot[a]) and not m.snapshot[order[j]] and \
                    m.first[order[j]] == m.first[a] and m.last[order[j]] == m.last[a]:
                j += 1
            if m.snapshot[a]:  # snapshots with the same id and content are one
                while j < n and m.snapshot[order[j]] and m.last[order[j]] == m.last[a] and \
                        m.hash_[order[j]] == m.hash_[a]:
                    j += 1
            copies = order[i:j]
            ts = int(m.ts[copies].min())
            if strict and not m.snapshot[a]:
                known = copies[~m.unknown[copies]]
                if len(known) > 1 and (m.hash_[known] != m.hash_[known[0]]).any():
                    other = known[m.hash_[known] != m.hash_[known[0]]][0]
                    raise _conflict("the book message U..u", f"{m.first[a]}..{m.last[a]}", srcs,
                                    [int(m.rank[known[0]]), int(m.rank[other])])
            took = self._step(a, ts, m)
            if took is not None:
                out_msgs.append(int(a))
                out_stale.append(took)
                out_ts.append(ts)
            i = j
        diffs = diff & ~old
        self.seen = np.stack([m.first[diffs], m.last[diffs]], axis=1)
        return self._rows(whole, m, np.array(out_msgs, np.int64), np.array(out_stale, np.bool_),
                          np.array(out_ts, np.int64)), rows_in

    def _step(self, a: int, ts: int, m: _Messages) -> bool | None:
        """Apply one merged message to the chain: its stale flag, or None for a snapshot left out."""
        effect = max(self.clock, ts)
        if self.live and effect >= self.until:
            self._break(self.until, "disconnect", None, None, "no source was watching the book")
        self.clock = effect
        if m.snapshot[a]:
            span = _span_at(self.watched, ts)
            if self.live or span is None:
                return None
            at = max(ts, self.broken_at + 1)
            self._event(at, "snapshot", None, int(m.last[a]), f"{int(m.levels[a])} levels")
            if self.broken_at >= 0:
                self._event(at, "resync", None, int(m.last[a]), "book re-synced from a source's snapshot")
            self.live, self.synced, self.last, self.until = True, False, int(m.last[a]), span.end_ns
            return False
        if not self.live or m.unknown[a]:
            return True  # no anchor, or nobody knows its levels (the next diff breaks the chain)
        verdict, expected, received = judge(self.market, not self.synced, self.last, int(m.first[a]),
                                            int(m.last[a]), int(m.prev[a]))
        if verdict == APPLY:
            self.synced, self.last = True, int(m.last[a])
            return False
        if verdict == GAP:
            self._break(effect, "gap", expected, received,
                        f"broke {rule_text(self.market, not self.synced)}: no source received the messages between")
        return True

    def _rows(self, whole: pa.Table, m: _Messages, chosen: np.ndarray, stale: np.ndarray,
              ts: np.ndarray) -> pa.Table:
        lengths = m.hi[chosen] - m.lo[chosen]
        take = np.concatenate([np.arange(m.lo[c], m.hi[c]) for c in chosen]) if len(chosen) else \
            np.zeros(0, np.int64)
        out = whole.take(pa.array(take))
        msg = np.arange(self.msg + 1, self.msg + 1 + len(chosen), dtype=np.int64)
        self.msg += len(chosen)
        schema = SCHEMAS["book"]
        for name, values in (("ts_recv", pa.array(np.repeat(ts, lengths), schema.field("ts_recv").type)),
                             ("msg", pa.array(np.repeat(msg, lengths), pa.int64())),
                             ("stale", pa.array(np.repeat(stale, lengths), pa.bool_()))):
            out = out.set_column(schema.get_field_index(name), name, values)
        return out


@dataclass
class _Messages:
    """One entry per book message of all sources' rows of a day."""

    lo: np.ndarray
    hi: np.ndarray
    first: np.ndarray
    last: np.ndarray
    prev: np.ndarray
    ts: np.ndarray
    snapshot: np.ndarray
    unknown: np.ndarray  # written stale without levels: its changes were unknown to its source
    rank: np.ndarray
    levels: np.ndarray
    hash_: np.ndarray  # of the content: levels in order, prev_id, event and trade times


def _messages(whole: pa.Table, ranks: np.ndarray) -> _Messages:
    msg = whole.column("msg").to_numpy()
    src_change = np.r_[True, ranks[1:] != ranks[:-1]]
    lo = np.flatnonzero(np.r_[True, msg[1:] != msg[:-1]] | src_change)
    hi = np.r_[lo[1:], len(msg)]
    side = whole.column("side").cast(pa.string())
    code = np.where(pc.fill_null(pc.equal(side, "bid"), False).to_numpy(zero_copy_only=False), 1,
                    np.where(pc.is_null(side).to_numpy(zero_copy_only=False), 0, 2)).astype(np.uint64)
    price = whole.column("price").fill_null(0.0).to_numpy().view(np.uint64)
    amount = whole.column("amount").fill_null(0.0).to_numpy().view(np.uint64)
    position = (np.arange(len(msg)) - np.repeat(lo, hi - lo)).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = price * _MIX ^ (amount + np.uint64(7)) * np.uint64(0xC2B2AE3D27D4EB4F) ^ \
            (code + np.uint64(3)) * np.uint64(0x165667B19E3779F9) ^ position * np.uint64(0x27D4EB2F165667C5)
        h ^= h >> np.uint64(29)
        h *= _MIX
        hashed = np.add.reduceat(h, lo)
        for name in ("prev_id", "ts_event", "ts_trade"):
            col = whole.column(name)
            values = col.cast(pa.int64()).fill_null(-1).to_numpy()[lo].astype(np.uint64)
            hashed = (hashed ^ values) * _MIX
        hashed ^= (hi - lo).astype(np.uint64)
    stale = whole.column("stale").to_numpy(zero_copy_only=False)[lo]
    null_side = code[lo] == 0
    return _Messages(
        lo=lo, hi=hi,
        first=whole.column("first_id").to_numpy()[lo], last=whole.column("last_id").to_numpy()[lo],
        prev=whole.column("prev_id").fill_null(-1).to_numpy()[lo],
        ts=whole.column("ts_recv").cast(pa.int64()).to_numpy()[lo],
        snapshot=whole.column("snapshot").to_numpy(zero_copy_only=False)[lo],
        unknown=stale & null_side & ((hi - lo) == 1), rank=ranks[lo],
        levels=np.where(null_side, 0, hi - lo), hash_=hashed)


def _in_pairs(first: np.ndarray, last: np.ndarray, seen: np.ndarray) -> np.ndarray:
    if len(seen) == 0:
        return np.zeros(len(first), np.bool_)
    wanted = {(int(a), int(b)) for a, b in seen}
    return np.array([(int(a), int(b)) in wanted for a, b in zip(first, last, strict=True)], np.bool_)


def _span_at(spans: list[Span], t: int) -> Span | None:
    return next((s for s in spans if s.start_ns <= t < s.end_ns), None) if valid_at(spans, t) else None


# ---- the ledger ------------------------------------------------------------------------------------------------

def _row(ts: int, stream: str, kind: str, detail: str, expected: int | None = None, received: int | None = None,
         source: str | None = None, recorder: str | None = None, versions: str | None = None) -> dict:
    return {"ts_recv": ts, "stream": stream, "kind": kind, "expected_id": expected, "received_id": received,
            "detail": detail, "source": source, "recorder_id": recorder, "versions": versions}


def _frame(srcs: list[_Source], ledgers: list[list[dict]], market: str, sym: str, stream: str) -> Iterator[dict]:
    """A stream's start, who covered what, its quote breaks (where nobody watched) and its stop."""
    starts: list[tuple[int, int, dict]] = []
    ends: list[int] = []
    covered: dict[tuple[int, str], dict] = {}
    spans: list[list[Span]] = []
    recorders: set[str] = set()
    for s, ledger in zip(srcs, ledgers, strict=True):
        rows = [r for r in ledger if r.get("stream") == stream]
        if not rows:
            continue
        starts.extend((r["ts_recv"], s.rank, r) for r in rows if r["kind"] == "start")
        recorders.update(x for r in rows if r["kind"] == "start" and r.get("recorder_id")
                         for x in str(r["recorder_id"]).split(","))
        book = stream == "book"
        times = [] if book else _quote_times(s, stream, market, sym)
        last_row = _last_row_of(s, stream, market, sym, times)
        mine = _book_spans(s, market, sym, ledger) if book else \
            quote_spans([(r["ts_recv"], r["kind"]) for r in rows], times, last_row)
        spans.append(mine)
        pairs = [(r["ts_recv"], r["kind"]) for r in rows]
        for run in runs(pairs)[-1:]:
            end = run.stop_ns if run.stop_ns is not None else (last_row(run.start_ns, None) or run.start_ns) + 1
            ends.append(end)
        if stream not in QUOTE_KEYS and not book:  # instruments: what exchangeInfo said at each start
            continue
        merged_before = [r for r in rows if r["kind"] == COVERED]
        if merged_before:  # a merged recording: who covered what is in its ledger already
            for r in merged_before:
                covered.setdefault((r["ts_recv"], r["detail"]), r)
            continue
        for sp in mine:
            who = ",".join(run_recorders(ledger, sp.start_ns, sp.end_ns)) or "unknown"
            until = "the end of its data" if sp.end_ns >= _FOREVER else _iso(sp.end_ns)
            why = "" if sp.ended_by == END_OF_DATA else f" ({sp.ended_by})"
            detail = f"{s.label} (recorder {who}) watched {stream} until {until}{why}"
            covered.setdefault((sp.start_ns, detail), _row(sp.start_ns, stream, COVERED, detail, recorder=who))
    if not starts:
        return
    first = min(starts, key=lambda x: (x[0], x[1]))
    origin = first[2]
    yield _row(first[0], stream, "start", "merged recording (the covered rows say who watched when)",
               source=origin.get("source"), recorder=",".join(sorted(recorders)) or None,
               versions=origin.get("versions"))
    for key in sorted(covered):
        r = covered[key]
        yield _row(r["ts_recv"], stream, COVERED, r["detail"], recorder=r.get("recorder_id"))
    end = max(ends)
    if stream in QUOTE_KEYS:  # the book's breaks come from its merged chain
        watched = _union(spans)
        for sp in watched:
            if sp.end_ns < end:
                kind = sp.ended_by if sp.ended_by in ("disconnect", "error") else "disconnect"
                yield _row(sp.end_ns, stream, kind, f"no source held a valid {stream} message from here")
    yield _row(end, stream, "stop", "end of the merged recordings")


def _quote_times(s: _Source, stream: str, market: str, sym: str) -> list[int]:
    if stream not in SCHEMAS or stream in ("events",):
        return []
    out: list[int] = []
    for p in s.data.partitions(stream, market, sym):
        for path, _ in s.data.files(p):
            out.extend(s.data.read_table(path, columns=["ts_recv"]).column(0).cast(pa.int64()).to_pylist())
    return sorted(out)


def _last_row_of(s: _Source, stream: str, market: str, sym: str, times: list[int]) -> LastRow:
    if stream == "book":
        stats = s.data.all_stats(f for p in s.data.partitions("book", market, sym) for f in s.data.files(p))

        def book_last(start: int, nxt: int | None) -> int | None:
            inside = [x.last_ns for x in stats if x.last_ns is not None and x.first_ns is not None
                      and x.first_ns >= start and (nxt is None or x.first_ns < nxt)]
            return max(inside) if inside else None
        return book_last

    def last(start: int, nxt: int | None) -> int | None:
        inside = [t for t in times if t >= start and (nxt is None or t < nxt)]
        return inside[-1] if inside else None
    return last


def _iso(ns: int) -> str:
    return f"{dt.datetime.fromtimestamp(ns // 10**9, dt.UTC):%Y-%m-%dT%H:%M:%S}.{ns % 10**9:09d}Z"


__all__ = ["COVERED", "MergeConflict", "Result", "merge"]
