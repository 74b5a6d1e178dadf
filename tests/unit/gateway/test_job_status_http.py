"""Over real HTTP (uvicorn on loopback): an Idempotency-Key reused with another request is 422
naming the key while a same-request retry replays; a queued job shows its fleet-wide queue
position and an ETA that counts the jobs ahead; every job body carries links that work."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from tests.unit.gateway.gateway_harness import (
    StandInOrchestrator,
    build_gateway,
    make_video,
    png_bytes,
    wait_for,
)
from tests.unit.gateway.problem_shape import problem_of

pytestmark = pytest.mark.ffmpeg

URLS = {"source_url": "http://127.0.0.1:9/me.png", "driving_url": "http://127.0.0.1:9/v.mp4"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_gateway(tmp_path, orchestrator=None, **overrides) -> Iterator[tuple[httpx.Client, object]]:
    """A gateway served by uvicorn on a loopback port; yields an httpx client and the gateway."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = build_gateway(tmp_path, orchestrator, public_url=base, **overrides)
    server = uvicorn.Server(
        uvicorn.Config(gateway.app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20)
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client, gateway
    finally:
        server.should_exit = True
        thread.join(30)
        gateway.close()


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory) -> bytes:
    return make_video(tmp_path_factory.mktemp("media") / "hero.mp4").read_bytes()


def _upload(client, photo: bytes, video: bytes, key: str, **fields):
    files = {"source": ("me.png", photo, "image/png"), "driving": ("v.mp4", video, "video/mp4")}
    return client.post("/v1/jobs", files=files, data=fields, headers={"Idempotency-Key": key})


def _uploads_on_disk(gateway) -> set[str]:
    folder = gateway.config.data_dir / "uploads"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_reused_idempotency_key_with_another_body_is_422_and_a_retry_replays(tmp_path, video_bytes):
    with live_gateway(tmp_path, workers=0) as (client, gateway):
        photo = png_bytes()
        first = _upload(client, photo, video_bytes, "upload-1", seconds="5")
        assert first.status_code == 202, first.text
        job_id = first.json()["id"]
        kept = _uploads_on_disk(gateway)

        again = _upload(client, photo, video_bytes, "upload-1", seconds="5")
        assert again.status_code == 202 and again.json()["id"] == job_id, again.text
        assert again.headers["Idempotent-Replayed"] == "true"

        other_photo = _upload(client, png_bytes((97, 80)), video_bytes, "upload-1", seconds="5")
        problem = problem_of(other_photo, 422, "idempotency_key_reused")
        assert "'upload-1'" in problem["detail"] and job_id in problem["detail"]
        problem_of(
            _upload(client, photo, video_bytes, "upload-1", seconds="4"),
            422,
            "idempotency_key_reused",
        )
        assert _uploads_on_disk(gateway) == kept  # refused and replayed requests kept nothing

        created = client.post(
            "/v1/jobs", json={**URLS, "seconds": 10}, headers={"Idempotency-Key": "json-1"}
        )
        assert created.status_code == 202, created.text
        # The same job spelled differently (a default left out, keys reordered) is a retry.
        same = client.post(
            "/v1/jobs",
            content=json.dumps(dict(reversed(URLS.items()))),
            headers={"Idempotency-Key": "json-1", "Content-Type": "application/json"},
        )
        assert same.status_code == 202 and same.json()["id"] == created.json()["id"], same.text
        changed = client.post(
            "/v1/jobs",
            json={**URLS, "options": {"relative_motion": False}},
            headers={"Idempotency-Key": "json-1"},
        )
        problem_of(changed, 422, "idempotency_key_reused")
        # Another user's key space is separate; a new key makes a new job.
        fresh = client.post(
            "/v1/jobs", json={**URLS, "seconds": 4}, headers={"Idempotency-Key": "json-2"}
        )
        assert fresh.status_code == 202 and fresh.json()["id"] != created.json()["id"]
        assert len(client.get("/v1/jobs").json()["jobs"]) == 3


