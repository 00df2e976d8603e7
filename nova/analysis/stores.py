"""DuckDB on an object-store root: the dataset's own pyarrow filesystem, registered with DuckDB through fsspec.

Why not DuckDB's httpfs extension: it is downloaded from DuckDB's extension repository at first use (no such
network here, and none on many research machines), and PyPI's ``duckdb-extension-httpfs`` only exists for DuckDB
1.4 and 1.5, while the project allows up to 2.0. Why not Arrow datasets registered as tables: they would
change the views (partition columns as strings, no ``read_parquet`` options) and the macros' pruning. A
registered fsspec filesystem keeps every view and macro exactly as on a local root (``read_parquet`` over
``s3://`` paths) and reads through the very S3 client, credentials and endpoint the rest of Nova uses
(nova.core.stores); BENCHMARKS.md ("DuckDB on an object store") has the figures against the other two ways.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import duckdb
from fsspec.implementations.arrow import ArrowFSWrapper

from nova.core.dataset import Dataset


class _StoreFS(ArrowFSWrapper):
    """fsspec over the dataset's pyarrow S3 filesystem, under the scheme DuckDB sees in the views' paths.

    Why it knows the files: DuckDB asks about every file several times (glob, exists, size, modification time,
    and pyarrow's open asks the size once more), one request each, which cost more than the reads of a small
    query. The dataset has just listed them, with their sizes, and a visible file is never rewritten in place
    (nova.core.dataset: files appear whole under new names), so the listing answers for the session (opening a
    file still asks its size once: pyarrow's Python API takes no size with a path)."""

    protocol = "s3"
    cachable = False  # one instance per session, holding that session's listing

    def __init__(self, fs: Any, sizes: dict[str, int], **kwargs: Any) -> None:
        super().__init__(fs, **kwargs)
        self.sizes = sizes
        self.moment = dt.datetime.now(dt.UTC)

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list | tuple):
            return [cls._strip_protocol(p) for p in path]
        return str(path).split("://", 1)[-1].rstrip("/")

    def info(self, path: Any, **kwargs: Any) -> dict[str, Any]:
        key = self._strip_protocol(path)
        if key in self.sizes:
            return {"name": key, "size": self.sizes[key], "type": "file", "mtime": self.moment}
        return super().info(path, **kwargs)

    def modified(self, path: Any) -> dt.datetime:
        return self.moment if self._strip_protocol(path) in self.sizes else super().modified(path)


def register(con: duckdb.DuckDBPyConnection, data: Dataset, files: Iterable[tuple[str, int]] = ()) -> None:
    """Let ``con`` read ``data``'s ``s3://`` paths (nothing to do for a local root); ``files``: the (path, size)
    the session will read, as the dataset listed them."""
    if not data.local:
        con.register_filesystem(_StoreFS(data.fs, dict(files)))
