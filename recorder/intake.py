"""Back-pressure: how much the recorder holds between receiving a message and having it in its journal.

Why: the event loop receives while the writer's worker converts and journals the previous flush. When the
feed outruns the worker (a burst, a slow disk, ``nova venue --speed max``), an unbounded buffer grew to
1.1-1.6 GB. Dropping is not an option (nothing received is ever lost), so the recorder reads the socket more
slowly instead: when what it holds reaches ``bound`` bytes, every WebSocket connection of the recorder stops
reading until the worker has written what it was given. The kernel's and aiohttp's buffers then fill and TCP
tells the sender to wait; at Binance's real rates this never triggers.

What is counted: the frame text of every diff-depth message and snapshot (what the worker parses), and a
nominal ``ROW_BYTES`` per row of the other streamed tables; received and not yet taken by a flush
(``pending``) plus taken and not yet written (``writing``). The bound holds up to what one connection has
already read when the gate closes: ccxt drains aiohttp's buffer (64 KiB past its limit plus the frames of one
socket read) before it asks again, so ``peak <= bound + OVERSHOOT`` per connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

ROW_BYTES = 128  # what one row of bbo/trades/funding/liquidations holds while buffered (a small Struct)
OVERSHOOT = 1 << 20  # what one connection may still hand over once the gate is closed (see above)


class Intake:
    """The bytes the recorder holds for the writer, and the receive loops waiting for room."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.pending = 0  # received, still in the loop's buffers (sessions add to it as messages arrive)
        self.writing = 0  # taken by the flush being written
        self.peak = 0  # the most held at once (measured when a receive loop asks to read on)
        self.pauses = 0  # how often a connection was held back
        self.wake = asyncio.Event()  # set when a flush should not wait for its timer
        self._paused: list[Callable[[], None]] = []
        self.released_ns = 0  # when held connections last read on (the stall watchdog's silence restarts there)

    @property
    def holding(self) -> bool:
        """Connections are held back now: their silence is the recorder's, not the exchange's."""
        return bool(self._paused)

    def gate(self, receive_loop: Callable[[], None]) -> None:
        """Run a connection's next read now, or once the writer has made room (ccxt calls this per message)."""
        held = self.pending + self.writing
        if held > self.peak:
            self.peak = held
        if self.pending >= self.bound >> 1:
            self.wake.set()  # half the bound is waiting: hand it to the worker without waiting for the timer
        if held >= self.bound:
            self.pauses += 1
            self._paused.append(receive_loop)
        else:
            receive_loop()

    def taken(self, nbytes: int) -> None:
        """A flush took ``nbytes`` of what is pending, to write it."""
        self.pending -= nbytes
        self.writing += nbytes
        if self.pending + self.writing > self.peak:
            self.peak = self.pending + self.writing

    def written(self) -> None:
        """The flush in flight is written (or failed): its bytes are free, and paused connections ask again
        (each is held back again at its next message if the bound is still reached: diffs held for a
        snapshot stay pending until it lands, and must not stop the other connections for good)."""
        self.writing = 0
        self.release()

    def drop(self) -> None:
        """Stopping: the paused connections are about to be closed; they are not asked to read again."""
        self._paused = []

    def release(self) -> None:
        """Every paused connection reads on."""
        if self._paused:
            paused, self._paused = self._paused, []
            self.released_ns = time.time_ns()
            loop = asyncio.get_running_loop()
            for receive_loop in paused:
                loop.call_soon(receive_loop)
