"""Assembles one gateway from its config: store, storage, auth, notifier, workers and the app.

Used by `python -m services.gateway`, by `dynamics up` and by the tests, so all three run the
same wiring.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from services.gateway.api.app import create_app
from services.gateway.api.auth import Authenticator, FirebaseAuth, NoAuth
from services.gateway.api.intake import JobIntake
from services.gateway.api.state import GatewayState
from services.gateway.config import GatewayConfig
from services.gateway.delivery.firebase_app import delete_firebase_app, make_firebase_app
from services.gateway.delivery.notify import Notifier
from services.gateway.delivery.result_links import ResultLinks
from services.gateway.delivery.storage import FirebaseStorage, LocalStorage, ResultStorage
from services.gateway.domain import JobRunner
from services.gateway.jobs.database import Database
from services.gateway.jobs.events import JobEvents
from services.gateway.jobs.retention import Sweeper, release_inputs
from services.gateway.jobs.store import JobStore
from services.gateway.jobs.worker import WorkerPool
from services.gateway.metrics import GatewayMetrics
from services.gateway.net.fetch import FetchPolicy, MediaFetcher

if TYPE_CHECKING:
    from services.gateway.pipeline.motion_cache import MotionCache

logger = logging.getLogger(__name__)


def fetch_policy(config: GatewayConfig) -> FetchPolicy:
    """The URL policy for user media, shared by request validation and the orchestrator."""
    return FetchPolicy(
        allow_http=config.allow_http_urls,
        max_bytes=max(config.max_image_bytes, config.max_video_bytes),
        timeout_s=config.fetch_timeout_s,
        trusted_networks=config.fetch_trusted_networks,
    )


def result_storage(
    config: GatewayConfig, firebase_app: Any | None, **firebase: Any
) -> ResultStorage:
    """The configured result storage: the bucket (STORAGE_BACKEND=firebase, through
    `firebase_app`; `firebase` tunes FirebaseStorage) or the local results folder."""
    if config.storage_backend == "firebase":
        return FirebaseStorage(firebase_app, config.storage_bucket, **firebase)
    return LocalStorage(config.data_dir / "results")


def motion_cache(config: GatewayConfig) -> tuple[MotionCache, Callable[[], None]]:
    """The motion-template cache MOTION_CACHE_BACKEND names, bounded by MOTION_CACHE_MAX_BYTES,
    and its closer: a folder of this replica, or objects in the result storage that every
    replica shares. The storage-backed one has its own firebase App (closed by the closer) and
    gives up sooner than result uploads do: a slow cache is only a miss."""
    from services.gateway.pipeline.motion_cache import BucketMotionCache, FolderMotionCache

    if config.motion_cache_backend == "folder":
        cache = FolderMotionCache(config.motion_cache_root, max_bytes=config.motion_cache_max_bytes)
        logger.info("motion cache: folder %s", config.motion_cache_root)
        return cache, lambda: None
    app = make_firebase_app(config) if config.storage_backend == "firebase" else None
    store = result_storage(config, app, attempts=2, timeout_s=15.0)
    logger.info("motion cache: %s result storage, motion-templates/", config.storage_backend)
    closer = partial(delete_firebase_app, app) if app is not None else lambda: None
    return BucketMotionCache(store, max_bytes=config.motion_cache_max_bytes), closer


def real_orchestrator(config: GatewayConfig) -> tuple[JobRunner, Callable[[], None]]:
    """The orchestrator over the three services at the configured addresses, and its closer."""
    from services.gateway.pipeline.clients import ServiceClients, ServiceTargets
    from services.gateway.pipeline.media import MediaLimits
    from services.gateway.pipeline.orchestrator import Orchestrator, OrchestratorConfig

    clients = ServiceClients(
        ServiceTargets(
            face_detect=config.face_detect_addr,
            animator=config.animator_addr,
            encoder=config.encoder_addr,
        )
    )
    cache, close_cache = motion_cache(config)
    orchestrator = Orchestrator(
        clients,
        cache,
        MediaFetcher(fetch_policy(config)),
        OrchestratorConfig(
            max_image_bytes=config.max_image_bytes,
            media_limits=MediaLimits(max_bytes=config.max_video_bytes),
        ),
    )

    def close() -> None:
        clients.close()
        close_cache()

    return orchestrator, close


def _needs_firebase(config: GatewayConfig) -> bool:
    return (
        config.auth_mode == "firebase"
        or config.storage_backend == "firebase"
        or config.firebase_project_id is not None
    )


@dataclass
class Gateway:
    """A wired gateway; `app` is ready for uvicorn or a test client."""

    config: GatewayConfig
    state: GatewayState
    app: FastAPI
    notifier: Notifier
    firebase_app: Any | None

    @classmethod
    def build(
        cls,
        config: GatewayConfig,
        orchestrator: JobRunner | None,
        *,
        clock: Callable[[], float] = time.time,
        drain_s: float | None = None,
    ) -> Gateway:
        """Everything but the workers' threads, which start with the app's lifespan.

        `orchestrator=None` or `GATEWAY_WORKERS=0` makes an API-only replica. `drain_s`
        overrides `config.drain_s` (GATEWAY_DRAIN_S).
        """
        config.data_dir.mkdir(parents=True, exist_ok=True)
        store = JobStore(Database(config.effective_database_url), clock=clock)
        firebase_app = make_firebase_app(config) if _needs_firebase(config) else None
        if config.auth_mode == "firebase" and config.auth_emulator_host:
            logger.warning(
                "FIREBASE_AUTH_EMULATOR_HOST=%s: ID tokens are NOT verified (emulator "
                "mode); never set it in production",
                config.auth_emulator_host,
            )
        auth: Authenticator = (
            FirebaseAuth(firebase_app, config.firebase_cert_url)
            if config.auth_mode == "firebase"
            else NoAuth()
        )
        storage = result_storage(config, firebase_app)
        store.on_abandoned = partial(release_inputs, store, storage, config)
        notifier = Notifier(
            firebase_app=firebase_app,
            fcm_endpoint=config.fcm_endpoint,
            webhook_secret=config.webhook_secret,
            webhook_attempts=config.webhook_attempts,
            webhook_allow_private=config.webhook_allow_private,
            allow_http=config.allow_http_urls,
        )
        metrics = GatewayMetrics()
        links = ResultLinks(
            config.public_url, config.result_url_secret, config.result_url_ttl_s, clock=clock
        )
        pool = None
        if orchestrator is not None and config.workers > 0:
            pool = WorkerPool(config, store, orchestrator, storage, notifier, metrics, links)
        state = GatewayState(
            config=config,
            store=store,
            storage=storage,
            auth=auth,
            metrics=metrics,
            intake=JobIntake(config, MediaFetcher(fetch_policy(config))),
            links=links,
            pool=pool,
            drain_s=config.drain_s if drain_s is None else drain_s,
            events=JobEvents(store, config),
        )
        state.background.append(Sweeper(store, storage, config))
        state.background.append(state.events)
        events = state.events
        metrics.track_job_events(
            lambda: store.db.transactions, lambda: events.watchers, lambda: events.reads
        )
        logger.info(
            "gateway built: db=%s auth=%s storage=%s workers=%d drain_s=%.0f",
            store.db.dialect,
            config.auth_mode,
            config.storage_backend,
            config.workers if pool else 0,
            state.drain_s,
        )
        return cls(config, state, create_app(state), notifier, firebase_app)

    def close(self) -> None:
        """Release what `build` opened (call after the app has shut down)."""
        self.notifier.close(wait=True)
        self.state.store.db.close()
        if self.firebase_app is not None:
            delete_firebase_app(self.firebase_app)
