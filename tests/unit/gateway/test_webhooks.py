"""Webhooks are signed the Standard Webhooks way, or not sent at all.

A real loopback HTTP receiver records every POST; the test checks each signature with its own
small implementation of the spec (base64 key after `whsec_`, HMAC-SHA256 over
`{id}.{timestamp}.{body}`, `v1,<base64>`), not with the gateway's `verify_signature`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from fastapi.testclient import TestClient

from services.common.config import ConfigError
from services.gateway.config import GatewayConfig
from services.gateway.delivery.notify import JobEvent, Notifier
from services.gateway.delivery.webhook import new_secret, verify_signature
from tests.unit.gateway.gateway_harness import (
    WEBHOOK_SECRET,
    LocalEndpoint,
    StandInOrchestrator,
    build_gateway,
    wait_for,
)

URLS = {"source_url": "http://127.0.0.1:9/a.png", "driving_url": "http://127.0.0.1:9/v.mp4"}


def receiver_accepts(secret: str, headers: dict[str, str], body: bytes, tolerance_s=300) -> bool:
    """What a receiver written from the spec alone does with one request."""
    headers = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > tolerance_s:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    return any(
        hmac.compare_digest(expected, candidate)
        for candidate in headers["webhook-signature"].split(" ")
    )


def _notifier(secret: str | None) -> Notifier:
    return Notifier(
        firebase_app=None,
        fcm_endpoint=None,
        webhook_secret=secret,
        webhook_backoff_s=0.01,
        webhook_allow_private=True,
        allow_http=True,
    )


def test_a_webhook_is_signed_per_the_spec_and_retried_under_one_id():
    hook = LocalEndpoint(replies=[(503, {}), (500, {}), (200, {"ok": True})])
    notifier = _notifier(WEBHOOK_SECRET)
    try:
        event = JobEvent("job-2", "failed", error_code="no_face", error_message="No face.")
        assert notifier.send_webhook(event, f"{hook.url}/hook") == 200
    finally:
        notifier.close()
        hook.close()
    assert len(hook.requests) == 3
    ids = {r.headers["webhook-id"] for r in hook.requests}
    assert len(ids) == 1 and ids.pop().startswith("msg_")  # one message, three tries
    assert len({r.body for r in hook.requests}) == 1
    for request in hook.requests:
        assert request.headers["Content-Type"] == "application/json"
        assert receiver_accepts(WEBHOOK_SECRET, request.headers, request.body)
        assert verify_signature(
            WEBHOOK_SECRET,
            request.headers["webhook-id"],
            request.headers["webhook-timestamp"],
            request.body,
            request.headers["webhook-signature"],
        )
    last = hook.requests[-1]
    # The check can fail: another secret, a changed body, or an old timestamp are refused.
    assert not receiver_accepts(new_secret(), last.headers, last.body)
    assert not receiver_accepts(WEBHOOK_SECRET, last.headers, last.body + b" ")
    stale = {**last.headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    assert not receiver_accepts(WEBHOOK_SECRET, stale, last.body)
    body = json.loads(last.body)
    assert body["type"] == "job.failed" and body["timestamp"].endswith("Z")
    assert body["data"] == {
        "job_id": "job-2",
        "status": "failed",
        "error": {"code": "no_face", "message": "No face."},
    }


def test_without_a_secret_no_webhook_is_ever_sent():
    hook = LocalEndpoint()
    notifier = _notifier(None)
    try:
        futures = notifier.notify(JobEvent("j", "succeeded"), None, f"{hook.url}/hook")
        assert [f.result(5) for f in futures] == [False]
        with pytest.raises(RuntimeError, match="WEBHOOK_SECRET"):
            notifier.send_webhook(JobEvent("j", "succeeded"), f"{hook.url}/hook")
    finally:
        notifier.close()
        hook.close()
    assert hook.requests == []


@pytest.mark.parametrize(
    "value",
    [
        "plain-old-secret",
        "whsec_",
        "whsec_not*base64",
        "whsec_" + base64.b64encode(b"k" * 8).decode(),
    ],
)
def test_a_malformed_secret_is_a_config_error_that_does_not_echo_it(value):
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET") as caught:
        GatewayConfig.from_env({"GATEWAY_AUTH_MODE": "none", "WEBHOOK_SECRET": value})
    assert value not in str(caught.value) or value == "whsec_"
    with pytest.raises(ValueError):
        _notifier(value)


def test_a_generated_secret_is_accepted():
    secret = new_secret()
    config = GatewayConfig.from_env({"GATEWAY_AUTH_MODE": "none", "WEBHOOK_SECRET": secret})
    assert config.webhook_secret == secret


def test_a_job_naming_a_webhook_is_refused_when_the_gateway_has_no_secret(tmp_path):
    gateway = build_gateway(tmp_path, None, webhook_secret=None)
    try:
        with TestClient(gateway.app, raise_server_exceptions=False) as client:
            refused = client.post("/v1/jobs", json={**URLS, "webhook_url": "http://127.0.0.1:9/h"})
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]  # the stable {code, message} (also in problems)
            assert error["code"] == "webhooks_disabled"
            assert "WEBHOOK_SECRET" in error["message"]
            assert client.post("/v1/jobs", json=URLS).status_code == 202
    finally:
        gateway.close()


def _run_job(tmp_path, hook: LocalEndpoint, **fields) -> str:
    gateway = build_gateway(
        tmp_path, StandInOrchestrator(frames=8, frame_s=0.05), webhook_progress_s=0.0
    )
    try:
        with TestClient(gateway.app, raise_server_exceptions=False) as client:
            answer = client.post(
                "/v1/jobs", json={**URLS, "webhook_url": f"{hook.url}/h", **fields}
            )
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["id"]
            wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded")
            wait_for(lambda: any(b"job.succeeded" in r.body for r in hook.requests))
            time.sleep(0.3)  # a progress POST still in flight lands too
    finally:
        gateway.close()
    return job_id


def test_progress_webhooks_only_for_jobs_that_ask_and_all_signed(tmp_path):
    hook = LocalEndpoint()
    try:
        job_id = _run_job(tmp_path / "a", hook, webhook_progress=True)
        with_progress = list(hook.requests)
        hook.requests.clear()
        other = _run_job(tmp_path / "b", hook)
        without = list(hook.requests)
    finally:
        hook.close()
    for request in with_progress + without:
        assert receiver_accepts(WEBHOOK_SECRET, request.headers, request.body)
    bodies = [json.loads(r.body) for r in with_progress]
    progress = [b for b in bodies if b["type"] == "job.progress"]
    assert len(progress) >= 2, bodies
    assert {b["data"]["job_id"] for b in bodies} == {job_id}
    assert all(b["data"]["status"] == "running" and "stage" in b["data"] for b in progress)
    assert all(0.0 <= b["data"]["progress"] <= 1.0 for b in progress)
    assert any(b["data"]["frames_done"] > 0 for b in progress)
    final = [b for b in bodies if b["type"] == "job.succeeded"]
    assert len(final) == 1 and final[0]["data"]["result_url"]
    assert len({r.headers["webhook-id"] for r in with_progress}) == len(with_progress)
    # A job that did not subscribe gets the final event only.
    assert [json.loads(r.body)["type"] for r in without] == ["job.succeeded"]
    assert json.loads(without[0].body)["data"]["job_id"] == other
