"""SSRF-safe fetcher: refusals, redirects, DNS rebinding, TLS with a pinned IP, limits."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.gateway.net.fetch import FetchError, FetchPolicy, MediaFetcher, address_refusal

BODY = b"video-bytes-" * 1000


class _Handler(BaseHTTPRequestHandler):
    body = BODY

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/video":
            self._send(self.body)
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query.removeprefix("to="))
            self.end_headers()
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        elif path == "/liar":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"4000\r\n" + b"y" * 0x4000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up mid-body is what several tests do on purpose


def _serve(host: str, port: int = 0, body: bytes = BODY, tls: ssl.SSLContext | None = None):
    handler = type("H", (_Handler,), {"body": body})
    server = _QuietServer((host, port), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def server():
    srv = _serve("127.0.0.1")
    yield srv
    srv.shutdown()
    srv.server_close()


class _Resolver:
    """A DNS the test controls: name -> list of answers, one answer list per call in turn."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.table.get(host)
        if not answers:
            raise FetchError(f"no such host {host}", reason="dns_failed")
        return answers.pop(0) if len(answers) > 1 else answers[0]


def _fetcher(resolver=None, **policy) -> MediaFetcher:
    policy.setdefault("allow_http", True)
    policy.setdefault("trusted_networks", ("127.0.0.1/32",))
    return MediaFetcher(FetchPolicy(**policy), resolver or _Resolver({}))


def test_downloads_through_a_resolved_name(server, tmp_path: Path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]]})
    url = f"http://media.example:{server.server_port}/video"
    result = _fetcher(resolver).fetch(url, tmp_path / "v.mp4")
    assert result.path.read_bytes() == BODY
    assert result.size == len(BODY) and result.content_type == "video/mp4"
    assert not (tmp_path / "v.mp4.part").exists()


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://media.example/x.mp4",
        "gopher://media.example:70/_x",
        "data:text/plain,hi",
        "https://user:pw@media.example/x.mp4",
        "https:///nohost",
        "https://media.example:99999/x",
        "https://bad_host!.example/x",
    ],
)
def test_refuses_bad_schemes_and_malformed_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as err:
        _fetcher(_Resolver({"media.example": [["8.8.8.8"]]})).fetch(url, tmp_path / "x")
    assert err.value.reason == "url_refused"


def test_plain_http_refused_unless_configured(tmp_path: Path) -> None:
    fetcher = MediaFetcher(FetchPolicy(), _Resolver({"media.example": [["8.8.8.8"]]}))
    with pytest.raises(FetchError, match="scheme 'http' is not allowed"):
        fetcher.fetch("http://media.example/x.mp4", tmp_path / "x")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "[::1]",
        "[fe80::1]",
        "[fd00:ec2::254]",
        "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:7f00:1::]",
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "127.1",
        "127.000.000.001",
        "017700000001",
    ],
)
def test_refuses_internal_addresses_in_every_spelling(host: str, tmp_path: Path) -> None:
    fetcher = MediaFetcher(FetchPolicy(), _Resolver({}))
    with pytest.raises(FetchError) as err:
        fetcher.fetch(f"https://{host}/x.mp4", tmp_path / "x")
    assert err.value.reason == "url_refused"


@pytest.mark.parametrize(
    "answer", ["127.0.0.1", "10.0.0.5", "169.254.169.254", "::ffff:192.168.0.1"]
)
def test_refuses_names_resolving_to_internal_addresses(answer: str, tmp_path: Path) -> None:
    resolver = _Resolver({"evil.example": [["93.184.216.34", answer]]})
    with pytest.raises(FetchError, match="resolves to"):
        MediaFetcher(FetchPolicy(), resolver).fetch("https://evil.example/x", tmp_path / "x")


def test_metadata_address_refused_even_when_trusted() -> None:
    trusted = [ipaddress.ip_network("169.254.0.0/16")]
    assert address_refusal(ipaddress.ip_address("169.254.169.254"), trusted)
    assert address_refusal(ipaddress.ip_address("169.254.1.1"), trusted) is None
    assert address_refusal(ipaddress.ip_address("93.184.216.34")) is None


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x",
        "http://[::ffff:127.0.0.2]/x",
        "http://2130706433/x",
        "file:///etc/passwd",
        "http://internal.example/x",
    ],
)
def test_refuses_redirects_to_internal_targets(server, target: str, tmp_path: Path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]], "internal.example": [["10.9.9.9"]]})
    url = f"http://media.example:{server.server_port}/redirect?to={target}"
    with pytest.raises(FetchError) as err:
        _fetcher(resolver).fetch(url, tmp_path / "x")
    assert err.value.reason == "url_refused"
    assert not (tmp_path / "x").exists()


