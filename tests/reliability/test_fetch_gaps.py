"""URL-fetching gaps beyond tests/unit/gateway/test_fetch.py: redirects to every refused
spelling, a name that rebinds between the first hop and a redirect hop, a server that never
answers, and a gzip bomb (the size limit counts what is written, not what is sent)."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.gateway.fetch import FetchError, FetchPolicy, MediaFetcher

BOMB = gzip.compress(b"\x00" * (40 * 1024 * 1024), compresslevel=9)  # ~40 KiB on the wire


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        return

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query.removeprefix("to="))
            self.end_headers()
        elif path == "/bomb":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(BOMB)))
            self.end_headers()
            self.wfile.write(BOMB)
        else:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"video")


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        return


@pytest.fixture()
def server():
    srv = _Quiet(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


class _Resolver:
    """Answers per name, one list per call in turn (the last repeats); records the calls."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table, self.calls = table, []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise FetchError(f"no such host {host}", reason="dns_failed")
        return answers.pop(0) if len(answers) > 1 else answers[0]


def _fetcher(resolver, **policy) -> MediaFetcher:
    policy = {"allow_http": True, "trusted_networks": ("127.0.0.1/32",), **policy}
    return MediaFetcher(FetchPolicy(**policy), resolver)


REDIRECT_TARGETS = [
    "gopher://media.example:70/_GET", "ftp://media.example/v.mp4", "file:///etc/shadow",
    "dict://127.0.0.1:11211/stat", "http://0177.0.0.1/", "http://0x7f.0.0.1/",
    "http://167772161/", "http://127.1/", "http://0.0.0.0/", "http://[::1]/", "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/", "http://[::ffff:a9fe:a9fe]/", "http://169.254.169.254/",
    "http://[fd00:ec2::254]/", "http://metadata.google.internal/", "http://100.100.100.200/",
    "http://192.168.0.1:8080/", "http://media.example@10.0.0.1/", "http://10.0.0.1%2f@x/",
]


@pytest.mark.parametrize("target", REDIRECT_TARGETS)
def test_redirect_to_refused_target(server, target: str, tmp_path: Path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]],
                          "metadata.google.internal": [["169.254.169.254"]]})
    url = f"http://media.example:{server.server_port}/redirect?to={target}"
    with pytest.raises(FetchError) as err:
        _fetcher(resolver).fetch(url, tmp_path / "x")
    assert err.value.reason in ("url_refused", "dns_failed"), err.value.message
    assert not list(tmp_path.iterdir())


def test_rebinding_between_the_first_hop_and_a_redirect(server, tmp_path: Path) -> None:
    """The same name resolves to the trusted server, then to a private one on the next hop."""
    resolver = _Resolver({"media.example": [["127.0.0.1"], ["10.0.0.7"]]})
    base = f"http://media.example:{server.server_port}"
    with pytest.raises(FetchError) as err:
        _fetcher(resolver).fetch(f"{base}/redirect?to={base}/video", tmp_path / "x")
    assert err.value.reason == "url_refused" and "10.0.0.7" in err.value.message
    assert resolver.calls == ["media.example", "media.example"]


def test_plain_http_redirect_refused_when_http_is_off(server, tmp_path: Path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]]})
    with pytest.raises(FetchError, match="scheme 'http'"):
        _fetcher(resolver, allow_http=False).fetch(
            f"http://media.example:{server.server_port}/video", tmp_path / "x")


def test_gzip_bomb_is_stopped_by_the_size_limit(server, tmp_path: Path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]]})
    url = f"http://media.example:{server.server_port}/bomb"
    try:
        result = _fetcher(resolver, max_bytes=1024 * 1024).fetch(url, tmp_path / "b")
    except FetchError as exc:
        assert exc.reason == "too_large"
        assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 1024 * 1024
    else:  # not decoded: the compressed bytes are stored as sent
        assert result.size == len(BOMB) == result.path.stat().st_size


def test_server_that_never_answers_hits_the_deadline(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        resolver = _Resolver({"media.example": [["127.0.0.1"]]})
        start = time.monotonic()
        with pytest.raises(FetchError) as err:
            _fetcher(resolver, timeout_s=1.0).fetch(
                f"http://media.example:{silent.getsockname()[1]}/v", tmp_path / "x")
        assert err.value.reason == "fetch_timeout"
        assert time.monotonic() - start < 4.0
    finally:
        silent.close()
