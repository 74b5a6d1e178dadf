"""The firebase-admin App the gateway shares between auth, storage and messaging."""

from __future__ import annotations

import itertools
import logging

import firebase_admin
import google.auth.credentials
from firebase_admin import credentials

from services.gateway.config import GatewayConfig

logger = logging.getLogger(__name__)
_names = itertools.count()


class AnonymousCredential(credentials.Base):
    """No credentials at all: for the storage emulator and local stand-ins of Google APIs.

    A fake service-account key would make google-auth call the real token server and retry for
    minutes; anonymous credentials send no Authorization header.
    """

    def get_credential(self) -> google.auth.credentials.Credentials:
        return google.auth.credentials.AnonymousCredentials()


def _credential(spec: str) -> credentials.Base:
    if spec == "anonymous":
        return AnonymousCredential()
    if spec == "default":
        return credentials.ApplicationDefault()
    return credentials.Certificate(spec)


def make_firebase_app(config: GatewayConfig) -> firebase_admin.App:
    """A named App (several gateways may live in one test process) with project and bucket."""
    options: dict[str, object] = {"httpTimeout": 15}
    if config.firebase_project_id:
        options["projectId"] = config.firebase_project_id
    if config.storage_bucket:
        options["storageBucket"] = config.storage_bucket
    name = f"dynamics-gateway-{next(_names)}"
    logger.info("firebase app %s for project %s", name, config.firebase_project_id)
    return firebase_admin.initialize_app(_credential(config.firebase_credentials), options, name)


def delete_firebase_app(app: firebase_admin.App) -> None:
    firebase_admin.delete_app(app)
