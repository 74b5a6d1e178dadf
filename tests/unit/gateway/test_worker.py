"""Workers with an orchestrator stand-in: success path, SSE, cancel, retries, lease loss and
re-claim, and two gateway replicas sharing one queue (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import json
import threading

import pytest
from fastapi.testclient import TestClient

from services.gateway.delivery.storage import LocalStorage
from services.gateway.domain import JobFailed
from services.gateway.jobs.worker import WorkerPool
from services.gateway.metrics import GatewayMetrics
from tests.unit.gateway.gateway_harness import (
    StandInOrchestrator,
    build_gateway,
    gateway_config,
    make_video,
    png_bytes,
    wait_for,
)

pytestmark = pytest.mark.ffmpeg


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory) -> bytes:
    return make_video(tmp_path_factory.mktemp("media") / "hero.mp4").read_bytes()


@pytest.fixture
def run_gateway(tmp_path):
    opened = []

    def start(orchestrator, **overrides) -> TestClient:
        gateway = build_gateway(tmp_path / f"gw{len(opened)}", orchestrator, **overrides)
        client = TestClient(gateway.app, raise_server_exceptions=False)
        client.__enter__()
        opened.append((gateway, client))
        return client

    yield start
    for gateway, client in opened:
        client.__exit__(None, None, None)
        gateway.close()


def submit(client, video_bytes, **headers) -> str:
    response = client.post(
        "/v1/jobs",
        headers=headers,
        files={
            "source": ("me.png", png_bytes(), "image/png"),
            "driving": ("hero.mp4", video_bytes, "video/mp4"),
        },
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def final(client, job_id: str, timeout: float = 15.0) -> dict:
    def done():
        view = client.get(f"/v1/jobs/{job_id}").json()
        return view if view["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(done, timeout)


def test_job_runs_to_a_downloadable_result_with_timings_and_metrics(run_gateway, video_bytes):
    client = run_gateway(StandInOrchestrator())
    job_id = submit(client, video_bytes)
    view = final(client, job_id)
    assert view["status"] == "succeeded" and view["progress"] == 1.0 and view["frames_done"] == 6
    assert {"queue_wait", "detect", "animate", "encode", "upload", "total"} <= set(view["timings"])
    assert f"/v1/jobs/{job_id}/result?expires=" in view["result_url"] and view["random_weights"]
    result = client.get(f"/v1/jobs/{job_id}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    assert result.content == video_bytes
    metrics = client.get("/metrics").text
    assert 'dynamics_jobs_total{status="succeeded"} 1.0' in metrics
    assert 'dynamics_motion_cache_total{result="miss"} 1.0' in metrics
    assert 'dynamics_stage_seconds_count{stage="upload"} 1.0' in metrics
    assert "dynamics_queue_wait_seconds_count 1.0" in metrics
    gateway_dir = client.app.state.gateway.config.data_dir
    assert (
        not (gateway_dir / "uploads" / job_id).exists()
        and not (gateway_dir / "work" / job_id).exists()
    )


def test_sse_streams_progress_until_the_end(run_gateway, video_bytes):
    orchestrator = StandInOrchestrator(frames=8, frame_s=0.05)
    client = run_gateway(orchestrator)
    job_id = submit(client, video_bytes)
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    assert events[-1]["status"] == "succeeded"
    done = [e["frames_done"] for e in events]
    assert done == sorted(done) and len(set(done)) >= 3
    assert any(e["status"] == "running" and e["eta_seconds"] for e in events)


def test_delete_cancels_a_running_job(run_gateway, video_bytes):
    gate = threading.Event()
    orchestrator = StandInOrchestrator(gate=gate)
    client = run_gateway(orchestrator)
    job_id = submit(client, video_bytes)
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "running")
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
    view = final(client, job_id)
    assert view["status"] == "cancelled" and view["error"]["code"] == "cancelled"
    assert orchestrator.cancelled == [job_id]
    assert 'dynamics_jobs_total{status="cancelled"} 1.0' in client.get("/metrics").text


def test_failures_retryable_and_final(run_gateway, video_bytes):
    orchestrator = StandInOrchestrator(
        failures=[
            JobFailed("service_unavailable", "The animator is unavailable.", retryable=True),
            JobFailed("no_face", "No face was found in the photo."),
        ]
    )
    client = run_gateway(orchestrator)
    job_id = submit(client, video_bytes)
    view = final(client, job_id)
    assert view["status"] == "failed" and view["attempts"] == 2
    assert view["error"] == {"code": "no_face", "message": "No face was found in the photo."}
    assert view["result_url"] is None


def test_unexpected_exception_fails_cleanly(run_gateway, video_bytes):
    class Exploding(StandInOrchestrator):
        def run(self, spec, work_dir, *, on_progress, cancel):
            raise RuntimeError("secret internals")

    client = run_gateway(Exploding())
    view = final(client, submit(client, video_bytes))
    assert view["status"] == "failed" and view["error"]["code"] == "internal"
    assert "secret" not in json.dumps(view)


def test_dead_workers_job_is_reclaimed_after_its_lease(run_gateway, video_bytes):
    orchestrator = StandInOrchestrator()
    client = run_gateway(orchestrator, workers=0)
    job_id = submit(client, video_bytes)
    store = client.app.state.gateway.store
    assert store.claim("crashed-worker", lease_s=0.3, max_attempts=3).id == job_id
    config = client.app.state.gateway.config
    pool = WorkerPool(
        config,
        store,
        orchestrator,
        LocalStorage(config.data_dir / "results"),
        None,
        GatewayMetrics(),
    )
    pool.start(1)
    try:
        view = final(client, job_id)
    finally:
        pool.stop(2.0)
    assert view["status"] == "succeeded" and view["attempts"] == 2
    assert [run[0] for run in orchestrator.runs] == [job_id]


def test_worker_that_loses_its_lease_stops_and_writes_nothing(run_gateway, video_bytes):
    gate = threading.Event()
    orchestrator = StandInOrchestrator(gate=gate)
    client = run_gateway(orchestrator)
    job_id = submit(client, video_bytes)
    store = client.app.state.gateway.store
    wait_for(lambda: store.get(job_id).status == "running")
    with store.db.transaction() as tx:  # the lease runs out while the worker is stalled
        tx.execute("UPDATE jobs SET lease_expires = 0 WHERE id = ?", (job_id,))
    rival = store.claim("rival", lease_s=60, max_attempts=3)
    assert rival.id == job_id
    wait_for(lambda: orchestrator.cancelled == [job_id])
    assert store.finish(
        job_id,
        rival.lease_token,
        result_key="rival",
        timings={},
        cache_hit=False,
        random_weights=False,
        frames=1,
    )
    assert store.get(job_id).result_key == "rival"


@pytest.mark.parametrize(
    "engine", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_two_replicas_never_run_a_job_twice(request, tmp_path, video_bytes, engine):
    url = (
        f"sqlite:///{tmp_path / 'shared.sqlite3'}"
        if engine == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    orchestrator = StandInOrchestrator(frames=3, frame_s=0.005)
    gateways, clients = [], []
    for index in range(2):
        gateway = build_gateway(
            tmp_path / f"replica{index}",
            orchestrator,
            database_url=url,
            workers=2,
            max_active_jobs=50,
        )
        gateways.append(gateway)
        clients.append(TestClient(gateway.app, raise_server_exceptions=False).__enter__())
    try:
        ids = [submit(clients[i % 2], video_bytes) for i in range(12)]
        views = [final(clients[0], job_id, timeout=30) for job_id in ids]
    finally:
        for gateway, client in zip(gateways, clients):
            client.__exit__(None, None, None)
            gateway.close()
    assert all(v["status"] == "succeeded" and v["attempts"] == 1 for v in views)
    ran = [run[0] for run in orchestrator.runs]
    assert sorted(ran) == sorted(ids)


def test_config_rejects_bad_values():
    from services.common.config import ConfigError
    from services.gateway.config import GatewayConfig

    with pytest.raises(ConfigError, match="FIREBASE_PROJECT_ID"):
        GatewayConfig.from_env({})
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        GatewayConfig.from_env({"GATEWAY_AUTH_MODE": "none", "DATABASE_URL": "mysql://x"})
    # The photo travels to face_detect in one gRPC message: a limit above it cannot be served.
    with pytest.raises(ConfigError, match="MAX_IMAGE_BYTES"):
        GatewayConfig.from_env({"GATEWAY_AUTH_MODE": "none", "MAX_IMAGE_BYTES": str(32 << 20)})
    config = GatewayConfig.from_env(
        {
            "GATEWAY_AUTH_MODE": "none",
            "JOB_LEASE_S": "9",
            "FETCH_TRUSTED_NETWORKS": "10.0.0.0/8, 127.0.0.1/32",
        }
    )
    assert config.lease_heartbeat_s == 3.0 and config.fetch_trusted_networks == (
        "10.0.0.0/8",
        "127.0.0.1/32",
    )
    assert gateway_config  # harness defaults build a valid config


def test_shutdown_requeues_a_job_that_did_not_finish_in_the_drain_time(run_gateway, video_bytes):
    gate = threading.Event()
    orchestrator = StandInOrchestrator(gate=gate)
    client = run_gateway(orchestrator)
    job_id = submit(client, video_bytes)
    state = client.app.state.gateway
    wait_for(lambda: state.store.get(job_id).status == "running")
    state.pool.stop(drain_s=0.2)
    job = state.store.get(job_id)
    assert (job.status, job.error_code, job.lease_token) == ("queued", "interrupted", None)
    assert orchestrator.cancelled == [job_id]


def test_capacity_waits_do_not_use_up_attempts(run_gateway, video_bytes):
    busy = [
        JobFailed("animator_busy", "The animator is at capacity.", retryable=True) for _ in range(5)
    ]
    client = run_gateway(StandInOrchestrator(failures=busy), max_attempts=2)
    view = final(client, submit(client, video_bytes))
    assert view["status"] == "succeeded" and view["attempts"] == 1


def test_capacity_waits_back_off_and_end_at_the_queue_ceiling(run_gateway, video_bytes):
    busy = [
        JobFailed("animator_busy", "the animator service is at capacity", retryable=True)
        for _ in range(200)
    ]
    orchestrator = StandInOrchestrator(failures=busy)
    client = run_gateway(orchestrator, max_attempts=2, retry_base_s=0.05, max_queue_s=2.0)
    view = final(client, submit(client, video_bytes))
    assert view["status"] == "failed" and view["attempts"] == 1
    assert view["error"]["code"] == "capacity_timeout"
    assert "No capacity became free within 2 s" in view["error"]["message"]
    assert "the animator service is at capacity" in view["error"]["message"]
    starts = [begin for _, begin, _ in orchestrator.runs]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # a fixed 0.05 s delay would try about 40 times in 2 s; growing waits try far fewer times
    assert 3 <= len(starts) <= 16, starts
    assert gaps[-1] > 4 * gaps[0], gaps
