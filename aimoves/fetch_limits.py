"""Bounded reads of untrusted inputs: a total deadline and a size limit for every fetch.

`read_bounded(url_or_path, max_bytes, deadline_s)` reads an http(s) URL, a `file://` URL or a
local path whole, or raises `FetchRefused` naming it: a local path must be a regular file (never
a device, FIFO or socket: `/dev/zero` would never end), no answer may exceed `max_bytes`, and the
whole read (connect, headers, every byte of the body) ends within `deadline_s` (a server that
trickles one byte every few seconds is cut off, not waited for). Limits come from settings with
defaults: `AIMOVES_FEED_MAX_BYTES` (20 MB) and `AIMOVES_FEED_DEADLINE_SECONDS` (60 s).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aimoves.errors import AimovesError
from aimoves.settings import positive_setting

FEED_MAX_BYTES = 20_000_000
FEED_DEADLINE_SECONDS = 60.0
CHUNK = 65536


class FetchRefused(AimovesError):
    """An input was refused: not a regular file, too large, or too slow."""


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = FEED_MAX_BYTES
    deadline_s: float = FEED_DEADLINE_SECONDS

    @classmethod
    def for_feeds(cls) -> FetchLimits:
        """The feed limits: the environment's settings, else the defaults."""
        return cls(
            int(positive_setting("AIMOVES_FEED_MAX_BYTES", FEED_MAX_BYTES)),
            positive_setting("AIMOVES_FEED_DEADLINE_SECONDS", FEED_DEADLINE_SECONDS),
        )


def excerpt(data: bytes | str, limit: int = 40) -> str:
    """A short excerpt of untrusted text with control characters escaped (the printer escapes markup)."""
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)
    return repr(text[:limit])[1:-1] + ("…" if len(text) > limit else "")


def local_path(url_or_path: str) -> Path | None:
    """The local path a feed names (a path or a file:// URL); None for http(s)."""
    parts = urlsplit(url_or_path)
    if parts.scheme in ("http", "https"):
        return None
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    return Path(url_or_path).expanduser()


def read_bounded(url_or_path: str, max_bytes: int, deadline_s: float, headers: dict[str, str] | None = None) -> tuple[bytes, str | None]:
    """The bytes at `url_or_path` and their content type (None for files), within both limits."""
    deadline = time.monotonic() + deadline_s
    path = local_path(url_or_path)
    if path is not None:
        return _read_file(path, max_bytes, deadline, deadline_s), None
    return _read_url(url_or_path, max_bytes, deadline, deadline_s, headers or {})


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _read_file(path: Path, max_bytes: int, deadline: float, deadline_s: float) -> bytes:
    mode = os.stat(path).st_mode  # follows symlinks: what matters is what is read
    if not stat.S_ISREG(mode):
        raise FetchRefused(f"{path}: {_kind(mode)}, not a regular file; only regular files are read")
    # NOTE: O_NONBLOCK: if the path was swapped for a FIFO since the stat, open must not wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FetchRefused(f"{path}: {_kind(st.st_mode)}, not a regular file; only regular files are read")
        if st.st_size > max_bytes:
            raise FetchRefused(f"{path}: {st.st_size:,} bytes, over the limit of {max_bytes:,}")
        chunks: list[bytes] = []
        total = 0
        while chunk := f.read(CHUNK):
            total += len(chunk)
            if total > max_bytes:  # /proc files report size 0 and can grow
                raise FetchRefused(f"{path}: more than the limit of {max_bytes:,} bytes")
            if time.monotonic() > deadline:
                raise FetchRefused(f"{path}: not read within {deadline_s:.3g} s")
            chunks.append(chunk)
    return b"".join(chunks)


def _read_url(url: str, max_bytes: int, deadline: float, deadline_s: float, headers: dict[str, str]) -> tuple[bytes, str | None]:
    """The body of a GET, in a worker thread so that the deadline holds whatever the server does."""
    box: dict = {}
    worker = threading.Thread(target=_url_reader, args=(url, max_bytes, deadline, deadline_s, headers, box), daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()) + 0.2)
    if worker.is_alive():
        box["abandoned"] = True
        response = box.get("response")
        if response is not None:
            try:
                response.close()
            except Exception:  # noqa: BLE001, S110 - best effort: the worker stops at its next read anyway
                pass
        raise FetchRefused(f"{url}: no complete answer within {deadline_s:.3g} s ({box.get('read', 0):,} bytes read)")
    if "error" in box:
        raise box["error"]
    return box["body"], box.get("content_type")


def _url_reader(url: str, max_bytes: int, deadline: float, deadline_s: float, headers: dict[str, str], box: dict) -> None:
    import requests  # NOTE: installed with yfinance

    try:
        left = max(0.1, deadline - time.monotonic())
        with requests.get(url, stream=True, timeout=(min(10.0, left), min(20.0, left)), headers=headers) as response:
            box["response"] = response
            if response.status_code >= 500 or response.status_code == 429:
                raise requests.HTTPError(f"HTTP {response.status_code}", response=response)
            response.raise_for_status()
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchRefused(f"{url}: declares {int(declared):,} bytes, over the limit of {max_bytes:,}")
            chunks: list[bytes] = []
            total = 0
            while not box.get("abandoned"):
                # NOTE: read1 returns what has arrived; read(n) would wait for n bytes from a trickling server.
                chunk = response.raw.read1(CHUNK, decode_content=True)
                if not chunk:
                    break
                total += len(chunk)
                box["read"] = total
                if total > max_bytes:
                    raise FetchRefused(f"{url}: more than the limit of {max_bytes:,} bytes")
                if time.monotonic() > deadline:
                    raise FetchRefused(f"{url}: no complete answer within {deadline_s:.3g} s ({total:,} bytes read)")
                chunks.append(chunk)
            box["body"] = b"".join(chunks)
            box["content_type"] = response.headers.get("Content-Type")
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        box["error"] = exc
