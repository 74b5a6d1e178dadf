"""Firebase Storage against gcp-storage-emulator, FCM against a local stand-in for the FCM v1
API, and webhook error handling (signing: test_webhooks.py); plus a whole job whose result lives in the emulator."""

from __future__ import annotations

import json
import socket
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from gcp_storage_emulator import server as emulator_server

from services.gateway.config import GatewayConfig
from services.gateway.delivery.firebase_app import delete_firebase_app, make_firebase_app
from services.gateway.delivery.notify import JobEvent, Notifier
from services.gateway.delivery.storage import FirebaseStorage, LocalStorage, StorageError
from services.gateway.delivery.webhook import WebhookTarget
from services.gateway.jobs.worker import WorkerPool
from services.gateway.metrics import GatewayMetrics
from tests.unit.gateway.gateway_harness import (
    PROJECT,
    WEBHOOK_SECRET,
    LocalEndpoint,
    StandInOrchestrator,
    build_gateway,
    make_video,
    png_bytes,
    wait_for,
)

BUCKET = "dynamics-test.appspot.com"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def emulator(monkeypatch):
    port = _free_port()
    server = emulator_server.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    # google-cloud-storage reads this variable itself (as it does in production pods).
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    yield server
    server.stop()


@pytest.fixture
def firebase_app():
    config = GatewayConfig(
        firebase_project_id=PROJECT, firebase_credentials="anonymous", storage_bucket=BUCKET
    )
    app = make_firebase_app(config)
    yield app
    delete_firebase_app(app)


def test_firebase_storage_roundtrip_on_the_emulator(emulator, firebase_app, tmp_path):
    storage = FirebaseStorage(firebase_app, BUCKET, attempts=2, backoff_s=0.05)
    payload = bytes(range(256)) * 9000  # > 2 MiB: several chunks
    source = tmp_path / "out.mp4"
    source.write_bytes(payload)
    storage.put("results/j1.mp4", source)
    assert storage.exists("results/j1.mp4") and not storage.exists("results/other.mp4")
    assert b"".join(storage.iter_bytes("results/j1.mp4")) == payload
    assert storage.signed_url("results/j1.mp4") is None  # anonymous credentials cannot sign
    storage.delete("results/j1.mp4")
    assert not storage.exists("results/j1.mp4")


def test_storage_outage_is_retried_then_reported(emulator, firebase_app, tmp_path):
    storage = FirebaseStorage(firebase_app, BUCKET, attempts=2, backoff_s=0.05)
    emulator.stop()
    source = tmp_path / "out.mp4"
    source.write_bytes(b"x")
    with pytest.raises(StorageError, match="after 2 attempts"):
        storage.put("results/j2.mp4", source)


def test_local_storage_refuses_escaping_keys(tmp_path):
    storage = LocalStorage(tmp_path / "results")
    with pytest.raises(ValueError):
        storage.exists("../../etc/passwd")


def test_fcm_push_reaches_the_v1_endpoint(firebase_app):
    fcm = LocalEndpoint(replies=[(200, {"name": f"projects/{PROJECT}/messages/42"})])
    try:
        notifier = Notifier(
            firebase_app=firebase_app,
            fcm_endpoint=f"{fcm.url}/v1/projects/{PROJECT}/messages:send",
            webhook_secret=None,
        )
        event = JobEvent("job-1", "succeeded", result_url="https://gw/v1/jobs/job-1/result")
        assert notifier.send_fcm(event, "device-token-1") == f"projects/{PROJECT}/messages/42"
        notifier.close()
    finally:
        fcm.close()
    request = fcm.requests[0]
    assert request.method == "POST" and request.path == f"/v1/projects/{PROJECT}/messages:send"
    message = json.loads(request.body)["message"]
    assert message["token"] == "device-token-1"
    assert message["data"]["job_id"] == "job-1" and message["data"]["status"] == "succeeded"
    assert message["notification"]["title"]


def test_webhook_client_errors_are_not_retried_and_private_hosts_refused():
    hook = LocalEndpoint(replies=[(404, {})])
    notifier = Notifier(
        firebase_app=None,
        fcm_endpoint=None,
        webhook_secret=WEBHOOK_SECRET,
        webhook_backoff_s=0.01,
        webhook_allow_private=True,
        allow_http=True,
    )
    try:
        with pytest.raises(RuntimeError, match="HTTP 404"):
            notifier.send_webhook(JobEvent("j", "succeeded"), f"{hook.url}/gone")
    finally:
        hook.close()
        notifier.close()
    assert len(hook.requests) == 1
    strict = WebhookTarget(resolver=lambda host, port: ["10.1.2.3"])
    for url in (
        "https://127.0.0.1/x",
        "https://10.0.0.1/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://2130706433/x",
        "https://hooks.example.com/x",
    ):
        with pytest.raises(ValueError, match="refused"):
            strict.check(url)
    with pytest.raises(ValueError, match="scheme"):
        strict.check("http://hooks.example.com/x")
    with pytest.raises(ValueError, match="metadata"):
        WebhookTarget(allow_private=True).check("https://169.254.169.254/x")


