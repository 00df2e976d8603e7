"""Claims: which recorder writes which stream of a data root, so that two never record the same stream.

A claim covers one (market, symbol) of a root (every table of it: book, bbo, trades, the ledger ...). Different
symbols or markets of one root are recorded side by side by any number of recorders, on one machine or many,
without talking to each other; a second recorder of a claimed stream is refused. ``nova recover`` claims a
stream before it finishes its leftovers, so it never touches what a live recorder is writing.

On a local root a claim is an flock on a small file (``.nova-claims/{market}={SYMBOL}.lock``). Why flock on a
file that is removed at a clean stop: the kernel drops the lock when its holder dies, so a ``kill -9`` never
leaves a stream claimed, and a clean stop leaves no trace. Removing a lock file races with a process that opened
it just before: that process may lock the removed inode while a third creates and locks a new file. So a lock
counts only while the path still names the inode that was locked (checked after locking, retried otherwise).

An object store has no locks, so there a claim is an object (``.nova-claims/{market}={SYMBOL}.json``) naming
its recorder, with a heartbeat time the holder rewrites every ``heartbeat_s``; a claim whose heartbeat is older
than ``stale_s`` belongs to a recorder that died and may be taken over. The race window, honestly: a claim is
written, then read back after ``settle_s``; two recorders that both found the stream free write in turn and the
read-backs see the later write, so one of them backs off. Only a recorder whose write lands more than
``settle_s`` after its own read (a stalled machine) can slip past that check; the holder's next heartbeat reads
the claim first and finds it replaced, and then the recorder that lost it stops (``on_lost``): at most about
``heartbeat_s`` of that stream can be recorded twice, into files of different names, never mixed in one file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO

import pyarrow as pa
import pyarrow.fs as pafs

CLAIMS_DIR = ".nova-claims"
HEARTBEAT_S = 5.0
STALE_S = 30.0
SETTLE_S = 1.0


def claim_stem(market: str, symbol: str) -> str:
    """The name (without suffix) of the claim of a market and a symbol (dashed)."""
    return f"{market}={symbol}"


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as its claim says."""

    recorder_id: str
    host: str
    pid: int


class StreamBusy(Exception):
    """Another live recorder holds the claim of a stream."""

    def __init__(self, market: str, symbol: str, holder: Holder | None) -> None:
        who = f" (recorder {holder.recorder_id} on {holder.host}, pid {holder.pid})" if holder else ""
        super().__init__(f"{market} {symbol}{who}")
        self.market, self.symbol, self.holder = market, symbol, holder


def _holder_text(recorder_id: str) -> str:
    return json.dumps({"recorder_id": recorder_id, "host": socket.gethostname(), "pid": os.getpid()})


def _holder_of(text: str) -> Holder | None:
    try:
        data = json.loads(text)
        return Holder(str(data["recorder_id"]), str(data["host"]), int(data["pid"]))
    except (ValueError, KeyError, TypeError):
        return None


# ---- local: flock ----------------------------------------------------------------------------------------------------

