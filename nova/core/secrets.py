"""Secrets stay secret: how anything Nova shows (ledger rows, status, metrics, error sentences) spells a URL that
may carry credentials.

Why here, once: a venue or store URL may be written with a user and password (``http://user:pass@host``), and
the same URL is what the recorder connects to, what its ledger names as the source, and what an error sentence
points at. Every place that shows one goes through ``redact``, so a password never reaches a file, a terminal or
a scrape. Keys from the environment (``AWS_SECRET_ACCESS_KEY``) are never formatted into text at all.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s'\"]+)@")


def redact_url(url: str) -> str:
    """``url`` with any user and password replaced by ``***`` (everything else as written)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{HIDDEN}@{host}"))


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{HIDDEN}@", text)