def test_webhook_goes_to_the_checked_address_not_a_rebound_one():
    hook = LocalEndpoint(replies=[(200, {})])
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])  # the second lookup would rebind
    target = WebhookTarget(
        allow_private=True, allow_http=True, resolver=lambda host, port: next(answers)
    )
    port = hook.server.server_address[1]
    try:
        assert target.post(f"http://hooks.test:{port}/a?b=1", b"{}", {"X-T": "1"}) == 200
    finally:
        hook.close()
    request = hook.requests[0]
    assert request.path == "/a?b=1" and request.headers["Host"] == f"hooks.test:{port}"


def test_job_result_from_the_emulator_and_notifications(emulator, tmp_path):
    fcm = LocalEndpoint(replies=[(200, {"name": "projects/p/messages/1"})])
    hook = LocalEndpoint(replies=[(204, {})])
    gateway = build_gateway(
        tmp_path,
        StandInOrchestrator(),
        storage_backend="firebase",
        storage_bucket=BUCKET,
        firebase_project_id=PROJECT,
        firebase_credentials="anonymous",
        fcm_endpoint=f"{fcm.url}/v1/projects/{PROJECT}/messages:send",
    )
    body = {
        "source_url": "http://127.0.0.1:9/a.png",
        "driving_url": "http://127.0.0.1:9/v.mp4",
        "fcm_token": "dev-1",
        "webhook_url": f"{hook.url}/done",
    }
    try:
        with TestClient(gateway.app, raise_server_exceptions=False) as client:
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded")
            result = client.get(f"/v1/jobs/{job_id}/result")
            assert result.status_code == 200 and result.content == f"result of {job_id}".encode()
            wait_for(lambda: fcm.requests and hook.requests)
    finally:
        gateway.close()
        fcm.close()
        hook.close()
    assert json.loads(fcm.requests[0].body)["message"]["data"]["job_id"] == job_id
    payload = json.loads(hook.requests[0].body)["data"]
    assert payload["status"] == "succeeded"
    assert payload["result_url"].startswith(f"http://testserver/v1/jobs/{job_id}/result?expires=")


@pytest.mark.ffmpeg
def test_uploads_travel_through_the_bucket_to_any_replica(emulator, firebase_app, tmp_path):
    video = make_video(tmp_path / "hero.mp4").read_bytes()
    gateway = build_gateway(
        tmp_path / "gw",
        StandInOrchestrator(),
        storage_backend="firebase",
        storage_bucket=BUCKET,
        firebase_project_id=PROJECT,
        firebase_credentials="anonymous",
    )
    files = {
        "source": ("me.png", png_bytes(), "image/png"),
        "driving": ("hero.mp4", video, "video/mp4"),
    }
    bucket = FirebaseStorage(firebase_app, BUCKET).bucket
    try:
        with TestClient(gateway.app, raise_server_exceptions=False) as client:
            client.app.state.gateway.pool.stop(0)  # this replica only accepts
            job_id = client.post("/v1/jobs", files=files).json()["id"]
            spec = client.app.state.gateway.store.get(job_id).spec
            assert spec["driving"]["object"] == f"uploads/{job_id}/driving.mp4"
            assert not gateway.config.upload_dir(job_id).exists()
            assert {b.name for b in bucket.list_blobs(prefix="uploads/")} == {
                f"uploads/{job_id}/source.png",
                f"uploads/{job_id}/driving.mp4",
            }
            other = WorkerPool(
                replace(gateway.config, data_dir=tmp_path / "other"),
                client.app.state.gateway.store,
                StandInOrchestrator(),
                client.app.state.gateway.storage,
                None,
                GatewayMetrics(),
            )
            other.start(1)
            try:
                wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded")
            finally:
                other.stop(1.0)
            assert client.get(f"/v1/jobs/{job_id}/result").content == video
    finally:
        gateway.close()
    assert not list(bucket.list_blobs(prefix="uploads/"))
