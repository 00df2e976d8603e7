"""Replacing a local partition's files by one file, atomically for readers (what ``nova compact`` needs).

Why a directory exchange: a reader lists a partition and then opens its files; if the merged file appeared
before the old ones disappeared (or after), a reader could count every row twice (or not at all). So the new
file is written into a staging copy of the partition's folder (``{root}/.nova-compact/...``, hidden from every
table), and the staging folder and the partition folder trade places in one Linux ``renameat2(RENAME_EXCHANGE)``
call: a listing sees all old files or the one new file. The old files, now in the staging path, are deleted
last. A crash at any point leaves a consistent dataset plus, at worst, a staging folder that the next run
removes. Elsewhere (no renameat2) the exchange is three renames in quick succession, a tiny window.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nova.core.dataset import Dataset, Partition

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def staging_root(dataset: Dataset) -> Path:
    from nova.core.dataset import STAGING

    return Path(dataset.root) / STAGING


def clear_staging(dataset: Dataset) -> None:
    """Remove what an interrupted replacement left (its copies were never part of the dataset)."""
    shutil.rmtree(staging_root(dataset), ignore_errors=True)


def exchange_paths(a: Path, b: Path) -> None:
    """Swap two directories atomically (Linux renameat2); elsewhere, two renames in quick succession."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem cannot exchange
            raise OSError(err, os.strerror(err), str(a))
    parked = b.with_name(f".{b.name}.parked")  # hidden, so hive readers never list it
    os.rename(b, parked)
    os.rename(a, b)
    os.rename(parked, a)


def replace_files(dataset: Dataset, partition: Partition, old: list[str],
                  write_new: Callable[[str], int]) -> int | None:
    """See ``Dataset.replace_files``."""
    from nova.core.dataset import is_hidden, new_file_name

    folder = Path(partition.path)
    staging = staging_root(dataset) / folder.relative_to(dataset.root)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    first = dataset.stats(old[0]).first_ns if old else None
    target = staging / new_file_name(first or 0)
    rows = write_new(str(target))

    def unchanged() -> bool:
        now = sorted(str(p) for p in folder.iterdir() if p.suffix == ".parquet" and not is_hidden(p.name))
        return now == sorted(old) and not any(is_hidden(p.name) for p in folder.iterdir())

    if not unchanged():
        shutil.rmtree(staging)  # a recorder finished a file here meanwhile (just after midnight): next time
        return None
    with open(target, "rb") as fh:
        os.fsync(fh.fileno())
    exchange_paths(staging, folder)
    shutil.rmtree(staging)  # now holds the old files
    return rows
