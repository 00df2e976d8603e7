"""Where a data root lives: a local folder or an S3-compatible object store (``s3://bucket/prefix``).

Why here, once: every command opens its root through ``Dataset``, and ``Dataset`` opens it through
``open_root``, so a root spelled ``s3://...`` works for all of them with the same credentials and the same
sentences when the store is not there. Credentials, region and endpoint come from the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``), as every AWS tool reads them; ``AWS_ENDPOINT_URL`` is what makes
MinIO, R2, Ceph or a local test server work. Secrets never enter a message of ours: errors name the root and
the endpoint, never a key.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from nova.core.errors import NovaError

OBJECT_STORE_SCHEMES = ("s3",)


def is_object_store(root: str) -> bool:
    return urlparse(str(root)).scheme in OBJECT_STORE_SCHEMES


def endpoint() -> str | None:
    """The S3 endpoint URL from the environment (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 filesystem configured from the standard AWS environment variables, the same way for every root."""
    options: dict = {"allow_bucket_creation": False, "allow_bucket_deletion": False,
                     "connect_timeout": 5, "request_timeout": 30,
                     "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3)}
    url = endpoint()
    if url:
        parsed = urlparse(url)
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        options.update(access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"))
    return pafs.S3FileSystem(**options)


def open_root(root: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path within it for a data root (a local path, or ``s3://bucket/prefix``)."""
    parsed = urlparse(str(root))
    if parsed.scheme in OBJECT_STORE_SCHEMES:
        if not parsed.netloc:
            raise NovaError(f"{root} names no bucket: write an object-store root as s3://BUCKET/PREFIX")
        return s3_filesystem(), f"{parsed.netloc}{parsed.path}".rstrip("/")
    if "://" in str(root):
        if parsed.scheme == "file":
            return pafs.LocalFileSystem(), str(Path(parsed.path).resolve())
        raise NovaError(f"{root}: Nova reads and writes local folders and s3:// object stores, not "
                        f"{parsed.scheme}://")
    return pafs.LocalFileSystem(), str(Path(root).resolve())


def check_store(fs: pafs.FileSystem, path: str, root: str) -> None:
    """For an object-store root, raise NovaError (one sentence) when the store cannot be reached, refuses our
    credentials, or has no such bucket; a local root is not checked here (a missing folder means "no data")."""
    if not isinstance(fs, pafs.S3FileSystem):
        return
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
    except (OSError, pa.ArrowException) as exc:
        raise StoreUnavailable(root, exc) from None
    if info.type == pafs.FileType.NotFound:
        raise NovaError(f"the bucket {bucket!r} of {root} does not exist at {endpoint() or 'AWS S3'}: create it, "
                        f"or check the root and AWS_ENDPOINT_URL")


class StoreUnavailable(NovaError):
    """The object store could not be used; the sentence says whether it was unreachable or refused us."""

    def __init__(self, root: str, exc: BaseException) -> None:
        text = str(exc)
        where = endpoint() or "AWS S3"
        low = text.lower()
        if any(w in low for w in ("access denied", "accessdenied", "access_denied", "forbidden", "signature",
                                  "invalidaccesskey", "credentials", "403")):
            sentence = (f"the object store at {where} refused access to {root}: check AWS_ACCESS_KEY_ID, "
                        f"AWS_SECRET_ACCESS_KEY and the bucket's permissions")
        else:
            sentence = (f"cannot reach the object store at {where} for {root}: check AWS_ENDPOINT_URL and the "
                        f"network, then try again")
        super().__init__(sentence)
