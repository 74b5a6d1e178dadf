"""Gateway workers: claim jobs, run the orchestrator under a renewed lease, record the outcome.

A lease keeper thread renews the job's lease and reads the cancel flag a DELETE sets. When a
renewal fails the lease was lost (this worker stalled past its lease and another took the job),
so the run is cancelled and nothing more is written for it.
"""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from services.gateway.config import GatewayConfig
from services.gateway.delivery.notify import JobEvent, Notifier
from services.gateway.delivery.result_links import ResultLinks
from services.gateway.delivery.storage import ResultStorage, StorageError, result_key
from services.gateway.domain import Job, JobFailed, JobResult, JobRunner, ProgressUpdate
from services.gateway.jobs.inputs import fetch_shared_inputs, job_spec
from services.gateway.jobs.retention import release_inputs
from services.gateway.jobs.retry_policy import final_failure, plan_retry
from services.gateway.jobs.store import JobStore
from services.gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 0.25


class LeaseKeeper:
    """Renews one job's lease every `every_s` and turns a DELETE or a lost lease into `cancel`."""

    def __init__(self, store: JobStore, job: Job, lease_s: float, every_s: float) -> None:
        self.store, self.job_id, self.token = store, job.id, job.lease_token or ""
        self.lease_s, self.every_s = lease_s, every_s
        self.cancel = threading.Event()
        self.lost = False
        self.user_cancelled = job.cancel_requested
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job.id[:8]}", daemon=True)
        if self.user_cancelled:
            self.cancel.set()

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                ours, cancel_requested = self.store.renew(self.job_id, self.token, self.lease_s)
            except Exception:
                logger.warning("lease renewal of %s failed; will retry", self.job_id, exc_info=True)
                continue
            if not ours:
                logger.warning("lost the lease of job %s; stopping it", self.job_id)
                self.lost = True
                self.cancel.set()
                return
            if cancel_requested and not self.user_cancelled:
                logger.info("job %s cancelled by its owner", self.job_id)
                self.user_cancelled = True
                self.cancel.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


@dataclass
class _Run:
    """State of one job while this worker runs it."""

    job: Job
    lease: LeaseKeeper
    timings: dict[str, float] = field(default_factory=dict)
    last_write: float = 0.0
    last_stage: str = ""
    last_hook: float = 0.0
    last_hook_stage: str = ""


