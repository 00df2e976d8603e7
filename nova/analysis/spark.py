"""Spark over the dataset: every table as a DataFrame with real timestamps, and ``nova sql``'s views in Spark SQL.

Why a helper: Nova's files keep the contract's ``timestamp[ns, UTC]``, and Spark 4 refuses such a column
outright (``Illegal Parquet type: INT64 (TIMESTAMP(NANOS,true))``). ``spark.sql.legacy.parquet.nanosAsLong``
makes it read the column as its raw int64 nanoseconds instead (the one setting that works on every pyspark 4.x;
4.3's nanosecond types are a preview behind their own flag, and the legacy setting takes precedence there).
A bigint is no time, so the helper turns each timestamp column of the contract back into a Spark ``TIMESTAMP``
(microseconds, truncated as ``nova sql``'s views, pyarrow and polars truncate) and keeps the exact value beside
it as ``<name>_ns``: Spark timestamps are microseconds, and ordering book messages needs the nanoseconds.

Why the helper lists the files itself: the dataset (nova.core.dataset) knows which files are visible. Hidden
journals and temporaries, and on an object store the files a compaction has replaced, are not the table's;
Spark's own listing would read the latter. The files are read with the contract's schema, so files written
before a column existed (the ledger's provenance, the spread's size-aware columns) read with it null, and the
partition columns come from the paths as Spark discovers them (``exchange``, ``market``, ``symbol``, ``date``).

Object stores: a root ``s3://bucket/prefix`` (or ``s3a://``) is listed through the dataset with the standard
AWS variables and read by Spark through ``s3a://``, which needs the hadoop-aws jars of pyspark's Hadoop version
on the session's classpath (``spark.jars.packages``); ``spark_session`` points s3a at ``AWS_ENDPOINT_URL``.

pyspark is imported only when a session or a read needs it, so this module imports without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import pyarrow as pa

from nova.core.contract import PARTITION_KEYS, RECORDED_TABLES, SCHEMAS
from nova.core.dataset import SPREAD_TABLE, Dataset
from nova.core.errors import NovaError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"
TABLES: tuple[str, ...] = (*RECORDED_TABLES, SPREAD_TABLE)  # the views of nova sql, in its order
NS_SUFFIX = "_ns"  # the exact nanoseconds of a timestamp column ``x`` are in ``x_ns``
INSTALL = "pip install 'nova-recorder[spark]' and a Java 17 runtime (for example apt install openjdk-17-jre-headless)"
JAVA_MAJOR = 17  # Spark 4 runs on Java 17 or newer


# ---- the session ---------------------------------------------------------------------------------------------

def java_binary() -> str | None:
    """The java pyspark would launch: ``$JAVA_HOME/bin/java`` when JAVA_HOME is set, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = os.path.join(home, "bin", "java")
        return candidate if os.access(candidate, os.X_OK) else None
    return shutil.which("java")


def java_major(java: str) -> int | None:
    """The major version ``java -version`` reports (None when it does not say): Java 8 says 1.8."""
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def check_requirements() -> None:
    """Raise NovaError (one sentence) unless pyspark imports and a Java Spark 4 runs on is there: otherwise
    pyspark fails later with a Java gateway traceback that names neither."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise NovaError(f"Spark needs pyspark, which is not installed; {INSTALL}") from None
    java = java_binary()
    if java is None:
        where = f"JAVA_HOME={os.environ['JAVA_HOME']} has no bin/java" if os.environ.get("JAVA_HOME") \
            else "no java on PATH and no JAVA_HOME"
        raise NovaError(f"Spark needs Java {JAVA_MAJOR} ({where}); {INSTALL}, then set JAVA_HOME or PATH")
    major = java_major(java)
    if major is not None and major < JAVA_MAJOR:
        raise NovaError(f"Spark 4 needs Java {JAVA_MAJOR} or newer, and {java} is Java {major}; install Java "
                        f"{JAVA_MAJOR} and point JAVA_HOME at it")


def s3a_settings() -> dict[str, str]:
    """Hadoop's s3a reads the AWS keys from the environment itself, but not Nova's endpoint and region
    variables: pass those on, so an ``s3://`` root on MinIO, R2 or Ceph reads as Nova's commands read it."""
    settings: dict[str, str] = {}
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url:
        settings["spark.hadoop.fs.s3a.endpoint"] = url
        settings["spark.hadoop.fs.s3a.path.style.access"] = "true"  # MinIO and most local stores need it
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        settings["spark.hadoop.fs.s3a.endpoint.region"] = region
    return settings


def spark_session(app: str = "nova", *, master: str = "local[*]", shuffle_partitions: int = 4, ui: bool = False,
                  config: dict[str, str] | None = None) -> SparkSession:
    """A local-mode SparkSession set up for Nova: session time zone UTC (the partition dates' zone), the
    nanosecond setting, few shuffle partitions (the default 200 makes every small aggregate on a laptop spend
    its time scheduling empty tasks), no web UI unless asked. ``config`` adds or overrides settings (for example
    ``spark.jars.packages`` for s3a, ``spark.driver.memory``). An existing session is reused with these
    settings applied, as pyspark's ``getOrCreate`` does."""
    check_requirements()
    from pyspark.sql import SparkSession

    settings = {"spark.sql.session.timeZone": "UTC", NANOS_AS_LONG: "true",
                "spark.sql.shuffle.partitions": str(shuffle_partitions), "spark.ui.enabled": str(ui).lower(),
                "spark.log.level": "ERROR"}  # Spark's INFO and WARN lines would bury the answers
    if master.startswith("local"):  # one machine: listen on loopback only, whatever the host name resolves to
        settings |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    settings |= {**s3a_settings(), **(config or {})}
    builder = SparkSession.builder.master(master).appName(app)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # pyspark raises its own runtime errors (the Java gateway did not start)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NovaError(f"Spark did not start ({text}); check the Java {JAVA_MAJOR} runtime and the session's "
                        "settings") from None
    return spark


