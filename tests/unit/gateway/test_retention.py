"""Retention: inputs, results and job rows go after their TTLs, swept with an injected clock from
the local folder and from Firebase Storage (gcp-storage-emulator); `DELETE` on a finished job
erases its media at once; two sweepers on one PostgreSQL never sweep a row twice; the motion
cache keeps to its size bound, least recently used first."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.gateway.delivery.storage import FirebaseStorage, LocalStorage
from services.gateway.jobs.database import Database
from services.gateway.jobs.retention import Sweeper
from services.gateway.jobs.store import JobStore
from services.gateway.pipeline.motion_cache import FolderMotionCache
from services.gateway.runtime import Gateway
from tests.unit.gateway.gateway_harness import (
    PROJECT,
    StandInOrchestrator,
    build_gateway,
    gateway_config,
    make_video,
    png_bytes,
    wait_for,
)
from tests.unit.gateway.test_storage_notify import BUCKET, emulator, firebase_app  # noqa: F401

DAY = 86400.0


class Clock:
    """A clock the test moves; it starts at the real time so leases and links behave."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _uploads(tmp_path: Path) -> dict:
    return {
        "source": ("me.png", png_bytes(), "image/png"),
        "driving": ("hero.mp4", make_video(tmp_path / "hero.mp4").read_bytes(), "video/mp4"),
    }


def _finished_job(client: TestClient, files: dict) -> str:
    answer = client.post("/v1/jobs", files=files)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded")
    return job_id


@pytest.mark.ffmpeg
def test_local_inputs_results_and_rows_go_after_their_ttls(tmp_path):
    clock = Clock()
    config = gateway_config(
        tmp_path, input_ttl_s=3600.0, result_ttl_s=7 * DAY, job_ttl_s=30 * DAY, sweep_every_s=0
    )
    gateway = Gateway.build(config, StandInOrchestrator(), clock=clock, drain_s=2.0)
    try:
        with TestClient(gateway.app, raise_server_exceptions=False) as client:
            job_id = _finished_job(client, _uploads(tmp_path))
            state = client.app.state.gateway
            sweeper = Sweeper(state.store, state.storage, config)
            uploads = config.upload_dir(job_id)
            result = state.storage.local_path(f"results/{job_id}.mp4")
            assert uploads.is_dir() and result is not None  # INPUT_TTL_S keeps the inputs

            assert sweeper.run_once().inputs == 0  # nothing is due yet
            clock.now += 3601
            report = sweeper.run_once()
            assert (report.inputs, report.results, report.rows) == (1, 0, 0)
            assert not uploads.exists() and result.exists()
            assert client.get(f"/v1/jobs/{job_id}/result").status_code == 200

            clock.now += 7 * DAY
            report = sweeper.run_once()
            assert (report.inputs, report.results, report.rows) == (0, 1, 0)
            assert not result.exists()
            view = client.get(f"/v1/jobs/{job_id}").json()
            assert view["status"] == "succeeded" and view["result_url"] is None
            assert client.get(f"/v1/jobs/{job_id}/result").status_code == 404
            assert sweeper.run_once().results == 0  # done once

            clock.now += 23 * DAY
            assert sweeper.run_once().rows == 1
            assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    finally:
        gateway.close()


@pytest.mark.ffmpeg
def test_firebase_inputs_go_at_the_end_and_results_after_the_ttl(emulator, firebase_app, tmp_path):  # noqa: F811
    clock = Clock()
    config = gateway_config(
        tmp_path,
        storage_backend="firebase",
        storage_bucket=BUCKET,
        firebase_project_id=PROJECT,
        firebase_credentials="anonymous",
        sweep_every_s=0,
    )
    gateway = Gateway.build(config, StandInOrchestrator(), clock=clock, drain_s=2.0)
    bucket = FirebaseStorage(firebase_app, BUCKET).bucket

    def names() -> set[str]:
        return {blob.name for blob in bucket.list_blobs()}

    try:
        with TestClient(gateway.app, raise_server_exceptions=False) as client:
            job_id = _finished_job(client, _uploads(tmp_path))
            state = client.app.state.gateway
            # Default INPUT_TTL_S=0: the inputs went as the job ended, and that is recorded.
            wait_for(lambda: names() == {f"results/{job_id}.mp4"})
            wait_for(lambda: state.store.get(job_id).inputs_erased_at is not None)
            sweeper = Sweeper(state.store, state.storage, config)
            clock.now += 7 * DAY - 60
            assert sweeper.run_once().results == 0
            clock.now += 120
            assert sweeper.run_once().results == 1
            assert names() == set()
            clock.now += 30 * DAY
            assert sweeper.run_once().rows == 1
            assert state.store.get(job_id) is None
    finally:
        gateway.close()


