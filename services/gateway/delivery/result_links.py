"""Result URLs that work without an ID token: `.../result?expires=<unix>&sig=<hmac>`.

A webhook receiver or a video player gets `result_url` and can fetch the MP4 until it expires;
the signature (HMAC-SHA256 over job id and expiry) binds the link to one job. Expiry times are
rounded up to whole hours so a job's URL stays the same between polls and SSE events.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable

from services.gateway.net.strict_input import StrictInputError, parse_uint

_ROUND_S = 3600
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class ResultLinks:
    """Builds and checks signed result links."""

    def __init__(
        self,
        public_url: str,
        secret: str | None,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        # Without a configured secret links only work on this process (one-replica setups).
        self._key = (secret or secrets.token_hex(32)).encode()
        self.ttl_s = ttl_s
        self.clock = clock

    def _sign(self, job_id: str, expires: int) -> str:
        message = f"{job_id}:{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def url(self, job_id: str) -> str:
        """The signed result URL of a job, valid for at least `ttl_s`."""
        expires = int(math.ceil((self.clock() + self.ttl_s) / _ROUND_S) * _ROUND_S)
        return (
            f"{self.public_url}/v1/jobs/{job_id}/result"
            f"?expires={expires}&sig={self._sign(job_id, expires)}"
        )

    def verify(self, job_id: str, expires: str, signature: str) -> bool:
        """True when the link is this job's, unexpired and untampered. `expires` must be spelled
        as `url` spells it (ASCII digits, no leading zero) and `signature` as 64 lower-case hex
        digits; anything else is not a link."""
        try:
            when = parse_uint(expires, max_digits=12, what="expires")
        except StrictInputError:
            return False
        if str(when) != expires or when < self.clock() or not _SIGNATURE.fullmatch(signature):
            return False
        return hmac.compare_digest(self._sign(job_id, when), signature)
