"""Plain text, canonical URLs, title keys and ids for news items (stdlib only).

* `plain_text`: HTML to text. Tags go, the content of `<script>`, `<style>` (and `<noscript>`,
  `<template>`, `<iframe>`) goes with them, entities are decoded; text that is still markup or
  still holds entities after one pass (double-encoded feeds: `&amp;amp;`, `&lt;b&gt;`) gets up to
  two more passes. Whitespace (non-breaking too) collapses to single spaces; zero-width and
  control characters are dropped. Empty text becomes None.
* `canonical_url`: an http(s) URL with lower-case scheme and host, default port, fragment and
  tracking parameters (`utm_*`, `guce_*`, `guccounter`, `ncid`, `fbclid`, `gclid`, `.tsrc`,
  `yptr`) removed and the remaining query parameters sorted. Anything else (javascript:, data:,
  mailto:, relative links) has no canonical URL.
* `title_key`: the title as a dedup key: plain text, NFKC, case-folded, punctuation and
  whitespace collapsed to single spaces. Exact keys, no fuzzy matching.
* `news_id`: 16 hex digits of blake2b over the canonical URL, else over the title key and the
  UTC publication date (so a recurring headline on another day is another item).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_DROP_CONTENT = {"script", "style", "noscript", "template", "iframe", "object"}
_BLOCK = {
    "p", "br", "div", "li", "ul", "ol", "tr", "td", "th", "table", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "section", "article", "header", "footer", "hr", "dd", "dt", "figcaption",
}
_INVISIBLE = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200f\u2028\u2029\u2060\ufeff]")
_MARKUP_OR_ENTITY = re.compile(r"<[A-Za-z/!]|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]{1,31});")

TRACKING_PARAMS = frozenset({"guccounter", "ncid", "fbclid", "gclid", ".tsrc", "yptr"})
TRACKING_PREFIXES = ("utm_", "guce_")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _DROP_CONTENT:
            self._skip += 1
        elif tag in _BLOCK:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in _BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_CONTENT:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _one_pass(text: str) -> str:
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def plain_text(value: object) -> str | None:
    """HTML (or text) to one line of plain text; None when nothing is left."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value)
    for _ in range(3):
        out = _one_pass(text)
        done = out == text or not _MARKUP_OR_ENTITY.search(out)
        text = out
        if done:
            break
    text = _INVISIBLE.sub("", text)
    text = " ".join(text.split())
    return text or None


def title_key(title: str | None) -> str:
    """The normalized title used for deduplication ('' when there is no title)."""
    text = plain_text(title) or ""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[\W_]+", " ", text)
    return " ".join(text.split())


def url_scheme(url: object) -> str | None:
    """The scheme of a link as given ('' for a relative link), None when there is no link."""
    if url is None or (isinstance(url, float) and url != url):
        return None
    text = str(url).strip()
    if not text:
        return None
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*):", text)
    return match.group(1).lower() if match else ""


def _is_tracking(name: str) -> bool:
    low = name.lower()
    return low in TRACKING_PARAMS or low.startswith(TRACKING_PREFIXES)


def canonical_url(url: object) -> str | None:
    """The canonical form of an http(s) URL (see the module docstring); None for anything else."""
    if url_scheme(url) not in ("http", "https"):
        return None
    text = "".join(str(url).split())  # NOTE: feeds wrap long links; whitespace is never part of a URL
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    if ":" in host and not host.startswith("["):  # an IPv6 literal keeps its brackets
        netloc = f"[{host}]" + ("" if port is None or port == _DEFAULT_PORTS.get(scheme) else f":{port}")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)]
    return urlunsplit((scheme, netloc, parts.path or "/", urlencode(sorted(query)), ""))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def news_id(url: str | None, key: str, published_day: str | None, fallback: str = "") -> str:
    """Stable id: hash of the canonical URL, else of the title key and UTC publication day.

    `fallback` distinguishes items with neither URL nor title (they are quarantined anyway).
    """
    if url:
        return _digest(url)
    if key:
        return _digest(f"title|{key}|{published_day or ''}")
    return _digest(f"untitled|{fallback}")
