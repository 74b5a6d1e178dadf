"""How a job is stored: the table's schema, row decoding, and page cursors."""

from __future__ import annotations

import base64
import json
from typing import Any

from services.gateway.domain import Job

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT 'queued',
    frames_done INTEGER NOT NULL DEFAULT 0,
    frames_total INTEGER NOT NULL DEFAULT 0,
    eta_seconds DOUBLE PRECISION,
    timings TEXT NOT NULL DEFAULT '{}',
    spec TEXT NOT NULL,
    notify TEXT NOT NULL DEFAULT '{}',
    error_code TEXT,
    error_message TEXT,
    result_key TEXT,
    cache_hit INTEGER,
    random_weights INTEGER,
    idempotency_key TEXT,
    request_hash TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_token TEXT,
    lease_expires DOUBLE PRECISION,
    not_before DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    updated_at DOUBLE PRECISION NOT NULL
)
"""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (owner, idempotency_key)",
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at)",
)
# PostgreSQL: every change of a job's version NOTIFYs `JOB_CHANNEL` with the job id, inside
# the transaction that made it (a NOTIFY is delivered only when that transaction commits).
JOB_CHANNEL = "dynamics_jobs"
PG_NOTIFY = (
    (
        "CREATE OR REPLACE FUNCTION dynamics_job_notify() RETURNS trigger AS $$ BEGIN"
        f" PERFORM pg_notify('{JOB_CHANNEL}', NEW.id); RETURN NEW; END $$ LANGUAGE plpgsql"
    ),
    (
        "CREATE OR REPLACE TRIGGER jobs_notify AFTER UPDATE ON jobs FOR EACH ROW"
        " WHEN (OLD.version IS DISTINCT FROM NEW.version) EXECUTE FUNCTION dynamics_job_notify()"
    ),
)
# Parameters: now (retry delay over), now (lease expired).
CLAIMABLE = (
    "cancel_requested = 0 AND ((status = 'queued' AND (not_before IS NULL OR not_before <= ?))"
    " OR (status = 'running' AND lease_expires < ?))"
)
# Columns added after the first schema, with their types (added in place on start-up).
LATER_COLUMNS = {
    "not_before": "DOUBLE PRECISION",
    "request_hash": "TEXT",
    # Bumped by every write that changes what the app sees: the SSE event id.
    "version": "INTEGER NOT NULL DEFAULT 0",
    # Retention: when the inputs / the result were deleted, and the sweeper's claim.
    "inputs_erased_at": "DOUBLE PRECISION",
    "media_erased_at": "DOUBLE PRECISION",
    "sweep_token": "TEXT",
    "sweep_expires": "DOUBLE PRECISION",
    # What animated a succeeded job (JSON: model, backend, device, dtype).
    "animator": "TEXT NOT NULL DEFAULT '{}'",
}


def job_from_row(row: dict[str, Any]) -> Job:
    """A `Job` from one row of the job table (JSON columns parsed, integer flags as bools)."""
    data = dict(row)
    for key in ("spec", "timings", "notify", "animator"):
        data[key] = json.loads(data[key]) if data[key] else {}
    for key in ("cache_hit", "random_weights"):
        data[key] = None if data[key] is None else bool(data[key])
    data["cancel_requested"] = bool(data["cancel_requested"])
    return Job(**data)


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at, job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Inverse of `encode_cursor`; raises ValueError on anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        return float(created_at), str(job_id)
    except Exception as exc:
        raise ValueError("malformed page cursor") from exc