# ---- the tables ----------------------------------------------------------------------------------------------

def table_schema(table: str) -> pa.Schema:
    """The contract's schema of a table; the spread's is replay's (nova.core.spread, with its numba kernels,
    imported only when asked for)."""
    if table == SPREAD_TABLE:
        from nova.core.spread import READING_SCHEMA

        return READING_SCHEMA
    return SCHEMAS[table]


def _spark_type(t: pa.DataType) -> DataType:
    """How Spark reads a contract column with nanosAsLong: timestamps as their int64 nanoseconds."""
    from pyspark.sql import types as st

    if pa.types.is_dictionary(t):
        return _spark_type(t.value_type)
    if pa.types.is_timestamp(t) or pa.types.is_integer(t):
        return st.LongType()
    if pa.types.is_floating(t):
        return st.DoubleType()
    if pa.types.is_boolean(t):
        return st.BooleanType()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return st.StringType()
    raise TypeError(f"no Spark type for the contract type {t}")


def read_schema(table: str) -> StructType:
    """The schema Spark reads a table's files with: the contract's columns, then the partition columns (the
    partition ``date`` as a DATE, as DuckDB types it; the others are text)."""
    from pyspark.sql import types as st

    fields = [st.StructField(f.name, _spark_type(f.type)) for f in table_schema(table)]
    fields += [st.StructField(k, st.DateType() if k == "date" else st.StringType()) for k in PARTITION_KEYS]
    return st.StructType(fields)


def timestamp_columns(table: str) -> list[str]:
    return [f.name for f in table_schema(table) if pa.types.is_timestamp(f.type)]


def open_root(root: str | os.PathLike[str]) -> Dataset:
    """The dataset of a root (``s3a://`` spelled as Nova spells object stores, ``s3://``), which must exist."""
    text = str(root)
    data = Dataset("s3://" + text.removeprefix("s3a://") if text.startswith("s3a://") else text)
    data.check_reachable()
    if not data.exists():
        raise NovaError(f"the data directory {text} does not exist; record something first (nova record or nova "
                        "demo) or point at a recording")
    return data


def spark_path(data: Dataset, path: str) -> str:
    """A dataset path as Spark names it: object stores through Hadoop's s3a connector."""
    uri = data.uri(path)
    return "s3a://" + uri.removeprefix("s3://") if uri.startswith("s3://") else uri


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise NovaError(f"{table!r} is not a table of Nova's dataset; the tables are {', '.join(TABLES)}")


def _listing(data: Dataset, table: str) -> list[str]:
    """A table's visible files (the dataset's listing: no hidden or replaced file)."""
    return [path for path, _ in data.table_files(table)]


def _frame(spark: SparkSession, data: Dataset, table: str, files: list[str]) -> DataFrame:
    """The table's DataFrame over ``files``, with its times converted."""
    from pyspark.sql import functions as sf

    spark.conf.set(NANOS_AS_LONG, "true")  # also on a session the user built: without it no file reads
    schema = read_schema(table)
    if files:
        raw = spark.read.schema(schema).option("basePath", spark_path(data, data.table_path(table))).parquet(
            *[spark_path(data, f) for f in files])
    else:
        raw = spark.createDataFrame([], schema)
    times = set(timestamp_columns(table))
    columns = []
    for name in schema.fieldNames():
        if name in times:
            # ``div`` truncates toward zero like DuckDB's ``//`` in nova sql's views (times are after 1970)
            columns += [sf.expr(f"timestamp_micros(`{name}` div 1000)").alias(name),
                        sf.col(name).alias(name + NS_SUFFIX)]
        else:
            columns.append(sf.col(name))
    return raw.select(*columns)


def read_table(spark: SparkSession, root: str | os.PathLike[str], table: str) -> DataFrame:
    """One table of a Nova root as a DataFrame: every visible file, the partition columns, each timestamp column
    as a Spark TIMESTAMP (µs, UTC) followed by its exact value in ns as ``<name>_ns``. A table with no file
    yet is an empty DataFrame with the same columns. Sets ``spark.sql.legacy.parquet.nanosAsLong`` on the
    session (the files do not read without it)."""
    _check_table(table)
    data = open_root(root)
    return _frame(spark, data, table, _listing(data, table))


def register_views(spark: SparkSession, root: str | os.PathLike[str]) -> list[str]:
    """A temporary view per table of the root, named as ``nova sql``'s views (``book``, ``bbo``, ``trades``,
    ..., ``spread`` once replay has written it), so that Spark SQL queries read as Nova's. A recorded table with
    no file yet is an empty view, as in ``nova sql``. Returns the names of the views that hold files."""
    data = open_root(root)
    listed = {table: _listing(data, table) for table in TABLES}
    present = [table for table, files in listed.items() if files]
    if not present:
        raise NovaError(f"{root} holds no recording (no {', '.join(TABLES)} Parquet files); record something "
                        "first or point at a recording")
    for table, files in listed.items():
        if files or table in RECORDED_TABLES:  # the spread only once replay has written it
            _frame(spark, data, table, files).createOrReplaceTempView(table)
    return present
