"""Delivering readings on the wall clock: ``--speed 1`` as recorded, ``N`` N times faster, ``None`` (max) at once.

The rule is "never early": an item whose data time is ``ts`` is due at ``wall0 + (ts - ts0) / speed``, where
``(ts0, wall0)`` is the first item delivered. Waiting sleeps until about a millisecond before the due time
(the OS wakes threads late by up to a scheduler tick) and spins the rest, so lateness is set by how fast the
consumer takes items, not by ``time.sleep``'s granularity. While pacing, the interpreter hands the GIL over
every 0.2 ms instead of 5 ms: the replay's reader thread runs Python between its GIL-free decoding calls,
and a due item must not wait for it; and what the process holds when pacing starts is frozen out of the
garbage collector's full walks (``gc.freeze``), which otherwise stop everything for ~100 ms. Every delivery's
lateness is recorded in a log-bucket histogram: a day at ``--speed 1`` delivers millions of items, and p50/p99
need no list of them.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import time

import numpy as np

SPIN_NS = 1_000_000  # sleep until this close to the due time, then spin
PACED_FULL_GC_AFTER = 1000  # second-generation collections between full ones while pacing (Python's: 10)
PACED_SWITCH_S = 0.0002  # the GIL hand-over interval while pacing (Python's default is 5 ms)
_BUCKETS_PER_DECADE = 100  # ~2.3% wide buckets: plenty for p50/p99 of a lateness
_DECADES = 13  # 1 ns .. 10^13 ns (~3 h)
_N_BUCKETS = _BUCKETS_PER_DECADE * _DECADES + 1


class Lateness:
    """Histogram of delivery lateness (ns) with log buckets; percentiles are bucket upper bounds."""

    def __init__(self) -> None:
        self.counts = np.zeros(_N_BUCKETS, dtype=np.int64)
        self.n = 0
        self.max_ns = 0

    @staticmethod
    def _bucket(late_ns: np.ndarray) -> np.ndarray:
        safe = np.maximum(late_ns, 1).astype(np.float64)
        return np.minimum(np.ceil(np.log10(safe) * _BUCKETS_PER_DECADE), _N_BUCKETS - 1).astype(np.int64)

    def add(self, late_ns: np.ndarray) -> None:
        if late_ns.size == 0:
            return
        self.counts += np.bincount(self._bucket(late_ns), minlength=self.counts.shape[0])
        self.n += int(late_ns.size)
        self.max_ns = max(self.max_ns, int(late_ns.max()))

    def add_one(self, late_ns: int) -> None:
        bucket = min(math.ceil(math.log10(max(late_ns, 1)) * _BUCKETS_PER_DECADE), _N_BUCKETS - 1)
        self.counts[bucket] += 1
        self.n += 1
        self.max_ns = max(self.max_ns, late_ns)

    def percentile_ns(self, q: float) -> float:
        """The q-th percentile (0-100) of lateness, as the upper bound of its bucket (NaN with no data)."""
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


class Pacer:
    """Holds items back until they are due; ``speed=None`` means as fast as possible (no waiting)."""

    def __init__(self, speed: float | None, lateness: Lateness | None = None) -> None:
        if speed is not None and not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a positive number or None (max), not {speed}")
        self.speed = speed
        self.lateness = lateness if lateness is not None else Lateness()
        self._ts0: int | None = None
        self._wall0 = 0
        self._switch = sys.getswitchinterval()

    @property
    def paced(self) -> bool:
        return self.speed is not None

    def __enter__(self) -> Pacer:
        self._switch = sys.getswitchinterval()
        if self.paced:
            sys.setswitchinterval(min(self._switch, PACED_SWITCH_S))
            # A full collection walks every object the process holds (numba's and pyarrow's modules, caches):
            # ~100 ms during which nothing is delivered. What exists now lives on; frozen, it is left out of
            # the walks, which then cover only what the pacing itself allocates (milliseconds).
            gc.freeze()
            # and what it allocates is young and mostly freed by reference counting: the young generations are
            # still collected (fractions of a ms), full walks only after PACED_FULL_GC_AFTER young ones
            self._thresholds = gc.get_threshold()
            gc.set_threshold(self._thresholds[0], self._thresholds[1], PACED_FULL_GC_AFTER)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setswitchinterval(self._switch)
        if self.paced:
            gc.set_threshold(*self._thresholds)
            gc.unfreeze()

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
        self.lateness.add_one(self._hold(due) - due)

    async def wait_async(self, ts_ns: int) -> None:
        """``wait`` for an event loop: it sleeps with asyncio and spins only the last millisecond."""
        if self.speed is None:
            return
        due = self.due(ts_ns)
        remaining = due - time.perf_counter_ns()
        if remaining > SPIN_NS:
            await asyncio.sleep((remaining - SPIN_NS) / 1e9)
        self.lateness.add_one(self._hold(due) - due)

    def release(self, ts: np.ndarray, start: int) -> int:
        """For batch consumers: wait until ``ts[start]`` is due, then return the end of the run of items from
        ``start`` that are all due by now (to be delivered together); their lateness is recorded."""
        if self.speed is None:
            return int(ts.shape[0])
        now = self._hold(self.due(int(ts[start])))
        assert self._ts0 is not None
        horizon = self._ts0 + (now - self._wall0) * self.speed
        end = max(int(np.searchsorted(ts, horizon, side="right")), start + 1)
        due = self._wall0 + np.round((ts[start:end] - self._ts0) / self.speed).astype(np.int64)
        self.lateness.add(np.maximum(now - due, 0))
        return end
