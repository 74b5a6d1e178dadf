"""Firebase storage retries transient errors only, against gcp-storage-emulator.

The client reaches the emulator through a small forwarding HTTP proxy that counts every
request it sees and, for the requests a test names, answers a status itself (403 and 503: the
emulator never sends them). Counts, not timings, say how often a call was tried.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import pytest
from fastapi.testclient import TestClient
from gcp_storage_emulator import server as emulator_server

from services.gateway.config import GatewayConfig
from services.gateway.delivery.firebase_app import delete_firebase_app, make_firebase_app
from services.gateway.delivery.storage import FirebaseStorage, StorageError, is_transient
from tests.unit.gateway.gateway_harness import (
    PROJECT,
    StandInOrchestrator,
    build_gateway,
    wait_for,
)

BUCKET = "dynamics-retries.appspot.com"
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CountingProxy:
    """Forwards HTTP to the emulator; counts (method, path) and can answer statuses itself."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.seen: Counter[tuple[str, str]] = Counter()
        self.rules: list[list] = []  # [method, path regex, status, times left (None: always)]
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with proxy.lock:
                    proxy.seen[(self.command, path)] += 1
                    status = proxy._injected(self.command, path)
                if status is not None:
                    payload = json.dumps(
                        {
                            "error": {
                                "code": status,
                                "message": f"injected {status}",
                                "errors": [{"message": f"injected {status}", "reason": "injected"}],
                            }
                        }
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS
                    }
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in _HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _injected(self, method: str, path: str) -> int | None:
        for rule in self.rules:
            want_method, pattern, status, left = rule
            if want_method == method and re.search(pattern, path) and left != 0:
                if left is not None:
                    rule[3] = left - 1
                return status
        return None

    def answer(self, method: str, pattern: str, status: int, times: int | None = None) -> None:
        """Answer `status` to the next `times` matching requests (None: to all of them)."""
        with self.lock:
            self.rules.append([method, pattern, status, times])

    def count(self, method: str, pattern: str) -> int:
        with self.lock:
            return sum(
                n for (m, p), n in self.seen.items() if m == method and re.search(pattern, p)
            )

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(monkeypatch):
    port = _free_port()
    emulator = emulator_server.create_server(
        "127.0.0.1", port, in_memory=True, default_bucket=BUCKET
    )
    emulator.start()
    with CountingProxy(port) as counting:
        # google-cloud-storage reads this variable itself (as it does in production pods).
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{counting.port}")
        yield counting
    emulator.stop()


@pytest.fixture
def app():
    """A Firebase app with anonymous credentials; its storage client reads
    STORAGE_EMULATOR_HOST when first used."""
    firebase = make_firebase_app(
        GatewayConfig(
            firebase_project_id=PROJECT, firebase_credentials="anonymous", storage_bucket=BUCKET
        )
    )
    yield firebase
    delete_firebase_app(firebase)


@pytest.fixture
def storage(proxy, app):
    return FirebaseStorage(app, BUCKET, attempts=4, backoff_s=0.01)


UPLOAD = r"/upload/.*/o$|/b/[^/]+/o$"


def _object_path(key: str) -> str:
    return re.escape(key.replace("/", "%2F")) + "$"


def test_a_missing_object_is_one_request_and_a_clear_error(proxy, storage, tmp_path):
    with pytest.raises(StorageError, match=r"download of results/none\.mp4 failed: .*404") as err:
        storage.download("results/none.mp4", tmp_path / "none.mp4")
    assert not err.value.transient and "not retried" in str(err.value)
    assert proxy.count("GET", _object_path("results/none.mp4")) == 1
    with pytest.raises(StorageError, match="404") as err:
        b"".join(storage.iter_bytes("results/none.mp4"))
    assert not err.value.transient
    assert proxy.count("GET", _object_path("results/none.mp4")) == 2


def test_an_upload_into_a_missing_bucket_is_not_retried(proxy, app, tmp_path):
    source = tmp_path / "out.mp4"
    source.write_bytes(b"mp4")
    missing = FirebaseStorage(app, "no-such-bucket", attempts=4, backoff_s=0.01)
    with pytest.raises(StorageError, match="404") as err:
        missing.put("results/x.mp4", source)
    assert not err.value.transient
    assert proxy.count("POST", r"/b/no-such-bucket/o$") == 1


def test_forbidden_is_not_retried(proxy, storage, tmp_path):
    source = tmp_path / "out.mp4"
    source.write_bytes(b"mp4")
    proxy.answer("POST", UPLOAD, 403)
    with pytest.raises(StorageError, match=r"upload of results/f\.mp4 failed: .*403") as err:
        storage.put("results/f.mp4", source)
    assert not err.value.transient and "not retried" in str(err.value)
    assert proxy.count("POST", UPLOAD) == 1


def test_transient_errors_are_retried_until_the_upload_lands(proxy, storage, tmp_path):
    source = tmp_path / "out.mp4"
    source.write_bytes(b"payload" * 1000)
    proxy.answer("POST", UPLOAD, 503, times=1)
    proxy.answer("POST", UPLOAD, 429, times=1)
    proxy.answer("POST", UPLOAD, 500, times=1)
    storage.put("results/t.mp4", source)
    assert proxy.count("POST", UPLOAD) == 4
    assert b"".join(storage.iter_bytes("results/t.mp4")) == source.read_bytes()


def test_an_outage_uses_every_attempt(proxy, storage, tmp_path):
    source = tmp_path / "out.mp4"
    source.write_bytes(b"mp4")
    proxy.answer("POST", UPLOAD, 503)
    with pytest.raises(StorageError, match="after 4 attempts") as err:
        storage.put("results/o.mp4", source)
    assert err.value.transient
    assert proxy.count("POST", UPLOAD) == 4


def test_refused_connections_are_transient(tmp_path, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_free_port()}")
    app = make_firebase_app(
        GatewayConfig(
            firebase_project_id=PROJECT, firebase_credentials="anonymous", storage_bucket=BUCKET
        )
    )
    storage = FirebaseStorage(app, BUCKET, attempts=4, backoff_s=0.01)
    with pytest.raises(StorageError, match="after 4 attempts") as err:
        storage.download("results/x.mp4", tmp_path / "x.mp4")
    assert err.value.transient and is_transient(err.value.__cause__)
    delete_firebase_app(app)


def test_a_refused_result_fails_the_job_once_without_a_retry(proxy, tmp_path):
    gateway = build_gateway(
        tmp_path,
        StandInOrchestrator(),
        storage_backend="firebase",
        storage_bucket=BUCKET,
        firebase_project_id=PROJECT,
        firebase_credentials="anonymous",
    )
    proxy.answer("POST", UPLOAD, 403)
    body = {"source_url": "http://127.0.0.1:9/a.png", "driving_url": "http://127.0.0.1:9/v.mp4"}
    try:
        with TestClient(gateway.app, raise_server_exceptions=False) as client:
            job_id = client.post("/v1/jobs", json=body).json()["id"]

            def failed():
                view = client.get(f"/v1/jobs/{job_id}").json()
                return view if view["status"] == "failed" else None

            view = wait_for(failed, 30)
    finally:
        gateway.close()
    assert view["attempts"] == 1
    assert view["error"]["code"] == "storage_refused"
    assert proxy.count("POST", UPLOAD) == 1
