"""The local spool of a recorder writing to an object store: where its journals and finished files wait.

Why a spool: an object store has no append and no rename, so a file cannot be journalled in place nor made
visible by moving it (DESIGN §6). The recorder therefore writes into a local dataset, the spool, with exactly
the layout and the crash safety of a local root (journals, atomic Parquet files, ``Dataset.recover``), and each
finished file is then uploaded under its final name: the object appears only when the upload completes. The
spool of a root is ``{spool base}/{bucket}/{prefix}``, so one base serves any number of roots.

What is spelled here, once: the spool's place (``spool_dir``, ``default_spool_base``), what waits in it
(``pending``), the idempotent upload of one file (``upload``: an object of the same name and size means it is
already there, so the local copy is just deleted; nothing is uploaded twice), and the *marks* the spool keeps
of what it has uploaded (``.nova-uploaded.json`` per table, market and symbol: the last receive time, the last
book message number and each stream's last ledger event). The marks let a recorder restarting while the store
is down continue its message numbers and ledger a killed run's stop (``max_msg``, ``last_event``,
``last_row_ns`` combine the store, the spool's files and the marks).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nova.core.contract import EXCHANGE
from nova.core.dataset import Dataset, is_hidden
from nova.core.errors import NovaError

T = TypeVar("T")
MARKS_NAME = ".nova-uploaded.json"
_RANK = {"start": 0, "stop": 2}  # as Dataset.last_event orders the events of one instant
_CHUNK = 8 << 20


def default_spool_base() -> Path:
    """The user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) under ``nova/spool``; ``./nova-spool``
    when there is no home to put it in."""
    cache = os.environ.get("XDG_CACHE_HOME")
    if cache:
        return Path(cache) / "nova" / "spool"
    try:
        return Path.home() / ".cache" / "nova" / "spool"
    except RuntimeError:
        return Path("nova-spool").resolve()


def spool_dir(base: str | Path, root: str) -> Path:
    """The spool of an object-store ``root`` under ``base``: ``{base}/{bucket}/{prefix}``."""
    parsed = urlparse(root)
    return Path(base).expanduser().resolve() / parsed.netloc / parsed.path.strip("/")


class Spool:
    """An object-store root's local spool: a local dataset, uploaded file by file into the store."""

    def __init__(self, store: Dataset, base: str | Path | None = None) -> None:
        if store.local:
            raise NovaError(f"{store.text} is a local folder: it is recorded into directly, without a spool")
        self.store = store
        self.path = spool_dir(base if base is not None else default_spool_base(), store.text)
        self.local = Dataset(self.path)
        self.offline = False  # set when the store could not be reached at start: do not wait on it for history

    def __repr__(self) -> str:
        return f"Spool({self.store.text!r} via {str(self.path)!r})"

    # ---- what waits -------------------------------------------------------------------------------------------
    def pending(self, streams: Collection[tuple[str, str]] | None = None) -> list[tuple[str, int]]:
        """(path, size) of every finished file waiting to be uploaded, oldest first (names sort by start), so
        that each stream's files reach the store in order; only those of ``streams`` ((market, symbol dashed)
        pairs) when given, since recorders of other streams may share the spool and upload their own."""
        if not self.path.is_dir():
            return []
        found = []
        for directory, _, names in os.walk(self.path):
            if streams is not None and _stream_of(directory) not in streams:
                continue
            for name in names:
                if name.endswith(".parquet") and not is_hidden(name):
                    path = os.path.join(directory, name)
                    with contextlib.suppress(OSError):
                        found.append((path, os.path.getsize(path)))
        return sorted(found, key=lambda item: (os.path.basename(item[0]), item[0]))

    def destination(self, path: str) -> str:
        """The object a spool file becomes: the same relative path under the store's root."""
        relative = os.path.relpath(path, self.path).replace(os.sep, "/")
        return f"{self.store.root.rstrip('/')}/{relative}"

    # ---- uploading --------------------------------------------------------------------------------------------
    def upload(self, path: str) -> bool:
        """Upload one finished spool file under its final name, note it in the marks and delete it locally.
        Returns False when the store already held it (same name and size: an earlier upload completed but was
        not followed by the delete). Raises OSError/ArrowException when the store fails; the file then stays
        in the spool and a retry is safe (an object appears only when its upload completes)."""
        size = os.path.getsize(path)
        target = self.destination(path)
        fs = self.store.fs
        info = fs.get_file_info(target)
        present = info.type == pafs.FileType.File and info.size == size
        if not present:
            with open(path, "rb") as source:
                out = fs.open_output_stream(target)
                try:
                    while chunk := source.read(_CHUNK):
                        out.write(chunk)
                finally:
                    out.close()
            info = fs.get_file_info(target)
            if info.type != pafs.FileType.File or info.size != size:  # never leave a short object behind
                with contextlib.suppress(OSError, pa.ArrowException):
                    fs.delete_file(target)
                raise OSError(f"the store holds {info.size} bytes of {target} after uploading {size}")
        self._note(path)
        os.unlink(path)
        with contextlib.suppress(OSError):  # an emptied date folder (the marks live one level up)
            os.rmdir(os.path.dirname(path))
        return not present

    # ---- marks of what was uploaded ----------------------------------------------------------------------------
    def _marks_path(self, stream_dir: str) -> str:
        return os.path.join(stream_dir, MARKS_NAME)

    def _read_marks(self, stream_dir: str) -> dict:
        try:
            with open(self._marks_path(stream_dir)) as handle:
                marks = json.load(handle)
            return marks if isinstance(marks, dict) else {}
        except (OSError, ValueError):
            return {}

    def _note(self, path: str) -> None:
        """Fold a file about to leave the spool into its stream's marks (written atomically)."""
        stream_dir = os.path.dirname(os.path.dirname(path))  # above date=...
        table = os.path.relpath(path, self.path).split(os.sep, 1)[0]
        marks = self._read_marks(stream_dir)
        stats = self.local.stats(path)
        if stats.last_ns is not None:
            marks["last_ns"] = max(int(marks.get("last_ns", 0)), stats.last_ns)
        if table == "book":
            marks["max_msg"] = max(int(marks.get("max_msg", 0)), _max_msg(path))
        if table == "events":
            last = marks.setdefault("events", {})
            content = pq.read_table(path, columns=["ts_recv", "stream", "kind"])
            ts = content.column("ts_recv").cast(pa.int64()).to_pylist()
            for t, stream, kind in zip(ts, content.column("stream").to_pylist(), content.column("kind").to_pylist(),
                                       strict=True):
                held = last.get(stream)
                if held is None or (t, _RANK.get(kind, 1)) >= (held[0], _RANK.get(held[1], 1)):
                    last[stream] = [t, str(kind)]
        temp = f"{self._marks_path(stream_dir)}.tmp"
        with open(temp, "w") as handle:
            json.dump(marks, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self._marks_path(stream_dir))

    def _marks(self, table: str, market: str, symbol: str) -> dict:
        return self._read_marks(str(self.path / table / f"exchange={EXCHANGE}" / f"market={market}" /
                                    f"symbol={symbol}"))

    def has_history(self) -> bool:
        """Whether this spool has recorded into its root before (marks of uploads, or files still waiting), so
        that it knows where each stream ended even while the store cannot be asked."""
        if any(True for _ in self._all_marks()):
            return True
        return self.path.is_dir() and any(p.suffix in (".parquet", ".arrows") for p in self.path.rglob("*"))

    def _all_marks(self) -> Iterator[str]:
        if self.path.is_dir():
            yield from (str(p) for p in self.path.glob(f"*/exchange=*/market=*/symbol=*/{MARKS_NAME}"))

    # ---- where each stream ended: the store, the spool's files and the marks together ----------------------------
    def _quiet(self, read: Callable[[], T], default: T) -> T:
        """A read of the store, which may fail while it is down: the spool's marks stand in for it then."""
        if self.offline:
            return default
        try:
            return read()
        except (OSError, pa.ArrowException):
            return default

    def max_msg(self, market: str, symbol: str) -> int:
        return max(self._quiet(lambda: self.store.max_msg(market, symbol), 0), self.local.max_msg(market, symbol),
                   int(self._marks("book", market, symbol).get("max_msg", 0)))

    def last_row_ns(self, table: str, market: str, symbol: str) -> int | None:
        found = [self._quiet(lambda: self.store.last_row_ns(table, market, symbol), None),
                 self.local.last_row_ns(table, market, symbol), self._marks(table, market, symbol).get("last_ns")]
        values = [int(v) for v in found if v is not None]
        return max(values) if values else None

    def last_event(self, market: str, symbol: str, stream: str) -> tuple[int, str] | None:
        held = self._marks("events", market, symbol).get("events", {}).get(stream)
        found = [self._quiet(lambda: self.store.last_event(market, symbol, stream), None),
                 self.local.last_event(market, symbol, stream), (int(held[0]), str(held[1])) if held else None]
        events = [e for e in found if e is not None]
        return max(events, key=lambda e: (e[0], _RANK.get(e[1], 1))) if events else None


def _stream_of(directory: str) -> tuple[str, str] | None:
    """(market, symbol) of a spool folder below the symbol level, from its hive names."""
    values = dict(part.split("=", 1) for part in Path(directory).parts if "=" in part)
    return (values["market"], values["symbol"]) if "market" in values and "symbol" in values else None


def _max_msg(path: str) -> int:
    meta = pq.read_metadata(path)
    col = meta.schema.to_arrow_schema().get_field_index("msg")
    best = 0
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(col).statistics
        if stats is not None and stats.has_min_max:
            best = max(best, int(stats.max))
    return best


