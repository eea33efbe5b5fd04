"""Writes to S3-compatible object storage that lose nothing: whole-object publish, conditional updates, lock objects.

Contract (what the Catalog builds on for an `s3://bucket/prefix` data location):

- `publish(key, data)`: one PUT of the whole object. S3 makes an object visible only once its
  upload is complete, so a reader sees the old object or the new one, never half of either.
- `update(key, merge)`: read the object and its ETag, `merge(old_bytes_or_None) -> new_bytes`, then
  PUT with `If-Match: <etag>` (or `If-None-Match: *` when it did not exist). When another writer got
  in between, S3 answers 412 and the update starts again from the new object (jittered backoff), so
  two concurrent upserts of one partition each land and neither's rows are dropped. A writer killed
  mid-update leaves the object as it was and blocks nobody.
- `lock(name)`: a lock object taken by `If-None-Match: *`, held by refreshing it (`If-Match`) every
  `ttl / 3` seconds, released by a conditional delete. A holder killed with SIGKILL blocks others for
  at most `ttl` (default 30 s) plus one poll: a lock older than `ttl` by the server's own clock (its
  `Date` header against the object's `Last-Modified`) is taken over with `If-Match` on its ETag.
  The lock only saves retries; correctness comes from `update`'s conditional PUT.

Client: boto3 (`put_object(IfNoneMatch=..., IfMatch=...)`, `delete_object(IfMatch=...)`); s3fs and
pyarrow.fs write whole objects but expose no conditional writes. Credentials, endpoint and region
come from the standard AWS settings (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL,
AWS_REGION or AWS_DEFAULT_REGION, or a profile).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlparse

from aimoves.errors import AimovesError, ConfigError

logger = logging.getLogger(__name__)

LOCK_TTL_S = 30.0
LOCK_PREFIX = "_locks"


class ObjectStoreConfigError(ConfigError):
    """The data location cannot be used as given (no credentials, endpoint unreachable, no bucket, no write)."""


class ObjectStoreConflict(AimovesError):
    """A conditional update kept losing to other writers and gave up; nothing was overwritten."""


class LockTimeout(AimovesError):
    """A lock object stayed held by a live holder for longer than we were willing to wait."""


@dataclass(frozen=True)
class S3Url:
    """`s3://bucket/prefix` split into its bucket and key prefix (no leading or trailing slash)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Url:
        parts = urlparse(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ObjectStoreConfigError(f"{url!r} is not an object-store location: expected s3://bucket/prefix")
        return cls(parts.netloc, parts.path.strip("/"))

    def key(self, relative: str) -> str:
        """The object key of `relative` (a path inside the data location)."""
        relative = relative.strip("/")
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def is_object_store(location: str | os.PathLike[str]) -> bool:
    """True for an `s3://` data location."""
    return str(location).startswith("s3://")


def s3_client() -> Any:
    """A boto3 S3 client from the standard AWS settings; endpoint and region read explicitly so both spellings work."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)  # NOTE: a fresh session: the default one caches credentials


def _code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _precondition_failed(exc: Exception) -> bool:
    """412 (someone else wrote first) or 409 ConditionalRequestConflict (a concurrent conditional write in flight)."""
    return _status(exc) in (409, 412) or _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")


def explain(exc: Exception, url: S3Url | str, action: str = "use") -> ObjectStoreConfigError | None:
    """One clear line for a configuration fault of the object store (None when `exc` is not one)."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, PartialCredentialsError

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the AWS default endpoint"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ObjectStoreConfigError(f"{url}: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    if isinstance(exc, EndpointConnectionError) or isinstance(exc, (ConnectionError, socket.gaierror)):
        return ObjectStoreConfigError(f"{url}: cannot reach the object store at {endpoint}: check AWS_ENDPOINT_URL")
    code = _code(exc)
    bucket = url.bucket if isinstance(url, S3Url) else S3Url.parse(url).bucket
    if code in ("NoSuchBucket",) or (code == "404" and action == "open"):
        return ObjectStoreConfigError(f"{url}: bucket {bucket!r} does not exist at {endpoint}")
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return ObjectStoreConfigError(f"{url}: access denied ({action}): the credentials may not {action} in bucket {bucket!r}")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
        return ObjectStoreConfigError(f"{url}: the object store rejected the credentials ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return None


class ObjectStore:
    """Whole-object reads and writes under one `s3://bucket/prefix`, with conditional updates and lock objects."""

    def __init__(self, url: str, client: Any | None = None) -> None:
        self.url = S3Url.parse(url)
        self.client = client if client is not None else s3_client()

    def check(self, write: bool = True) -> None:
        """Fail fast with one clear line: credentials, endpoint, bucket, and (`write`) the right to write (a probe object, deleted again)."""
        probe = self.url.key(f"_probe/{uuid.uuid4().hex}")
        steps = [
            ("open", lambda: self.client.head_bucket(Bucket=self.url.bucket)),
            ("write", lambda: self.client.put_object(Bucket=self.url.bucket, Key=probe, Body=b"")),
            ("delete", lambda: self.client.delete_object(Bucket=self.url.bucket, Key=probe)),
        ]
        for action, call in steps if write else steps[:1]:
            try:
                call()
            except Exception as exc:
                clear = explain(exc, self.url, action)
                if clear is not None:
                    raise clear from None
                raise

    def get(self, relative: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when it does not exist."""
        try:
            response = self.client.get_object(Bucket=self.url.bucket, Key=self.url.key(relative))
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._clear(exc, "read") from exc
        return response["Body"].read(), response["ETag"]

    def publish(self, relative: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """Write one whole object (optionally only if its ETag is `if_match`, or only if absent); return its new ETag."""
        kwargs: dict[str, Any] = {"Bucket": self.url.bucket, "Key": self.url.key(relative), "Body": data}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        elif if_absent:
            kwargs["IfNoneMatch"] = "*"
        try:
            return str(self.client.put_object(**kwargs)["ETag"])
        except Exception as exc:
            if _precondition_failed(exc):
                raise
            raise self._clear(exc, "write") from exc

    def update(
        self, relative: str, merge: Callable[[bytes | None], bytes], *, attempts: int = 50, max_delay_s: float = 2.0
    ) -> str:
        """Read-merge-write `relative` under `If-Match` / `If-None-Match`, again from the fresh object on a conflict."""
        for attempt in range(1, attempts + 1):
            current = self.get(relative)
            data = merge(current[0] if current else None)
            try:
                return self.publish(relative, data, if_match=current[1] if current else None, if_absent=current is None)
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
                delay = min(max_delay_s, 0.05 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.0)
                logger.info("%s changed under us (attempt %d); merging again in %.2f s", self.url.key(relative), attempt, delay)
                time.sleep(delay)
        raise ObjectStoreConflict(f"{self.url}/{relative}: gave up after {attempts} conflicting updates; nothing was overwritten")

    @contextmanager
    def lock(self, name: str, *, ttl_s: float = LOCK_TTL_S, wait_s: float = 600.0, poll_s: float = 0.5) -> Iterator[ObjectLock]:
        """Hold the lock object `_locks/<name>.lock` for the block (see the module docstring for expiry)."""
        held = ObjectLock(self, f"{LOCK_PREFIX}/{name}.lock", ttl_s)
        held.acquire(wait_s, poll_s)
        try:
            yield held
        finally:
            held.release()

    def _clear(self, exc: Exception, action: str) -> Exception:
        return explain(exc, self.url, action) or exc


class ObjectLock:
    """A lock object with a lease of `ttl_s`, refreshed by a background thread while held."""

    def __init__(self, store: ObjectStore, relative: str, ttl_s: float) -> None:
        self.store, self.relative, self.ttl_s = store, relative, ttl_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "ttl_s": self.ttl_s, "written_at": time.time()}).encode()

    def _expired(self) -> str | None:
        """The ETag of the current lock object when its lease ran out by the server's clock, else None."""
        client, url = self.store.client, self.store.url
        try:
            head = client.head_object(Bucket=url.bucket, Key=url.key(self.relative))
        except Exception as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None  # released meanwhile: the next If-None-Match attempt takes it
            raise self.store._clear(exc, "read") from exc
        server_now = parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (server_now - head["LastModified"]).total_seconds()
        return str(head["ETag"]) if age > self.ttl_s else None

    def acquire(self, wait_s: float, poll_s: float) -> None:
        """Take the lock, or a lock whose holder stopped refreshing it for `ttl_s`; wait up to `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.etag = self.store.publish(self.relative, self._body(), if_absent=True)
                break
            except Exception as exc:
                if not _precondition_failed(exc):
                    raise
            stale = self._expired()
            if stale is not None:
                try:
                    self.etag = self.store.publish(self.relative, self._body(), if_match=stale)
                    logger.warning("took over %s: its holder had not refreshed it for %.0f s", self.relative, self.ttl_s)
                    break
                except Exception as exc:
                    if not _precondition_failed(exc):
                        raise
            if time.monotonic() > deadline:
                raise LockTimeout(f"{self.store.url}/{self.relative}: still held by a live holder after {wait_s:.0f} s")
            time.sleep(poll_s * random.uniform(0.5, 1.5))
        self._thread = threading.Thread(target=self._refresh, name=f"lock-refresh-{self.relative}", daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.etag = self.store.publish(self.relative, self._body(), if_match=self.etag)
            except Exception as exc:
                logger.error("lost %s: %s", self.relative, exc)
                self.lost.set()
                return

    def release(self) -> None:
        """Stop refreshing and delete the lock object, only if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost.is_set() or self.etag is None:
            return
        url = self.store.url
        try:
            self.store.client.delete_object(Bucket=url.bucket, Key=url.key(self.relative), IfMatch=self.etag)
        except Exception as exc:
            if not _precondition_failed(exc) and _code(exc) not in ("NoSuchKey", "404"):
                raise
