"""Secrets stay secret: a planted store key and a password in the venue URL never appear in what Nova shows.

A recorder writes to an object store (the real moto server) with planted AWS keys, from a venue whose URL carries
a user and password, with metrics on; then every output a user or an operator sees is searched for them: the
recorder's log lines and summary, its metrics and health, the ledger it wrote (read back with `nova sql`), and
the error sentences of a bad venue URL, an unreachable venue, a bad config file and a store refusing the key.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nova.core.secrets import redact, redact_url
from tests.helpers import ENV, NOVA, nova, one_sentence, stop, venue_process
from tests.s3server import KEY_ID, SECRET, S3Server, free_port

PASSWORD = "planted-venue-pass-91c2"


@pytest.fixture(scope="module")
def venue_url() -> Iterator[str]:
    with venue_process() as url:
        yield url


def with_password(url: str) -> str:
    return url.replace("http://", f"http://nova:{PASSWORD}@")


def assert_no_secret(text: str, where: str) -> None:
    for secret in (SECRET, KEY_ID, PASSWORD):
        assert secret not in text, f"{secret!r} leaked into {where}"


def test_redaction_keeps_everything_but_the_credentials() -> None:
    assert redact_url("http://u:p@127.0.0.1:8765/api") == "http://***@127.0.0.1:8765/api"
    assert redact_url("http://127.0.0.1:8765") == "http://127.0.0.1:8765"
    assert redact("at ws://u:p@h:1/ws and https://k@x.io/a, s3://bucket/data") == \
        "at ws://***@h:1/ws and https://***@x.io/a, s3://bucket/data"


def test_nothing_a_recorder_shows_holds_a_secret(venue_url: str, s3_server: S3Server, tmp_path: Path) -> None:
    root = f"s3://{s3_server.new_bucket()}/data"
    env = {**ENV, **s3_server.env, "COLUMNS": "200", "NO_COLOR": "1"}
    port = free_port()
    proc = subprocess.Popen([*NOVA, "record", "ETH/USDT", "--venue", with_password(venue_url), "--data", root,
                             "--spool", str(tmp_path / "spool"), "--metrics-port", str(port), "--metrics-host",
                             "127.0.0.1", "--duration", "12s", "--flush", "1s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    scraped = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                for path in ("/metrics", "/health"):
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                        scraped.append(resp.read().decode())
                if len(scraped) >= 6:
                    break
            except OSError:
                pass
            time.sleep(1.0)
        out, err = proc.communicate(timeout=90)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    assert scraped and "nova_stream_messages_total" in scraped[0]
    assert "10 s" in out or "msg/s" in out or "messages" in out  # the log lines and the summary were printed
    assert_no_secret(out, "the recorder's standard output")
    assert_no_secret(err, "the recorder's standard error")
    assert_no_secret("\n".join(scraped), "the metrics and health")
    ledger = nova("sql", "--data", root, "--format", "csv", "SELECT * FROM events", env=s3_server.env)
    assert ledger.returncode == 0, ledger.stderr
    assert "***@127.0.0.1" in ledger.stdout  # the source is named, its password hidden
    assert_no_secret(ledger.stdout + ledger.stderr, "the ledger")
    for path in (tmp_path / "spool").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".txt", ".log"):
            assert_no_secret(path.read_text(errors="replace"), str(path))


def test_error_sentences_hold_no_secret(venue_url: str, s3_server: S3Server, tmp_path: Path) -> None:
    dead = f"http://nova:{PASSWORD}@127.0.0.1:{free_port()}"
    sentences = [
        one_sentence(nova("record", "ETH/USDT", "--venue", f"ftp://nova:{PASSWORD}@x", "--data", str(tmp_path))),
        one_sentence(nova("record", "ETH/USDT", "--venue", dead, "--data", str(tmp_path / "d"), "-q",
                          "--duration", "5s")),
    ]
    config = tmp_path / "recorder.toml"
    config.write_text(f'symbols = ["ETH/USDT"]\nvenue = "ftp://nova:{PASSWORD}@x"\n')
    sentences.append(one_sentence(nova("record", "--config", str(config), "--data", str(tmp_path / "c"))))
    wrong = {**s3_server.env, "AWS_SECRET_ACCESS_KEY": SECRET + "-wrong"}
    sentences.append(one_sentence(nova("ls", "--data", f"s3://{s3_server.new_bucket()}/data", env=wrong)))
    for line in sentences:
        assert_no_secret(line, f"the sentence {line!r}")
    assert "***@" in sentences[0] and "***@127.0.0.1" in sentences[1]
