"""Signed webhook POSTs to user-given URLs, under the same address rules as media fetching.

The URL is checked with the media fetcher's policy (https, public addresses, no metadata or
odd IP spellings) and the connection goes to the exact address that was checked, so a DNS
answer that changes between check and connect cannot aim the POST at an internal host.

Requests carry `X-Dynamics-Timestamp` and
`X-Dynamics-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`; receivers
recompute the HMAC over the raw body and reject old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl

from services.gateway.net.fetch import (
    FetchError,
    FetchPolicy,
    MediaFetcher,
    Resolver,
    request_target,
    system_resolver,
)
from services.gateway.net.pinned import pinned_connection

SIGNATURE_HEADER = "X-Dynamics-Signature"
TIMESTAMP_HEADER = "X-Dynamics-Timestamp"
_MAX_REPLY_BYTES = 64 * 1024


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for one webhook body."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """Compared as bytes: a header with non-ASCII characters is a mismatch, not an error."""
    given = header.encode("utf-8", "replace")
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), given)


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
