"""The quota check inside `JobStore.create`, on SQLite and on a real PostgreSQL.

Concurrent creators are made to meet inside the insert transaction: the store's clock, read
right before the quota is counted, holds every creator that reaches it until all have arrived
(or a short wait has passed). Without a per-owner lock they would all count the same usage and
all insert; with it, each one counts after the previous one committed.
"""

from __future__ import annotations

import threading
import time

import pytest

from services.gateway.jobs.database import Database
from services.gateway.jobs.store import JobStore, Quota, QuotaExceeded

SPEC = {"source": {"path": "a.png", "url": None}, "driving": {"path": "b.mp4", "url": None}}
QUOTA = Quota(max_active=4, rate_limit_jobs=100, window_s=3600.0)


class RendezvousClock:
    """A clock whose reads wait (at most `wait_s`) until `parties` threads are reading it."""

    def __init__(self, parties: int, wait_s: float = 0.3) -> None:
        self.parties, self.wait_s = parties, wait_s
        self.arrived = 0
        self.cond = threading.Condition()
        self.armed = False

    def __call__(self) -> float:
        if self.armed:
            with self.cond:
                self.arrived += 1
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.arrived >= self.parties, timeout=self.wait_s)
        return time.time()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    return request.getfixturevalue("postgres_url")


def _create_concurrently(store: JobStore, owners: list[str]) -> list[str]:
    """Create one job per entry of `owners` from as many threads; returns 'ok' or the code."""
    results = [""] * len(owners)

    def one(i: int) -> None:
        try:
            store.create(owners[i], SPEC, quota=QUOTA)
            results[i] = "ok"
        except QuotaExceeded as exc:
            results[i] = exc.code

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(owners))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_concurrent_creators_never_pass_the_active_limit(db_url) -> None:
    clock = RendezvousClock(parties=10)
    db = Database(db_url)
    try:
        store = JobStore(db, clock=clock)
        clock.armed = True
        results = _create_concurrently(store, ["alice"] * 10)
        assert sorted(results) == ["ok"] * 4 + ["too_many_active_jobs"] * 6, results
        active, _recent, _oldest = store.usage("alice", 0)
        assert active == 4
    finally:
        db.close()


def test_owners_do_not_share_a_quota(db_url) -> None:
    db = Database(db_url)
    try:
        store = JobStore(db)
        results = _create_concurrently(store, ["alice"] * 5 + ["bob"] * 5)
        assert sorted(results[:5]) == ["ok"] * 4 + ["too_many_active_jobs"]
        assert sorted(results[5:]) == ["ok"] * 4 + ["too_many_active_jobs"]
    finally:
        db.close()


def test_quota_counts_only_active_jobs_and_the_rate_window(db_url) -> None:
    db = Database(db_url)
    try:
        store = JobStore(db)
        first = [store.create("carol", SPEC, quota=QUOTA)[0] for _ in range(4)]
        with pytest.raises(QuotaExceeded) as info:
            store.create("carol", SPEC, quota=QUOTA)
        assert (info.value.code, info.value.retry_after_s) == ("too_many_active_jobs", 30)
        assert store.check_quota("carol", QUOTA).code == "too_many_active_jobs"
        store.request_cancel(first[0].id, "carol")
        assert store.check_quota("carol", QUOTA) is None
        store.create("carol", SPEC, quota=QUOTA)
        rate = Quota(max_active=100, rate_limit_jobs=5, window_s=600.0)
        with pytest.raises(QuotaExceeded) as info:
            store.create("carol", SPEC, quota=rate)
        assert info.value.code == "rate_limited" and 1 <= info.value.retry_after_s <= 601
    finally:
        db.close()


def test_idempotent_replay_is_not_refused_by_the_quota(db_url) -> None:
    db = Database(db_url)
    try:
        store = JobStore(db)
        jobs = [store.create("dan", SPEC, quota=QUOTA, idempotency_key=f"k{i}") for i in range(4)]
        again, created = store.create("dan", SPEC, quota=QUOTA, idempotency_key="k0")
        assert not created and again.id == jobs[0][0].id
    finally:
        db.close()
