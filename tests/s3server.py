"""A real S3-compatible server on 127.0.0.1 for tests: moto in server mode, in its own process.

Why a process and not moto's in-process mock: Nova's S3 access goes through pyarrow's C++ client (and DuckDB,
and child processes such as ``nova record``), which an in-process mock cannot intercept; a server on a port
is what a user's MinIO or R2 looks like to them. ``S3Server.env`` is the environment a child process needs
(the standard AWS variables only).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import pyarrow.fs as pafs

KEY_ID = "nova-test-key"
SECRET = "nova-test-secret-planted-7f3a"  # a planted secret: tests may grep outputs for it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    """A moto server process; ``start``/``stop`` may be called again (to test a store that goes away)."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_REGION": "us-east-1"}

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (its objects are lost: moto keeps them in memory)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http", access_key=KEY_ID,
                                 secret_key=SECRET, region="us-east-1")

    def new_bucket(self, prefix: str = "nova") -> str:
        """Create a fresh bucket and return its name."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        req = urllib.request.Request(f"{self.url}/{name}", method="PUT")
        urllib.request.urlopen(req, timeout=10).close()
        return name


def set_env(server: S3Server) -> dict[str, str | None]:
    """Point this process's AWS variables at the server; returns the old values for ``restore_env``."""
    old = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    return old


def restore_env(old: dict[str, str | None]) -> None:
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
