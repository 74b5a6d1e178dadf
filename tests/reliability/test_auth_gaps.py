"""Auth against the real gateway process in Firebase mode (Google's certificate URL pointed at a
loopback server): forged and malformed tokens on every route are 401, other users' jobs are
404 on every route, and the per-user rate and concurrent-job limits answer 429 with
Retry-After to that user only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest

from tests.reliability.conftest import assert_rest_error, free_port, start_gateway
from tests.unit.gateway.gateway_harness import PROJECT, LocalEndpoint, TokenFactory

BODY = {"source_url": "https://93.184.216.34/a.png", "driving_url": "https://93.184.216.34/b.mp4"}


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture(scope="module")
def api(tokens, tmp_path_factory):
    certs = LocalEndpoint(static={"/certs": json.dumps(tokens.certs).encode()})
    gateway, base = start_gateway(
        tmp_path_factory.mktemp("auth-gateway"),
        {
            "GATEWAY_AUTH_MODE": "firebase",
            "FIREBASE_PROJECT_ID": PROJECT,
            "FIREBASE_CREDENTIALS": "anonymous",
            "FIREBASE_CERT_URL": f"{certs.url}/certs",
            "GATEWAY_WORKERS": "0",
            "RATE_LIMIT_JOBS": "3",
            "RATE_LIMIT_WINDOW_S": "600",
            "MAX_ACTIVE_JOBS": "2",
        },
    )
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client
    finally:
        try:
            gateway.terminate(30)
        finally:
            gateway.kill()
            certs.close()


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _hs256(claims: dict, secret: bytes, kid: str) -> str:
    """Algorithm confusion: HMAC-signed with the public certificate as the shared secret."""
    signing = _b64({"alg": "HS256", "typ": "JWT", "kid": kid}) + "." + _b64(claims)
    mac = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _claims(uid: str = "alice", **over) -> dict:
    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "sub": uid,
        "iat": now - 10,
        "auth_time": now - 10,
        "exp": now + 3600,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _swap_payload(token: str, claims: dict) -> str:
    """The token with its payload replaced and the original signature kept."""
    header, _, signature = token.split(".")
    return f"{header}.{_b64(claims)}.{signature}"


def _bad_tokens(tokens: TokenFactory) -> dict[str, str]:
    key, kid = tokens.key, tokens.kid
    sign = lambda claims, **h: jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, **h})
    cert_pem = tokens.certs[kid].encode()
    return {
        "alg-none": _b64({"alg": "none", "kid": kid}) + "." + _b64(_claims()) + ".",
        "alg-hs256-with-cert": _hs256(_claims(), cert_pem, kid),
        "expired": sign(_claims(exp=int(time.time()) - 60, iat=int(time.time()) - 4000)),
        "wrong-audience": sign(_claims(aud="someone-else")),
        "wrong-issuer": sign(_claims(iss="https://evil.example/")),
        "issued-in-future": sign(_claims(iat=int(time.time()) + 3600)),
        "no-subject": sign(_claims(sub=None)),
        "empty-subject": sign(_claims(sub="")),
        "unknown-kid": jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "nope"}),
        "other-key": TokenFactory(kid=kid).token("alice"),
        "tampered-payload": _swap_payload(tokens.token("alice"), _claims("mallory")),
        "truncated-signature": tokens.token("alice")[:-10],
        "garbage": "x" * 40,
        "huge": "a" * 20_000,
    }


ROUTES = [
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/abc"),
    ("DELETE", "/v1/jobs/abc"),
    ("GET", "/v1/jobs/abc/events"),
    ("GET", "/v1/jobs/abc/result"),
]


@pytest.mark.parametrize(
    "name",
    [
        "alg-none",
        "alg-hs256-with-cert",
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "issued-in-future",
        "no-subject",
        "empty-subject",
        "unknown-kid",
        "other-key",
        "tampered-payload",
        "truncated-signature",
        "garbage",
        "huge",
    ],
)
def test_bad_token_is_401_on_every_route(api, tokens, name: str) -> None:
    token = _bad_tokens(tokens)[name]
    for method, path in ROUTES:
        response = api.request(
            method,
            path,
            headers={"Authorization": f"Bearer {token}"},
            json=BODY if method == "POST" else None,
        )
        assert_rest_error(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer", (method, path)


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "bearer x", "Token abc", "Basic YTpi", "Bearer a b c"]
)
def test_missing_or_malformed_header_is_401(api, header) -> None:
    for method, path in ROUTES:
        headers = {} if header is None else {"Authorization": header}
        assert_rest_error(api.request(method, path, headers=headers), 401)


def _auth(tokens: TokenFactory, uid: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.token(uid)}"}


def test_other_users_job_is_404_everywhere_and_untouched(api, tokens) -> None:
    owner = api.post("/v1/jobs", json=BODY, headers=_auth(tokens, "olivia"))
    assert owner.status_code == 202, owner.text
    job = owner.json()["id"]
    thief = _auth(tokens, "trudy")
    for method, suffix in [("GET", ""), ("DELETE", ""), ("GET", "/events"), ("GET", "/result")]:
        assert_rest_error(
            api.request(method, f"/v1/jobs/{job}{suffix}", headers=thief), 404, "not_found"
        )
    assert job not in [j["id"] for j in api.get("/v1/jobs", headers=thief).json()["jobs"]]
    assert api.get(f"/v1/jobs/{job}", headers=_auth(tokens, "olivia")).json()["status"] == "queued"


def test_limits_are_per_user_with_retry_after(api, tokens) -> None:
    alice, bob = _auth(tokens, "alice-limits"), _auth(tokens, "bob-limits")
    first = [api.post("/v1/jobs", json=BODY, headers=alice) for _ in range(2)]
    assert [r.status_code for r in first] == [202, 202]
    busy = api.post("/v1/jobs", json=BODY, headers=alice)
    assert_rest_error(busy, 429, "too_many_active_jobs")
    assert int(busy.headers["Retry-After"]) > 0
    assert api.post("/v1/jobs", json=BODY, headers=bob).status_code == 202  # bob unaffected
    assert api.delete(f"/v1/jobs/{first[0].json()['id']}", headers=alice).status_code == 200
    third = api.post("/v1/jobs", json=BODY, headers=alice)
    assert third.status_code == 202, third.text
    for job in (first[1], third):
        api.delete(f"/v1/jobs/{job.json()['id']}", headers=alice)
    limited = api.post("/v1/jobs", json=BODY, headers=alice)
    assert_rest_error(limited, 429, "rate_limited")
    assert 0 < int(limited.headers["Retry-After"]) <= 601
    assert api.post("/v1/jobs", json=BODY, headers=bob).status_code == 202


@pytest.mark.parametrize("outage", ["connection-refused", "http-500"])
def test_certificate_outage_is_503_with_retry_after_not_401(tokens, tmp_path, outage) -> None:
    """Google's token certificates cannot be fetched (nothing listens at the URL, or it answers
    500): a valid token gets 503 + Retry-After on every route (a 401 makes apps sign the user
    out for our outage); a token that is not even a JWT is still 401; once the certificates are
    back the same token works."""
    endpoint = None
    if outage == "connection-refused":
        cert_url = f"http://127.0.0.1:{free_port()}/certs"
    else:
        endpoint = LocalEndpoint(replies=[(500, {"error": "backend error"})])
        cert_url = f"{endpoint.url}/certs"
    gateway, base = start_gateway(
        tmp_path / "gateway",
        {
            "GATEWAY_AUTH_MODE": "firebase",
            "FIREBASE_PROJECT_ID": PROJECT,
            "FIREBASE_CREDENTIALS": "anonymous",
            "FIREBASE_CERT_URL": cert_url,
            "GATEWAY_WORKERS": "0",
        },
    )
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            valid = _auth(tokens, "alice-outage")
            for method, path in ROUTES:
                response = client.request(
                    method, path, headers=valid, json=BODY if method == "POST" else None
                )
                assert_rest_error(response, 503, "auth_unavailable")
                assert int(response.headers["Retry-After"]) > 0, (method, path)
                assert "WWW-Authenticate" not in response.headers, (method, path)
            assert_rest_error(
                client.get("/v1/jobs", headers={"Authorization": "Bearer x"}), 401, "invalid_token"
            )
            if endpoint is not None:
                assert any(r.path == "/certs" for r in endpoint.requests)
                endpoint.static["/certs"] = json.dumps(tokens.certs).encode()
                assert client.get("/v1/jobs", headers=valid).status_code == 200
    finally:
        try:
            gateway.terminate(30)
        finally:
            gateway.kill()
            if endpoint is not None:
                endpoint.close()