def _seed_succeeded(store, owner: str, run_s: float) -> None:
    job, _ = store.create(owner, {"seeded": True})
    now = time.time()
    with store.db.transaction() as tx:
        tx.execute(
            "UPDATE jobs SET status = 'succeeded', stage = 'done', started_at = ?,"
            " finished_at = ? WHERE id = ?",
            (now - run_s, now, job.id),
        )


def test_queued_jobs_show_their_fleet_wide_position_and_an_eta_counting_the_jobs_ahead(
    tmp_path,
):
    with live_gateway(tmp_path, workers=0, max_active_jobs=10) as (client, gateway):
        store = gateway.state.store
        store.create("someone-else", {"other": "user"})  # another user's job is ahead too
        ids = [client.post("/v1/jobs", json=URLS).json()["id"] for _ in range(3)]
        views = [client.get(f"/v1/jobs/{job}").json() for job in ids]
        assert [v["queue_position"] for v in views] == [1, 2, 3]
        assert all(v["eta_seconds"] is None for v in views)  # nothing measured yet

        for run_s in (10.0, 20.0, 30.0):  # median 20 s
            _seed_succeeded(store, "history", run_s)
        views = [client.get(f"/v1/jobs/{job}").json() for job in ids]
        # Nothing runs: the jobs ahead go one at a time, then the job itself.
        assert [v["eta_seconds"] for v in views] == [40.0, 60.0, 80.0]
        listed = {v["id"]: v for v in client.get("/v1/jobs").json()["jobs"]}
        assert [listed[job]["queue_position"] for job in ids] == [1, 2, 3]

        claimed = store.claim("elsewhere", lease_s=60, max_attempts=3)  # a worker elsewhere
        assert claimed is not None and claimed.owner == "someone-else"
        running = store.claim("elsewhere-2", lease_s=60, max_attempts=3)
        assert running is not None and running.id == ids[0]
        view = client.get(f"/v1/jobs/{ids[2]}").json()
        # One job ahead, served two at a time (two run now): 20 x (1 + 1/2).
        assert (view["queue_position"], view["eta_seconds"]) == (1, 30.0)
        assert client.get(f"/v1/jobs/{ids[0]}").json()["queue_position"] is None

        assert client.delete(f"/v1/jobs/{ids[1]}").status_code == 200
        assert client.get(f"/v1/jobs/{ids[2]}").json()["queue_position"] == 0
        with client.stream("GET", f"/v1/jobs/{ids[2]}/events") as events:
            for line in events.iter_lines():
                if line.startswith("data: "):
                    assert json.loads(line[6:])["queue_position"] == 0
                    break


def test_every_job_body_has_links_that_work(tmp_path, video_bytes):
    gate = threading.Event()
    orchestrator = StandInOrchestrator(gate=gate)
    with live_gateway(tmp_path, orchestrator) as (client, _gateway):
        base = str(client.base_url).rstrip("/")
        created = client.post(
            "/v1/jobs",
            files={
                "source": ("me.png", png_bytes(), "image/png"),
                "driving": ("v.mp4", video_bytes, "video/mp4"),
            },
        )
        assert created.status_code == 202, created.text
        job = created.json()
        here = f"{base}/v1/jobs/{job['id']}"
        assert job["links"] == {
            "self": here,
            "events": f"{here}/events",
            "cancel": here,
            "result": None,
        }
        assert client.get(job["links"]["self"]).json()["id"] == job["id"]
        wait_for(lambda: client.get(here).json()["status"] == "running")
        assert client.get(here).json()["links"]["result"] is None
        gate.set()
        done = wait_for(lambda: (v := client.get(here).json())["status"] == "succeeded" and v)
        links = done["links"]
        assert links["cancel"] is None and links["result"] == done["result_url"]
        assert links["result"].startswith(f"{here}/result?")
        result = httpx.get(links["result"], timeout=30)  # signed: no credentials needed
        assert result.status_code == 200 and result.content == video_bytes
        with client.stream("GET", links["events"]) as events:
            data = next(line for line in events.iter_lines() if line.startswith("data: "))
        assert json.loads(data[6:])["links"] == links
        listed = client.get("/v1/jobs").json()["jobs"]
        assert listed[0]["links"] == links
