"""Who is calling: Firebase ID tokens verified with firebase-admin, or an explicit no-auth mode.

`none` mode (for `dynamics up` on a laptop) treats every caller as the single user `local`.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass
from typing import Protocol

import firebase_admin
from firebase_admin import auth as fb_auth

from services.gateway.net.strict_input import load_json

logger = logging.getLogger(__name__)

LOCAL_USER = "local"
# Firebase ID tokens are about 1 KB; the signature segment is empty for emulator tokens.
MAX_TOKEN_CHARS = 8192
_JWT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")


class AuthError(Exception):
    """The request carries no usable credentials (answered with 401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AuthUnavailable(Exception):
    """Credentials cannot be checked right now because the identity provider (Google's token
    certificates) does not answer: our outage, not the caller's fault. Answered with 503 and
    `Retry-After`, never 401, which would make apps sign their users out."""

    code = "auth_unavailable"

    def __init__(self, message: str, retry_after_s: int = 10) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class User:
    uid: str


class Authenticator(Protocol):
    def authenticate(self, authorization: str | None) -> User: ...


class NoAuth:
    """Local mode: no token needed, everyone is the same user."""

    def authenticate(self, authorization: str | None) -> User:
        return User(LOCAL_USER)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or AuthError."""
    if not authorization:
        raise AuthError(
            "missing_token", "Send a Firebase ID token as 'Authorization: Bearer <token>'."
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError(
            "malformed_authorization", "The Authorization header must be 'Bearer <token>'."
        )
    return token


def check_jwt_shape(token: str) -> None:
    """Refuse what cannot be a JWT before a library parses it: three base64url segments whose
    header and payload are JSON objects under the strict parser (the verifier's own `json.loads`
    recurses once per nesting level, so a token nested a few thousand deep crashed it)."""
    found = _JWT.fullmatch(token) if len(token) <= MAX_TOKEN_CHARS else None
    if found is None:
        raise AuthError("invalid_token", "The ID token is not valid for this project.")
    for segment in found.group(1, 2):
        try:
            value = load_json(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        except ValueError:  # binascii.Error and StrictInputError are ValueErrors
            value = None
        if not isinstance(value, dict):
            logger.info("rejected ID token: not a JWT with JSON header and payload")
            raise AuthError("invalid_token", "The ID token is not valid for this project.")


class FirebaseAuth:
    """Verifies Firebase ID tokens (RS256, Google's certificates, audience = project id).

    `cert_url` replaces Google's certificate URL (tests serve their own certificates on
    loopback). firebase-admin has no public option for it, so it is set on the SDK's verifier;
    the rest of the verification (signature, expiry, audience, issuer, subject) is the SDK's.
    """

    def __init__(self, app: firebase_admin.App, cert_url: str | None = None) -> None:
        self.app = app
        if cert_url:
            client = fb_auth._get_client(app)
            verifier = client._token_verifier.id_token_verifier
            if not hasattr(verifier, "cert_url"):
                raise RuntimeError(
                    "this firebase-admin version cannot override the certificate URL"
                )
            verifier.cert_url = cert_url

    def authenticate(self, authorization: str | None) -> User:
        token = bearer_token(authorization)
        check_jwt_shape(token)
        try:
            claims = fb_auth.verify_id_token(token, app=self.app)
        except fb_auth.ExpiredIdTokenError:
            raise AuthError("token_expired", "The ID token has expired; sign in again.") from None
        except fb_auth.CertificateFetchError as exc:
            logger.error("cannot fetch token certificates: %s", exc)
            raise AuthUnavailable(
                "The identity provider's token certificates cannot be fetched; retry soon."
            ) from None
        except (fb_auth.InvalidIdTokenError, ValueError) as exc:
            logger.info("rejected ID token: %s", exc)
            raise AuthError(
                "invalid_token", "The ID token is not valid for this project."
            ) from None
        return User(str(claims["uid"]))
