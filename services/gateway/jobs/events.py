"""Job changes for the SSE streams, from one source per gateway process.

However many clients follow `/v1/jobs/{id}/events`, the database sees one reader per process:

- PostgreSQL: the job table's trigger NOTIFYs `dynamics_jobs` with the job id in the same
  transaction as every visible change (`jobs/record.py`). One listening connection per process
  receives them, coalesces a burst, reads the changed rows that someone here watches in one
  query, and hands each row to that job's subscribers. Every `SSE_RESYNC_S` (and after the
  listening connection is re-established) it re-reads every watched job, so a notification lost
  with a dropped connection delays an event, never loses it.
- SQLite (one host): one shared poller reads every watched job in one query each
  `SSE_POLL_S` and hands on the rows whose version changed.

Subscribers live on the asyncio loop of the HTTP server; the hub's thread passes them rows with
`call_soon_threadsafe`. A subscriber keeps only the newest row (each event is the whole job),
so a slow client skips intermediate states instead of queueing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from services.gateway.config import GatewayConfig
from services.gateway.domain import Job
from services.gateway.jobs.record import JOB_CHANNEL
from services.gateway.jobs.store import JobStore

logger = logging.getLogger(__name__)

_COALESCE_S = 0.02  # after a NOTIFY, wait this long for more before reading
_MAX_BACKOFF_S = 10.0


class Subscription:
    """One follower of one job; `latest` is the newest row handed over, `gone` is set when
    the job no longer exists."""

    def __init__(self, job_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.job_id = job_id
        self.loop = loop
        self.latest: Job | None = None
        self.gone = False
        self._changed = asyncio.Event()

    def offer(self, job: Job | None) -> None:
        """Runs on the subscriber's loop."""
        if job is None:
            self.gone = True
        elif self.latest is None or job.version > self.latest.version:
            self.latest = job
        else:
            return
        self._changed.set()

    async def changed(self, timeout: float) -> bool:
        """Wait up to `timeout` for a newer row (or the job's end); False on timeout."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        self._changed.clear()
        return True


class JobEvents:
    """The per-process hub. `start`/`stop` run with the app; `subscribe` also starts it."""

    def __init__(self, store: JobStore, config: GatewayConfig) -> None:
        self.store = store
        self.config = config
        self.reads = 0  # queries made on behalf of subscribers (one per poll or burst)
        self.notifications = 0
        self._subs: dict[str, set[Subscription]] = {}
        self._seen: dict[str, int] = {}  # job id -> newest version handed on
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()

    # ---------------------------------------------------------------- subscribers --

    def subscribe(self, job_id: str) -> Subscription:
        """Follow `job_id` from the running event loop."""
        sub = Subscription(job_id, asyncio.get_running_loop())
        with self._lock:
            self._subs.setdefault(job_id, set()).add(sub)
        self.start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.job_id]
                    self._seen.pop(sub.job_id, None)

    @property
    def watchers(self) -> int:
        with self._lock:
            return sum(len(subs) for subs in self._subs.values())

    def _watched(self) -> list[str]:
        with self._lock:
            return list(self._subs)

    def _dispatch(self, rows: dict[str, Job | None], force: bool = False) -> None:
        """Hand each row to its job's subscribers (None: the job is gone)."""
        for job_id, job in rows.items():
            with self._lock:
                subs = list(self._subs.get(job_id, ()))
                version = -1 if job is None else job.version
                if not subs or (not force and self._seen.get(job_id) == version):
                    continue
                self._seen[job_id] = version
            for sub in subs:
                try:
                    sub.loop.call_soon_threadsafe(sub.offer, job)
                except RuntimeError:  # that loop is closed: the stream is gone
                    self.unsubscribe(sub)

    def _read(self, job_ids: list[str], force: bool = False) -> None:
        if not job_ids:
            return
        self.reads += 1
        found = {job.id: job for job in self.store.get_many(job_ids)}
        self._dispatch({job_id: found.get(job_id) for job_id in job_ids}, force)

    # --------------------------------------------------------------------- thread --

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            target = self._listen if self.store.db.dialect == "postgresql" else self._poll
            self._thread = threading.Thread(target=target, name="job-events", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5.0)

    def wait_listening(self, timeout: float = 10.0) -> bool:
        """PostgreSQL: True once the LISTEN connection is up (tests)."""
        return self._listening.wait(timeout)

    def _poll(self) -> None:
        """SQLite: one query per tick for every watched job together."""
        while not self._stop.wait(self.config.sse_poll_s):
            try:
                self._read(self._watched())
            except Exception:
                logger.warning("job event poll failed; will retry", exc_info=True)

    def _listen(self) -> None:
        """PostgreSQL: LISTEN on one connection; reconnect with backoff when it drops."""
        backoff = 0.5
        while not self._stop.is_set():
            conn: Any = None
            try:
                conn = self.store.db.listen_connection()
                conn.execute(f"LISTEN {JOB_CHANNEL}")
                self._listening.set()
                backoff = 0.5
                self._read(self._watched(), force=True)  # what changed while not listening
                self._pump(conn)
            except Exception:
                logger.warning(
                    "job event listener lost its connection; reconnecting", exc_info=True
                )
                self._stop.wait(backoff)
                backoff = min(_MAX_BACKOFF_S, backoff * 2)
            finally:
                self._listening.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):  # already broken
                        conn.close()

    def _pump(self, conn: Any) -> None:
        resync_at = time.monotonic() + self.config.sse_resync_s
        while not self._stop.is_set():
            changed: set[str] = set()
            for note in conn.notifies(timeout=0.5, stop_after=1):
                changed.add(note.payload)
            if changed:
                for note in conn.notifies(timeout=_COALESCE_S):
                    changed.add(note.payload)
                self.notifications += len(changed)
                with self._lock:
                    wanted = [job_id for job_id in changed if job_id in self._subs]
                self._read(wanted)
            if time.monotonic() >= resync_at:
                resync_at = time.monotonic() + self.config.sse_resync_s
                self._read(self._watched())
