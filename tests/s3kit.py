"""An S3-compatible server on 127.0.0.1 for tests: moto's app behind a single-threaded werkzeug server.

NOTE: moto checks `If-Match` / `If-None-Match` and then stores the object in two steps; under its
threaded server (ThreadedMotoServer) two concurrent conditional PUTs can both pass the check. Real S3
makes the check and the write one step. Serving one request at a time gives the tests S3's
semantics; clients see HTTP/1.0 (one connection per request), which boto3 handles.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        """The standard AWS settings that point a client at this server."""
        return {**S3_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def arrow_fs(self):  # noqa: ANN201
        """pyarrow's S3 filesystem on this server (paths are `bucket/key`)."""
        from pyarrow import fs

        return fs.S3FileSystem(endpoint_override=self.endpoint, access_key="testing", secret_key="testing", region="us-east-1")

    def client(self):  # noqa: ANN201
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                            region_name="us-east-1")


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start moto's S3 on 127.0.0.1 and a free port in a thread; stop it at the end."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request would bury a failing test's report
    port = free_port()
    server = make_server("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=False,
                         request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.shutdown()
        thread.join(timeout=10)
