"""Handing items from a producer thread to a consumer through a bounded queue.

Replay's Parquet prefetch and the venue's read-ahead both read on a thread of their own, a few items ahead of the
loop that uses them. The bound keeps memory flat; the stop event lets the consumer go away (a client left, a
replay was interrupted) without leaving the producer blocked forever on a full queue.
"""

from __future__ import annotations

import queue
import threading
from typing import Any


def put_until_stopped(into: queue.Queue[Any], item: Any, stop: threading.Event, poll_s: float = 0.1) -> bool:
    """Put ``item`` into the bounded queue, waiting for room, unless ``stop`` is set first (then False)."""
    while not stop.is_set():
        try:
            into.put(item, timeout=poll_s)
            return True
        except queue.Full:
            continue
    return False
