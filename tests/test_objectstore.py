"""Object-store writes against moto's S3 on 127.0.0.1: whole-object publish, concurrent upserts, lock expiry, clear errors."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from s3kit import S3Server, free_port, s3_server  # noqa: E402

from aimoves.objectstore import ObjectStore, ObjectStoreConfigError, S3Url, explain  # noqa: E402

pytestmark = pytest.mark.s3
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.client().create_bucket(Bucket="aimoves")
        yield server


@pytest.fixture
def env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **s3.env()}


def run_all(script: str, n: int, env: dict[str, str], *args: str) -> list[subprocess.Popen[str]]:
    """Start `n` Python processes running `script` with argv (index, *args); all start before any is awaited."""
    code = textwrap.dedent(script)
    return [subprocess.Popen([sys.executable, "-c", code, str(i), *args], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(n)]


def wait_all(procs: list[subprocess.Popen[str]], timeout: float = 120) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-2000:]
        outs.append(out)
    return outs


UPSERT = """
    import io, sys
    import pyarrow as pa, pyarrow.parquet as pq
    from aimoves.objectstore import ObjectStore

    writer, url, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    store = ObjectStore(url)

    def upsert(rows):
        def merge(old):
            table = pq.read_table(io.BytesIO(old)).to_pylist() if old else []
            keys = {(r["writer"], r["i"]) for r in rows}
            merged = [r for r in table if (r["writer"], r["i"]) not in keys] + rows
            out = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(sorted(merged, key=lambda r: (r["writer"], r["i"]))), out)
            return out.getvalue()
        return merge

    for i in range(rounds):
        store.update("prices/market=US/year=2025/part-0.parquet", upsert([{"writer": writer, "i": i, "close": float(i)}]))
"""


def test_concurrent_upserts_of_one_partition_keep_every_row(s3: S3Server, env: dict[str, str]) -> None:
    writers, rounds = 3, 6
    wait_all(run_all(UPSERT, writers, env, "s3://aimoves/concurrent", str(rounds)))
    import pyarrow.parquet as pq

    got = ObjectStore("s3://aimoves/concurrent").get("prices/market=US/year=2025/part-0.parquet")
    assert got is not None
    rows = pq.read_table(io.BytesIO(got[0])).to_pylist()
    assert sorted((r["writer"], r["i"]) for r in rows) == [(w, i) for w in range(writers) for i in range(rounds)]


PLAIN_UPSERT = UPSERT.replace('store.update("prices', 'plain_update(store, "prices').replace(
    "for i in range(rounds):",
    "def plain_update(store, key, merge):\n"
    "        got = store.get(key)\n"
    "        store.publish(key, merge(got[0] if got else None))\n\n"
    "    for i in range(rounds):",
)


def test_plain_read_modify_write_loses_rows(s3: S3Server, env: dict[str, str]) -> None:
    """The control: the same upserts without the conditional PUT drop rows, so the test above can fail."""
    writers, rounds = 3, 6
    wait_all(run_all(PLAIN_UPSERT, writers, env, "s3://aimoves/plain", str(rounds)))
    import pyarrow.parquet as pq

    got = ObjectStore("s3://aimoves/plain").get("prices/market=US/year=2025/part-0.parquet")
    assert got is not None
    assert len(pq.read_table(io.BytesIO(got[0]))) < writers * rounds


READER = """
    import sys, time
    from aimoves.objectstore import ObjectStore

    store, seen, deadline = ObjectStore(sys.argv[2]), set(), time.time() + float(sys.argv[3])
    while time.time() < deadline:
        got = store.get("big")
        if got is None:
            continue
        body = got[0]
        assert len(body) == 4_000_000 and body.count(body[:1]) == len(body), "saw a mixed or partial object"
        seen.add(body[:1])
    print(len(seen))
"""


def test_a_reader_never_sees_half_an_object(s3: S3Server, env: dict[str, str]) -> None:
    store = ObjectStore("s3://aimoves/whole")
    store.publish("big", b"a" * 4_000_000)
    reader = run_all(READER, 1, env, "s3://aimoves/whole", "4")
    end = time.time() + 4
    n = 0
    while time.time() < end:
        store.publish("big", (b"b" if n % 2 else b"a") * 4_000_000)
        n += 1
    (out,) = wait_all(reader)
    assert n > 2 and int(out) >= 1


HOLDER = """
    import sys, time
    from aimoves.objectstore import ObjectStore

    with ObjectStore(sys.argv[2]).lock("prices-US-2025", ttl_s=float(sys.argv[3])):
        print("held", flush=True)
        time.sleep(600)
"""


def test_a_killed_lock_holder_blocks_others_at_most_its_ttl(s3: S3Server, env: dict[str, str]) -> None:
    ttl = 3.0
    (holder,) = run_all(HOLDER, 1, env, "s3://aimoves/locks", str(ttl))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    time.sleep(ttl)  # live holder: its refreshes keep the lease although ttl has passed since it took it
    store = ObjectStore("s3://aimoves/locks")
    from aimoves.objectstore import LockTimeout

    with pytest.raises(LockTimeout):
        with store.lock("prices-US-2025", ttl_s=ttl, wait_s=1.0, poll_s=0.2):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    killed = time.monotonic()
    with store.lock("prices-US-2025", ttl_s=ttl, wait_s=30, poll_s=0.2):
        waited = time.monotonic() - killed
    assert ttl / 3 <= waited <= ttl + 3.0  # held until its lease ran out; then one poll and a request or two
    assert store.get("_locks/prices-US-2025.lock") is None  # released


COUNTER = """
    import sys
    from aimoves.objectstore import ObjectStore

    store = ObjectStore(sys.argv[2])
    for _ in range(int(sys.argv[3])):
        with store.lock("counter", ttl_s=10, poll_s=0.05):
            got = store.get("counter")
            store.publish("counter", str(int(got[0]) + 1 if got else 1).encode())
"""


def test_the_lock_excludes_concurrent_holders(s3: S3Server, env: dict[str, str]) -> None:
    wait_all(run_all(COUNTER, 3, env, "s3://aimoves/counter", "5"))
    got = ObjectStore("s3://aimoves/counter").get("counter")
    assert got is not None and int(got[0]) == 15


def test_clear_errors(s3: S3Server, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ObjectStoreConfigError, match=r"bucket 'nosuch' does not exist"):
        ObjectStore("s3://nosuch/x").check()
    ObjectStore("s3://aimoves/x").check()  # the good case passes

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ObjectStoreConfigError, match=r"cannot reach the object store at http://127\.0\.0\.1:\d+: check AWS_ENDPOINT_URL"):
        ObjectStore("s3://aimoves/x").check()

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ObjectStoreConfigError, match=r"no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        ObjectStore("s3://aimoves/x").check()

    with pytest.raises(ObjectStoreConfigError, match="not an object-store location"):
        S3Url.parse("/tmp/data")


def test_a_denied_write_is_one_clear_line() -> None:
    """A 403 on PUT, as S3 returns it (moto's standalone server enforces no IAM by default)."""
    from botocore.exceptions import ClientError

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")
    clear = explain(denied, S3Url.parse("s3://aimoves/team"), "write")
    assert clear is not None and str(clear) == "s3://aimoves/team: access denied (write): the credentials may not write in bucket 'aimoves'"
