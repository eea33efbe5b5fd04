"""Hostile input (issue 10): every read bounded in time and memory, nothing local leaks into the data.

The denial-of-service cases run in a subprocess under `resource.setrlimit` (address space), so a
regression is killed by the limit instead of eating the machine, and assert the time it took.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import typer

from aimoves.errors import ConfigError
from aimoves.news.base import NewsRequest
from aimoves.news.raw import write_news_raw
from aimoves.news.sources import RssNewsSource
from aimoves.universe import load_universe, parse_universe

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 1536 * 2**20  # address space of the child; the imports alone take ~600 MB of it
FEED = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>wire</title>'
    b"<item><title>Nvidia falls</title><link>https://wire.example.com/a</link>"
    b"<pubDate>Mon, 27 Jan 2025 14:00:00 GMT</pubDate></item></channel></rss>\n"
)


def _record(point: str, outcome: str, klass: str) -> None:
    out = os.environ.get("AIMOVES_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"kind": "hostile input", "point": point, "outcome": outcome, "verdict": "ok", "class": klass}) + "\n")


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


# The child records its own peak RSS at exit, as VmHWM (the high-water mark of its own address space,
# in kB). Neither getrusage figure will do: RUSAGE_CHILDREN is the maximum over every child this pytest
# process ever waited for, and Linux carries RUSAGE_SELF's ru_maxrss across fork and exec, so a child
# forked from a 500 MB pytest process reports 500 MB whatever it did itself.
_OWN_PEAK = (
    "import atexit as _a, os as _o, re as _re\n"
    "_a.register(lambda: open(_o.environ['AIMOVES_TEST_PEAK_RSS'], 'w').write("
    "_re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)))\n"
)


def _run_limited(code: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run `code` in a child under the memory limit: (process, wall seconds, the child's own max RSS in MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _OWN_PEAK + code, *args], capture_output=True, text=True, timeout=timeout,
                              preexec_fn=_limited, cwd=ROOT, env={**os.environ, **(env or {}), "AIMOVES_TEST_PEAK_RSS": str(peak_file)})
        elapsed = time.perf_counter() - started
        rss = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("inf")  # no record: the child died before exit
    return proc, elapsed, rss


def alias_bomb(levels: int) -> str:
    """An invalid universe whose anchors nest `levels` deep, nine aliases a level (9**levels leaves)."""
    lines = ["stocks:", "  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}", "x0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


# -- item 1: alias bombs ------------------------------------------------------------------------
def test_alias_bomb_is_refused_fast_and_small(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(9))
    code = (
        "import sys, time\nfrom aimoves.universe import load_universe\nfrom aimoves.errors import ConfigError\n"
        "t = time.perf_counter()\n"
        "try:\n    load_universe(sys.argv[1])\nexcept ConfigError as exc:\n    print(f'{time.perf_counter() - t:.4f}'); print(exc)\n"
    )
    proc, elapsed, rss = _run_limited(code, str(path), timeout=30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    refused_in, message = proc.stdout.split("\n", 1)
    assert "aliases expand" in message and str(path) in message
    assert float(refused_in) < 0.1, refused_in
    assert rss < 400, rss
    _record("universe alias bomb, 9 levels (9^9 leaves)", f"refused in {float(refused_in) * 1000:.1f} ms (child max RSS {rss:.0f} MB, "
            f"under RLIMIT_AS {MEMORY_LIMIT >> 20} MB): {message.strip().replace(str(path), path.name)}", "denial of service")


def test_alias_bomb_cli_exits_2_with_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(9))
    code = "import sys\nfrom aimoves.cli import app\nsys.argv = ['aimoves', 'universe', '--universe', sys.argv[1]]\napp()\n"
    proc, elapsed, rss = _run_limited(code, str(path), timeout=30)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
    assert elapsed < 10 and rss < 400, (elapsed, rss)
    _record("`aimoves universe` on the 9-level alias bomb", f"exit 2 in {elapsed:.1f} s including interpreter start (max RSS {rss:.0f} MB)", "denial of service")


def test_aliases_within_bounds_still_load() -> None:
    text = "stocks:\n  - &nv {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}\n  - {<<: *nv, symbol: AMD, name: AMD}\n"
    universe = parse_universe(text, "merge")
    assert [s.symbol for s in universe.stocks] == ["NVDA", "AMD"]


# -- item 8, item 9 (universe), issue 9 item 6 -------------------------------------------------------
def test_duplicate_keys_are_refused_with_their_lines() -> None:
    text = (
        "stocks:\n  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}\n"
        "stocks:\n  - symbol: AMD\n    name: AMD\n    market: US\n    market: HK\n    sector: semiconductors\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_universe(text, "u.yaml")
    message = str(info.value)
    assert "u.yaml, line 3: key 'stocks' is given twice (first at line 1)" in message
    assert "u.yaml, line 7: key 'market' is given twice (first at line 6)" in message


def test_company_with_two_sectors_is_refused_at_its_line() -> None:
    text = (
        "stocks:\n"
        "  - {symbol: BABA, name: Alibaba, market: US, sector: cloud, company: alibaba}\n"
        "  - {symbol: 9988.HK, name: Alibaba, market: HK, sector: internet_platforms, company: alibaba}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_universe(text, "u.yaml")
    assert "u.yaml, line 3: stocks[1] (9988.HK).sector:" in str(info.value)
    assert "BABA (stocks[0])" in str(info.value) and "a company has one sector" in str(info.value)
    same = text.replace("internet_platforms", "cloud")
    assert len(parse_universe(same, "u.yaml").stocks) == 2


def test_impossible_date_is_one_error_naming_file_line_and_field() -> None:
    text = "stocks:\n  - symbol: NVDA\n    name: NVIDIA\n    market: US\n    sector: semiconductors\n    since: 2025-13-01\n"
    with pytest.raises(ConfigError) as info:
        parse_universe(text, "u.yaml")
    assert str(info.value).startswith("invalid universe file:\n  u.yaml, line 6: stocks[0] (NVDA).since:"), str(info.value)


# -- item 2: feeds that never end ----------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/feed":
            self._send(FEED)
        elif self.path == "/trickle":  # one byte every 0.3 s of a 10,000-byte answer
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            try:
                for _ in range(10000):
                    self.wfile.write(b"<")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass
        elif self.path == "/huge":  # chunked, no length: endless
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"x" * 65536
            try:
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            except OSError:
                pass
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_endless_feeds_are_cut_off_and_the_rest_is_read(server: str, tmp_path: Path) -> None:
    fifo = tmp_path / "feed.fifo"
    os.mkfifo(fifo)
    good = tmp_path / "good.xml"
    good.write_bytes(FEED)
    feeds = [str(fifo), "/dev/zero", f"{server}/trickle", f"{server}/huge", str(good), f"{server}/feed"]
    code = (
        "import json, sys, time\nfrom aimoves.news.base import NewsRequest\n"
        "from aimoves.news.sources import RssNewsSource\n"
        "t = time.perf_counter()\n"
        "batch = RssNewsSource(tuple(sys.argv[1:])).fetch_news(NewsRequest())\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'items': len(batch.items), "
        "'failures': {f.target: f.reason for f in batch.failures}, 'stored': [p.meta['feed'] for p in batch.payloads]}))\n"
    )
    settings = {"AIMOVES_FEED_MAX_BYTES": "2000000", "AIMOVES_FEED_DEADLINE_SECONDS": "2"}
    proc, elapsed, rss = _run_limited(code, *feeds, timeout=60, env=settings)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    failures = result["failures"]
    assert "a FIFO, not a regular file" in failures[str(fifo)]
    assert "a character device, not a regular file" in failures["/dev/zero"]
    assert "no complete answer within 2 s" in failures[f"{server}/trickle"]
    assert "more than the limit of 2,000,000 bytes" in failures[f"{server}/huge"]
    assert result["items"] == 2 and result["stored"] == [str(good), f"{server}/feed"]
    # one 2 s deadline (the trickle) plus the rest; the old reader never returned
    assert result["seconds"] < 5, result["seconds"]
    assert rss < 400, rss
    _record("feeds: a FIFO, /dev/zero, a server trickling a byte every 0.3 s, an endless chunked answer, two good feeds",
            f"4 refused by name, 2 read (2 items) in {result['seconds']:.1f} s with deadline 2 s and limit 2 MB "
            f"(child max RSS {rss:.0f} MB under RLIMIT_AS {MEMORY_LIMIT >> 20} MB)", "denial of service")


def test_read_bounded_limits_files_and_answers(server: str, tmp_path: Path) -> None:
    from aimoves.fetch_limits import FetchRefused, excerpt, read_bounded

    assert excerpt(b"a\x00b[bold]" * 10, 8) == "a\\x00b[bold…"  # short, control characters escaped

    big = tmp_path / "big.xml"
    big.write_bytes(b" " * 5000)
    with pytest.raises(FetchRefused, match="5,000 bytes, over the limit of 4,000"):
        read_bounded(str(big), 4000, 5)
    with pytest.raises(FetchRefused, match="declares"):
        read_bounded(f"{server}/trickle", 4000, 5)  # Content-Length 10,000: refused before any wait
    with pytest.raises(FetchRefused, match="a directory"):
        read_bounded(str(tmp_path), 4000, 5)
    assert read_bounded(f"file://{big}", 5000, 5) == (b" " * 5000, None)
    body, content_type = read_bounded(f"{server}/feed", 5000, 5)
    assert body == FEED and content_type == "application/rss+xml"


def test_feed_limits_are_settings_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from aimoves.errors import AimovesError
    from aimoves.fetch_limits import FetchLimits

    monkeypatch.delenv("AIMOVES_FEED_MAX_BYTES", raising=False)
    monkeypatch.delenv("AIMOVES_FEED_DEADLINE_SECONDS", raising=False)
    assert RssNewsSource(("x.xml",)).limits == FetchLimits(20_000_000, 60.0)
    monkeypatch.setenv("AIMOVES_FEED_MAX_BYTES", "1000")
    monkeypatch.setenv("AIMOVES_FEED_DEADLINE_SECONDS", "2.5")
    assert RssNewsSource(("x.xml",)).limits == FetchLimits(1000, 2.5)
    monkeypatch.setenv("AIMOVES_FEED_DEADLINE_SECONDS", "soon")
    with pytest.raises(AimovesError, match="AIMOVES_FEED_DEADLINE_SECONDS='soon': not a number"):
        FetchLimits.for_feeds()


# -- item 4: nothing local leaks into the data ----------------------------------------------------
def test_rejected_feed_is_neither_stored_nor_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$SECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    good = tmp_path / "good.xml"
    good.write_bytes(FEED)
    feeds = (str(secret), "/proc/self/environ", str(good))
    environ = [e for e in Path("/proc/self/environ").read_bytes().split(b"\0") if len(e) > 8]
    assert environ  # what a leak would copy
    batch = RssNewsSource(feeds).fetch_news(NewsRequest())
    record = write_news_raw(batch, tmp_path / "data")
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data" / "raw").rglob("*") if p.is_file())
    assert b"SECRETHASH" not in stored and not any(e in stored for e in environ)
    assert [p.meta["feed"] for p in batch.payloads] == [str(good)]
    reasons = "; ".join(f.reason for f in batch.failures)
    assert {f.target for f in batch.failures} == {str(secret), "/proc/self/environ"}
    assert "SECRETHASH" not in reasons and "root:" not in reasons and not any(e.decode(errors="replace") in reasons for e in environ)
    _record("feeds naming a shadow-like file and /proc/self/environ", f"raw/ of fetch {record.fetch_id} holds only the good feed; reasons: {reasons.replace(str(tmp_path) + '/', '')}", "local leak")


def test_relative_feed_resolves_from_the_universe_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "config"
    (folder / "feeds").mkdir(parents=True)
    (folder / "feeds" / "wire.xml").write_bytes(FEED)
    universe_file = folder / "universe.yaml"
    universe_file.write_text(
        "feeds: [feeds/wire.xml, missing.xml, 'https://example.com/rss']\n"
        "stocks:\n  - {symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors, aliases: [Nvidia]}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    universe = load_universe("../config/universe.yaml")
    assert universe.feeds == (str(folder / "feeds" / "wire.xml"), str(folder / "missing.xml"), "https://example.com/rss")
    batch = RssNewsSource(universe.feeds[:2]).fetch_news(NewsRequest())
    assert len(batch.items) == 1
    assert batch.failures[0].target == str(folder / "missing.xml")  # the message shows the resolved path


def test_summary_prints_source_text_as_written() -> None:
    from aimoves import cli
    from aimoves.runs import MarketReport, RunSummary

    report = MarketReport("US", "csv", "2025-01-27..2025-02-07", failures=[{"symbol": "NVDA", "reason": "line 1: [bold]root[/bold] :x: [red]"}],
                          notes=["feed ':thumbs_up:' [link=https://x]y[/link]"])
    summary = RunSummary("r1", "backfill", "/tmp/d", "2025-01-01", markets=[report],
                         news={"window": "w", "source": "rss", "failures": [{"symbol": "/f/[i]x[/i].xml", "reason": "bad :x:"}]})
    with cli.out.capture() as captured:
        cli._print_summary(summary, strict=False, elapsed=0.1)
    text = captured.get()
    assert "line 1: [bold]root[/bold] :x: [red]" in text
    assert "feed ':thumbs_up:' [link=https://x]y[/link]" in text
    assert "news failed for /f/[i]x[/i].xml: bad :x:" in text
    assert "\u274c" not in text
    with cli.err.capture() as captured, pytest.raises(typer.Exit):
        cli._fail("universe.yaml, line 2: name ':x: [bold]NVDA'")
    assert "name ':x: [bold]NVDA'" in captured.get()


def test_implausible_news_dates_are_quarantined_not_fatal(tmp_path: Path) -> None:
    from aimoves.news.stage import update_news
    from aimoves.news.store import load_news

    items = "".join(
        f"<item><title>Nvidia story {year}</title><link>https://wire.example.com/{year}</link><pubDate>{when}</pubDate></item>"
        for year, when in (("0001", "Mon, 01 Jan 0001 14:00:00 GMT"), ("9999", "Fri, 31 Dec 9999 23:00:00 GMT"), ("2025", "Mon, 27 Jan 2025 14:00:00 GMT"))
    )
    feed = tmp_path / "feed.xml"
    feed.write_text(f'<?xml version="1.0"?><rss version="2.0"><channel><title>w</title>{items}</channel></rss>')
    universe = parse_universe(f"feeds: [{json.dumps(str(feed))}]\nstocks:\n  - {{symbol: NVDA, name: NVIDIA, market: US, sector: semiconductors}}\n", "u")
    result = update_news("rss", universe, ["US"], date(2025, 1, 20), date(2025, 2, 7), tmp_path / "data", "run1", datetime(2026, 1, 5, tzinfo=UTC))
    assert result is not None
    assert result["failed_expectations"] == {"published_at_plausible": 1, "published_at_not_in_future": 1}
    assert list(load_news(tmp_path / "data")["title"]) == ["Nvidia story 2025"]
