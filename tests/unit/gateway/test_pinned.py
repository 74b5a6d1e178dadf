"""IP-pinned connections: they go to the checked address, keep the name for Host, SNI and the
certificate check, and are the ones both media fetching and webhooks use."""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.gateway.delivery import webhook
from services.gateway.delivery.webhook import WebhookTarget
from services.gateway.net import fetch
from services.gateway.net.pinned import (
    PinnedHTTPConnection,
    PinnedHTTPSConnection,
    pinned_connection,
)
from tests.unit.gateway.test_fetch import _self_signed


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]]

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.headers["Host"]))
        self.send_response(204)
        self.end_headers()

    do_GET = do_POST = _answer


@pytest.fixture()
def recorder():
    """Start a loopback server (TLS when given a context); yields (start, seen requests)."""
    seen: list[tuple[str, str]] = []
    servers: list[ThreadingHTTPServer] = []

    def start(tls: ssl.SSLContext | None = None) -> int:
        server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Recorder,), {"seen": seen}))
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_port

    yield start, seen
    for server in servers:
        server.shutdown()
        server.server_close()


def _tls_pair(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a certificate for `name`, client context that trusts only it)."""
    cert, key = _self_signed(tmp_path, name)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def test_fetching_and_webhooks_share_one_pair() -> None:
    assert fetch.pinned_connection is pinned_connection
    assert webhook.pinned_connection is pinned_connection
    tls = ssl.create_default_context()
    assert type(pinned_connection("https", "a.example", 443, "192.0.2.1", 1, tls)) is (
        PinnedHTTPSConnection
    )
    assert type(pinned_connection("http", "a.example", 80, "192.0.2.1", 1, tls)) is (
        PinnedHTTPConnection
    )


def test_plain_http_goes_to_the_pinned_address_and_keeps_the_name(recorder) -> None:
    start, seen = recorder
    port = start()
    conn = PinnedHTTPConnection("name.invalid", port, "127.0.0.1", 5)
    try:
        conn.request("GET", "/x")
        assert conn.getresponse().status == 204
    finally:
        conn.close()
    assert seen == [("GET", f"name.invalid:{port}")]


def test_tls_checks_the_certificate_against_the_name_not_the_address(recorder, tmp_path) -> None:
    start, seen = recorder
    server_tls, client_tls = _tls_pair(tmp_path, "media.example")
    port = start(server_tls)
    good = PinnedHTTPSConnection("media.example", port, "127.0.0.1", 5, client_tls)
    try:
        good.request("GET", "/x")
        assert good.getresponse().status == 204
    finally:
        good.close()
    wrong = PinnedHTTPSConnection("other.example", port, "127.0.0.1", 5, client_tls)
    with pytest.raises(ssl.SSLCertVerificationError):
        wrong.request("GET", "/x")
    wrong.close()
    assert seen == [("GET", f"media.example:{port}")]


def test_a_webhook_over_https_reaches_the_checked_address_by_name(recorder, tmp_path) -> None:
    start, seen = recorder
    server_tls, client_tls = _tls_pair(tmp_path, "hooks.example")
    port = start(server_tls)
    target = WebhookTarget(allow_private=True, resolver=lambda host, port: ["127.0.0.1"])
    target._tls = client_tls  # trust the test certificate instead of the system store
    assert target.post(f"https://hooks.example:{port}/done", b"{}", {}) == 204
    assert seen == [("POST", f"hooks.example:{port}")]
