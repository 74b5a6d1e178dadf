"""Hostile requests against the real gateway process (uvicorn on loopback): oversized and lying
bodies, chunked floods, malformed JSON and multipart, bad parameters, odd paths and methods.

The in-process API tests cover the validation rules; these go through the real HTTP server,
where streaming, Content-Length and connection handling are real. Each gets a precise 4xx in
the gateway's error shape.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
from collections.abc import Iterator

import pytest

from tests.reliability.conftest import assert_rest_error
from tests.reliability.raw_http import KeepAliveConnection
from tests.unit.gateway.problem_shape import assert_problem, raw_problem_of

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
    ("deep-nesting-5000", _nested(5000), 400, "json_too_deep"),
    ("deep-nesting-100", _nested(100), 400, "json_too_deep"),
    ("deep-nesting-30", _nested(30), 422, "invalid_request"),
    ("huge-number", json.dumps(URLS).encode()[:-1] + b', "seconds": 1e999}', 400, "malformed_json"),
    (
        "huge-int",
        json.dumps(URLS).encode()[:-1] + b', "source_max_dim": ' + b"9" * 400 + b"}",
        422,
        "invalid_request",
    ),
    ("negative-zero", json.dumps({**URLS, "seconds": -0.0}).encode(), 422, "invalid_request"),
    ("duplicate-keys-bad-last", b'{"seconds": 1, "seconds": -5}', 400, "malformed_json"),
    ("string-for-object", json.dumps({**URLS, "options": "{}"}).encode(), 422, "invalid_request"),
    (
        "nested-unknown-option",
        json.dumps({**URLS, "options": {"__class__": 1}}).encode(),
        422,
        "invalid_request",
    ),
    (
        "region-injection",
        json.dumps({**URLS, "options": {"region": "all; rm -rf /"}}).encode(),
        422,
        "invalid_request",
    ),
    (
        "multiplier-zero",
        json.dumps({**URLS, "options": {"driving_multiplier": 0}}).encode(),
        422,
        "invalid_request",
    ),
    (
        "multiplier-huge",
        json.dumps({**URLS, "options": {"driving_multiplier": 1e9}}).encode(),
        422,
        "invalid_request",
    ),
    (
        "url-null-byte",
        json.dumps({**URLS, "source_url": "https://93.184.216.34/\x00x"}).encode(),
        422,
        "url_refused",
    ),
    (
        "url-javascript",
        json.dumps({**URLS, "source_url": "javascript:alert(1)"}).encode(),
        422,
        "url_refused",
    ),
    (
        "url-crlf",
        json.dumps({**URLS, "source_url": "https://93.184.216.34/\r\nX-Evil: 1"}).encode(),
        422,
        "url_refused",
    ),
    (
        "url-metadata",
        json.dumps({**URLS, "source_url": "http://169.254.169.254/"}).encode(),
        422,
        "url_refused",
    ),
    (
        "url-decimal-ip",
        json.dumps({**URLS, "driving_url": "http://3232235521/"}).encode(),
        422,
        "url_refused",
    ),
    (
        "url-octal-ip",
        json.dumps({**URLS, "driving_url": "http://012.0.0.1/"}).encode(),
        422,
        "url_refused",
    ),
    (
        "url-ipv6-mapped",
        json.dumps({**URLS, "driving_url": "http://[::ffff:a9fe:a9fe]/"}).encode(),
        422,
        "url_refused",
    ),
    (
        "webhook-file",
        json.dumps({**URLS, "webhook_url": "file:///etc/passwd"}).encode(),
        422,
        "invalid_webhook_url",
    ),
    ("no-media", b"{}", 422, "invalid_request"),
    ("array-of-jobs", json.dumps([URLS, URLS]).encode(), 422, "invalid_request"),
]


@pytest.mark.parametrize(
    ("raw", "status", "code"), [c[1:] for c in BAD_JSON], ids=[c[0] for c in BAD_JSON]
)
def test_bad_json_bodies(rest, raw: bytes, status: int, code: str) -> None:
    assert_rest_error(rest.post("/v1/jobs", content=raw, headers=JSON), status, code)


def test_json_body_over_the_limit_is_413_while_streaming(rest) -> None:
    response = rest.post("/v1/jobs", content=_chunks(2 * 1024 * 1024), headers=JSON)
    assert_rest_error(response, 413, "too_large")


def test_chunked_multipart_flood_is_413(rest) -> None:
    head = (
        b'--b\r\nContent-Disposition: form-data; name="source"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
    )

    def body() -> Iterator[bytes]:
        yield head
        yield from _chunks(4 * 1024 * 1024)

    response = rest.post(
        "/v1/jobs", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_rest_error(response, 413, "too_large")


@pytest.mark.parametrize(
    ("declared", "status", "code"),
    [("99999999999", 413, "too_large"), ("-5", 400, None), ("abc", 400, None)],
)
def test_lying_content_length(intake_gateway, declared: str, status: int, code) -> None:
    base = intake_gateway[1]
    port = int(base.rsplit(":", 1)[1])
    request = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\nConnection: close\r\n\r\n{{}}"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status_line = reply.split(b"\r\n", 1)[0].decode()
    assert int(status_line.split()[1]) == status, reply[:300]
    if code is not None:
        head, body = reply.split(b"\r\n\r\n", 1)
        content_type = re.search(rb"(?im)^content-type:\s*([^\r\n]*)", head)
        assert_problem(status, content_type and content_type.group(1).decode(), body, status, code)


MULTIPART: list[tuple[str, bytes]] = [
    ("no-parts", b"--b--\r\n"),
    ("no-closing-boundary", b'--b\r\nContent-Disposition: form-data; name="seconds"\r\n\r\n5'),
    ("missing-disposition", b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n"),
    ("unknown-field", b'--b\r\nContent-Disposition: form-data; name="evil"\r\n\r\nx\r\n--b--\r\n'),
    (
        "file-in-text-field",
        (
            b'--b\r\nContent-Disposition: form-data; name="seconds"; '
            b'filename="s.txt"\r\n\r\n5\r\n--b--\r\n'
        ),
    ),
    (
        "two-sources",
        (
            b'--b\r\nContent-Disposition: form-data; name="source"; filename="a"\r\n\r\n'
            b'a\r\n--b\r\nContent-Disposition: form-data; name="source"; filename="b"\r\n\r\nb\r\n'
            b"--b--\r\n"
        ),
    ),
    ("header-flood", b"--b\r\n" + b"X-Junk: y\r\n" * 5000 + b"\r\nx\r\n--b--\r\n"),
    (
        "huge-text-field",
        b'--b\r\nContent-Disposition: form-data; name="options"\r\n\r\n'
        + b"{" * 200_000
        + b"\r\n--b--\r\n",
    ),
]


@pytest.mark.parametrize("body", [c[1] for c in MULTIPART], ids=[c[0] for c in MULTIPART])
def test_broken_multipart(rest, body: bytes) -> None:
    response = rest.post(
        "/v1/jobs", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert_rest_error(response, response.status_code)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
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
    ],
)
def test_odd_paths_parameters_and_methods(rest, method: str, path: str, status: int) -> None:
    assert_rest_error(rest.request(method, path), status)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "image/png",
        "",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "application/json-patch+json",
    ],
)
def test_unsupported_or_broken_content_types(rest, content_type: str) -> None:
    response = rest.post("/v1/jobs", content=b"{}", headers={"Content-Type": content_type})
    assert 400 <= response.status_code < 500 and response.status_code != 404, response.text
    assert_rest_error(response, response.status_code)


# -- crafted input on one kept-alive connection -------------------------------------------
# Each case: the precise status and error code, the error shape, and the same connection
# answering GET /healthz afterwards (an unhandled error made uvicorn drop it).

MULTIPART_JSON = "multipart/form-data; boundary=b"


def _form(fields: dict[str, str | bytes]) -> bytes:
    body = b""
    for name, value in fields.items():
        raw = value if isinstance(value, bytes) else value.encode()
        body += (
            f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + raw + b"\r\n"
        )
    return body + b"--b--\r\n"


def _part(disposition: bytes, body: bytes, extra_headers: bytes = b"") -> bytes:
    return (
        b"--b\r\nContent-Disposition: "
        + disposition
        + b"\r\n"
        + extra_headers
        + b"\r\n"
        + body
        + b"\r\n--b--\r\n"
    )


def _form_with_urls(**fields: str | bytes) -> bytes:
    """A multipart job that is accepted (202) unless one of `fields` is refused."""
    return _form({**URLS, **fields})


def _json_body(**fields) -> bytes:
    return json.dumps({**URLS, **fields}).encode()


def _raw_json(tail: bytes) -> bytes:
    """The URL job with `tail` (raw JSON members) spliced in before the closing brace."""
    return json.dumps(URLS).encode()[:-1] + b", " + tail + b"}"


_DEEP_ARRAYS = b"[" * 10_000 + b"]" * 10_000
_DEEP_OBJECTS = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
_HUGE_INT = b"9" * 5000

# (id, method, target, headers, body, status, code)
KEEPALIVE_CASES: list[tuple[str, str, bytes | str, list, bytes, int, str | None]] = [
    # multipart `options`: parsed by the strict JSON parser (depth, numbers, keys, surrogates)
    (
        "options-arrays-10000-deep",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options=_DEEP_ARRAYS),
        422,
        "invalid_request",
    ),
    (
        "options-objects-10000-deep",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options=_DEEP_OBJECTS),
        422,
        "invalid_request",
    ),
    (
        "options-33-deep",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options=b"[" * 33 + b"]" * 33),
        422,
        "invalid_request",
    ),
    (
        "options-5000-digit-int",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options=b'{"driving_multiplier": ' + _HUGE_INT + b"}"),
        422,
        "invalid_request",
    ),
    (
        "options-nan",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options='{"driving_multiplier": NaN}'),
        422,
        "invalid_request",
    ),
    (
        "options-infinity",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options='{"driving_multiplier": -Infinity}'),
        422,
        "invalid_request",
    ),
    (
        "options-duplicate-key",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options='{"region": "all", "region": "lip"}'),
        422,
        "invalid_request",
    ),
    (
        "options-surrogate-key",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options='{"\\ud800": 1}'),
        422,
        "invalid_request",
    ),
    (
        "options-surrogate-value",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options='{"region": "\\udfff"}'),
        422,
        "invalid_request",
    ),
    (
        "options-not-utf8",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options=b'{"region": "\xff"}'),
        400,
        "bad_multipart",
    ),
    (
        "options-long-unknown-key",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options=json.dumps({"k" * 60_000: 1})),
        422,
        "invalid_request",
    ),
    # multipart part headers
    (
        "part-name-rfc2231",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _part(b"form-data; name*=UTF-8''seconds", b"5"),
        400,
        "bad_multipart",
    ),
    (
        "part-name-nul",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _part(b'form-data; name="sec\x00onds"', b"5"),
        422,
        "invalid_request",
    ),
    (
        "part-name-latin1",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _part(b'form-data; name="s\xe9conds"', b"5"),
        422,
        "invalid_request",
    ),
    (
        "part-name-unterminated-quote",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _part(b'form-data; name="seconds', b"5"),
        422,
        "invalid_request",
    ),
    (
        "part-filename-traversal",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _part(b'form-data; name="driving"; filename="../../../../etc/x.mp4"', b"\0" * 100),
        422,
        "invalid_request",
    ),
    (
        "part-filename-nul",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _part(b'form-data; name="driving"; filename="a.mp4\x00.png"', b"\0" * 100),
        422,
        "invalid_request",
    ),
    (
        "part-filename-5000-chars",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _part(b'form-data; name="driving"; filename="' + b"a" * 5000 + b'.mp4"', b"\0"),
        400,
        "bad_multipart",
    ),
    (
        "part-header-without-colon",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        b"--b\r\nContent-Disposition form-data\r\n\r\nx\r\n--b--\r\n",
        400,
        "bad_multipart",
    ),
    (
        "part-header-latin1",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _part(b'form-data; name="seconds"', b"5", b"X-\xe9: \xb2\r\n"),
        400,
        "bad_multipart",
    ),
    (
        "part-lf-only",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        b'--b\nContent-Disposition: form-data; name="seconds"\n\n5\n--b--\n',
        400,
        "bad_multipart",
    ),
    (
        "part-preamble-500k",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        b"x" * 500_000 + b"\r\n--b--\r\n",
        400,
        "bad_multipart",
    ),
    (
        "form-seconds-bom",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(seconds=b"\xef\xbb\xbf5"),
        422,
        "invalid_request",
    ),
    (
        "form-options-empty",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(options=b""),
        422,
        "invalid_request",
    ),
    # multipart numbers: one plain ASCII spelling
    (
        "form-seconds-underscore",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(seconds="1_0"),
        422,
        "invalid_request",
    ),
    (
        "form-seconds-inf",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(seconds="inf"),
        422,
        "invalid_request",
    ),
    (
        "form-seconds-exponent",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(seconds="5e0"),
        422,
        "invalid_request",
    ),
    (
        "form-seconds-fullwidth",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(seconds="５"),
        422,
        "invalid_request",
    ),
    (
        "form-seconds-superscript",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(seconds="²"),
        422,
        "invalid_request",
    ),
    (
        "form-dim-padded",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(source_max_dim=" 512 "),
        422,
        "invalid_request",
    ),
    (
        "form-dim-underscore",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(source_max_dim="1_000"),
        422,
        "invalid_request",
    ),
    (
        "form-dim-arabic-indic",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(source_max_dim="٥١٢"),
        422,
        "invalid_request",
    ),
    (
        "form-dim-5000-digits",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(source_max_dim=_HUGE_INT),
        422,
        "invalid_request",
    ),
    (
        "source-over-its-limit",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _part(b'form-data; name="source"; filename="a.png"', b"\0" * (5 * 1024 * 1024 // 2)),
        413,
        "too_large",
    ),
    (
        "form-plain-numbers-accepted",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON)],
        _form_with_urls(seconds="2.5", source_max_dim="512"),
        202,
        None,
    ),
    # JSON bodies: strict JSON
    (
        "json-10000-deep",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json")],
        _nested(10_000),
        400,
        "json_too_deep",
    ),
    (
        "json-nan",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json")],
        _raw_json(b'"seconds": NaN'),
        400,
        "malformed_json",
    ),
    (
        "json-infinity",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json")],
        _raw_json(b'"options": {"driving_multiplier": Infinity}'),
        400,
        "malformed_json",
    ),
    (
        "json-5000-digit-int",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json")],
        _raw_json(b'"source_max_dim": ' + _HUGE_INT),
        400,
        "malformed_json",
    ),
    (
        "json-seconds-string-underscore",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json")],
        _json_body(seconds="1_0"),
        422,
        "invalid_request",
    ),
    (
        "json-dim-string-padded",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json")],
        _json_body(source_max_dim=" 512"),
        422,
        "invalid_request",
    ),
    (
        "json-fcm-token-nul",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json")],
        _json_body(fcm_token="tok\x00en"),
        422,
        "invalid_request",
    ),
    (
        "json-fcm-token-non-ascii",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json")],
        _json_body(fcm_token="tøken"),
        422,
        "invalid_request",
    ),
    (
        "json-url-port-superscript",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json")],
        _json_body(source_url="https://93.184.216.34:²/a.png"),
        422,
        "url_refused",
    ),
    (
        "json-utf8-bom",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json")],
        b"\xef\xbb\xbf" + _json_body(),
        400,
        "malformed_json",
    ),
    # media types: case-insensitive, parameters parsed, exact type match
    (
        "ct-upper-case-json",
        "POST",
        "/v1/jobs",
        [("Content-Type", "APPLICATION/JSON")],
        _json_body(),
        202,
        None,
    ),
    (
        "ct-json-charset",
        "POST",
        "/v1/jobs",
        [("Content-Type", 'Application/Json ; Charset="UTF-8"')],
        _json_body(),
        202,
        None,
    ),
    (
        "ct-jsonp",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/jsonp")],
        _json_body(),
        415,
        "unsupported_media_type",
    ),
    (
        "ct-json-suffix",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json5")],
        _json_body(),
        415,
        "unsupported_media_type",
    ),
    (
        "ct-json-utf16",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json; charset=utf-16")],
        _json_body(),
        415,
        "unsupported_media_type",
    ),
    (
        "ct-json-junk-after",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json junk")],
        _json_body(),
        400,
        "malformed_content_type",
    ),
    (
        "ct-json-repeated-charset",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json; charset=utf-8; CHARSET=utf-8")],
        _json_body(),
        400,
        "malformed_content_type",
    ),
    (
        "ct-latin1-byte",
        "POST",
        "/v1/jobs",
        [("Content-Type", b"application/js\xb2n")],
        _json_body(),
        400,
        "malformed_content_type",
    ),
    (
        "ct-upper-case-multipart",
        "POST",
        "/v1/jobs",
        [("Content-Type", "MULTIPART/FORM-DATA; BOUNDARY=b")],
        _form_with_urls(),
        202,
        None,
    ),
    (
        "ct-quoted-boundary",
        "POST",
        "/v1/jobs",
        [("Content-Type", 'multipart/form-data; boundary="b"')],
        _form_with_urls(),
        202,
        None,
    ),
    (
        "ct-form-datax",
        "POST",
        "/v1/jobs",
        [("Content-Type", "multipart/form-datax; boundary=b")],
        _form_with_urls(),
        415,
        "unsupported_media_type",
    ),
    (
        "ct-boundary-71-chars",
        "POST",
        "/v1/jobs",
        [("Content-Type", "multipart/form-data; boundary=" + "b" * 71)],
        _form_with_urls(),
        400,
        "bad_multipart",
    ),
    # result links: `expires` is plain ASCII digits, `sig` is hex
    (
        "expires-superscript-utf8",
        "GET",
        "/v1/jobs/x/result?expires=%C2%B2&sig=ab",
        [],
        b"",
        403,
        "invalid_link",
    ),
    (
        "expires-superscript-latin1",
        "GET",
        "/v1/jobs/x/result?expires=%B2&sig=ab",
        [],
        b"",
        403,
        "invalid_link",
    ),
    (
        "expires-arabic-indic",
        "GET",
        (
            "/v1/jobs/x/result?expires=%D9%A9%D9%A9%D9%A9%D9%A9%D9%A9%D9%A9%D9%A9%D9%A9%D9%A9%D9%A9"
            "&sig=ab"
        ),
        [],
        b"",
        403,
        "invalid_link",
    ),
    (
        "expires-fullwidth",
        "GET",
        "/v1/jobs/x/result?expires=%EF%BC%99&sig=ab",
        [],
        b"",
        403,
        "invalid_link",
    ),
    (
        "expires-signed",
        "GET",
        "/v1/jobs/x/result?expires=+9999999999&sig=ab",
        [],
        b"",
        403,
        "invalid_link",
    ),
    (
        "sig-non-ascii",
        "GET",
        "/v1/jobs/x/result?expires=9999999999&sig=%C3%A9",
        [],
        b"",
        403,
        "invalid_link",
    ),
    # query integers and path ids
    ("limit-underscore", "GET", "/v1/jobs?limit=1_0", [], b"", 422, "invalid_request"),
    ("limit-plus", "GET", "/v1/jobs?limit=%2B5", [], b"", 422, "invalid_request"),
    ("limit-spaces", "GET", "/v1/jobs?limit=%205%20", [], b"", 422, "invalid_request"),
    ("limit-superscript", "GET", "/v1/jobs?limit=%C2%B2", [], b"", 422, "invalid_request"),
    ("limit-fullwidth", "GET", "/v1/jobs?limit=%EF%BC%95", [], b"", 422, "invalid_request"),
    ("limit-plain", "GET", "/v1/jobs?limit=5", [], b"", 200, None),
    ("status-newline", "GET", "/v1/jobs?status=queued%0A", [], b"", 422, "invalid_request"),
    ("job-id-nul", "GET", "/v1/jobs/%00", [], b"", 404, "not_found"),
    ("job-id-surrogate-bytes", "GET", "/v1/jobs/%ED%A0%80", [], b"", 404, "not_found"),
    ("job-id-overlong-dot", "DELETE", "/v1/jobs/%C0%AE%C0%AE", [], b"", 404, "not_found"),
    # headers
    (
        "idempotency-key-latin1",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json"), ("Idempotency-Key", b"k\xe9y")],
        _json_body(),
        400,
        "bad_idempotency_key",
    ),
    (
        "idempotency-key-empty",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json"), ("Idempotency-Key", "")],
        _json_body(),
        400,
        "bad_idempotency_key",
    ),
    (
        "idempotency-key-tab",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json"), ("Idempotency-Key", "a\tb")],
        _json_body(),
        400,
        "bad_idempotency_key",
    ),
    (
        "content-encoding-gzip",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        gzip.compress(_json_body()),
        415,
        "unsupported_content_encoding",
    ),
    (
        "content-encoding-gzip-multipart",
        "POST",
        "/v1/jobs",
        [("Content-Type", MULTIPART_JSON), ("Content-Encoding", "gzip")],
        gzip.compress(_form_with_urls()),
        415,
        "unsupported_content_encoding",
    ),
    (
        "content-encoding-identity",
        "POST",
        "/v1/jobs",
        [("Content-Type", "application/json"), ("Content-Encoding", "Identity")],
        _json_body(),
        202,
        None,
    ),
    (
        "forwarded-junk",
        "GET",
        "/v1/jobs",
        [("X-Forwarded-For", b"\xb2\xb2, ::zz, 999.1.1.1"), ("X-Forwarded-Proto", "javascript")],
        b"",
        200,
        None,
    ),
]


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "status", "code"),
    [c[1:] for c in KEEPALIVE_CASES],
    ids=[c[0] for c in KEEPALIVE_CASES],
)
def test_crafted_input_keeps_the_connection(
    intake_gateway, method, target, headers, body, status, code
) -> None:
    with KeepAliveConnection(intake_gateway[1]) as conn:
        response = conn.request(method, target, headers, body)
        assert response.status == status, response.body[:300]
        if code is not None:
            problem = raw_problem_of(response, status, code)
            assert len(problem["detail"]) < 1000, "the detail echoes client input at length"
            assert len(problem.get("instance", "")) <= 1024, "the instance echoes a long path"
        assert conn.alive(), "the connection was dropped after the answer"


def test_crafted_input_leaves_no_traceback_in_the_log(intake_gateway) -> None:
    """Runs after the corpus above: the gateway logged no unhandled error for any of it."""
    gateway = intake_gateway[0]
    bad = [line for line in gateway.lines if '"severity": "ERROR"' in line or "Traceback" in line]
    assert not bad, bad[:3]


@pytest.mark.parametrize(
    "declared",
    [b"\xb2", b"\xc2\xb2", b"+2", b"1_0", b"2, 3", b"0x2", b" ", b"99999999999999999999999"],
)
def test_unusable_content_length_is_400_before_the_app(intake_gateway, declared) -> None:
    """Framing headers are checked by the HTTP server itself (h11): a 400, then the connection
    closes, since where the body ends is unknown (RFC 9112 §6.3). The app never runs."""
    with KeepAliveConnection(intake_gateway[1]) as conn:
        response = conn.send(
            b"POST /v1/jobs HTTP/1.1\r\nHost: g\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + declared + b"\r\n\r\n{}"
        )
        assert response.status in (400, 413), response
        assert not conn.alive()


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/jobs/x/result?expires=9999999999&sig=\xe9",
        b"/v1/jobs/\xe9/events",
        b"/v1/jobs?limit=\xb2",
    ],
)
def test_raw_non_ascii_request_target_is_400_before_the_app(intake_gateway, target) -> None:
    with KeepAliveConnection(intake_gateway[1]) as conn:
        assert conn.request("GET", target).status == 400


def test_bad_chunk_size_is_400(intake_gateway) -> None:
    with KeepAliveConnection(intake_gateway[1]) as conn:
        response = conn.send(
            b"POST /v1/jobs HTTP/1.1\r\nHost: g\r\nContent-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\n\r\n\xb2\r\n{}\r\n0\r\n\r\n"
        )
        assert response.status == 400
