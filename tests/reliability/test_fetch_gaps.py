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

import httpx
import pytest

from services.gateway.net.fetch import FetchError, FetchPolicy, MediaFetcher
from tests.reliability.conftest import start_gateway

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
    "gopher://media.example:70/_GET",
    "ftp://media.example/v.mp4",
    "file:///etc/shadow",
    "dict://127.0.0.1:11211/stat",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://167772161/",
    "http://127.1/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://169.254.169.254/",
    "http://[fd00:ec2::254]/",
    "http://metadata.google.internal/",
    "http://100.100.100.200/",
    "http://192.168.0.1:8080/",
    "http://media.example@10.0.0.1/",
    "http://10.0.0.1%2f@x/",
]


@pytest.mark.parametrize("target", REDIRECT_TARGETS)
def test_redirect_to_refused_target(server, target: str, tmp_path: Path) -> None:
    resolver = _Resolver(
        {"media.example": [["127.0.0.1"]], "metadata.google.internal": [["169.254.169.254"]]}
    )
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
            f"http://media.example:{server.server_port}/video", tmp_path / "x"
        )


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
                f"http://media.example:{silent.getsockname()[1]}/v", tmp_path / "x"
            )
        assert err.value.reason == "fetch_timeout"
        assert time.monotonic() - start < 4.0
    finally:
        silent.close()


class _RawServer:
    """A loopback HTTP server that answers each path with exact bytes (header values no
    HTTP library would send), then closes the connection; records request lines."""

    def __init__(self, replies: dict[str, bytes]) -> None:
        self.replies, self.requests = replies, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                line = head.split(b"\r\n", 1)[0]
                self.requests.append(line)
                path = line.split(b" ")[1].decode("ascii", "replace") if b" " in line else ""
                conn.sendall(
                    self.replies.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                )

    def close(self) -> None:
        self.sock.close()


def _reply(*headers: bytes, body: bytes = b"video") -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


BAD_LENGTHS = {
    "/superscript-two": _reply(b"Content-Length: \xb2"),  # '²': isdigit() True, int() fails
    "/superscript-three": _reply(b"Content-Length: \xb3"),
    "/superscript-one": _reply(b"Content-Length: \xb9"),
    "/superscript-utf8": _reply(b"Content-Length: \xc2\xb2"),
    "/plus-sign": _reply(b"Content-Length: +5"),
    "/underscore": _reply(b"Content-Length: 0_5"),
    "/negative": _reply(b"Content-Length: -1"),
    "/list": _reply(b"Content-Length: 5, 5"),
    "/hex": _reply(b"Content-Length: 0x5"),
    "/thirty-digits": _reply(b"Content-Length: " + b"9" * 30),
    "/with-chunked": _reply(
        b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"5\r\nvideo\r\n0\r\n\r\n"
    ),
    "/chunk-size-superscript": _reply(
        b"Transfer-Encoding: chunked", body=b"\xb2\r\nvideo\r\n0\r\n\r\n"
    ),
}


@pytest.fixture()
def raw_server():
    srv = _RawServer(
        {
            **BAD_LENGTHS,
            "/good": _reply(b"Content-Length: 5"),
            "/vid%C3%A9o%20x?q=%C3%BC": _reply(b"Content-Length: 5"),
        }
    )
    yield srv
    srv.close()


@pytest.mark.parametrize("path", list(BAD_LENGTHS))
def test_unusable_content_length_fails_the_fetch_cleanly(raw_server, path, tmp_path) -> None:
    """A fetched server's broken framing is a `fetch_failed` reason, never an internal error,
    and nothing is left on disk."""
    resolver = _Resolver({"media.example": [["127.0.0.1"]]})
    with pytest.raises(FetchError) as err:
        _fetcher(resolver).fetch(f"http://media.example:{raw_server.port}{path}", tmp_path / "v")
    assert err.value.reason == "fetch_failed", err.value.message
    assert not list(tmp_path.iterdir())


def test_a_plain_content_length_still_downloads(raw_server, tmp_path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]]})
    result = _fetcher(resolver).fetch(
        f"http://media.example:{raw_server.port}/good", tmp_path / "v"
    )
    assert result.path.read_bytes() == b"video" and result.size == 5


def test_non_ascii_url_path_is_sent_percent_encoded(raw_server, tmp_path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]]})
    result = _fetcher(resolver).fetch(
        f"http://media.example:{raw_server.port}/vidéo x?q=ü".replace(" ", "%20"), tmp_path / "v"
    )
    assert result.path.read_bytes() == b"video"
    assert raw_server.requests[-1] == b"GET /vid%C3%A9o%20x?q=%C3%BC HTTP/1.1"


@pytest.fixture()
def fetching_gateway(tmp_path):
    """A real gateway with one worker that may fetch from loopback (no gRPC services: a job
    that fails while fetching never reaches them)."""
    gateway, base = start_gateway(
        tmp_path / "gw",
        {
            "GATEWAY_WORKERS": "1",
            "ALLOW_HTTP_URLS": "1",
            "FETCH_TRUSTED_NETWORKS": "127.0.0.1/32",
            "JOB_MAX_ATTEMPTS": "1",
            "JOB_POLL_S": "0.1",
            "FETCH_TIMEOUT_S": "10",
        },
    )
    try:
        yield gateway, base
    finally:
        try:
            gateway.terminate(30)
        finally:
            gateway.kill()


def test_a_job_whose_server_sends_content_length_superscript_fails_as_fetch_failed(
    raw_server, fetching_gateway
) -> None:
    gateway, base = fetching_gateway
    source = f"http://127.0.0.1:{raw_server.port}/superscript-two"
    with httpx.Client(base_url=base, timeout=30) as client:
        created = client.post("/v1/jobs", json={"source_url": source, "driving_url": source})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in (
            "failed",
            "succeeded",
            "cancelled",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
    assert job["status"] == "failed" and job["error"]["code"] == "fetch_failed", job
    assert "Content-Length" in job["error"]["message"]
    assert not [
        line for line in gateway.lines if '"severity": "ERROR"' in line or "Traceback" in line
    ]
