"""Object-store roots (``s3://bucket/prefix``) give the same answers as the local copy of the same dataset.

A real S3-compatible server (moto's server mode on 127.0.0.1, tests/s3server.py) holds a copy of a crafted dataset
(two days across UTC midnight, tests.helpers.write_midnight_dataset); replay, sql (views and macros), check, ls
and compact answer on it exactly as on the local folder, as a user runs them (``nova ... --data s3://...`` and
``NOVA_DATA``, the AWS variables in the environment). Compaction on a store is stopped at every step and a reader
sees exactly the old files or the merged one; bad stores are one sentence each, with nothing written.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from nova.analysis.compact import compact
from nova.analysis.sql import run as run_sql
from nova.core import object_swap
from nova.core.dataset import COMPACT_MANIFEST, Dataset
from replay import Replay
from tests.helpers import AFTER, BEFORE, MIDNIGHT, nova, ok, one_sentence, ts_sql, write_midnight_dataset
from tests.oracle import read_table
from tests.s3server import KEY_ID, SECRET, S3Server, restore_env, set_env

TODAY = "2026-12-31"  # a "today" after the dataset's days, so that compaction treats them as finished


def split_files(root: Path, parts: int = 3) -> None:
    """Cut every file into ``parts`` files, at message boundaries, named so that they sort in order: the
    rotated files of a recording, which compaction merges."""
    for path in sorted(root.rglob("*.parquet")):
        table = pq.read_table(path, partitioning=None)
        cuts = [table.num_rows * k // parts for k in range(1, parts)]
        if "msg" in table.column_names:  # never split a message
            msg = table.column("msg").to_pylist()
            cuts = [next((i for i in range(c, len(msg)) if i == 0 or msg[i] != msg[i - 1]), len(msg)) for c in cuts]
        bounds = [0, *sorted(set(cuts)), table.num_rows]
        pieces = [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]
        if len(pieces) < 2:
            continue
        for i, (lo, hi) in enumerate(pieces):
            pq.write_table(table.slice(lo, hi - lo), path.with_name(f"{path.stem}-{i}.parquet"))
        path.unlink()


@pytest.fixture(scope="module")
def local_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("object-store") / "data"
    write_midnight_dataset(root)
    split_files(root)
    return root


def upload(server: S3Server, local: Path) -> str:
    """A fresh bucket holding a copy of ``local``; returns its root ``s3://BUCKET/data``."""
    bucket = server.new_bucket()
    pafs.copy_files(str(local), f"{bucket}/data", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=server.filesystem())
    return f"s3://{bucket}/data"


@pytest.fixture(scope="module")
def store(s3_server: S3Server, local_copy: Path) -> Iterator[str]:
    """The dataset's copy in a bucket (read-only tests share it), this process's AWS variables pointing there."""
    old = set_env(s3_server)
    try:
        yield upload(s3_server, local_copy)
    finally:
        restore_env(old)


@pytest.fixture
def own_store(s3_server: S3Server, local_copy: Path, store: str) -> str:
    """A copy of its own, for a test that writes (compact, replay's spread table)."""
    return upload(s3_server, local_copy)


def objects(server: S3Server, root: str, env: dict[str, str] | None = None) -> dict[str, int]:
    """Every object under an ``s3://`` root, with its size (read with the keys of ``env``, if given)."""
    fs = server.filesystem() if env is None else pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{server.port}", scheme="http", access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"], region="us-east-1")
    selector = pafs.FileSelector(root.removeprefix("s3://"), recursive=True, allow_not_found=True)
    return {i.path: i.size for i in fs.get_file_info(selector) if i.type == pafs.FileType.File}


def without_root(value: object, roots: tuple[str, ...]) -> object:
    """A JSON value with the root's spelling taken out of every string (so two roots' outputs compare)."""
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "ROOT")
        return value
    if isinstance(value, list):
        return [without_root(v, roots) for v in value]
    if isinstance(value, dict):
        return {k: without_root(v, roots) for k, v in value.items()}
    return value


def json_lines(text: str, roots: tuple[str, ...]) -> list:
    return [without_root(json.loads(line), roots) for line in text.splitlines() if line.strip()]


# ---- the same answers --------------------------------------------------------------------------------------------

