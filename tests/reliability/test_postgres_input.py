"""Client strings that PostgreSQL refuses (a NUL character in a text parameter raises instead
of matching nothing) against a real gateway on a throwaway PostgreSQL cluster: job ids in the
path, page cursors, text fields. Each is a precise 4xx on a connection that stays usable."""

from __future__ import annotations

import base64
import json

import pytest

from tests.postgres_fixture import postgres_server  # noqa: F401 - fixture
from tests.reliability.conftest import start_gateway
from tests.reliability.raw_http import KeepAliveConnection
from tests.unit.gateway.problem_shape import raw_problem_of

URLS = {"source_url": "https://93.184.216.34/a.png", "driving_url": "https://93.184.216.34/b.mp4"}
JSON = [("Content-Type", "application/json")]


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def pg_gateway(postgres_server, tmp_path_factory):  # noqa: F811 - the fixture above
    gateway, base = start_gateway(
        tmp_path_factory.mktemp("pg-gateway"),
        {
            "GATEWAY_WORKERS": "0",
            "DATABASE_URL": postgres_server.create_database(),
            "RATE_LIMIT_JOBS": "100000",
            "MAX_ACTIVE_JOBS": "100000",
        },
    )
    try:
        yield gateway, base
    finally:
        try:
            gateway.terminate(30)
        finally:
            gateway.kill()


CASES = [
    ("job-id-nul", "GET", "/v1/jobs/%00", [], b"", 404, "not_found"),
    ("job-id-inner-nul", "GET", "/v1/jobs/ab%00cd/events", [], b"", 404, "not_found"),
    ("cancel-nul", "DELETE", "/v1/jobs/ab%00", [], b"", 404, "not_found"),
    ("result-nul", "GET", "/v1/jobs/%00/result", [], b"", 404, "not_found"),
    (
        "cursor-nul-id",
        "GET",
        "/v1/jobs?cursor=" + _cursor(b'[1.0, "a\\u0000b"]'),
        [],
        b"",
        400,
        "bad_cursor",
    ),
    (
        "cursor-nan-time",
        "GET",
        "/v1/jobs?cursor=" + _cursor(b'["NaN", "abc"]'),
        [],
        b"",
        400,
        "bad_cursor",
    ),
    (
        "cursor-huge-time",
        "GET",
        "/v1/jobs?cursor=" + _cursor(b'[1e999, "abc"]'),
        [],
        b"",
        400,
        "bad_cursor",
    ),
    (
        "cursor-object",
        "GET",
        "/v1/jobs?cursor=" + _cursor(b'{"a": 1, "b": 2}'),
        [],
        b"",
        400,
        "bad_cursor",
    ),
    (
        "fcm-token-nul",
        "POST",
        "/v1/jobs",
        JSON,
        json.dumps({**URLS, "fcm_token": "tok\x00"}).encode(),
        422,
        "invalid_request",
    ),
    (
        "webhook-nul",
        "POST",
        "/v1/jobs",
        JSON,
        json.dumps({**URLS, "webhook_url": "https://93.184.216.34/\x00"}).encode(),
        422,
        "invalid_webhook_url",
    ),
    (
        "unknown-key-nul",
        "POST",
        "/v1/jobs",
        JSON,
        json.dumps({**URLS, "\x00": 1}).encode(),
        422,
        "invalid_request",
    ),
    ("plain-job", "POST", "/v1/jobs", JSON, json.dumps(URLS).encode(), 202, None),
]


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "status", "code"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_strings_postgres_refuses_never_reach_it(
    pg_gateway, method, target, headers, body, status, code
) -> None:
    with KeepAliveConnection(pg_gateway[1]) as conn:
        response = conn.request(method, target, headers, body)
        assert response.status == status, response.body[:300]
        if code is not None:
            raw_problem_of(response, status, code)
        assert conn.alive()


def test_no_unhandled_error_was_logged(pg_gateway) -> None:
    bad = [
        line for line in pg_gateway[0].lines if '"severity": "ERROR"' in line or "Traceback" in line
    ]
    assert not bad, bad[:3]
