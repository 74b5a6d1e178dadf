"""Job store on SQLite and on a real PostgreSQL: lifecycle, pagination, leases, concurrency."""

from __future__ import annotations

import threading

import pytest

from services.gateway.jobs.database import Database
from services.gateway.jobs.record import SCHEMA, decode_cursor
from services.gateway.jobs.store import JobStore


class FakeClock:
    """A settable clock, so lease expiry needs no sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


SPEC = {
    "source": {"path": "a.png", "url": None},
    "driving": {"path": None, "url": "https://x/v.mp4"},
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db_url, clock):
    db = Database(db_url)
    yield JobStore(db, clock=clock)
    db.close()


def test_create_get_and_owner_isolation(store):
    job, created = store.create("alice", SPEC, notify={"fcm_token": "t"})
    assert (
        created and job.status == "queued" and job.spec == SPEC and job.notify == {"fcm_token": "t"}
    )
    assert store.get(job.id, owner="alice").id == job.id
    assert store.get(job.id, owner="bob") is None
    assert store.get("missing") is None


def test_idempotency_key_is_per_owner(store):
    first, created = store.create("alice", SPEC, idempotency_key="k1")
    again, created_again = store.create("alice", SPEC, idempotency_key="k1")
    other, created_other = store.create("bob", SPEC, idempotency_key="k1")
    assert created and not created_again and again.id == first.id
    assert created_other and other.id != first.id


def test_pagination_newest_first_without_gaps(store, clock):
    ids = []
    for _ in range(5):
        ids.append(store.create("alice", SPEC)[0].id)
        clock.advance(1)
    store.create("bob", SPEC)
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = store.list("alice", limit=2, cursor=cursor)
        seen += [job.id for job in page]
        pages += 1
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3
    with pytest.raises(ValueError):
        decode_cursor("not-a-cursor")


def test_claim_is_fifo_and_empty_queue_gives_none(store, clock):
    first = store.create("a", SPEC)[0]
    clock.advance(1)
    second = store.create("a", SPEC)[0]
    claimed = store.claim("w1", lease_s=30, max_attempts=3)
    assert claimed.id == first.id and claimed.status == "running" and claimed.attempts == 1
    assert store.claim("w1", 30, 3).id == second.id
    assert store.claim("w1", 30, 3) is None
    assert store.queue_depth() == 0


def test_expired_lease_is_reclaimed_and_old_worker_is_fenced(store, clock):
    job = store.create("a", SPEC)[0]
    old = store.claim("w1", lease_s=10, max_attempts=3)
    clock.advance(5)
    assert store.renew(job.id, old.lease_token, 10) == (True, False)
    clock.advance(9)  # renewed lease still valid
    assert store.claim("w2", 10, 3) is None
    clock.advance(2)
    new = store.claim("w2", 10, 3)
    assert new.id == job.id and new.attempts == 2 and new.lease_token != old.lease_token
    assert store.renew(job.id, old.lease_token, 10) == (False, False)
    assert not store.progress(
        job.id,
        old.lease_token,
        stage="animate",
        frames_done=1,
        frames_total=2,
        eta_seconds=1.0,
        timings={},
    )
    assert not store.finish(
        job.id,
        old.lease_token,
        result_key="r",
        timings={},
        cache_hit=False,
        random_weights=True,
        frames=2,
    )
    assert store.finish(
        job.id,
        new.lease_token,
        result_key="r",
        timings={"animate": 1.5},
        cache_hit=True,
        random_weights=True,
        frames=2,
    )
    done = store.get(job.id)
    assert done.status == "succeeded" and done.timings == {"animate": 1.5} and done.cache_hit


def test_jobs_out_of_attempts_fail_instead_of_running_again(store, clock):
    job = store.create("a", SPEC)[0]
    for _ in range(2):
        assert store.claim("w", 1, max_attempts=2).id == job.id
        clock.advance(2)
    assert store.claim("w", 1, max_attempts=2) is None
    failed = store.get(job.id)
    assert failed.status == "failed" and failed.error_code == "worker_lost"


def test_cancel_queued_and_running(store, clock):
    queued = store.create("a", SPEC)[0]
    assert store.request_cancel(queued.id, "a").status == "cancelled"
    assert store.request_cancel(queued.id, "intruder") is None
    running = store.create("a", SPEC)[0]
    lease = store.claim("w", 10, 3)
    assert store.request_cancel(running.id, "a").status == "running"
    assert store.renew(running.id, lease.lease_token, 10) == (True, True)
    assert store.cancelled(running.id, lease.lease_token, timings={"detect": 0.1})
    assert store.get(running.id).status == "cancelled"


def test_cancel_of_a_dead_workers_job_settles_on_expiry(store, clock):
    job = store.create("a", SPEC)[0]
    store.claim("dead", 5, 3)
    store.request_cancel(job.id, "a")
    clock.advance(6)
    assert store.claim("w", 5, 3) is None
    assert store.get(job.id).status == "cancelled"


def test_cancel_after_the_lease_expired_settles_at_once(store, clock):
    job = store.create("a", SPEC)[0]
    store.claim("dead", 5, 3)
    clock.advance(6)
    cancelled = store.request_cancel(job.id, "a")
    assert (cancelled.status, cancelled.lease_token, cancelled.cancel_requested) == (
        "cancelled",
        None,
        True,
    )
    assert store.claim("w", 5, 3) is None


def test_jobs_settled_by_the_reaper_are_handed_to_on_abandoned(store, clock):
    seen = []
    store.on_abandoned = seen.append
    cancelled = store.create("a", SPEC)[0]
    store.claim("dead", 5, 1)
    store.request_cancel(cancelled.id, "a")  # flagged while the lease is live
    lost = store.create("a", SPEC)[0]
    store.claim("dead", 5, 1)  # its only attempt
    clock.advance(6)
    assert store.claim("w", 5, 1) is None
    assert sorted((job.id, job.status) for job in seen) == sorted(
        [(cancelled.id, "cancelled"), (lost.id, "failed")]
    )
    assert seen[0].spec == SPEC


def test_a_failing_on_abandoned_does_not_stop_claims(store, clock):
    def explode(job):
        raise OSError("disk gone")

    store.on_abandoned = explode
    store.create("a", SPEC)
    store.claim("dead", 5, 1)
    clock.advance(6)
    fresh = store.create("a", SPEC)[0]
    assert store.claim("w", 5, 1).id == fresh.id


def test_requeue_fail_and_usage(store, clock):
    job = store.create("a", SPEC)[0]
    lease = store.claim("w", 10, 3)
    assert store.requeue(job.id, lease.lease_token, code="service_unavailable", message="later")
    assert store.get(job.id).status == "queued"
    lease = store.claim("w", 10, 3)
    assert lease.attempts == 2
    assert store.fail(job.id, lease.lease_token, code="no_face", message="No face.", timings={})
    failed = store.get(job.id)
    assert (failed.status, failed.error_code, failed.error_message) == (
        "failed",
        "no_face",
        "No face.",
    )
    clock.advance(10)
    store.create("a", SPEC)
    active, recent, oldest = store.usage("a", since=clock.now - 5)
    assert (active, recent, oldest) == (1, 1, clock.now)


def test_concurrent_claimers_take_each_job_exactly_once(store):
    for _ in range(24):
        store.create("a", SPEC)
    taken: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def claimer(name: str) -> None:
        start.wait()
        while (job := store.claim(name, 30, 3)) is not None:
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(taken) == 24 and len(set(taken)) == 24


def test_requeue_delay_and_uncounted_attempts(store, clock):
    job = store.create("a", SPEC)[0]
    lease = store.claim("w", 10, 3)
    assert store.requeue(
        job.id,
        lease.lease_token,
        code="animator_busy",
        message="full",
        delay_s=30,
        count_attempt=False,
    )
    assert store.claim("w", 10, 3) is None  # not before the delay
    clock.advance(31)
    again = store.claim("w", 10, 3)
    assert again.id == job.id and again.attempts == 1


def test_old_table_gains_later_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    db = Database(url)
    with db.transaction() as tx:
        tx.execute(SCHEMA.replace("    not_before DOUBLE PRECISION,\n", ""))
    assert "not_before" not in _columns(db)
    JobStore(db)
    assert "not_before" in _columns(db)
    db.close()


def _columns(db: Database) -> list[str]:
    with db.transaction(write=False) as tx:
        return tx.columns("jobs")