QUERIES = {
    "counts": "SELECT 'book' AS t, market, date, count(*) AS n FROM book GROUP BY ALL UNION ALL "
              "SELECT 'bbo', market, date, count(*) FROM bbo GROUP BY ALL UNION ALL "
              "SELECT 'funding', market, date, count(*) FROM funding GROUP BY ALL UNION ALL "
              "SELECT 'events', market, date, count(*) FROM events GROUP BY ALL ORDER BY ALL",
    "top_of_book": f"SELECT * FROM top_of_book('perp', 'ETH/USDT', {ts_sql(MIDNIGHT - 15 * 10**9)}, "
                   f"{ts_sql(MIDNIGHT + 15 * 10**9)}, INTERVAL 1 SECOND) ORDER BY ALL",
    "basis": f"SELECT * FROM basis('ETH/USDT', {ts_sql(MIDNIGHT - 15 * 10**9)}, {ts_sql(MIDNIGHT + 15 * 10**9)}, "
             "INTERVAL 500 MILLISECOND) ORDER BY ALL",
    "book_at": f"SELECT * FROM book_at('spot', 'ETH/USDT', {ts_sql(MIDNIGHT + 5 * 10**9)}, 5) ORDER BY ALL",
}


@pytest.mark.parametrize("query", [pytest.param(q, marks=[] if q == "counts" else [pytest.mark.slow]) for q in QUERIES])
def test_sql_views_and_macros_answer_as_on_the_local_copy(local_copy: Path, store: str, query: str) -> None:
    here, there = run_sql(local_copy, QUERIES[query]), run_sql(store, QUERIES[query])
    assert here is not None and there is not None
    assert here.num_rows > 0
    assert there.to_pylist() == here.to_pylist()


@pytest.mark.slow
def test_cli_on_a_store_answers_as_on_the_local_copy(s3_server: S3Server, local_copy: Path, store: str) -> None:
    """ls, check and sql as a user runs them: ``--data s3://...`` and NOVA_DATA, the AWS variables set."""
    roots = (store, str(local_copy), store.removeprefix("s3://"))
    for args in (("ls", "--json"), ("check", "--json")):
        here = json_lines(ok(nova(*args, "--data", str(local_copy))), roots)
        there = json_lines(ok(nova(*args, "--data", store, env=s3_server.env)), roots)
        also = json_lines(ok(nova(*args, env={**s3_server.env, "NOVA_DATA": store})), roots)
        assert here and there == here and also == here
    query = "SELECT market, count(*) AS n FROM book GROUP BY market ORDER BY market"
    here = ok(nova("sql", "--data", str(local_copy), "--format", "csv", query))
    assert ok(nova("sql", "--format", "csv", query, env={**s3_server.env, "NOVA_DATA": store})) == here
    assert here.splitlines()[0] == "market,n"


@pytest.mark.slow
def test_replay_on_a_store_reads_and_writes_as_on_the_local_copy(local_copy: Path, own_store: str,
                                                                  tmp_path: Path) -> None:
    local = tmp_path / "data"
    shutil.copytree(local_copy, local)
    figures = []
    for root in (str(local), own_store):
        summary = Replay(root, "ETH/USDT", BEFORE, AFTER).run(None, write=True)
        figures.append({k: v for k, v in vars(summary).items() if not k.startswith(("wall", "lateness", "output"))})
    assert repr(figures[1]) == repr(figures[0])  # repr: NaN figures compare equal
    query = "SELECT * FROM spread ORDER BY ts"
    here, there = run_sql(local, query), run_sql(own_store, query)
    assert here is not None and there is not None and here.num_rows > 0
    assert there.to_pylist() == here.to_pylist()


@pytest.mark.slow
def test_compact_on_a_store_gives_the_same_dataset(local_copy: Path, own_store: str) -> None:
    before = {q: run_sql(own_store, sql) for q, sql in QUERIES.items()}
    results = compact(own_store, None, TODAY)
    assert any(r.files_before > 1 and r.files_after == 1 for r in results), results
    data = Dataset(own_store)
    for table in ("book", "bbo", "events"):
        for partition in data.partitions(table):
            assert len(data.files(partition)) == 1
            assert data.fs.get_file_info(f"{partition.path}/{COMPACT_MANIFEST}").type != pafs.FileType.File
    for q, sql in QUERIES.items():
        assert run_sql(own_store, sql) == before[q], q
    assert json_lines(ok(nova("check", "--json", "--data", own_store, env=dict(os.environ))), (own_store,))


# ---- compaction stopped at every step ----------------------------------------------------------------------------

class Crash(BaseException):
    """A compaction killed at a step (a BaseException, so that no clean-up of the compaction runs)."""


def rows_seen(data: Dataset, partitions: list) -> tuple[list[list[str]], int]:
    """What a reader sees now: the files of each partition, and the rows of them all."""
    files = [[p for p, _ in data.files(partition)] for partition in partitions]
    return files, sum(data.read_table(p).num_rows for paths in files for p in paths)


@pytest.mark.parametrize("step", [pytest.param(s, marks=[] if s == "merged" else [pytest.mark.slow])
                                  for s in object_swap.STEPS])
