"""Retention: how long a finished job's inputs, result and row are kept, and the sweeper that
deletes them from the storage (local folder or Firebase Storage) and the job table.

- Inputs (the uploaded photo and video): `INPUT_TTL_S` after the job ends; 0 (the default)
  deletes them as the job ends, and the sweeper only picks up what that missed.
- Results (the MP4): `RESULT_TTL_S` after the job ends (7 days).
- Job rows: `JOB_TTL_S` after the job ends (30 days); the row's media go first.

Every gateway process runs one sweeper. Replicas never sweep the same row at once: a sweeper
claims a batch of rows in the database (a claim token and an expiry; `FOR UPDATE SKIP LOCKED`
on PostgreSQL), deletes their media, then settles each row under its token. A sweeper that dies
mid-batch leaves its claims to expire, and another one finishes them; deleting a missing object
is not an error, so doing a row twice is harmless.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import uuid
from dataclasses import dataclass

from services.gateway.config import GatewayConfig
from services.gateway.delivery.storage import ResultStorage, StorageError
from services.gateway.domain import Job
from services.gateway.jobs.inputs import drop_job_inputs
from services.gateway.jobs.store import JobStore

logger = logging.getLogger(__name__)

_BATCH = 100
_CLAIM_S = 300.0


def release_inputs(
    store: JobStore, storage: ResultStorage, config: GatewayConfig, job: Job
) -> None:
    """A job just became final: delete its inputs now unless `INPUT_TTL_S` keeps them (then the
    sweeper deletes them later). Errors are logged; the sweeper retries what is left."""
    if config.input_ttl_s > 0:
        return
    if drop_job_inputs(storage, config, job):
        try:
            store.mark_erased(job.id, inputs=True)
        except Exception:
            logger.warning("could not record the deleted inputs of %s", job.id, exc_info=True)


def erase_media(store: JobStore, storage: ResultStorage, config: GatewayConfig, job: Job) -> None:
    """Delete a final job's inputs and result now (`DELETE /v1/jobs/{id}`); raises
    StorageError when the storage refuses or stays unavailable."""
    if not drop_job_inputs(storage, config, job):
        raise StorageError(f"the inputs of job {job.id} could not be deleted", transient=True)
    if job.result_key:
        storage.delete(job.result_key)
    store.mark_erased(job.id, inputs=True, media=True)


@dataclass
class SweepReport:
    """What one sweep did."""

    inputs: int = 0  # jobs whose inputs were deleted
    results: int = 0  # jobs whose result was deleted
    rows: int = 0  # job rows deleted
    errors: int = 0  # jobs left for a later sweep


class Sweeper:
    """Deletes what outlived its TTL; `run_once` is one pass, `start` runs it every
    `SWEEP_EVERY_S` (with jitter) on a daemon thread."""

    def __init__(
        self,
        store: JobStore,
        storage: ResultStorage,
        config: GatewayConfig,
        *,
        batch: int = _BATCH,
        claim_s: float = _CLAIM_S,
    ) -> None:
        self.store, self.storage, self.config = store, storage, config
        self.batch, self.claim_s = batch, claim_s
        self.token = f"sweep-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> SweepReport:
        """Sweep until nothing is due (at most 50 batches)."""
        report = SweepReport()
        for _ in range(50):
            now = self.store.clock()
            config = self.config
            jobs = self.store.claim_for_sweep(
                self.token,
                inputs_before=now - config.input_ttl_s,
                results_before=now - config.result_ttl_s,
                rows_before=now - config.job_ttl_s,
                lease_s=self.claim_s,
                limit=self.batch,
            )
            for job in jobs:
                self._sweep_job(job, now, report)
            if len(jobs) < self.batch:
                break
        if report.inputs or report.results or report.rows or report.errors:
            logger.info(
                "retention sweep: inputs of %d jobs, %d results and %d job rows deleted;"
                " %d jobs left for later",
                report.inputs,
                report.results,
                report.rows,
                report.errors,
            )
        return report

    def _sweep_job(self, job: Job, now: float, report: SweepReport) -> None:
        config, finished = self.config, job.finished_at or now
        delete_row = finished <= now - config.job_ttl_s
        inputs = job.inputs_erased_at is None and (
            delete_row or finished <= now - config.input_ttl_s
        )
        media = job.media_erased_at is None and (
            delete_row or finished <= now - config.result_ttl_s
        )
        try:
            if inputs and not drop_job_inputs(self.storage, config, job):
                raise RuntimeError("an input could not be deleted")
            if media and job.result_key:
                self.storage.delete(job.result_key)
        except Exception as exc:  # noqa: BLE001 - any failure: keep the row for a later sweep
            report.errors += 1
            logger.warning("retention: job %s kept for a later sweep: %s", job.id, exc)
            return  # the claim expires and a later sweep tries again
        if self.store.settle_sweep(
            job.id, self.token, inputs=inputs, media=media, delete_row=delete_row
        ):
            report.inputs += int(inputs)
            report.results += int(media and job.result_key is not None)
            report.rows += int(delete_row)

    def start(self) -> None:
        if self.config.sweep_every_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # The first pass waits a little, so replicas started together do not sweep in step.
        delay = random.uniform(0.1, 1.0) * min(self.config.sweep_every_s, 30.0)
        while not self._stop.wait(delay):
            try:
                self.run_once()
            except Exception:
                logger.warning("retention sweep failed; will retry", exc_info=True)
            delay = self.config.sweep_every_s * random.uniform(0.9, 1.1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
