"""Delivering readings on the wall clock: ``--speed 1`` as recorded, ``N`` N times faster, ``None`` (max) at once.

The rule is "never early": an item whose data time is ``ts`` is due at ``wall0 + (ts - ts0) / speed``, where
``(ts0, wall0)`` is the first item delivered. Waiting sleeps until about a millisecond before the due time
(the OS wakes threads late by up to a scheduler tick) and spins the rest, so lateness is set by how fast the
consumer takes items, not by ``time.sleep``'s granularity. While pacing, the interpreter hands the GIL over
every 0.2 ms instead of 5 ms: the replay's reader thread runs Python between its GIL-free decoding calls,
and a due item must not wait for it. The garbage collector is the other thing that stops every thread, so
while pacing it runs when the pacer has time to spare rather than when an allocation happens to cross a
threshold (``_PacedProcess``). Every delivery's lateness is recorded in a log-bucket histogram: a day at
``--speed 1`` delivers millions of items, and p50/p99 need no list of them.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import threading
import time

import numpy as np

SPIN_NS = 1_000_000  # sleep until this close to the due time, then spin
PACED_FULL_GC_AFTER = 1000  # second-generation collections between full ones while pacing (Python's: 10)
PACED_YOUNG_BOUND = 10  # while pacing, the automatic young collection waits for this many times Python's count
SPARE_GC_EVERY_NS = 5_000_000  # at most one collection in spare time per this much wall time
SPARE_FULL_AFTER = 100  # second-generation collections between full ones when there is time for a full one
FULL_GC_BOUND_NS = 300 * 10**9  # a full collection at least this often while pacing, spare time or not
PACED_SWITCH_S = 0.0002  # the GIL hand-over interval while pacing (Python's default is 5 ms)
_BUCKETS_PER_DECADE = 100  # ~2.3% wide buckets: plenty for p50/p99 of a lateness
_DECADES = 13  # 1 ns .. 10^13 ns (~3 h)
_N_BUCKETS = _BUCKETS_PER_DECADE * _DECADES + 1


class Lateness:
    """Histogram of delivery lateness (ns) with log buckets; percentiles are bucket upper bounds.

    One delivery's lateness is appended to a list and binned with the next thousand or so in one numpy call:
    binning each alone (a logarithm and a numpy item update, ~1 µs) is loop time the next item of a burst
    waits behind."""

    PENDING = 1024

    def __init__(self) -> None:
        self.counts = np.zeros(_N_BUCKETS, dtype=np.int64)
        self._n = 0
        self._max_ns = 0
        self._pending: list[int] = []

    @property
    def n(self) -> int:
        return self._n + len(self._pending)

    @property
    def max_ns(self) -> int:
        self._flush()
        return self._max_ns

    @staticmethod
    def _bucket(late_ns: np.ndarray) -> np.ndarray:
        safe = np.maximum(late_ns, 1).astype(np.float64)
        return np.minimum(np.ceil(np.log10(safe) * _BUCKETS_PER_DECADE), _N_BUCKETS - 1).astype(np.int64)

    def add(self, late_ns: np.ndarray) -> None:
        if late_ns.size == 0:
            return
        self.counts += np.bincount(self._bucket(late_ns), minlength=self.counts.shape[0])
        self._n += int(late_ns.size)
        self._max_ns = max(self._max_ns, int(late_ns.max()))

    def add_one(self, late_ns: int) -> None:
        self._pending.append(late_ns)
        if len(self._pending) >= self.PENDING:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.add(np.array(pending, dtype=np.int64))

    def percentile_ns(self, q: float) -> float:
        """The q-th percentile (0-100) of lateness, as the upper bound of its bucket (NaN with no data)."""
        self._flush()
        if self.n == 0:
            return math.nan
        rank = max(1, math.ceil(q / 100 * self.n))
        bucket = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(10 ** (bucket / _BUCKETS_PER_DECADE), float(self.max_ns))

    def summary(self) -> dict:
        """Count, p50, p99 and max in ms (µs precision), as a status answer shows them."""
        def ms(ns: float) -> float:
            return 0.0 if math.isnan(ns) else round(ns / 1e6, 3)
        return {"messages": self.n, "p50_ms": ms(self.percentile_ns(50)), "p99_ms": ms(self.percentile_ns(99)),
                "max_ms": ms(self.max_ns)}


class _PacedProcess:
    """What pacing changes in the process: the GIL's hand-over interval, and when the garbage collector runs
    (in the pacer's spare time).

    A young collection stops every thread for 0.3-10 ms (the replay's and ``nova serve``'s reader threads keep
    thousands of read-ahead objects young, and Python's allocation count under-states them), and at ``--speed
    10`` an automatic one lands on a burst of due items about once a second. While pacing, the automatic
    collector's young threshold is raised ``PACED_YOUNG_BOUND`` times, so it only fires when no spare time has
    come for that many allocations (the bound on garbage: memory stays flat with a pacer that never waits), and
    the pacer collects when the next item is due later than twice the collection's expected cost. What the
    process holds when pacing starts is frozen out of the collector's walks (``gc.freeze``): a full walk of it
    (numba's and pyarrow's modules, caches) is a ~100 ms stop. The settings (and the switch interval) are the
    process's, so pacers share them: the first to start sets them, the last to end restores them (a replay
    inside ``nova serve``'s process, two replays on two threads).
    """

    def __init__(self) -> None:
        self.users = 0
        self._saved: tuple[tuple[int, int, int], float] | None = None
        self.cost_ns = [300_000, 2_000_000, 20_000_000]  # expected stop per generation, refined by each collection
        self.spare_collections = [0, 0, 0]  # taken in spare time (a forced full one counts under 2 as well)
        self._last_ns = 0
        self._full_ns = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.users += 1
            if self.users == 1:
                self._hold()

    def exit(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users == 0:
                self._restore()

    def _hold(self) -> None:
        young, middle, _ = gc.get_threshold()
        self._saved = (gc.get_threshold(), sys.getswitchinterval())
        self._full_ns = time.perf_counter_ns()  # what is frozen now needs no full collection
        sys.setswitchinterval(min(self._saved[1], PACED_SWITCH_S))
        gc.freeze()
        gc.set_threshold(young * PACED_YOUNG_BOUND, middle, PACED_FULL_GC_AFTER)

    def _restore(self) -> None:
        if self._saved is None:
            return
        thresholds, switch = self._saved
        sys.setswitchinterval(switch)
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        self._saved = None

    def idle(self, until_ns: int) -> None:
        """Collect now what is expected to be done before ``until_ns`` (``perf_counter_ns``); and a full
        collection when none came for ``FULL_GC_BOUND_NS``, spare time or not (at ``--speed 10`` a gap long
        enough for one is rare, and the automatic collector takes one only with a young one, which spare time
        pre-empts: without this bound, garbage that outlived the young collections would pile up)."""
        now = time.perf_counter_ns()
        if now - self._last_ns < SPARE_GC_EVERY_NS or self._saved is None or not gc.isenabled():
            return
        _, middle_count, old_count = gc.get_count()
        _, middle, _ = self._saved[0]
        if now - self._full_ns > FULL_GC_BOUND_NS:
            self._collect(2, now)
            return
        generation = 2 if old_count >= SPARE_FULL_AFTER else 1 if middle_count >= middle else 0
        while generation > 0 and 2 * self.cost_ns[generation] > until_ns - now:
            generation -= 1
        if 2 * self.cost_ns[generation] <= until_ns - now:
            self._collect(generation, now)

    def _collect(self, generation: int, began: int) -> None:
        gc.collect(generation)
        self._last_ns = time.perf_counter_ns()
        if generation == 2:
            self._full_ns = self._last_ns
        # one slow collection (the thread preempted on a busy machine) must not rule out the next ones: the
        # estimate rises by at most a quarter per collection and falls as fast
        expected = self.cost_ns[generation]
        self.cost_ns[generation] = (3 * expected + min(self._last_ns - began, 2 * expected)) // 4
        self.spare_collections[generation] += 1


PACED = _PacedProcess()


class Pacer:
    """Holds items back until they are due; ``speed=None`` means as fast as possible (no waiting)."""

    def __init__(self, speed: float | None, lateness: Lateness | None = None) -> None:
        if speed is not None and not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number or None (max), not {speed}")
        self.speed = speed
        self.lateness = lateness if lateness is not None else Lateness()
        self._ts0: int | None = None
        self._wall0 = 0

    @property
    def paced(self) -> bool:
        return self.speed is not None

    def __enter__(self) -> Pacer:
        if self.paced:
            PACED.enter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.paced:
            PACED.exit()

    def due(self, ts_ns: int) -> int:
        """The ``perf_counter_ns`` at which an item with data time ``ts_ns`` is due (anchoring on the first)."""
        if self._ts0 is None:
            self._ts0, self._wall0 = ts_ns, time.perf_counter_ns()
        assert self.speed is not None
        return self._wall0 + round((ts_ns - self._ts0) / self.speed)

    def shift(self, ns: int) -> None:
        """Move the wall clock's origin ``ns`` later: time spent paused or held is not lateness, and the items after
        it keep their recorded spacing from where the playback resumed."""
        if self._ts0 is not None:
            self._wall0 += ns

    @staticmethod
    def _hold(due: int) -> int:
        """Sleep, then spin, until ``due``; returns the time it let go."""
        remaining = due - time.perf_counter_ns()
        if remaining > SPIN_NS:
            time.sleep((remaining - SPIN_NS) / 1e9)
        while (now := time.perf_counter_ns()) < due:
            pass
        return now

    def wait(self, ts_ns: int) -> None:
        """Block until the item is due, then record its lateness."""
        if self.speed is None:
            return
        due = self.due(ts_ns)
        PACED.idle(due - SPIN_NS)
        self.lateness.add_one(self._hold(due) - due)

    async def wait_async(self, ts_ns: int) -> None:
        """``wait`` for an event loop: it sleeps with asyncio and spins only the last millisecond or two.

        The loop's selector waits in whole milliseconds, rounded up, so a sleep of 3.4 ms wakes after 4 ms and
        eats the spin's margin for the OS's own lateness; the sleep is cut to whole milliseconds instead. With
        less than that to wait, the loop still gets one turn (``nova serve``'s writers send what was published)
        unless the item is all but due."""
        if self.speed is None:
            return
        due = self.due(ts_ns)
        PACED.idle(due - SPIN_NS)
        remaining = due - time.perf_counter_ns()
        if remaining >= SPIN_NS + 1_000_000:
            await asyncio.sleep((remaining - SPIN_NS) // 1_000_000 / 1000)
        elif remaining > SPIN_NS // 4:
            await asyncio.sleep(0)
        self.lateness.add_one(self._hold(due) - due)

    def due_now(self, ts_ns: int) -> bool:
        """For an event loop's bursts: True when the item is due (or all but due, when ``wait_async`` would give the
        loop no turn either) and its lateness is recorded: the caller delivers it without awaiting. False: await
        ``wait_async``. A burst recorded within a few ms and played ten times closer is hundreds of items, and a
        coroutine awaited per item is loop time the last of them wait behind."""
        if self.speed is None:
            return False
        due = self.due(ts_ns)
        if due - time.perf_counter_ns() > SPIN_NS // 4:
            return False
        self.lateness.add_one(self._hold(due) - due)
        return True

    def release(self, ts: np.ndarray, start: int) -> int:
        """For batch consumers: wait until ``ts[start]`` is due, then return the end of the run of items from
        ``start`` that are all due by now (to be delivered together); their lateness is recorded."""
        if self.speed is None:
            return int(ts.shape[0])
        first_due = self.due(int(ts[start]))
        PACED.idle(first_due - SPIN_NS)
        now = self._hold(first_due)
        assert self._ts0 is not None
        horizon = self._ts0 + (now - self._wall0) * self.speed
        end = max(int(np.searchsorted(ts, horizon, side="right")), start + 1)
        due = self._wall0 + np.round((ts[start:end] - self._ts0) / self.speed).astype(np.int64)
        self.lateness.add(np.maximum(now - due, 0))
        return end