def test_compaction_killed_at_any_step_leaves_old_or_new(own_store: str, step: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = Dataset(own_store)
    partition = data.partitions("book", "perp", "ETH-USDT", BEFORE)[0]
    old_files, rows = rows_seen(data, [partition])
    old = old_files[0]
    assert len(old) > 1
    seen: list[tuple[list[str], int]] = []

    def at(name: str) -> None:  # a reader at every step, then the kill at ``step``
        files, n = rows_seen(data, [partition])
        seen.append((files[0], n))
        if name == step:
            raise Crash(name)

    monkeypatch.setattr(object_swap, "step_hook", at)
    with pytest.raises(Crash):
        compact(own_store, BEFORE, TODAY)
    monkeypatch.setattr(object_swap, "step_hook", None)
    after_kill = rows_seen(data, [partition])
    for files, n in [*seen, (after_kill[0][0], after_kill[1])]:
        assert n == rows, (files, n)
        assert files == old or (len(files) == 1 and files[0] not in old), files
    compact(own_store, BEFORE, TODAY)  # the next run settles what the killed one left, then compacts
    files, n = rows_seen(data, [partition])
    assert n == rows and len(files[0]) == 1
    leftovers = [p for p in data.leftovers(partition)]
    assert leftovers == [], leftovers


def test_failed_merge_leaves_the_old_files(own_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = Dataset(own_store)
    partition = data.partitions("book", "spot", "ETH-USDT", BEFORE)[0]
    old = data.files(partition)

    def broken(target: str) -> int:
        data.fs.copy_file(old[0][0], target)  # the merged file exists, then the merge fails its check
        raise OSError("disk trouble")

    with pytest.raises(OSError):
        data.replace_files(partition, [p for p, _ in old], broken)
    assert data.files(partition) == old
    assert data.leftovers(partition) == []


def test_an_aborted_upload_leaves_nothing(own_store: str, s3_server: S3Server) -> None:
    data = Dataset(own_store)
    before = objects(s3_server, own_store)
    target = data.atomic(f"{data.root}/book/x.parquet")
    target.stream.write(b"half a file")
    assert objects(s3_server, own_store) == before  # nothing visible while it is written
    target.abort()
    assert objects(s3_server, own_store) == before
    target = data.atomic(f"{data.root}/book/x.parquet")
    target.stream.write(b"a whole file")
    target.commit()
    assert objects(s3_server, own_store)[f"{data.root}/book/x.parquet"] == len(b"a whole file")


# ---- bad stores: one sentence, non-zero, nothing written ---------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(local_copy: Path) -> Iterator[tuple[S3Server, dict[str, str], str]]:
    """A second S3 server that checks signatures (moto checks none until told to): an IAM user with a real key
    pair owns a bucket holding the dataset; yields the server, that user's AWS variables and the root."""
    import boto3

    server = S3Server()
    server.start()
    try:
        iam = boto3.client("iam", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id=KEY_ID,
                           aws_secret_access_key=SECRET)
        iam.create_user(UserName="nova")
        iam.put_user_policy(UserName="nova", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="nova")["AccessKey"]
        env = {**server.env, "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        root = upload(server, local_copy)
        urllib.request.urlopen(urllib.request.Request(f"{server.url}/moto-api/reset-auth", data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"}), timeout=10).close()
        yield server, env, root
    finally:
        server.stop()


BAD = {
    "unreachable": "cannot reach the object store",
    "wrong secret": "refused access",
    "missing bucket": "does not exist",
    "no bucket": "names no bucket",
}
COMMANDS = {"ls": ["ls"], "check": ["check"], "sql": ["sql", "SELECT 1"], "compact": ["compact"],
            "recover": ["recover"], "replay": ["replay", "--date", BEFORE]}


# the quick check runs ls against the cheap cases; the rest (and the signature-checking server) in the full suite
@pytest.mark.parametrize("command", [pytest.param(c, marks=[] if c == "ls" else [pytest.mark.slow]) for c in COMMANDS])
@pytest.mark.parametrize("case", [pytest.param(c, marks=[pytest.mark.slow] if c == "wrong secret" else [])
                                  for c in BAD])
def test_a_bad_store_is_one_sentence(s3_server: S3Server, store: str, request: pytest.FixtureRequest, case: str,
                                     command: str) -> None:
    server, env, root = s3_server, dict(s3_server.env), store
    watched, reader = store, None  # the root that must stay untouched, and the keys that read it
    if case == "wrong secret":
        server, env, root = request.getfixturevalue("guarded")
        watched, reader = root, env
        assert ok(nova("ls", "--json", "--data", root, env=env))  # the right key is let in
        env = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    elif case == "missing bucket":
        root = "s3://no-such-bucket-nova/data"
    elif case == "no bucket":
        root = "s3://"
    before = objects(server, watched, reader)
    with socket.socket() as closed:  # a port nobody listens on (bound here, so nothing else can take it)
        closed.bind(("127.0.0.1", 0))
        if case == "unreachable":
            env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
        proc = nova(*COMMANDS[command], "--data", root, env=env)
    line = one_sentence(proc)
    assert BAD[case] in line, line
    assert SECRET not in proc.stderr and KEY_ID not in line and "not-the-secret" not in proc.stderr
    assert objects(server, watched, reader) == before


@pytest.mark.slow
def test_local_only_outputs_say_so(s3_server: S3Server, store: str, tmp_path: Path) -> None:
    line = one_sentence(nova("sql", "SELECT 1", "--output", f"{store}/result.csv", "--data", store,
                             env=s3_server.env))
    assert "local file" in line
    line = one_sentence(nova("replay", "--date", BEFORE, "--out", f"{store}/x.parquet", "--data", store,
                             env=s3_server.env))
    assert "local file" in line


def test_the_manifest_is_ignored_until_its_merged_file_exists(own_store: str) -> None:
    """A reader between the manifest and the merged file's upload sees the old files (pa types: unchanged)."""
    data = Dataset(own_store)
    partition = data.partitions("bbo", "spot", "ETH-USDT", AFTER)[0]
    old = data.files(partition)
    body = json.dumps({"by": "20261125T000000.000Z-merged.parquet", "replaces": [p.rsplit("/", 1)[-1] for p, _ in old]})
    with data.fs.open_output_stream(f"{partition.path}/{COMPACT_MANIFEST}") as out:
        out.write(body.encode())
    assert data.files(partition) == old
    data.fs.copy_file(old[0][0], f"{partition.path}/20261125T000000.000Z-merged.parquet")
    assert [p.rsplit("/", 1)[-1] for p, _ in data.files(partition)] == ["20261125T000000.000Z-merged.parquet"]
    data.clear_staging()
    assert [p.rsplit("/", 1)[-1] for p, _ in data.files(partition)] == ["20261125T000000.000Z-merged.parquet"]
    assert data.leftovers(partition) == []
    assert isinstance(data.read_table(data.files(partition)[0][0]), pa.Table)


@pytest.mark.slow
def test_recover_and_compact_on_a_store_do_what_they_do_locally(s3_server: S3Server, local_copy: Path,
                                                                own_store: str, tmp_path: Path) -> None:
    """``nova recover`` then ``nova compact`` as a user runs them: the same lines, then the same listing."""
    local = tmp_path / "data"
    shutil.copytree(local_copy, local)
    roots = (own_store, str(local), own_store.removeprefix("s3://"))
    for args in (("recover",), ("compact",), ("ls", "--json")):
        here = nova(*args, "--data", str(local))
        there = nova(*args, "--data", own_store, env=s3_server.env)
        assert here.returncode == there.returncode == 0, (here.stderr, there.stderr)
        assert without_root(there.stderr, roots) == without_root(here.stderr, roots)
        if args[0] == "ls":
            assert json_lines(there.stdout, roots) == json_lines(here.stdout, roots)
        else:
            words = [str(without_root(p.stdout, roots)).split() for p in (there, here)]
            assert words[0] == words[1]  # the same table (only the title's centring differs)


@pytest.mark.slow  # three merges (~11 s)
def test_merge_from_and_into_a_store_equals_the_local_merge(s3_server: S3Server, local_copy: Path, store: str,
                                                             tmp_path: Path) -> None:
    """nova merge with a store among the sources and a store as the destination gives the rows of the same merge
    made on local disk; merging again into the store changes nothing (its swap goes through the manifest)."""
    from nova.analysis.merge import merge

    local_merged, twin = tmp_path / "merged", tmp_path / "twin"
    shutil.copytree(local_copy, twin)
    merge([str(local_copy), str(twin)], str(local_merged))
    into = f"s3://{s3_server.new_bucket()}/merged"
    merge([store, str(local_copy)], into)
    fetched = tmp_path / "fetched"
    pafs.copy_files(into.removeprefix("s3://"), str(fetched), source_filesystem=s3_server.filesystem(),
                    destination_filesystem=pafs.LocalFileSystem())
    for table in ("book", "bbo", "trades", "funding", "events"):
        for market in ("spot", "perp"):
            got, want = read_table(fetched, table, market), read_table(local_merged, table, market)
            # a ``covered`` row names the source it came from: the store, or the local twin
            got, want = without_root(got, (store, str(local_copy))), without_root(want, (str(twin), str(local_copy)))
            assert got == want, (table, market, [(g, w) for g, w in zip(got, want, strict=True) if g != w][:2])
    before = objects(s3_server, into)
    merge([store, str(local_copy)], into)
    assert objects(s3_server, into) == before, "merging again rewrites nothing"
