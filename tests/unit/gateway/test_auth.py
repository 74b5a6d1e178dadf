"""Firebase ID-token auth through firebase-admin, with Google's certificate URL pointed at a
loopback server serving the test key's certificate; per-user isolation of jobs."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from tests.unit.gateway.gateway_harness import PROJECT, LocalEndpoint, TokenFactory, build_gateway
from tests.unit.gateway.problem_shape import problem_of

BODY = {"source_url": "http://127.0.0.1:9/a.png", "driving_url": "http://127.0.0.1:9/v.mp4"}


@pytest.fixture(scope="module")
def tokens() -> TokenFactory:
    return TokenFactory()


@pytest.fixture
def client(tmp_path, tokens):
    certs = LocalEndpoint(static={"/certs": json.dumps(tokens.certs).encode()})
    gateway = build_gateway(
        tmp_path,
        None,
        auth_mode="firebase",
        firebase_project_id=PROJECT,
        firebase_credentials="anonymous",
        firebase_cert_url=f"{certs.url}/certs",
    )
    with TestClient(gateway.app, raise_server_exceptions=False) as test_client:
        yield test_client
    gateway.close()
    certs.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_valid_token_creates_and_reads_own_job(client, tokens):
    created = client.post("/v1/jobs", json=BODY, headers=bearer(tokens.token("alice")))
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert (
        client.get(f"/v1/jobs/{job_id}", headers=bearer(tokens.token("alice"))).status_code == 200
    )
    assert client.app.state.gateway.store.get(job_id).owner == "alice"


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "missing_token"),
        ({"Authorization": "Basic YWxpY2U6cHc="}, "malformed_authorization"),
        ({"Authorization": "Bearer"}, "malformed_authorization"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
    ],
)
def test_missing_or_malformed_credentials_are_401(client, headers, code):
    response = client.get("/v1/jobs", headers=headers)
    problem_of(response, 401, code)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def _segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_HEADER = _segment(b'{"alg": "RS256", "kid": "k", "typ": "JWT"}')
CRAFTED_TOKENS = {
    # nested a few thousand deep, under the length limit: the verifier's json.loads recursed
    "deep-header": _segment(b"[" * 3000 + b"]" * 3000) + "." + _segment(b"{}") + ".c2ln",
    "deep-payload": _HEADER + "." + _segment(b'{"a":' * 1200 + b"1" + b"}" * 1200) + ".c2ln",
    "huge-int-kid": _segment(b'{"alg": "RS256", "kid": ' + b"9" * 5000 + b"}") + ".e30.c2ln",
    "nan-claims": _HEADER + "." + _segment(b'{"exp": NaN, "iat": Infinity}') + ".c2ln",
    "duplicate-sub": _HEADER + "." + _segment(b'{"sub": "a", "sub": "b"}') + ".c2ln",
    "array-header": _segment(b"[1]") + ".e30.c2ln",
    "not-utf8": _segment(b"\xff\xfe") + ".e30.c2ln",
    "four-segments": _HEADER + ".e30.c2ln.c2ln",
    "non-base64url": _HEADER + ".e30+/.c2ln",
    "too-long": _HEADER + "." + "A" * 9000 + ".c2ln",
}


@pytest.mark.parametrize("token", list(CRAFTED_TOKENS.values()), ids=list(CRAFTED_TOKENS))
def test_crafted_tokens_are_401_not_500(client, token):
    response = client.get("/v1/jobs", headers=bearer(token))
    assert response.status_code == 401, response.text
    problem_of(response, 401, "invalid_token")


def test_expired_wrong_audience_and_foreign_key_are_401(client, tokens):
    expired = tokens.token("alice", expires_in=-600, issued_ago=4000)
    assert (
        problem_of(client.get("/v1/jobs", headers=bearer(expired)), 401)["code"] == "token_expired"
    )
    wrong_aud = tokens.token("alice", audience="another-project")
    answer = client.get("/v1/jobs", headers=bearer(wrong_aud))
    problem_of(answer, 401, "invalid_token")
    forged = TokenFactory(kid=tokens.kid).token("alice")  # same kid, another private key
    answer = client.post("/v1/jobs", json=BODY, headers=bearer(forged))
    problem_of(answer, 401, "invalid_token")


def test_other_users_jobs_are_404_and_not_listed(client, tokens):
    alice, bob = bearer(tokens.token("alice")), bearer(tokens.token("bob"))
    job_id = client.post("/v1/jobs", json=BODY, headers=alice).json()["id"]
    for method, path in (
        ("GET", f"/v1/jobs/{job_id}"),
        ("DELETE", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/result"),
        ("GET", f"/v1/jobs/{job_id}/events"),
    ):
        answer = client.request(method, path, headers=bob)
        problem_of(answer, 404, "not_found")
    assert client.get("/v1/jobs", headers=bob).json()["jobs"] == []
    assert [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["jobs"]] == [job_id]
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).json()["status"] == "queued"


def test_idempotency_keys_do_not_cross_users(client, tokens):
    key = {"Idempotency-Key": "same-key"}
    a = client.post("/v1/jobs", json=BODY, headers=bearer(tokens.token("alice")) | key).json()
    b = client.post("/v1/jobs", json=BODY, headers=bearer(tokens.token("bob")) | key).json()
    a2 = client.post("/v1/jobs", json=BODY, headers=bearer(tokens.token("alice")) | key).json()
    assert a["id"] != b["id"] and a2["id"] == a["id"]


def test_signed_result_url_works_without_a_token(client, tokens, tmp_path):
    alice = bearer(tokens.token("alice"))
    state = client.app.state.gateway
    job_ids = [client.post("/v1/jobs", json=BODY, headers=alice).json()["id"] for _ in range(2)]
    for job_id in job_ids:  # finish both as a worker would
        lease = state.store.claim("w", 30, 3)
        mp4 = tmp_path / f"{job_id}.mp4"
        mp4.write_bytes(b"mp4 of " + job_id.encode())
        state.storage.put(f"results/{job_id}.mp4", mp4)
        assert state.store.finish(
            lease.id,
            lease.lease_token,
            result_key=f"results/{lease.id}.mp4",
            timings={},
            cache_hit=False,
            random_weights=True,
            frames=1,
        )
    url = client.get(f"/v1/jobs/{job_ids[0]}", headers=alice).json()["result_url"]
    assert client.get(url).content == b"mp4 of " + job_ids[0].encode()
    other_url = client.get(f"/v1/jobs/{job_ids[1]}", headers=alice).json()["result_url"]
    swapped = url.split("?")[0] + "?" + other_url.split("?")[1]  # job 1's signature on job 0
    expires = url.split("expires=")[1].split("&")[0]
    for bad in (
        swapped,
        url[:-1] + ("0" if url[-1] != "0" else "1"),
        url.replace(f"expires={expires}", "expires=1000"),
    ):
        answer = client.get(bad)
        problem_of(answer, 403, "invalid_link")
    unsigned = client.get(f"/v1/jobs/{job_ids[0]}/result")
    assert unsigned.status_code == 401
