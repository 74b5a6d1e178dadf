"""The objects one gateway app serves from, reachable from every request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from services.gateway.api.auth import Authenticator
from services.gateway.api.intake import JobIntake
from services.gateway.config import GatewayConfig
from services.gateway.delivery.result_links import ResultLinks
from services.gateway.delivery.storage import ResultStorage
from services.gateway.jobs.events import JobEvents
from services.gateway.jobs.store import JobStore
from services.gateway.jobs.worker import WorkerPool
from services.gateway.metrics import GatewayMetrics


@dataclass
class GatewayState:
    config: GatewayConfig
    store: JobStore
    storage: ResultStorage
    auth: Authenticator
    metrics: GatewayMetrics
    intake: JobIntake
    links: ResultLinks
    pool: WorkerPool | None = None
    drain_s: float = 30.0
    health_channels: dict[str, Any] = field(default_factory=dict)
    events: JobEvents | None = None  # one source of job changes for every SSE stream
    # Started and stopped with the app (objects with start() and stop()).
    background: list[Any] = field(default_factory=list)


def get_state(request: Request) -> GatewayState:
    return request.app.state.gateway
