"""Signed webhook POSTs to user-given URLs, under the same address rules as media fetching.

The URL is checked with the media fetcher's policy (https, public addresses, no metadata or
odd IP spellings) and the connection goes to the exact address that was checked, so a DNS
answer that changes between check and connect cannot aim the POST at an internal host.

Requests are signed as the Standard Webhooks specification says (standardwebhooks.com):
`webhook-id` (unique per message, the same on every retry of it), `webhook-timestamp` (unix
seconds of this attempt) and `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.
<body>")>`, where the key is the base64-decoded part of a `whsec_<base64>` secret. Receivers
recompute the HMAC over the raw body, compare in constant time and reject old timestamps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import ssl

from services.gateway.config import WEBHOOK_SECRET_PREFIX, webhook_secret_key
from services.gateway.net.fetch import (
    FetchError,
    FetchPolicy,
    MediaFetcher,
    Resolver,
    request_target,
    system_resolver,
)
from services.gateway.net.pinned import pinned_connection

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = WEBHOOK_SECRET_PREFIX
_MAX_REPLY_BYTES = 64 * 1024


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (24-64 bytes); ValueError for anything else."""
    return webhook_secret_key(secret)


def new_secret() -> str:
    """A fresh random `whsec_` secret (32 bytes), e.g. for `WEBHOOK_SECRET`."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The `webhook-signature` value for one message: `v1,<base64 HMAC-SHA256>`."""
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    mac = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_signature(secret: str, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """True when one of the space-separated `v1,` signatures in `header` matches. Compared as
    bytes: a header with non-ASCII characters is a mismatch, not an error."""
    expected = sign(secret, msg_id, timestamp, body).encode()
    found = False
    for candidate in header.split(" "):
        found |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    return found


class WebhookTarget:
    """Checks webhook URLs and POSTs to them; `allow_private` trusts every address but
    metadata ones (local development and tests)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allow_http: bool = False,
        timeout_s: float = 10.0,
        resolver: Resolver = system_resolver,
    ) -> None:
        trusted = ("0.0.0.0/0", "::/0") if allow_private else ()
        policy = FetchPolicy(allow_http=allow_http, trusted_networks=trusted)
        self.fetcher = MediaFetcher(policy, resolver)
        self.timeout_s = timeout_s
        self._tls = ssl.create_default_context()

    def check(self, url: str) -> tuple[str, str, int, str]:
        """(scheme, host, port, checked IP); raises ValueError with the reason."""
        try:
            return self.fetcher.check_url(url)
        except FetchError as exc:
            raise ValueError(f"webhook_url refused: {exc.message}") from None

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST `body`; returns the HTTP status (redirects are not followed)."""
        scheme, host, port, ip = self.check(url)
        target = request_target(url)
        conn = pinned_connection(scheme, host, port, ip, self.timeout_s, self._tls)
        try:
            conn.request("POST", target, body=body, headers=headers)
            reply = conn.getresponse()
            reply.read(_MAX_REPLY_BYTES)
            return reply.status
        finally:
            conn.close()