class FileLock:
    """An exclusive, non-blocking flock on a file, held until ``release`` (which removes the file)."""

    def __init__(self, path: str, content: str = "") -> None:
        self.path = path
        self.content = content
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise BlockingIOError (OSError when the file cannot be made, e.g. read-only)."""
        for _ in range(100):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                handle = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the lock
            except FileNotFoundError:
                continue  # the last holder removed the (empty) folder between our makedirs and open
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                handle.close()
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise BlockingIOError(exc.errno, "locked", self.path) from None
                raise
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                handle.truncate(0)
                handle.write(self.content)
                handle.flush()
                self._handle = handle
                return
            handle.close()  # the holder removed it between our open and our lock: take the new one
        raise BlockingIOError(errno.EAGAIN, "locked", self.path)

    def release(self) -> None:
        """Remove the lock file, then let go of the lock."""
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self._handle.close()
        self._handle = None
        with contextlib.suppress(OSError):  # the last claim out leaves no trace (fails while others hold one)
            os.rmdir(os.path.dirname(self.path))


def _local_holder(path: str) -> tuple[bool, Holder | None]:
    """(held by a live process, who) of a local claim file; works on a read-only root."""
    try:
        handle = open(path)  # noqa: SIM115
    except OSError:
        return False, None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True, _holder_of(handle.read())
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False, None


# ---- the claims of one recorder (or one nova recover) -----------------------------------------------------------

class Claims:
    """The claims one process holds on a root, taken together by ``acquire`` and given back by ``release``."""

    def __init__(self, fs: pafs.FileSystem, root: str, recorder_id: str, *, heartbeat_s: float = HEARTBEAT_S,
                 stale_s: float = STALE_S, settle_s: float = SETTLE_S,
                 on_lost: Callable[[str, str, Holder | None], None] | None = None) -> None:
        self.fs, self.root = fs, root.rstrip("/")
        self.local = isinstance(fs, pafs.LocalFileSystem)
        self.recorder_id = recorder_id
        self.heartbeat_s, self.stale_s, self.settle_s = heartbeat_s, stale_s, settle_s
        self.on_lost = on_lost
        self.token = secrets.token_hex(8)
        self.held: dict[tuple[str, str], FileLock | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path(self, market: str, symbol: str) -> str:
        suffix = ".lock" if self.local else ".json"
        return f"{self.root}/{CLAIMS_DIR}/{claim_stem(market, symbol)}{suffix}"

    # ---- taking ------------------------------------------------------------------------------------------------
    def acquire(self, streams: Iterable[tuple[str, str]]) -> None:
        """Claim every (market, symbol) or none: StreamBusy names the first one another live recorder holds
        (OSError/ArrowException when the root cannot hold claims)."""
        wanted = [s for s in dict.fromkeys(streams) if s not in self.held]
        try:
            if self.local:
                for market, symbol in wanted:
                    lock = FileLock(self.path(market, symbol), _holder_text(self.recorder_id))
                    try:
                        lock.acquire()
                    except BlockingIOError:
                        raise StreamBusy(market, symbol, _local_holder(lock.path)[1]) from None
                    self.held[(market, symbol)] = lock
            else:
                self._acquire_objects(wanted)
        except BaseException:
            self.release(wanted)
            raise
        if not self.local and self.held and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="nova-claims", daemon=True)
            self._thread.start()

    def try_acquire(self, market: str, symbol: str) -> bool:
        """Claim one stream if no live recorder holds it (``nova recover``'s way: skip what is being recorded)."""
        try:
            self.acquire([(market, symbol)])
        except StreamBusy:
            return False
        return True

    def _acquire_objects(self, wanted: list[tuple[str, str]]) -> None:
        for market, symbol in wanted:
            holder = self._live_object_holder(market, symbol)
            if holder is not None:
                raise StreamBusy(market, symbol, holder[0])
        for market, symbol in wanted:
            self._write_object(market, symbol)
            self.held[(market, symbol)] = None
        if wanted:
            time.sleep(self.settle_s)  # then read back: a rival that wrote meanwhile has overwritten ours
        for market, symbol in wanted:
            found = self._read_object(market, symbol)
            if found is None or found.get("token") != self.token:
                del self.held[(market, symbol)]
                raise StreamBusy(market, symbol, _holder_of(json.dumps(found)) if found else None)

    # ---- objects ---------------------------------------------------------------------------------------------------
    def _read_object(self, market: str, symbol: str) -> dict | None:
        try:
            with self.fs.open_input_stream(self.path(market, symbol)) as source:
                data = json.loads(source.read())
            return data if isinstance(data, dict) else None
        except FileNotFoundError:
            return None
        except (OSError, pa.ArrowException, ValueError):
            return None

    def _write_object(self, market: str, symbol: str) -> None:
        body = json.loads(_holder_text(self.recorder_id))
        body.update(token=self.token, heartbeat_ns=time.time_ns())
        with self.fs.open_output_stream(self.path(market, symbol)) as out:
            out.write(json.dumps(body).encode())

    def _live_object_holder(self, market: str, symbol: str) -> tuple[Holder | None, dict] | None:
        found = self._read_object(market, symbol)
        if found is None or found.get("token") == self.token:
            return None
        age_s = (time.time_ns() - int(found.get("heartbeat_ns", 0))) / 1e9
        return (_holder_of(json.dumps(found)), found) if age_s < self.stale_s else None

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.beat()

    def beat(self) -> None:
        """Refresh every claim object; one found replaced by another recorder is lost (``on_lost``)."""
        for market, symbol in list(self.held):
            try:
                found = self._read_object(market, symbol)
                if found is not None and found.get("token") != self.token:
                    self.held.pop((market, symbol), None)
                    if self.on_lost is not None:
                        self.on_lost(market, symbol, _holder_of(json.dumps(found)))
                    continue
                self._write_object(market, symbol)
            except (OSError, pa.ArrowException):
                continue  # the store is unreachable: try again at the next beat

    # ---- giving back -----------------------------------------------------------------------------------------------
    def release(self, streams: Iterable[tuple[str, str]] | None = None) -> None:
        """Give back some claims (all by default); a clean stop leaves no claim behind."""
        for key in list(self.held if streams is None else streams):
            if key not in self.held:
                continue
            lock = self.held.pop(key)
            if lock is not None:
                lock.release()
            else:
                found = self._read_object(*key)
                if found is not None and found.get("token") == self.token:
                    with contextlib.suppress(OSError, pa.ArrowException):
                        self.fs.delete_file(self.path(*key))
        if not self.held and self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=self.heartbeat_s + 5)
            self._thread = None
            self._stop = threading.Event()


def holder(fs: pafs.FileSystem, root: str, market: str, symbol: str, stale_s: float = STALE_S) -> Holder | None:
    """The live recorder claiming a stream, or None; works on a read-only root (never writes)."""
    probe = Claims(fs, root, "-", stale_s=stale_s)
    if probe.local:
        live, who = _local_holder(probe.path(market, symbol))
        return (who or Holder("?", "?", 0)) if live else None
    found = probe._live_object_holder(market, symbol)
    return (found[0] or Holder("?", "?", 0)) if found else None


def claimed_streams(fs: pafs.FileSystem, root: str, stale_s: float = STALE_S) -> list[tuple[str, str]]:
    """Every (market, symbol) a live recorder claims on the root."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root.rstrip('/')}/{CLAIMS_DIR}", allow_not_found=True))
    except (OSError, pa.ArrowException):
        return []
    out = []
    for info in infos:
        stem = info.base_name.rsplit(".", 1)[0]
        if info.type == pafs.FileType.File and "=" in stem:
            market, symbol = stem.split("=", 1)
            if holder(fs, root, market, symbol, stale_s) is not None:
                out.append((market, symbol))
    return sorted(out)
