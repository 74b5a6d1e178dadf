"""Hostile requests against the real gateway process (uvicorn on loopback): oversized and lying
bodies, chunked floods, malformed JSON and multipart, bad parameters, odd paths and methods.

The in-process API tests cover the validation rules; these go through the real HTTP server,
where streaming, Content-Length and connection handling are real. Each gets a precise 4xx in
the gateway's error shape.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.reliability.conftest import assert_rest_error

# Public literal addresses pass the intake check (nothing is fetched: the gateway runs no jobs).
URLS = {"source_url": "https://93.184.216.34/a.png", "driving_url": "https://93.184.216.34/b.mp4"}
JSON = {"Content-Type": "application/json"}


def _chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def _nested(depth: int) -> bytes:
    return b'{"options": ' + b"[" * depth + b"]" * depth + b"}"


BAD_JSON: list[tuple[str, bytes, int, str]] = [
    ("truncated-object", b'{"source_url": "http://127.0.0.1:9/a', 400, "malformed_json"),
    ("trailing-comma", b'{"seconds": 1,}', 400, "malformed_json"),
    ("single-quotes", b"{'seconds': 1}", 400, "malformed_json"),
    ("comment", b'{"seconds": 1 /* hi */}', 400, "malformed_json"),
    ("bare-word", b"hello", 400, "malformed_json"),
    ("utf16-bom", '{"seconds": 1}'.encode("utf-16"), 400, "malformed_json"),
    ("nul-bytes", b"\x00" * 64, 400, "malformed_json"),
    ("lone-surrogate", b'{"fcm_token": "\\ud800"}', 400, "malformed_json"),
    ("deep-nesting-5000", _nested(5000), 400, "malformed_json"),
    ("deep-nesting-100", _nested(100), 422, "invalid_request"),
    ("huge-number", json.dumps(URLS).encode()[:-1] + b', "seconds": 1e999}', 422,
     "invalid_request"),
    ("huge-int", json.dumps(URLS).encode()[:-1] + b', "source_max_dim": ' + b"9" * 400 + b"}",
     422, "invalid_request"),
    ("negative-zero", json.dumps({**URLS, "seconds": -0.0}).encode(), 422, "invalid_request"),
    ("duplicate-keys-bad-last", b'{"seconds": 1, "seconds": -5}', 422, "invalid_request"),
    ("string-for-object", json.dumps({**URLS, "options": "{}"}).encode(), 422, "invalid_request"),
    ("nested-unknown-option", json.dumps({**URLS, "options": {"__class__": 1}}).encode(), 422,
     "invalid_request"),
    ("region-injection", json.dumps({**URLS, "options": {"region": "all; rm -rf /"}}).encode(),
     422, "invalid_request"),
    ("multiplier-zero", json.dumps({**URLS, "options": {"driving_multiplier": 0}}).encode(), 422,
     "invalid_request"),
    ("multiplier-huge", json.dumps({**URLS, "options": {"driving_multiplier": 1e9}}).encode(),
     422, "invalid_request"),
    ("url-null-byte", json.dumps({**URLS, "source_url": "https://93.184.216.34/\x00x"}).encode(),
     422, "url_refused"),
    ("url-javascript", json.dumps({**URLS, "source_url": "javascript:alert(1)"}).encode(), 422,
     "url_refused"),
    ("url-crlf", json.dumps({**URLS, "source_url": "https://93.184.216.34/\r\nX-Evil: 1"}).encode(),
     422, "url_refused"),
    ("url-metadata", json.dumps({**URLS, "source_url": "http://169.254.169.254/"}).encode(), 422,
     "url_refused"),
    ("url-decimal-ip", json.dumps({**URLS, "driving_url": "http://3232235521/"}).encode(), 422,
     "url_refused"),
    ("url-octal-ip", json.dumps({**URLS, "driving_url": "http://012.0.0.1/"}).encode(), 422,
     "url_refused"),
    ("url-ipv6-mapped", json.dumps({**URLS, "driving_url": "http://[::ffff:a9fe:a9fe]/"}).encode(),
     422, "url_refused"),
    ("webhook-file", json.dumps({**URLS, "webhook_url": "file:///etc/passwd"}).encode(), 422,
     "invalid_webhook_url"),
    ("no-media", b"{}", 422, "invalid_request"),
    ("array-of-jobs", json.dumps([URLS, URLS]).encode(), 422, "invalid_request"),
]


@pytest.mark.parametrize(("raw", "status", "code"), [c[1:] for c in BAD_JSON],
                         ids=[c[0] for c in BAD_JSON])
def test_bad_json_bodies(rest, raw: bytes, status: int, code: str) -> None:
    assert_rest_error(rest.post("/v1/jobs", content=raw, headers=JSON), status, code)


def test_json_body_over_the_limit_is_413_while_streaming(rest) -> None:
    response = rest.post("/v1/jobs", content=_chunks(2 * 1024 * 1024), headers=JSON)
    assert_rest_error(response, 413, "too_large")


def test_chunked_multipart_flood_is_413(rest) -> None:
    head = (b'--b\r\nContent-Disposition: form-data; name="source"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")

    def body() -> Iterator[bytes]:
        yield head
        yield from _chunks(4 * 1024 * 1024)

    response = rest.post("/v1/jobs", content=body(),
                         headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_rest_error(response, 413, "too_large")


@pytest.mark.parametrize(("declared", "status", "code"), [
    ("99999999999", 413, "too_large"), ("-5", 400, None), ("abc", 400, None)])
def test_lying_content_length(intake_gateway, declared: str, status: int, code) -> None:
    base = intake_gateway[1]
    port = int(base.rsplit(":", 1)[1])
    request = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {declared}\r\nConnection: close\r\n\r\n{{}}").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status_line = reply.split(b"\r\n", 1)[0].decode()
    assert int(status_line.split()[1]) == status, reply[:300]
    if code is not None:
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == code


MULTIPART: list[tuple[str, bytes]] = [
    ("no-parts", b"--b--\r\n"),
    ("no-closing-boundary", b'--b\r\nContent-Disposition: form-data; name="seconds"\r\n\r\n5'),
    ("missing-disposition", b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n"),
    ("unknown-field", b'--b\r\nContent-Disposition: form-data; name="evil"\r\n\r\nx\r\n--b--\r\n'),
    ("file-in-text-field", b'--b\r\nContent-Disposition: form-data; name="seconds"; '
     b'filename="s.txt"\r\n\r\n5\r\n--b--\r\n'),
    ("two-sources", b'--b\r\nContent-Disposition: form-data; name="source"; filename="a"\r\n\r\n'
     b'a\r\n--b\r\nContent-Disposition: form-data; name="source"; filename="b"\r\n\r\nb\r\n'
     b"--b--\r\n"),
    ("header-flood", b"--b\r\n" + b"X-Junk: y\r\n" * 5000 + b"\r\nx\r\n--b--\r\n"),
    ("huge-text-field", b'--b\r\nContent-Disposition: form-data; name="options"\r\n\r\n'
     + b"{" * 200_000 + b"\r\n--b--\r\n"),
]


@pytest.mark.parametrize("body", [c[1] for c in MULTIPART], ids=[c[0] for c in MULTIPART])
def test_broken_multipart(rest, body: bytes) -> None:
    response = rest.post("/v1/jobs", content=body,
                         headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert 400 <= response.status_code < 500, response.text
    assert_rest_error(response, response.status_code)


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/v1/jobs/..%2f..%2fetc%2fpasswd", 404),
    ("GET", "/v1/jobs/" + "a" * 5000, 404),
    ("GET", "/v1/jobs/%00", 404),
    ("GET", "/v1/jobs/x/result?expires=1&sig=abc", 403),
    ("GET", "/v1/jobs/x/result?expires=" + "9" * 40, 422),
    ("GET", "/v1/jobs?limit=1e9", 422),
    ("GET", "/v1/jobs?limit=%00", 422),
    ("PUT", "/v1/jobs", 405),
    ("PATCH", "/v1/jobs/abc", 405),
    ("GET", "/v2/jobs", 404),
    ("POST", "/v1/jobs/abc", 405),
])
def test_odd_paths_parameters_and_methods(rest, method: str, path: str, status: int) -> None:
    assert_rest_error(rest.request(method, path), status)


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/xml", "application/x-www-form-urlencoded", "image/png", "",
    "multipart/form-data", "multipart/form-data; boundary=", "application/json-patch+json"])
def test_unsupported_or_broken_content_types(rest, content_type: str) -> None:
    response = rest.post("/v1/jobs", content=b"{}", headers={"Content-Type": content_type})
    assert 400 <= response.status_code < 500 and response.status_code != 404, response.text
    assert_rest_error(response, response.status_code)
