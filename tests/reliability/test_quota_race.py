"""The active-job limit under concurrency, against real gateway processes over HTTP.

Twenty uploads from one user arrive at once with the default limit of four active jobs. Each
request passes the early quota check before any of them has been inserted, so only the check
made in the transaction that inserts the job can hold the limit. Exactly four are accepted, the
rest get 429 with Retry-After, and the refused requests leave no spooled upload behind. SQLite
(one gateway) and PostgreSQL (two gateway replicas sharing the database, ten requests each).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.postgres_fixture import postgres_server  # noqa: F401 - fixture
from tests.reliability.conftest import needs_ffmpeg, start_gateway
from tests.reliability.image_corpus import face_image
from tests.service_process import ServiceProcess
from tests.unit.gateway.problem_shape import problem_of

BURST = 20
LIMIT = 4

pytestmark = needs_ffmpeg


@pytest.fixture(scope="module")
def photo() -> bytes:
    buf = io.BytesIO()
    face_image(320).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def gateways(request, tmp_path) -> Iterator[list[tuple[ServiceProcess, str, Path]]]:
    """One SQLite gateway, or two PostgreSQL gateways on one fresh database."""
    env = {"GATEWAY_WORKERS": "0", "MAX_SECONDS": "10", "RATE_LIMIT_JOBS": "1000"}
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        env["DATABASE_URL"] = server.create_database()
        count = 2
    else:
        count = 1
    started: list[tuple[ServiceProcess, str, Path]] = []
    try:
        for i in range(count):
            data = tmp_path / f"gateway{i}"
            process, base = start_gateway(data, env)
            started.append((process, base, data))
        yield started
    finally:
        for process, _base, _data in started:
            try:
                process.terminate(30)
            finally:
                process.kill()


def _burst(bases: list[str], files: dict) -> list[httpx.Response | Exception]:
    results: list[httpx.Response | Exception] = [RuntimeError("not sent")] * BURST
    gate = threading.Barrier(BURST)

    def one(i: int) -> None:
        with httpx.Client(base_url=bases[i % len(bases)], timeout=120) as client:
            gate.wait()
            try:
                results[i] = client.post("/v1/jobs", files=files)
            except Exception as exc:  # noqa: BLE001 - reported by the assertions
                results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return results


@pytest.mark.parametrize("gateways", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_posts_never_pass_the_active_job_limit(gateways, photo, hero_bytes) -> None:
    files = {
        "source": ("photo.png", photo, "image/png"),
        "driving": ("hero.mp4", hero_bytes, "video/mp4"),
    }
    results = _burst([base for _p, base, _d in gateways], files)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    statuses = sorted(r.status_code for r in results)
    assert statuses == [202] * LIMIT + [429] * (BURST - LIMIT), statuses
    accepted = {r.json()["id"] for r in results if r.status_code == 202}
    for refused in (r for r in results if r.status_code == 429):
        problem_of(refused, 429, "too_many_active_jobs")
        assert refused.headers["Retry-After"] == "30"

    # Only the accepted jobs' uploads are on disk: the refused requests deleted theirs.
    kept = {}
    for _process, _base, data in gateways:
        uploads = data / "uploads"
        for folder in uploads.iterdir() if uploads.exists() else ():
            kept[folder.name] = sorted(p.name for p in folder.iterdir())
    assert set(kept) == accepted, kept
    assert all(names == ["driving.mp4", "source.png"] for names in kept.values()), kept

    # The database holds exactly the accepted jobs, whichever replica is asked.
    with httpx.Client(base_url=gateways[-1][1], timeout=30) as client:
        listed = client.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
        assert {job["id"] for job in listed} == accepted
        # A fifth job is still refused, and one more is accepted after a cancel.
        assert client.post("/v1/jobs", files=files).status_code == 429
        assert client.delete(f"/v1/jobs/{min(accepted)}").status_code == 200
        assert client.post("/v1/jobs", files=files).status_code == 202
