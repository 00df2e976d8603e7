"""Crash matrix: SIGKILL the recorder and the compactor at random moments and prove the dataset survives.

    python bench/crash_matrix.py --kills 20          # the report in RELIABILITY.md
    (tests/test_crash_matrix.py runs a short version)

Recorder: `nova record` runs against a `nova venue` with a 0.2 s flush and a 1 s rotation (so many kills land
while a file is being finished), and is killed with SIGKILL after a random 0.3-3 s of recording; then the
next run starts on the same data directory (finishing what the crash left). After every kill: every visible
Parquet file reads, and the newest row of the killed run is at most one flush interval (plus scheduling
slack) older than the kill. At the end: no hidden leftovers, book messages never duplicated and numbered
on across runs, bookTicker rows never duplicated, and `nova check` explains every break of the id chain
(each crash is followed by the next run's ledgered start).

Compactor: the recording is copied under past dates and `nova compact`'s code is killed at random moments;
after each kill every partition reads, and holds exactly the original rows (old files or the merged file,
never both, never neither); a final run completes.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
FLUSH_S = 0.2
SLACK_S = 1.0


@dataclass
class MatrixReport:
    recorder_kills: int = 0
    compactor_kills: int = 0
    unreadable: list[str] = field(default_factory=list)
    worst_loss_s: float = 0.0
    over_budget: list[float] = field(default_factory=list)
    duplicate_msgs: int = 0
    duplicate_bbo: int = 0
    check_ok: bool = False
    check_breaks: int = 0
    compaction_consistent: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.unreadable and not self.over_budget and not self.duplicate_msgs
                and not self.duplicate_bbo and self.check_ok and self.compaction_consistent)


def nova() -> str:
    return str(Path(sys.executable).parent / "nova")


def visible_files(data: Path) -> list[Path]:
    return [p for p in data.rglob("*.parquet") if not any(part.startswith(".") for part in p.relative_to(data).parts)]


def all_read(data: Path) -> list[str]:
    bad = []
    for path in visible_files(data):
        try:
            pq.read_table(path)
        except (OSError, pa.ArrowException):
            bad.append(str(path))
    return bad


def newest_ts(data: Path) -> int:
    newest = 0
    for path in visible_files(data):
        if "/events/" in str(path):
            continue  # the ledger of the next run's start would not tell about the killed run
        ts = pq.read_table(path, columns=["ts_recv"]).column("ts_recv").cast(pa.int64())
        if len(ts):
            newest = max(newest, pa.compute.max(ts).as_py())
    return newest


def wait_first_flush(data: Path, proc: subprocess.Popen, since_ns: int, timeout: float = 20.0) -> None:
    """Until the run has journaled something (a hidden .arrows grows), so a kill can be judged on loss."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.stat().st_mtime_ns > since_ns and p.stat().st_size > 2000 for p in data.rglob(".*.arrows")):
            return
        time.sleep(0.05)


