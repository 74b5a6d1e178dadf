"""Tell the app a job ended: FCM push through firebase-admin and a signed webhook POST
(`webhook.py` holds the signing and the address-pinned POST). Webhooks are only ever sent
signed: without a secret the notifier refuses to send them. A job may also subscribe to
progress webhooks (best effort: at most one in flight per job, never retried)."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from services.gateway.delivery.webhook import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookTarget,
    secret_key,
    sign,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEvent:
    """What a notification says about a job."""

    job_id: str
    status: str
    result_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    # Set on progress events only (status `running`).
    stage: str | None = None
    frames_done: int | None = None
    frames_total: int | None = None
    eta_seconds: float | None = None

    @property
    def type(self) -> str:
        """The webhook's event type: `job.progress`, `job.succeeded`, `job.failed`,
        `job.cancelled`."""
        return "job.progress" if self.status in ("queued", "running") else f"job.{self.status}"

    def payload(self) -> dict[str, Any]:
        """The event's fields: what FCM carries as data and a webhook as `data`."""
        data: dict[str, Any] = {"job_id": self.job_id, "status": self.status}
        if self.result_url:
            data["result_url"] = self.result_url
        if self.error_code:
            data["error"] = {"code": self.error_code, "message": self.error_message or ""}
        if self.stage is not None:
            total = self.frames_total or 0
            data.update(
                stage=self.stage,
                frames_done=self.frames_done or 0,
                frames_total=total,
                progress=round(min(1.0, (self.frames_done or 0) / total), 4) if total else 0.0,
                eta_seconds=self.eta_seconds,
            )
        return data

    def webhook_body(self, now: float) -> bytes:
        """The webhook's JSON body: `{"type", "timestamp", "data"}` (Standard Webhooks' shape)."""
        stamp = datetime.fromtimestamp(now, timezone.utc).isoformat().replace("+00:00", "Z")
        envelope = {"type": self.type, "timestamp": stamp, "data": self.payload()}
        return json.dumps(envelope, separators=(",", ":")).encode()


class Notifier:
    """Sends notifications on a small background pool so workers never wait on them."""

    def __init__(
        self,
        *,
        firebase_app: Any | None,
        fcm_endpoint: str | None,
        webhook_secret: str | None,
        webhook_attempts: int = 4,
        webhook_backoff_s: float = 0.5,
        webhook_allow_private: bool = False,
        allow_http: bool = False,
    ) -> None:
        if webhook_secret is not None:
            secret_key(webhook_secret)  # a malformed secret fails here, not at the first send
        self.firebase_app = firebase_app
        self.fcm_endpoint = fcm_endpoint
        self.webhook_secret = webhook_secret
        self.webhook_attempts = webhook_attempts
        self.webhook_backoff_s = webhook_backoff_s
        self.webhooks = WebhookTarget(allow_private=webhook_allow_private, allow_http=allow_http)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify")
        self._progress_busy: set[str] = set()
        self._progress_lock = threading.Lock()

    def notify(
        self, event: JobEvent, fcm_token: str | None, webhook_url: str | None
    ) -> list[Future]:
        """Queue the push and the webhook for `event`; returns their futures."""
        futures = []
        if fcm_token and self.firebase_app is not None:
            futures.append(self._pool.submit(self._guard, self.send_fcm, event, fcm_token))
        if webhook_url:
            futures.append(self._pool.submit(self._guard, self.send_webhook, event, webhook_url))
        return futures

    def notify_progress(self, event: JobEvent, webhook_url: str) -> Future | None:
        """Queue one progress webhook; None (dropped) while the job's previous one is still
        in flight, so a slow receiver gets fewer progress events, never a backlog."""
        with self._progress_lock:
            if event.job_id in self._progress_busy:
                return None
            self._progress_busy.add(event.job_id)

        def send() -> bool:
            try:
                return self._guard(
                    lambda e, url: self.send_webhook(e, url, attempts=1), event, webhook_url
                )
            finally:
                with self._progress_lock:
                    self._progress_busy.discard(event.job_id)

        return self._pool.submit(send)

    @staticmethod
    def _guard(send: Any, event: JobEvent, target: str) -> bool:
        try:
            send(event, target)
            return True
        except Exception as exc:  # noqa: BLE001 - a failed notification must not fail the job
            logger.warning("notification for job %s failed: %s", event.job_id, exc)
            return False

    def send_fcm(self, event: JobEvent, token: str) -> str:
        """One FCM v1 message (notification + data) to a device token; returns its name."""
        from firebase_admin import messaging

        if self.fcm_endpoint:
            service = messaging._get_messaging_service(self.firebase_app)
            service._fcm_url = self.fcm_endpoint
        ok = event.status == "succeeded"
        title = "Your video is ready" if ok else f"Your video job {event.status}"
        body = "Tap to watch it." if ok else (event.error_message or "The job did not finish.")
        with warnings.catch_warnings():
            # `token` (an FCM registration token, what the app sends) is deprecated in favour of
            # installation ids in newer SDKs but still what the FCM v1 API accepts.
            warnings.simplefilter("ignore", DeprecationWarning)
            message = messaging.Message(
                token=token,
                data={
                    k: v if isinstance(v, str) else json.dumps(v)
                    for k, v in event.payload().items()
                },
                notification=messaging.Notification(title=title, body=body),
            )
        return messaging.send(message, app=self.firebase_app)

    def send_webhook(self, event: JobEvent, url: str, attempts: int | None = None) -> int:
        """POST the signed event, retrying 5xx, 429 and network errors with backoff.

        Every try carries the same `webhook-id` and body, with a fresh timestamp and signature.
        """
        if not self.webhook_secret:
            raise RuntimeError("webhooks are disabled: WEBHOOK_SECRET is not set")
        self.webhooks.check(url)
        msg_id = f"msg_{uuid.uuid4().hex}"
        body = event.webhook_body(time.time())
        attempts = self.webhook_attempts if attempts is None else attempts
        last = ""
        for attempt in range(1, attempts + 1):
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                ID_HEADER: msg_id,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self.webhook_secret, msg_id, timestamp, body),
            }
            try:
                status = self.webhooks.post(url, body, headers)
                if status < 300:
                    return status
                last = f"HTTP {status}"
                if status < 500 and status != 429:
                    break
            except (OSError, ValueError) as exc:
                last = str(exc) or type(exc).__name__
            if attempt < attempts:
                time.sleep(self.webhook_backoff_s * 2 ** (attempt - 1))
        raise RuntimeError(f"webhook {urlsplit(url).hostname} failed: {last}")

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
