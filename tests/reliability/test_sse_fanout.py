"""200 SSE watchers on one real gateway process cost the database what one watcher costs.

A `python -m services.gateway` process (uvicorn, API only) on a throwaway PostgreSQL; the test
plays the worker from its own connection (claim, progress, finish), so the job's changes reach
the gateway only through the database's NOTIFY. Real HTTP streams from an asyncio httpx client.
Over the same fixed window with the same progress writes, the transactions the gateway opens
(`dynamics_db_transactions_total`, counted in its Database layer) and its PostgreSQL
connections are compared between 1 and 200 watchers: the old per-stream polling (every 0.5 s)
would have made about 200 x 2 x window more.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import psycopg
import pytest

from services.gateway.jobs.database import Database
from services.gateway.jobs.store import JobStore
from tests.postgres_fixture import postgres_server  # noqa: F401 - fixture
from tests.reliability.conftest import start_gateway

pytestmark = pytest.mark.postgres

WINDOW_UPDATES = 6
UPDATE_EVERY_S = 0.5
APP_NAME = "dynamics-gateway-under-test"
URLS = {"source_url": "http://127.0.0.1:9/a.png", "driving_url": "http://127.0.0.1:9/v.mp4"}


@pytest.fixture(scope="module")
def fanout(postgres_server, tmp_path_factory):  # noqa: F811 - the fixture above
    url = postgres_server.create_database()
    gateway_url = url + ("&" if "?" in url else "?") + f"application_name={APP_NAME}"
    gateway, base = start_gateway(
        tmp_path_factory.mktemp("sse-fanout"),
        {
            "GATEWAY_WORKERS": "0",
            "DATABASE_URL": gateway_url,
            "SWEEP_EVERY_S": "0",
            "SSE_HEARTBEAT_S": "1",
            "ALLOW_HTTP_URLS": "1",
            "FETCH_TRUSTED_NETWORKS": "127.0.0.0/8",
            "RATE_LIMIT_JOBS": "100000",
            "MAX_ACTIVE_JOBS": "100000",
            "LOG_LEVEL": "warning",
        },
    )
    store = JobStore(Database(url))
    try:
        yield base, store, url
    finally:
        store.db.close()
        try:
            gateway.terminate(30)
        finally:
            gateway.kill()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not exported"
    return float(match.group(1))


async def _follow(
    client: httpx.AsyncClient,
    job_id: str,
    seen: list[dict],
    ready: asyncio.Event,
    counter: list[int],
    total: int,
) -> list[str]:
    """Read one stream to its end; returns its comment lines."""
    comments: list[str] = []
    event: dict[str, str] = {}
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as reply:
        assert reply.status_code == 200
        async for line in reply.aiter_lines():
            if line.startswith(":"):
                comments.append(line)
            elif line == "":
                if "data" in event:
                    seen.append({**json.loads(event["data"]), "event_id": int(event["id"])})
                    if len(seen) == 1:
                        counter[0] += 1
                        if counter[0] == total:
                            ready.set()
                event = {}
            else:
                field, _, value = line.partition(":")
                event[field] = value.removeprefix(" ")
    return comments


def _gateway_connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
        ).fetchone()[0]


async def _watch(base: str, store: JobStore, url: str, watchers: int) -> dict:
    limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=watchers + 10)
    timeout = httpx.Timeout(30.0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
        created = await client.post("/v1/jobs", json=URLS)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        job = await asyncio.to_thread(store.claim, "test-worker", 600.0, 3)
        assert job is not None and job.id == job_id
        token = job.lease_token

        ready, counter = asyncio.Event(), [0]
        streams = [[] for _ in range(watchers)]
        tasks = [
            asyncio.create_task(_follow(client, job_id, seen, ready, counter, watchers))
            for seen in streams
        ]
        await asyncio.wait_for(ready.wait(), 120)  # every stream has its first event
        await asyncio.sleep(1.0)
        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, "dynamics_sse_watchers") == watchers
        before = _metric(metrics, "dynamics_db_transactions_total")
        reads_before = _metric(metrics, "dynamics_job_event_reads_total")
        connections = await asyncio.to_thread(_gateway_connections, url)

        started = time.monotonic()
        for done in range(1, WINDOW_UPDATES + 1):
            assert await asyncio.to_thread(
                lambda d=done: store.progress(
                    job_id,
                    token,
                    stage="animate",
                    frames_done=d,
                    frames_total=WINDOW_UPDATES,
                    eta_seconds=1.0,
                    timings={},
                )
            )
            await asyncio.sleep(UPDATE_EVERY_S)
        await asyncio.sleep(
            max(0.0, WINDOW_UPDATES * UPDATE_EVERY_S + 0.5 - (time.monotonic() - started))
        )
        metrics = (await client.get("/metrics")).text
        transactions = _metric(metrics, "dynamics_db_transactions_total") - before
        reads = _metric(metrics, "dynamics_job_event_reads_total") - reads_before

        assert await asyncio.to_thread(
            lambda: store.finish(
                job_id,
                token,
                result_key=f"results/{job_id}.mp4",
                timings={},
                cache_hit=False,
                random_weights=True,
                frames=WINDOW_UPDATES,
            )
        )
        comments = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return {
        "transactions": transactions,
        "reads": reads,
        "connections": connections,
        "streams": streams,
        "comments": comments,
        "window_s": time.monotonic() - started,
    }


def test_two_hundred_watchers_cost_the_database_what_one_costs(fanout):
    base, store, url = fanout
    one = asyncio.run(_watch(base, store, url, 1))
    many = asyncio.run(_watch(base, store, url, 200))
    print(
        f"1 watcher: {one['transactions']:.0f} transactions, {one['reads']:.0f} event reads;"
        f" 200 watchers: {many['transactions']:.0f} transactions, {many['reads']:.0f} reads,"
        f" {many['connections']} connections"
    )

    for result in (one, many):
        for events in result["streams"]:
            ids = [event["event_id"] for event in events]
            assert ids == sorted(set(ids)), ids  # ids only grow
            assert events[-1]["status"] == "succeeded"
            # Progress arrived live, not only the end (a watcher may skip an intermediate one).
            assert any(e["status"] == "running" and e["frames_done"] > 0 for e in events)
        assert result["reads"] <= WINDOW_UPDATES + 3

    # The database sees one stream of reads, whatever the number of watchers: the window's
    # transactions (progress NOTIFYs read once, two /metrics scrapes) stay the same.
    assert many["transactions"] <= one["transactions"] + 4, (one, many)
    assert many["transactions"] < 40
    # Per-stream polling at 0.5 s would have opened about 200 x 2 x window transactions.
    assert 200 * 2 * many["window_s"] > 20 * many["transactions"]
    assert many["connections"] <= 10  # the pool and the one LISTEN connection, not 200


def test_heartbeats_and_resume_over_real_http(fanout):
    base, store, _ = fanout

    async def run() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
            job_id = (await client.post("/v1/jobs", json=URLS)).json()["id"]
            job = await asyncio.to_thread(store.claim, "test-worker", 600.0, 3)
            lines: list[str] = []
            async with client.stream("GET", f"/v1/jobs/{job_id}/events") as reply:
                async for line in reply.aiter_lines():
                    lines.append(line)
                    if line.startswith(": keep-alive"):
                        break  # SSE_HEARTBEAT_S=1: an idle stream gets a comment
            first_id = int(next(x for x in lines if x.startswith("id: "))[4:])
            assert first_id == job.version
            await asyncio.to_thread(
                lambda: store.finish(
                    job.id,
                    job.lease_token,
                    result_key="r",
                    timings={},
                    cache_hit=False,
                    random_weights=True,
                    frames=1,
                )
            )
            # Reconnecting with the last id seen gets what it missed: the final state.
            headers = {"Last-Event-ID": str(first_id)}
            reply = await client.get(f"/v1/jobs/{job_id}/events", headers=headers)
            events = [x for x in reply.text.split("\n\n") if x.startswith("id: ")]
            assert len(events) == 1 and '"status":"succeeded"' in events[0]
            final_id = int(events[0].split("\n")[0][4:])
            assert final_id > first_id
            done = await client.get(
                f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(final_id)}
            )
            assert done.status_code == 204  # nothing newer: EventSource stops reconnecting

    asyncio.run(run())