def kill_recorder_runs(url: str, data: Path, kills: int, rng: random.Random, report: MatrixReport) -> None:
    for _ in range(kills):
        started = time.time_ns()
        proc = subprocess.Popen([nova(), "record", "ETH/USDT", "--venue", url, "--data", str(data), "--flush",
                                 f"{FLUSH_S}s", "--rotate", "1s", "-q"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_first_flush(data, proc, started)
        time.sleep(rng.uniform(0.3, 3.0))
        killed_ns = time.time_ns()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        report.recorder_kills += 1
        report.unreadable += all_read(data)
        # The journals the crash left become visible when the next run starts; finish them now the same way.
        subprocess.run([sys.executable, "-c", "import sys; from nova.core.dataset import Dataset; "
                        "Dataset(sys.argv[1]).recover()", str(data)], check=True, cwd=REPO)
        loss = (killed_ns - newest_ts(data)) / 1e9
        report.worst_loss_s = max(report.worst_loss_s, loss)
        if loss > FLUSH_S + SLACK_S:
            report.over_budget.append(round(loss, 3))


def final_run(url: str, data: Path) -> None:
    proc = subprocess.Popen([nova(), "record", "ETH/USDT", "--venue", url, "--data", str(data), "--flush",
                             f"{FLUSH_S}s", "--duration", "3s", "-q"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"the final recording failed: {err.strip()}")


def audit(data: Path, report: MatrixReport) -> None:
    import duckdb

    con = duckdb.connect()
    book = str(data / "book" / "**" / "*.parquet")
    bbo = str(data / "bbo" / "**" / "*.parquet")
    report.duplicate_msgs = con.sql(
        f"SELECT count(*) FROM (SELECT market, msg, count(DISTINCT epoch_ns(ts_recv)) c FROM read_parquet('{book}',"
        " hive_partitioning = true) GROUP BY ALL HAVING c > 1)").fetchall()[0][0]
    report.duplicate_bbo = con.sql(
        f"SELECT count(*) - count(DISTINCT (market, update_id, epoch_ns(ts_recv))) FROM read_parquet('{bbo}', "
        "hive_partitioning = true)").fetchall()[0][0]
    hidden = [p for p in data.rglob(".*") if p.name.endswith((".arrows", ".tmp"))]
    if hidden:
        report.notes.append(f"hidden leftovers after the final run: {hidden[:3]}")
        report.unreadable += [str(p) for p in hidden]
    check = subprocess.run([nova(), "check", "--data", str(data), "--json"], capture_output=True, text=True)
    rows = [json.loads(line) for line in check.stdout.splitlines() if line.startswith("{")]
    report.check_ok = check.returncode == 0 and all(r["ok"] for r in rows)
    report.check_breaks = sum(r["breaks"] for r in rows)
    if not report.check_ok:
        report.notes.append("nova check: " + "; ".join(p for r in rows for p in r["problems"])[:500])


def partition_rows(data: Path) -> dict[str, list[tuple]]:
    out = {}
    for folder in data.glob("*/exchange=*/market=*/symbol=*/date=*"):
        rows = []
        for path in sorted(folder.glob("*.parquet")):
            table = pq.read_table(path)
            table = table.cast(pa.schema([pa.field(f.name, pa.int64()) if pa.types.is_timestamp(f.type)
                                          else pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type)
                                          else f for f in table.schema]))
            rows += [tuple(r.values()) for r in table.to_pylist()]
        out[str(folder.relative_to(data))] = sorted(rows, key=repr)
    return out


def kill_compactions(data: Path, kills: int, rng: random.Random, report: MatrixReport) -> None:
    """Copy the recording under past dates, then SIGKILL compaction runs and check consistency each time."""
    copy = data.parent / "compaction"
    for i in range(4):
        for table_dir in data.iterdir():
            if table_dir.is_dir():
                for date_dir in table_dir.glob("exchange=*/market=*/symbol=*/date=*"):
                    target = copy / date_dir.relative_to(data).parent / f"date=2020-01-0{i + 1}"
                    shutil.copytree(date_dir, target)
    original = partition_rows(copy)
    script = "import sys; from pathlib import Path; from nova.analysis.compact import compact; " \
             "compact(Path(sys.argv[1]), None, '2099-01-01', 19)"
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", script, str(copy)], cwd=REPO)
        time.sleep(rng.uniform(0.2, 2.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            report.compactor_kills += 1
        proc.wait()
        report.unreadable += all_read(copy)
        if partition_rows(copy) != original:
            report.compaction_consistent = False
            report.notes.append("a killed compaction changed the rows of a partition")
            return
    subprocess.run([sys.executable, "-c", script, str(copy)], check=True, cwd=REPO)
    if partition_rows(copy) != original or (copy / ".nova-compact").exists():
        report.compaction_consistent = False


def run_matrix(workdir: Path, kills: int, compaction_kills: int, seed: int = 20261125) -> MatrixReport:
    rng = random.Random(seed)
    report = MatrixReport()
    venue = subprocess.Popen([nova(), "venue", "--port", "0", "--seed", "5"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert venue.stdout is not None
        url = venue.stdout.readline().strip()
        data = workdir / "data"
        kill_recorder_runs(url, data, kills, rng, report)
        final_run(url, data)
        urllib.request.urlopen(urllib.request.Request(url + "/_venue/pause", method="POST"), timeout=10).read()
    finally:
        venue.send_signal(signal.SIGINT)
        venue.wait(timeout=30)
    audit(data, report)
    kill_compactions(data, compaction_kills, rng, report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--compaction-kills", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report = run_matrix(args.dir or Path(tmp), args.kills, args.compaction_kills)
    summary = {k: v for k, v in report.__dict__.items()}
    summary["ok"] = report.ok
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
