"""Replacing a partition's files by one merged file on an object store, atomically for Nova's readers.

Why a manifest: an object store has no rename, let alone a directory exchange (nova.core.local_swap), so no
single operation can make the old files disappear and the merged one appear. What it does have is an atomic
PUT: an object appears whole or not at all. So a partition being compacted holds one small manifest object
(``COMPACT_MANIFEST``, a hidden name) that says "the file F replaces the files O1..On", and every Nova reader
lists partitions through ``Dataset.files``, which applies it: while F does not exist the manifest changes
nothing (the old files are served); once F exists the old files are left out, whether or not they are deleted
yet. F's appearance (one completed upload) is therefore the one instant at which a reader switches from all the
old files to the merged one.

The steps, in a crash-safe order (``STEPS``; a crash between any two leaves a state readers see consistently
and that ``settle`` finishes: the next ``nova compact`` settles every manifest before it starts):
1. ``manifest``: PUT the manifest (F not there yet: readers still see the old files);
2. ``merged``: upload F under its final, visible name (readers now see F instead of the old files);
3. ``old-deleted``: delete the old files (readers already ignore them);
4. ``settled``: delete the manifest (nothing left to ignore).
A failure before F is complete deletes F (if any) and the manifest: readers never stopped seeing the old files.

Readers list and then read the manifest (two requests): if the manifest vanished in between (the compaction
settled), the listing is taken again, so a reader never applies a stale listing without its manifest.

What a reader that globs the bucket itself (plain DuckDB ``read_parquet('s3://.../*.parquet')``, Spark) may see:
it does not know the manifest, so between steps 2 and 3 (the time one batch delete takes) it may see the old
files and the merged one together, i.e. every row of that partition twice. Compact closed days at quiet hours,
or read through Nova (``nova sql``, ``nova.analysis.sql.connect``), which never does.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs

if TYPE_CHECKING:
    from nova.core.dataset import Dataset, Partition

STEPS = ("manifest", "merged", "old-deleted", "settled")
step_hook: Callable[[str], None] | None = None
"""Called with each step's name right after it is done: the tests' way to stop a compaction at any point."""
_RELISTS = 20


def _step(name: str) -> None:
    if step_hook is not None:
        step_hook(name)


def manifest_path(partition: Partition) -> str:
    from nova.core.dataset import COMPACT_MANIFEST

    return f"{partition.path}/{COMPACT_MANIFEST}"


def _read_manifest(fs: pafs.FileSystem, path: str) -> dict | None:
    """The manifest at ``path``, or None when it is not there (any more)."""
    try:
        with fs.open_input_stream(path) as source:
            data = json.loads(source.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("by"), str) or not isinstance(data.get("replaces"), list):
        raise OSError(f"the compaction manifest {path} is damaged; delete it (the old files are intact)")
    return data


def visible(dataset: Dataset, partition: Partition) -> list[pafs.FileInfo]:
    """The partition's listing with a compaction's manifest applied: the files a merged file replaces are left
    out once the merged file exists."""
    from nova.core.dataset import COMPACT_MANIFEST

    for _ in range(_RELISTS):
        infos = [i for i in dataset._children(partition.path) if i.type == pafs.FileType.File]
        names = {i.base_name for i in infos}
        if COMPACT_MANIFEST not in names:
            return infos
        manifest = _read_manifest(dataset.fs, manifest_path(partition))
        if manifest is None:
            continue  # settled between our listing and our read: list again
        if manifest["by"] not in names:
            return infos  # the merged file is not complete yet: the old files are the partition
        replaced = set(manifest["replaces"])
        return [i for i in infos if i.base_name not in replaced]
    raise OSError(f"the partition {partition.path} kept changing while it was listed; try again")


def _write_manifest(dataset: Dataset, partition: Partition, old: list[str], final: str) -> None:
    body = json.dumps({"by": final, "replaces": [p.rsplit("/", 1)[-1] for p in old]}).encode("utf-8")
    with dataset.fs.open_output_stream(manifest_path(partition)) as out:  # one PUT: whole or not at all
        out.write(body)


def _delete(fs: pafs.FileSystem, paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(path)


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def replace_files(dataset: Dataset, partition: Partition, old: list[str],
                  write_new: Callable[[str], int]) -> int | None:
    """See ``Dataset.replace_files``. A file that appears in the partition meanwhile (a recorder's) stays: the
    manifest replaces exactly ``old``."""
    from nova.core.dataset import new_file_name

    settle(dataset, partition)  # an earlier run's manifest: finish it first
    if sorted(p for p, _ in dataset.files(partition)) != sorted(old):
        return None
    first = dataset.stats(old[0]).first_ns if old else None
    final = f"{partition.path}/{new_file_name(first or 0)}"
    _write_manifest(dataset, partition, old, final.rsplit("/", 1)[-1])
    _step("manifest")
    try:
        rows = write_new(final)
    except Exception:  # the merged file did not come out right: readers keep the old files
        _delete(dataset.fs, [final, manifest_path(partition)])
        raise
    _step("merged")
    settle(dataset, partition)
    return rows


def settle(dataset: Dataset, partition: Partition) -> None:
    """Finish an interrupted replacement in the partition: with its merged file complete, delete the files it
    replaces and then the manifest; without, delete the manifest (the old files never stopped being served)."""
    fs = dataset.fs
    path = manifest_path(partition)
    try:
        manifest = _read_manifest(fs, path)
    except (OSError, pa.ArrowException):
        return  # a damaged manifest is left for a person: readers ignore it while its merged file is absent
    if manifest is None:
        return
    final = f"{partition.path}/{manifest['by']}"
    if _exists(fs, final):
        _delete(fs, [f"{partition.path}/{name}" for name in manifest["replaces"] if name != manifest["by"]])
        _step("old-deleted")
    _delete(fs, [path])
    _step("settled")


def settle_all(dataset: Dataset) -> None:
    """Settle every manifest under the root (what ``nova compact`` does before and after its work)."""
    from nova.core.dataset import COMPACT_MANIFEST, Partition

    selector = pafs.FileSelector(dataset.root, allow_not_found=True, recursive=True)
    try:
        infos = dataset.fs.get_file_info(selector)
    except (OSError, pa.ArrowException):
        return
    for info in infos:
        if info.type == pafs.FileType.File and info.base_name == COMPACT_MANIFEST:
            folder = info.path.rsplit("/", 1)[0]
            settle(dataset, Partition("", "", "", "", "", folder))
