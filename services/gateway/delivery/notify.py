"""Tell the app a job ended: FCM push through firebase-admin and a signed webhook POST
(`webhook.py` holds the signing and the address-pinned POST)."""

from __future__ import annotations

import json
import logging
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from services.gateway.delivery.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookTarget,
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

    def payload(self) -> dict[str, Any]:
        data = {"job_id": self.job_id, "status": self.status}
        if self.result_url:
            data["result_url"] = self.result_url
        if self.error_code:
            data["error"] = {"code": self.error_code, "message": self.error_message or ""}
        return data


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
        self.firebase_app = firebase_app
        self.fcm_endpoint = fcm_endpoint
        self.webhook_secret = webhook_secret
        self.webhook_attempts = webhook_attempts
        self.webhook_backoff_s = webhook_backoff_s
        self.webhooks = WebhookTarget(allow_private=webhook_allow_private, allow_http=allow_http)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="notify")

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

    def send_webhook(self, event: JobEvent, url: str) -> int:
        """POST the signed payload, retrying 5xx, 429 and network errors with backoff."""
        self.webhooks.check(url)
        body = json.dumps(event.payload(), separators=(",", ":")).encode()
        last = ""
        for attempt in range(1, self.webhook_attempts + 1):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
            if self.webhook_secret:
                headers[SIGNATURE_HEADER] = sign(self.webhook_secret, timestamp, body)
            try:
                status = self.webhooks.post(url, body, headers)
                if status < 300:
                    return status
                last = f"HTTP {status}"
                if status < 500 and status != 429:
                    break
            except (OSError, ValueError) as exc:
                last = str(exc) or type(exc).__name__
            if attempt < self.webhook_attempts:
                time.sleep(self.webhook_backoff_s * 2 ** (attempt - 1))
        raise RuntimeError(f"webhook {urlsplit(url).hostname} failed: {last}")

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
