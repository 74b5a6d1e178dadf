"""The job-event hub: on SQLite one shared poller serves every subscriber (its reads do not grow
with them); on PostgreSQL the store's NOTIFY reaches the one listener, which reads the job once
for all subscribers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from services.gateway.jobs.database import Database
from services.gateway.jobs.events import JobEvents
from services.gateway.jobs.store import JobStore
from tests.unit.gateway.gateway_harness import gateway_config

SPEC = {"source": {"url": "x"}, "driving": {"url": "y"}}


async def _follow_while_progressing(store: JobStore, hub: JobEvents, watchers: int) -> tuple:
    job, _ = store.create("u", SPEC)
    claimed = store.claim("w", 60.0, 3)
    subs = [hub.subscribe(job.id) for _ in range(watchers)]
    await asyncio.sleep(0.3)
    before, reads = store.db.transactions, hub.reads
    for done in range(1, 6):
        # The test's writes use the same Database object: count them apart.
        store.progress(
            job.id,
            claimed.lease_token,
            stage="animate",
            frames_done=done,
            frames_total=5,
            eta_seconds=None,
            timings={},
        )
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.3)
    hub_transactions = store.db.transactions - before - 5
    latest = [sub.latest.frames_done if sub.latest else None for sub in subs]
    for sub in subs:
        hub.unsubscribe(sub)
    return hub_transactions, hub.reads - reads, latest


def test_sqlite_one_poller_serves_every_subscriber(tmp_path):
    config = replace(gateway_config(tmp_path), sse_poll_s=0.1)
    store = JobStore(Database(f"sqlite:///{tmp_path / 'jobs.sqlite3'}"))
    hub = JobEvents(store, config)

    async def run():
        one = await _follow_while_progressing(store, hub, 1)
        many = await _follow_while_progressing(store, hub, 300)
        return one, many

    try:
        (one_tx, one_reads, one_latest), (many_tx, many_reads, many_latest) = asyncio.run(run())
    finally:
        hub.stop()
        store.db.close()
    assert one_latest == [5] and many_latest == [5] * 300  # everyone saw the last progress
    # ~1.3 s at 0.1 s a poll: about 13 reads either way, not 300 times that.
    assert 5 <= one_reads <= 20 and 5 <= many_reads <= 20
    assert many_tx <= one_tx + 3 and many_tx == many_reads


@pytest.mark.postgres
def test_postgresql_notify_reaches_the_listener_once_per_change(postgres_url, tmp_path):
    config = replace(gateway_config(tmp_path), sse_resync_s=3600.0)
    store = JobStore(Database(postgres_url))
    writer = JobStore(Database(postgres_url))  # another "replica" makes the changes
    hub = JobEvents(store, config)

    async def run():
        job, _ = writer.create("u", SPEC)
        subs = [hub.subscribe(job.id) for _ in range(50)]
        assert await asyncio.to_thread(hub.wait_listening, 10)
        reads = hub.reads
        claimed = writer.claim("w", 60.0, 3)
        deadline = time.monotonic() + 10
        while any(s.latest is None or s.latest.status != "running" for s in subs):
            assert time.monotonic() < deadline, "NOTIFY did not arrive"
            await asyncio.sleep(0.02)
        writer.finish(
            job.id,
            claimed.lease_token,
            result_key="r",
            timings={},
            cache_hit=False,
            random_weights=True,
            frames=1,
        )
        while any(s.latest.status != "succeeded" for s in subs):
            assert time.monotonic() < deadline, "NOTIFY did not arrive"
            await asyncio.sleep(0.02)
        assert hub.reads - reads == 2  # one read per change, for all 50 subscribers
        assert {s.latest.version for s in subs} == {writer.get(job.id).version}

    try:
        asyncio.run(run())
    finally:
        hub.stop()
        store.db.close()
        writer.db.close()
