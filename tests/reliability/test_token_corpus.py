"""Crafted bearer tokens against the real gateway process in Firebase mode: nested thousands
deep, huge numbers, NaN claims, duplicate claims, wrong shapes. Each is 401 invalid_token on
every authenticated route, on a connection that stays usable, and the log has no traceback."""

from __future__ import annotations

import json

import pytest

from tests.reliability.conftest import start_gateway
from tests.reliability.raw_http import KeepAliveConnection
from tests.unit.gateway.gateway_harness import PROJECT, LocalEndpoint, TokenFactory
from tests.unit.gateway.problem_shape import raw_problem_of
from tests.unit.gateway.test_auth import CRAFTED_TOKENS

BODY = json.dumps(
    {"source_url": "https://93.184.216.34/a.png", "driving_url": "https://93.184.216.34/b.mp4"}
).encode()
ROUTES = [
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/0123abcd"),
    ("DELETE", "/v1/jobs/0123abcd"),
    ("GET", "/v1/jobs/0123abcd/events"),
    ("GET", "/v1/jobs/0123abcd/result"),
]


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture(scope="module")
def firebase_gateway(tokens, tmp_path_factory):
    certs = LocalEndpoint(static={"/certs": json.dumps(tokens.certs).encode()})
    gateway, base = start_gateway(
        tmp_path_factory.mktemp("token-gateway"),
        {
            "GATEWAY_AUTH_MODE": "firebase",
            "FIREBASE_PROJECT_ID": PROJECT,
            "FIREBASE_CREDENTIALS": "anonymous",
            "FIREBASE_CERT_URL": f"{certs.url}/certs",
            "GATEWAY_WORKERS": "0",
        },
    )
    try:
        yield gateway, base
    finally:
        try:
            gateway.terminate(30)
        finally:
            gateway.kill()
            certs.close()


@pytest.mark.parametrize("name", list(CRAFTED_TOKENS))
def test_crafted_token_is_401_on_every_route(firebase_gateway, tokens, name: str) -> None:
    _, base = firebase_gateway
    with KeepAliveConnection(base) as conn:
        for method, path in ROUTES:
            headers = [
                ("Authorization", f"Bearer {CRAFTED_TOKENS[name]}"),
                ("Content-Type", "application/json"),
            ]
            response = conn.request(method, path, headers, BODY if method == "POST" else b"")
            assert response.status == 401, (method, path, response.body[:200])
            raw_problem_of(response, 401, "invalid_token")
            assert response.headers["www-authenticate"] == "Bearer"
        valid = conn.request(
            "GET", "/v1/jobs", [("Authorization", f"Bearer {tokens.token('alice')}")]
        )
        assert valid.status == 200, valid.body


def test_crafted_tokens_left_no_traceback(firebase_gateway) -> None:
    gateway, _ = firebase_gateway
    bad = [line for line in gateway.lines if '"severity": "ERROR"' in line or "Traceback" in line]
    assert not bad, bad[:3]
