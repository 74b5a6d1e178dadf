"""Persistent job store: create, read, paginate, claim with a lease, progress, finish.

Every write a worker makes names the lease token it got from `claim`; once a lease has expired
and another worker has re-claimed the job, the old worker's writes match no row, so it learns it
lost the job and stops. That is what keeps one job from running twice at the same time.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.gateway.domain import Job
from services.gateway.jobs.database import Database, Transaction
from services.gateway.jobs.record import (
    CLAIMABLE,
    INDEXES,
    LATER_COLUMNS,
    PG_NOTIFY,
    SCHEMA,
    decode_cursor,
    encode_cursor,
    job_from_row,
)

logger = logging.getLogger(__name__)

__all__ = ["JobStore", "QueueEstimate", "Quota", "QuotaExceeded"]

# How many of the latest succeeded jobs the queue estimate measures run times on.
_ETA_SAMPLE = 20

# Namespace of the per-owner advisory locks that serialise job creation on PostgreSQL (the
# second key is a hash of the owner; a collision only makes two owners wait for each other).
_QUOTA_LOCK = 724412


@dataclass(frozen=True)
class Quota:
    """What one owner may have: jobs queued or running at once, jobs created per window."""

    max_active: int
    rate_limit_jobs: int
    window_s: float


@dataclass(frozen=True)
class QueueEstimate:
    """Where a queued job stands, fleet-wide: `position` jobs are ahead of it in claim order;
    `eta_seconds` is when it should be done, or None before any job has succeeded."""

    position: int
    eta_seconds: float | None


class QuotaExceeded(Exception):
    """A new job would pass the owner's quota; `retry_after_s` is when to try again."""

    def __init__(self, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class JobStore:
    """Jobs in SQLite or PostgreSQL; `clock` is injectable so lease tests need no sleeping."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        # Called (outside the transaction) with each job `claim` settles because its worker's
        # lease ran out: cancelled, or out of attempts. No worker settles those, so whoever
        # owns the inputs (the gateway) deletes them here. Errors are logged, not raised.
        self.on_abandoned: Callable[[Job], None] | None = None
        with db.transaction() as tx:
            if db.dialect == "postgresql":
                tx.query("SELECT pg_advisory_xact_lock(724411) AS locked")
            tx.execute(SCHEMA)
            present = set(tx.columns("jobs"))
            for column, kind in LATER_COLUMNS.items():
                if column not in present:
                    tx.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
            for statement in INDEXES:
                tx.execute(statement)
            if db.dialect == "postgresql":
                for statement in PG_NOTIFY:
                    tx.execute(statement)

    # ------------------------------------------------------------------ API side --

    def create(
        self,
        owner: str,
        spec: dict[str, Any],
        *,
        notify: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        job_id: str | None = None,
        quota: Quota | None = None,
    ) -> tuple[Job, bool]:
        """Insert a queued job; with a known idempotency key return the earlier job instead.

        With `quota`, the owner's usage is counted and the job inserted in one transaction that
        holds the owner's creation lock (SQLite: the database write lock, taken by BEGIN
        IMMEDIATE; PostgreSQL: a per-owner advisory transaction lock, so under READ COMMITTED
        every count runs after the previous creator committed). Concurrent requests therefore
        cannot all pass the limit; one that would raises QuotaExceeded and inserts nothing.

        Returns (job, created).
        """
        if idempotency_key:
            earlier = self.get_by_idempotency_key(owner, idempotency_key)
            if earlier is not None:
                return earlier, False
        job_id = job_id or uuid.uuid4().hex
        try:
            with self.db.transaction() as tx:
                if quota is not None:
                    self._lock_owner(tx, owner)
                    if idempotency_key:
                        rows = tx.query(
                            "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?",
                            (owner, idempotency_key),
                        )
                        if rows:
                            return job_from_row(rows[0]), False
                    now = self.clock()
                    exceeded = self._quota_check(tx, owner, quota, now)
                    if exceeded is not None:
                        raise exceeded
                now = self.clock()
                tx.execute(
                    "INSERT INTO jobs (id, owner, status, stage, spec, notify, idempotency_key,"
                    " request_hash, created_at, updated_at)"
                    " VALUES (?, ?, 'queued', 'queued', ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        owner,
                        json.dumps(spec),
                        json.dumps(notify or {}),
                        idempotency_key,
                        request_hash,
                        now,
                        now,
                    ),
                )
        except self.db.integrity_errors:
            earlier = (
                self.get_by_idempotency_key(owner, idempotency_key) if idempotency_key else None
            )
            if earlier is None:
                raise
            return earlier, False
        job = self.get(job_id)
        assert job is not None
        return job, True

    def check_quota(self, owner: str, quota: Quota) -> QuotaExceeded | None:
        """The owner's quota as it stands now, without reserving anything (a fast early
        refusal; `create(quota=...)` is the authoritative check)."""
        with self.db.transaction(write=False) as tx:
            return self._quota_check(tx, owner, quota, self.clock())

    def _lock_owner(self, tx: Transaction, owner: str) -> None:
        """Serialise job creation for `owner` until the transaction ends."""
        if self.db.dialect == "postgresql":
            key = zlib.crc32(owner.encode("utf-8")) - 2**31  # a signed 32-bit key
            tx.query(
                "SELECT pg_advisory_xact_lock(CAST(? AS INTEGER), CAST(? AS INTEGER)) AS locked",
                (_QUOTA_LOCK, key),
            )
        # SQLite: the write transaction began with BEGIN IMMEDIATE and holds the database's
        # single write lock already.

    def _quota_check(
        self, tx: Transaction, owner: str, quota: Quota, now: float
    ) -> QuotaExceeded | None:
        active, recent, oldest = self._usage(tx, owner, now - quota.window_s)
        if active >= quota.max_active:
            return QuotaExceeded(
                "too_many_active_jobs",
                f"at most {quota.max_active} jobs may be queued or running at once",
                30,
            )
        if recent >= quota.rate_limit_jobs:
            retry = max(1, int((oldest or now) + quota.window_s - now) + 1)
            return QuotaExceeded(
                "rate_limited",
                f"at most {quota.rate_limit_jobs} jobs per {quota.window_s:g} s",
                retry,
            )
        return None

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or None when it does not exist or belongs to someone else."""
        sql, params = "SELECT * FROM jobs WHERE id = ?", [job_id]
        if owner is not None:
            sql, params = sql + " AND owner = ?", params + [owner]
        with self.db.transaction(write=False) as tx:
            rows = tx.query(sql, params)
        return job_from_row(rows[0]) if rows else None

    def get_many(self, job_ids: list[str]) -> list[Job]:
        """The jobs among `job_ids` that exist, read in one query per 500 ids."""
        jobs: list[Job] = []
        with self.db.transaction(write=False) as tx:
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                rows = tx.query(f"SELECT * FROM jobs WHERE id IN ({marks})", chunk)
                jobs += [job_from_row(row) for row in rows]
        return jobs

    def get_by_idempotency_key(self, owner: str, key: str) -> Job | None:
        with self.db.transaction(write=False) as tx:
            rows = tx.query(
                "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", (owner, key)
            )
        return job_from_row(rows[0]) if rows else None

    def list(
        self, owner: str, *, limit: int = 20, cursor: str | None = None, status: str | None = None
    ) -> tuple[list[Job], str | None]:
        """The owner's jobs, newest first; returns (page, cursor of the next page or None)."""
        sql, params = "SELECT * FROM jobs WHERE owner = ?", [owner]
        if status:
            sql, params = sql + " AND status = ?", params + [status]
        if cursor:
            created_at, job_id = decode_cursor(cursor)
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            params += [created_at, created_at, job_id]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        with self.db.transaction(write=False) as tx:
            rows = tx.query(sql, params + [limit + 1])
        jobs = [job_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return jobs, (encode_cursor(jobs[-1]) if more and jobs else None)

    def usage(self, owner: str, since: float) -> tuple[int, int, float | None]:
        """(active jobs, jobs created since `since`, oldest creation time in that window)."""
        with self.db.transaction(write=False) as tx:
            return self._usage(tx, owner, since)

    @staticmethod
    def _usage(tx: Transaction, owner: str, since: float) -> tuple[int, int, float | None]:
        active = tx.query(
            "SELECT COUNT(*) AS n FROM jobs WHERE owner = ? AND status IN ('queued', 'running')",
            (owner,),
        )[0]["n"]
        window = tx.query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM jobs"
            " WHERE owner = ? AND created_at >= ?",
            (owner, since),
        )[0]
        return int(active), int(window["n"]), window["oldest"]

    def request_cancel(self, job_id: str, owner: str) -> Job | None:
        """Cancel a queued job at once, and a running one whose lease has expired (its worker
        is gone); flag a live running one for its worker. None if not found.

        A job this call settles as cancelled is held by no worker, so its inputs are the
        caller's to delete.
        """
        now = self.clock()
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET status = 'cancelled', stage = 'cancelled', cancel_requested = 1,"
                " finished_at = ?, updated_at = ?, version = version + 1"
                " WHERE id = ? AND owner = ? AND status = 'queued'",
                (now, now, job_id, owner),
            )
            tx.execute(
                "UPDATE jobs SET status = 'cancelled', stage = 'cancelled', cancel_requested = 1,"
                " eta_seconds = NULL, lease_token = NULL, finished_at = ?, updated_at = ?,"
                " version = version + 1"
                " WHERE id = ? AND owner = ? AND status = 'running' AND lease_expires < ?",
                (now, now, job_id, owner, now),
            )
            tx.execute(
                "UPDATE jobs SET cancel_requested = 1, updated_at = ?, version = version + 1"
                " WHERE id = ? AND owner = ? AND status = 'running' AND cancel_requested = 0",
                (now, job_id, owner),
            )
        return self.get(job_id, owner)

    def queue_estimate(self, job: Job) -> QueueEstimate:
        """The queued `job`'s place in the fleet-wide queue and its ETA, from the database.

        Ahead of it: queued jobs that are not being cancelled and come first in claim order
        (created_at, id). Run time: the median claim-to-result time of the latest
        `_ETA_SAMPLE` succeeded jobs. The jobs ahead are served as many at a time as run now
        (at least one), then this job runs: eta = run time x (1 + ahead / running).
        """
        with self.db.transaction(write=False) as tx:
            ahead = tx.query(
                "SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued' AND cancel_requested = 0"
                " AND (created_at < ? OR (created_at = ? AND id < ?))",
                (job.created_at, job.created_at, job.id),
            )[0]["n"]
            running = tx.query("SELECT COUNT(*) AS n FROM jobs WHERE status = 'running'")[0]["n"]
            rows = tx.query(
                "SELECT started_at, finished_at FROM jobs WHERE status = 'succeeded'"
                " AND started_at IS NOT NULL AND finished_at IS NOT NULL"
                " ORDER BY created_at DESC LIMIT ?",
                (_ETA_SAMPLE,),
            )
        runs = sorted(max(0.0, row["finished_at"] - row["started_at"]) for row in rows)
        if not runs:
            return QueueEstimate(int(ahead), None)
        middle = len(runs) // 2
        run_s = runs[middle] if len(runs) % 2 else (runs[middle - 1] + runs[middle]) / 2
        eta = run_s * (1 + int(ahead) / max(1, int(running)))
        return QueueEstimate(int(ahead), round(eta, 2))

    def queue_depth(self) -> int:
        with self.db.transaction(write=False) as tx:
            return int(tx.query("SELECT COUNT(*) AS n FROM jobs WHERE status = 'queued'")[0]["n"])

    # --------------------------------------------------------------- worker side --

    def claim(self, worker_id: str, lease_s: float, max_attempts: int) -> Job | None:
        """Take the oldest claimable job (queued, or running with an expired lease).

        PostgreSQL locks the candidate row with FOR UPDATE SKIP LOCKED, so concurrent claimers
        pass over each other; SQLite serialises writers and the single UPDATE is atomic.
        """
        now = self.clock()
        token = f"{worker_id}:{uuid.uuid4().hex}"
        with self.db.transaction() as tx:
            abandoned = self._reap_expired(tx, now, max_attempts)
            lock = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
            rows = tx.query(
                "UPDATE jobs SET status = 'running', lease_token = ?, lease_expires = ?,"
                " attempts = attempts + 1, started_at = COALESCE(started_at, ?), updated_at = ?,"
                " version = version + 1"
                " WHERE id = (SELECT id FROM jobs WHERE "
                + CLAIMABLE
                + " ORDER BY created_at, id LIMIT 1"
                + lock
                + ") RETURNING *",
                (token, now + lease_s, now, now, now, now),
            )
        for job in abandoned:
            self._abandoned(job)
        return job_from_row(rows[0]) if rows else None

    def _abandoned(self, job: Job) -> None:
        if self.on_abandoned is None:
            return
        try:
            self.on_abandoned(job)
        except Exception:
            logger.warning("clean-up of abandoned job %s failed", job.id, exc_info=True)

    def _reap_expired(self, tx: Transaction, now: float, max_attempts: int) -> list[Job]:
        """Settle expired leases that must not run again: cancelled, or out of attempts.

        Returns the jobs settled.
        """
        rows = tx.query(
            "UPDATE jobs SET status = 'cancelled', stage = 'cancelled', finished_at = ?,"
            " updated_at = ?, lease_token = NULL, version = version + 1"
            " WHERE status = 'running' AND lease_expires < ?"
            " AND cancel_requested = 1 RETURNING *",
            (now, now, now),
        )
        rows += tx.query(
            "UPDATE jobs SET status = 'failed', stage = 'failed', error_code = 'worker_lost',"
            " error_message = ?, finished_at = ?, updated_at = ?, lease_token = NULL,"
            " version = version + 1"
            " WHERE status = 'running' AND lease_expires < ? AND attempts >= ? RETURNING *",
            (
                "The job was interrupted too many times and was given up.",
                now,
                now,
                now,
                max_attempts,
            ),
        )
        return [job_from_row(row) for row in rows]

    def renew(self, job_id: str, token: str, lease_s: float) -> tuple[bool, bool]:
        """Extend the lease. Returns (still ours, cancel requested)."""
        now = self.clock()
        with self.db.transaction() as tx:
            rows = tx.query(
                "UPDATE jobs SET lease_expires = ? WHERE id = ? AND lease_token = ?"
                " AND status = 'running' RETURNING cancel_requested",
                (now + lease_s, job_id, token),
            )
        if not rows:
            return False, False
        return True, bool(rows[0]["cancel_requested"])

    def progress(
        self,
        job_id: str,
        token: str,
        *,
        stage: str,
        frames_done: int,
        frames_total: int,
        eta_seconds: float | None,
        timings: dict[str, float],
    ) -> bool:
        """Record progress; False when the lease is no longer ours."""
        return self._update_owned(
            job_id,
            token,
            "stage = ?, frames_done = ?, frames_total = ?, eta_seconds = ?, timings = ?",
            [stage, frames_done, frames_total, eta_seconds, json.dumps(timings)],
        )

    def finish(
        self,
        job_id: str,
        token: str,
        *,
        result_key: str,
        timings: dict[str, float],
        cache_hit: bool,
        random_weights: bool,
        frames: int,
        animator: dict[str, str] | None = None,
    ) -> bool:
        return self._update_owned(
            job_id,
            token,
            "status = 'succeeded', stage = 'done', result_key = ?, timings = ?, cache_hit = ?,"
            " random_weights = ?, frames_done = ?, frames_total = ?, eta_seconds = 0,"
            " finished_at = ?, lease_token = NULL, animator = ?",
            [
                result_key,
                json.dumps(timings),
                int(cache_hit),
                int(random_weights),
                frames,
                frames,
                self.clock(),
                json.dumps(animator or {}),
            ],
        )

    def fail(
        self, job_id: str, token: str, *, code: str, message: str, timings: dict[str, float]
    ) -> bool:
        return self._update_owned(
            job_id,
            token,
            "status = 'failed', stage = 'failed', error_code = ?, error_message = ?, timings = ?,"
            " eta_seconds = NULL, finished_at = ?, lease_token = NULL",
            [code, message, json.dumps(timings), self.clock()],
        )

    def cancelled(self, job_id: str, token: str, *, timings: dict[str, float]) -> bool:
        return self._update_owned(
            job_id,
            token,
            "status = 'cancelled', stage = 'cancelled', timings = ?, eta_seconds = NULL,"
            " finished_at = ?, lease_token = NULL",
            [json.dumps(timings), self.clock()],
        )

    def requeue(
        self,
        job_id: str,
        token: str,
        *,
        code: str,
        message: str,
        delay_s: float = 0.0,
        count_attempt: bool = True,
    ) -> bool:
        """Give a job back to the queue after a retryable failure, claimable after `delay_s`.

        `count_attempt=False` (a service at capacity) does not use up one of its attempts.
        """
        return self._update_owned(
            job_id,
            token,
            "status = 'queued', stage = 'queued', error_code = ?, error_message = ?,"
            " lease_token = NULL, lease_expires = NULL, not_before = ?, attempts = attempts - ?",
            [code, message, self.clock() + delay_s, 0 if count_attempt else 1],
        )

    def _update_owned(self, job_id: str, token: str, assignments: str, params: list) -> bool:
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE jobs SET " + assignments + ", updated_at = ?, version = version + 1"
                " WHERE id = ? AND lease_token = ? AND status = 'running'",
                params + [self.clock(), job_id, token],
            )
        return changed == 1

    # ----------------------------------------------------------------- retention --

    def mark_erased(self, job_id: str, *, inputs: bool = False, media: bool = False) -> None:
        """Record that a final job's inputs and/or result are deleted."""
        now = self.clock()
        sets = []
        if inputs:
            sets.append("inputs_erased_at = COALESCE(inputs_erased_at, ?)")
        if media:
            sets.append("media_erased_at = COALESCE(media_erased_at, ?)")
        if not sets:
            return
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE jobs SET " + ", ".join(sets) + " WHERE id = ?",
                [now] * len(sets) + [job_id],
            )

    def claim_for_sweep(
        self,
        token: str,
        *,
        inputs_before: float,
        results_before: float,
        rows_before: float,
        lease_s: float,
        limit: int,
    ) -> list[Job]:
        """Claim up to `limit` final jobs with something due: inputs finished before
        `inputs_before` and not yet erased, results before `results_before`, rows before
        `rows_before`. A claim lasts `lease_s`; PostgreSQL skips rows another replica holds
        (FOR UPDATE SKIP LOCKED), and a live claim keeps every other sweeper off the row."""
        now = self.clock()
        lock = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        with self.db.transaction() as tx:
            rows = tx.query(
                "UPDATE jobs SET sweep_token = ?, sweep_expires = ? WHERE id IN ("
                "SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')"
                " AND finished_at IS NOT NULL"
                " AND (sweep_expires IS NULL OR sweep_expires < ?)"
                " AND ((inputs_erased_at IS NULL AND finished_at <= ?)"
                " OR (media_erased_at IS NULL AND finished_at <= ?) OR finished_at <= ?)"
                " ORDER BY finished_at LIMIT ?" + lock + ") RETURNING *",
                (token, now + lease_s, now, inputs_before, results_before, rows_before, limit),
            )
        return [job_from_row(row) for row in rows]

    def settle_sweep(
        self, job_id: str, token: str, *, inputs: bool, media: bool, delete_row: bool
    ) -> bool:
        """End a sweep claim: record what was erased, or delete the row. False when the claim
        was lost (it expired and another sweeper took the row)."""
        now = self.clock()
        with self.db.transaction() as tx:
            if delete_row:
                return (
                    tx.execute("DELETE FROM jobs WHERE id = ? AND sweep_token = ?", (job_id, token))
                    == 1
                )
            return (
                tx.execute(
                    "UPDATE jobs SET sweep_token = NULL, sweep_expires = NULL,"
                    " inputs_erased_at = CASE WHEN ? = 1 THEN COALESCE(inputs_erased_at, ?)"
                    " ELSE inputs_erased_at END,"
                    " media_erased_at = CASE WHEN ? = 1 THEN COALESCE(media_erased_at, ?)"
                    " ELSE media_erased_at END"
                    " WHERE id = ? AND sweep_token = ?",
                    (int(inputs), now, int(media), now, job_id, token),
                )
                == 1
            )