@pytest.mark.ffmpeg
def test_delete_on_a_finished_job_erases_its_media(emulator, firebase_app, tmp_path):  # noqa: F811
    gateway = build_gateway(
        tmp_path,
        StandInOrchestrator(),
        storage_backend="firebase",
        storage_bucket=BUCKET,
        firebase_project_id=PROJECT,
        firebase_credentials="anonymous",
        input_ttl_s=DAY,  # kept, so DELETE has inputs to erase too
    )
    bucket = FirebaseStorage(firebase_app, BUCKET).bucket
    try:
        with TestClient(gateway.app, raise_server_exceptions=False) as client:
            job_id = _finished_job(client, _uploads(tmp_path))
            assert {b.name for b in bucket.list_blobs()} == {
                f"results/{job_id}.mp4",
                f"uploads/{job_id}/source.png",
                f"uploads/{job_id}/driving.mp4",
            }
            answer = client.delete(f"/v1/jobs/{job_id}")
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["erased"] is True and body["status"] == "succeeded"
            assert body["result_url"] is None and body["links"]["result"] is None
            assert list(bucket.list_blobs()) == []
            assert client.get(f"/v1/jobs/{job_id}/result").status_code == 404
            again = client.delete(f"/v1/jobs/{job_id}")
            assert again.status_code == 200 and again.json()["erased"] is True

            client.app.state.gateway.pool.stop(0)  # the next job stays queued
            queued = client.post(
                "/v1/jobs",
                json={
                    "source_url": "http://127.0.0.1:9/a.png",
                    "driving_url": "http://127.0.0.1:9/v.mp4",
                },
            ).json()["id"]
            cancelled = client.delete(f"/v1/jobs/{queued}").json()
            assert cancelled["erased"] is False and cancelled["status"] == "cancelled"
    finally:
        gateway.close()


class CountingStorage(LocalStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deleted: Counter[str] = Counter()
        self._lock = threading.Lock()

    def delete(self, key: str) -> None:
        with self._lock:
            self.deleted[key] += 1
        time.sleep(0.002)  # give the other sweeper time to race
        super().delete(key)


def test_two_sweepers_on_postgresql_never_sweep_a_row_twice(postgres_url, tmp_path):
    clock = Clock()
    store = JobStore(Database(postgres_url), clock=clock)
    storage = CountingStorage(tmp_path / "results")
    ids = []
    for n in range(40):
        job, _ = store.create("u", {"source": {"url": "x"}, "driving": {"url": "y"}})
        claimed = store.claim("w", 60.0, 3)
        assert claimed is not None
        (tmp_path / "out.mp4").write_bytes(b"mp4")
        storage.put(f"results/{claimed.id}.mp4", tmp_path / "out.mp4")
        store.finish(
            claimed.id,
            claimed.lease_token,
            result_key=f"results/{claimed.id}.mp4",
            timings={},
            cache_hit=False,
            random_weights=True,
            frames=1,
        )
        ids.append(job.id)
    clock.now += 31 * DAY
    config = gateway_config(tmp_path)
    sweepers = [
        Sweeper(JobStore(Database(postgres_url), clock=clock), storage, config, batch=5)
        for _ in range(2)
    ]
    reports = []
    threads = [threading.Thread(target=lambda s=s: reports.append(s.run_once())) for s in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(r.rows for r in reports) == 40 and sum(r.errors for r in reports) == 0
    assert all(r.rows > 0 for r in reports), reports  # both took part
    assert set(storage.deleted) == {f"results/{i}.mp4" for i in ids}
    assert set(storage.deleted.values()) == {1}  # each result deleted by one sweeper, once
    assert store.get_many(ids) == []


def test_the_motion_cache_keeps_its_bound_evicting_the_least_recently_used(tmp_path):
    from dynamics.v1 import common_pb2

    def template(n: int) -> common_pb2.MotionTemplate:
        t = common_pb2.MotionTemplate()
        for _ in range(n):
            t.frames.add()
        return t

    clock = Clock()
    probe = FolderMotionCache(tmp_path / "probe")
    probe.put("0" * 64, template(50))
    size = next((tmp_path / "probe").glob("??/*.motion")).stat().st_size
    cache = FolderMotionCache(tmp_path / "cache", max_bytes=2 * size + size // 2, clock=clock)
    a, b, c = ("a" * 64, "b" * 64, "c" * 64)
    cache.put(a, template(50))
    clock.now += 1
    cache.put(b, template(50))
    clock.now += 1
    assert cache.get(a) is not None  # a is now the most recently used
    clock.now += 1
    cache.put(c, template(50))
    assert cache.get(b) is None and cache.evicted == 1
    assert cache.get(a) is not None and cache.get(c) is not None
    total = sum(p.stat().st_size for p in (tmp_path / "cache").glob("??/*.motion"))
    assert total <= cache.max_bytes