def test_follows_allowed_redirects_and_limits_their_number(server, tmp_path: Path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]]})
    base = f"http://media.example:{server.server_port}"
    result = _fetcher(resolver).fetch(f"{base}/redirect?to=/video", tmp_path / "v")
    assert result.path.read_bytes() == BODY and result.final_url == f"{base}/video"
    loop = f"{base}/redirect?to={base}/redirect?to=/video"
    with pytest.raises(FetchError, match="more than 1 redirects"):
        _fetcher(resolver, max_redirects=1).fetch(loop, tmp_path / "v2")


def test_dns_rebinding_cannot_swap_the_address(tmp_path: Path) -> None:
    """The name first resolves to the trusted server, later to another one: we stay pinned."""
    good = _serve("127.0.0.1", body=b"good")
    evil = _serve("127.0.0.2", port=good.server_port, body=b"evil")
    try:
        resolver = _Resolver({"media.example": [["127.0.0.1"], ["127.0.0.2"], ["127.0.0.2"]]})
        url = f"http://media.example:{good.server_port}/video"
        assert _fetcher(resolver).fetch(url, tmp_path / "v").path.read_bytes() == b"good"
        assert resolver.calls == ["media.example"]
        with pytest.raises(FetchError, match="resolves to 127.0.0.2"):
            _fetcher(resolver).fetch(url, tmp_path / "v2")
    finally:
        for srv in (good, evil):
            srv.shutdown()
            srv.server_close()


def test_size_limits_declared_and_streamed(server, tmp_path: Path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]]})
    base = f"http://media.example:{server.server_port}"
    with pytest.raises(FetchError) as err:
        _fetcher(resolver, max_bytes=100).fetch(f"{base}/video", tmp_path / "a")
    assert err.value.reason == "too_large"
    with pytest.raises(FetchError) as err:
        _fetcher(resolver).fetch(f"{base}/liar", tmp_path / "b")
    assert err.value.reason == "too_large"
    with pytest.raises(FetchError) as err:
        _fetcher(resolver, max_bytes=300_000).fetch(f"{base}/chunked", tmp_path / "c")
    assert err.value.reason == "too_large"
    assert not list(tmp_path.iterdir())


def test_slow_download_hits_the_deadline(server, tmp_path: Path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]]})
    start = time.monotonic()
    with pytest.raises(FetchError) as err:
        _fetcher(resolver, timeout_s=0.8).fetch(
            f"http://media.example:{server.server_port}/slow", tmp_path / "s"
        )
    assert err.value.reason == "fetch_timeout"
    assert time.monotonic() - start < 3.0


def test_cancel_stops_a_download(server, tmp_path: Path) -> None:
    resolver = _Resolver({"media.example": [["127.0.0.1"]]})
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(FetchError) as err:
        _fetcher(resolver).fetch(
            f"http://media.example:{server.server_port}/slow", tmp_path / "s", cancel
        )
    assert err.value.reason == "cancelled"


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_with_pinned_ip_checks_the_certificate_name(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "media.example")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    srv = _serve("127.0.0.1", tls=tls)
    try:
        port = srv.server_port
        resolver = _Resolver({"media.example": [["127.0.0.1"]], "other.example": [["127.0.0.1"]]})
        fetcher = _fetcher(resolver, allow_http=False, ca_file=str(cert))
        got = fetcher.fetch(f"https://media.example:{port}/video", tmp_path / "v")
        assert got.path.read_bytes() == BODY
        with pytest.raises(FetchError, match="failed"):
            fetcher.fetch(f"https://other.example:{port}/video", tmp_path / "w")
    finally:
        srv.shutdown()
        srv.server_close()


def test_internationalised_names_resolve_in_punycode(server, tmp_path: Path) -> None:
    resolver = _Resolver({"xn--bcher-kva.example": [["127.0.0.1"]]})
    url = f"http://b\u00fccher.example:{server.server_port}/video"
    assert _fetcher(resolver).fetch(url, tmp_path / "v").size == len(BODY)
    assert resolver.calls == ["xn--bcher-kva.example"]