class WorkerPool:
    """`count` threads, each claiming and running one job at a time."""

    def __init__(
        self,
        config: GatewayConfig,
        store: JobStore,
        orchestrator: JobRunner,
        storage: ResultStorage,
        notifier: Notifier | None,
        metrics: GatewayMetrics,
        links: ResultLinks | None = None,
    ) -> None:
        self.config, self.store, self.orchestrator = config, store, orchestrator
        self.storage, self.notifier, self.metrics = storage, notifier, metrics
        self.links = links or ResultLinks(
            config.public_url, config.result_url_secret, config.result_url_ttl_s
        )
        self.worker_id = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, LeaseKeeper] = {}
        self._lock = threading.Lock()

    def start(self, count: int | None = None) -> None:
        for index in range(self.config.workers if count is None else count):
            thread = threading.Thread(target=self._loop, name=f"worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """A job was queued here: look now instead of at the next poll."""
        self._wake.set()

    def cancel_local(self, job_id: str) -> None:
        """Cancel a job this process runs without waiting for the next lease renewal."""
        with self._lock:
            lease = self._running.get(job_id)
        if lease is not None:
            lease.user_cancelled = True
            lease.cancel.set()

    def stop(self, drain_s: float = 30.0) -> None:
        """Stop claiming; let running jobs finish for `drain_s`, then interrupt and requeue them."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + drain_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftovers = list(self._running.values())
        for lease in leftovers:
            lease.cancel.set()
        for thread in self._threads:
            thread.join(timeout=30.0)
        self._threads.clear()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self.run_once()
            except Exception:
                logger.exception("worker loop error; backing off")
                job = None
            if job is None:
                self._wake.wait(self.config.poll_s)
                self._wake.clear()

    def run_once(self) -> Job | None:
        """Claim and run at most one job; returns it, or None when the queue was empty."""
        job = self.store.claim(self.worker_id, self.config.job_lease_s, self.config.max_attempts)
        if job is None:
            return None
        lease = LeaseKeeper(self.store, job, self.config.job_lease_s, self.config.lease_heartbeat_s)
        with self._lock:
            self._running[job.id] = lease
        lease.start()
        try:
            self._execute(_Run(job=job, lease=lease))
        finally:
            lease.stop()
            with self._lock:
                self._running.pop(job.id, None)
        return job

    def _execute(self, run: _Run) -> None:
        job = run.job
        if job.attempts == 1 and job.started_at is not None:
            wait = max(0.0, job.started_at - job.created_at)
            run.timings["queue_wait"] = wait
            self.metrics.queue_wait_seconds.observe(wait)
        work_dir = self.config.data_dir / "work" / job.id
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            local = fetch_shared_inputs(self.storage, job.spec, work_dir / "inputs")
            result = self.orchestrator.run(
                job_spec(job, local),
                work_dir,
                on_progress=lambda update: self._on_progress(run, update),
                cancel=run.lease.cancel,
            )
            if run.lease.cancel.is_set():
                self._failed(run, "cancelled", "The job was cancelled.", False)
                return
            run.timings.update(result.timings)
            upload_start = time.monotonic()
            key = result_key(job.id)
            self.storage.put(key, result.mp4_path)
            run.timings["upload"] = time.monotonic() - upload_start
            run.timings["total"] = time.monotonic() - started
            self._succeed(run, key, result)
        except JobFailed as exc:
            self._failed(run, exc.code, exc.message, exc.retryable)
        except StorageError as exc:
            logger.error("job %s: %s", job.id, exc)
            if exc.transient:
                self._failed(run, "storage_unavailable", "The result could not be stored.", True)
            else:
                self._failed(
                    run, "storage_refused", "The result storage refused the result.", False
                )
        except Exception:
            logger.exception("job %s crashed", job.id)
            self._failed(run, "internal", "An internal error stopped this job.", False)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

    def _on_progress(self, run: _Run, update: ProgressUpdate) -> None:
        run.timings.update(update.timings)
        now = time.monotonic()
        if (
            update.stage == run.last_stage
            and now - run.last_write < _PROGRESS_EVERY_S
            and update.frames_done < update.frames_total
        ):
            return
        run.last_write, run.last_stage = now, update.stage
        try:
            ours = self.store.progress(
                run.job.id,
                run.job.lease_token or "",
                stage=update.stage,
                frames_done=update.frames_done,
                frames_total=update.frames_total,
                eta_seconds=update.eta_seconds,
                timings=run.timings,
            )
        except Exception:  # progress is best effort; the lease keeper guards ownership
            logger.warning("progress of job %s not recorded", run.job.id, exc_info=True)
            return
        if not ours and not run.lease.lost:
            run.lease.lost = True
            run.lease.cancel.set()
            return
        self._progress_webhook(run, update, now)

    def _progress_webhook(self, run: _Run, update: ProgressUpdate, now: float) -> None:
        """A progress webhook for a job that asked for them: on each new stage, else at most
        every `webhook_progress_s`."""
        url = run.job.notify.get("webhook_url")
        if self.notifier is None or not url or not run.job.notify.get("webhook_progress"):
            return
        if (
            update.stage == run.last_hook_stage
            and now - run.last_hook < self.config.webhook_progress_s
        ):
            return
        run.last_hook, run.last_hook_stage = now, update.stage
        event = JobEvent(
            run.job.id,
            "running",
            stage=update.stage,
            frames_done=update.frames_done,
            frames_total=update.frames_total,
            eta_seconds=update.eta_seconds,
        )
        self.notifier.notify_progress(event, url)

    def _succeed(self, run: _Run, key: str, result: JobResult) -> None:
        job, token = run.job, run.job.lease_token or ""
        run.lease.stop()  # the final write ends the lease; no renewal may race it
        if not self.store.finish(
            job.id,
            token,
            result_key=key,
            timings=run.timings,
            cache_hit=result.cache_hit,
            random_weights=result.random_weights,
            frames=result.frames,
            animator=result.animator,
        ):
            logger.warning("job %s finished after losing its lease; result discarded", job.id)
            return
        self.metrics.observe_timings(run.timings)
        self.metrics.job_seconds.observe(run.timings["total"])
        self.metrics.motion_cache_total.labels(result="hit" if result.cache_hit else "miss").inc()
        self._settled(job, "succeeded")

    def _failed(self, run: _Run, code: str, message: str, retryable: bool) -> None:
        job, token, lease = run.job, run.job.lease_token or "", run.lease
        lease.stop()
        if lease.lost:
            logger.info("job %s stopped after losing its lease", job.id)
            return
        if lease.user_cancelled:
            if self.store.cancelled(job.id, token, timings=run.timings):
                self._settled(job, "cancelled")
            return
        if self._stopping.is_set() and lease.cancel.is_set():
            self.store.requeue(
                job.id,
                token,
                code="interrupted",
                message="The gateway restarted.",
                count_attempt=False,
            )
            return
        plan = plan_retry(
            code,
            retryable,
            attempts=job.attempts,
            max_attempts=self.config.max_attempts,
            age_s=self.store.clock() - job.created_at,
            base_delay_s=self.config.retry_base_s,
            max_queue_s=self.config.max_queue_s,
            waited_s=self.store.clock() - (job.started_at or job.created_at),
        )
        if plan is not None:
            logger.warning(
                "job %s attempt %d failed (%s); retry in %.1fs",
                job.id,
                job.attempts,
                code,
                plan.delay_s,
            )
            self.store.requeue(
                job.id,
                token,
                code=code,
                message=message,
                delay_s=plan.delay_s,
                count_attempt=plan.count_attempt,
            )
            return
        code, message = final_failure(code, message, retryable, max_queue_s=self.config.max_queue_s)
        if self.store.fail(job.id, token, code=code, message=message, timings=run.timings):
            self._settled(job, "failed", code, message)

    def _settled(
        self, job: Job, status: str, code: str | None = None, message: str | None = None
    ) -> None:
        """Bookkeeping once a job is final: metric, uploaded inputs removed, notifications."""
        self.metrics.jobs_total.labels(status=status).inc()
        release_inputs(self.store, self.storage, self.config, job)
        if self.notifier is None:
            return
        url = self.links.url(job.id) if status == "succeeded" else None
        event = JobEvent(job.id, status, url, code, message)
        self.notifier.notify(event, job.notify.get("fcm_token"), job.notify.get("webhook_url"))
