"""FastAPI app factory: routes, health, metrics and one JSON error format.

Every error is an RFC 9457 problem document (`application/problem+json`, see `errors.py`) with
a precise status and a stable `code`; unexpected exceptions are logged with their stack and
answered 500 without it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from services.gateway.api.auth import AuthError, AuthUnavailable
from services.gateway.api.errors import PROBLEM_MEDIA_TYPE, ApiError, problem_response
from services.gateway.api.routes import router as job_router
from services.gateway.api.schemas import JobCreate, Problem
from services.gateway.api.state import GatewayState, get_state
from services.gateway.api.web_ui import install_web_ui
from services.gateway.jobs.database import DatabaseError

logger = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def _error(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return problem_response(status, code, message, headers, scope=request.scope)


def _database_errors() -> tuple[type[Exception], ...]:
    """Errors that mean the database cannot be reached or used right now."""
    kinds: list[type[Exception]] = [DatabaseError, sqlite3.OperationalError]
    try:
        import psycopg

        kinds.append(psycopg.OperationalError)
    except ImportError:
        pass
    return tuple(kinds)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        return _error(request, 401, exc.code, exc.message, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(AuthUnavailable)
    async def auth_unavailable(request: Request, exc: AuthUnavailable) -> JSONResponse:
        return _error(request, 503, exc.code, exc.message, {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(
            request, 422, "invalid_request", f"{where}: {first.get('msg', 'invalid value')}"
        )

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, _exc: ClientDisconnect) -> Response:
        # Nothing can be answered; the request's uploads were already deleted on the way out.
        logger.info(
            "client disconnected before sending the whole body of %s %s",
            request.method,
            request.url.path,
        )
        return Response(status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return _error(
            request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None)
        )

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        logger.error("database error on %s %s: %s", request.method, request.url.path, exc)
        return _error(
            request,
            503,
            "database_unavailable",
            "The job database is unavailable; retry soon.",
            {"Retry-After": "5"},
        )

    for kind in _database_errors():
        app.add_exception_handler(kind, database_down)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(request, 500, "internal", "An internal error occurred.")


# The key the readiness check looks up in the result storage: it never exists; the lookup proves
# the storage answers (a missing object is an answer, an outage or a refusal is not).
READINESS_KEY = "readyz/probe"
READINESS_TIMEOUT_S = 3.0


def _storage_check(state: GatewayState) -> str:
    """ "ok" when the result storage answers a lookup within READINESS_TIMEOUT_S."""
    outcome: list[str] = []

    def look() -> None:
        try:
            state.storage.exists(READINESS_KEY)
            outcome.append("ok")
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", logged
            logger.warning("readiness: the result storage did not answer: %s", exc)
            outcome.append("unreachable")

    thread = threading.Thread(target=look, name="readyz-storage", daemon=True)
    thread.start()
    thread.join(READINESS_TIMEOUT_S)
    return outcome[0] if outcome else "timeout"


def _readiness(state: GatewayState) -> dict[str, str]:
    """The gateway's own dependencies: the job database and the result storage.

    The gRPC services are not part of it: without an animator the gateway still answers status
    reads, result downloads and new jobs (they wait in the queue, or fail with a reason after
    their attempts), so taking the replica off the Ingress would only hide those answers.
    """
    try:
        database = "ok" if state.store.db.ping() else "unreachable"
    except Exception as exc:  # noqa: BLE001
        logger.warning("readiness: the database did not answer: %s", exc)
        database = "unreachable"
    return {"database": database, "storage": _storage_check(state)}


def _problem_responses(schema: dict) -> None:
    """Every error response is a problem document: FastAPI's own 422 (`HTTPValidationError`,
    which this app never sends) is replaced by the Problem schema, and its models dropped."""
    problem = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = problem
                    if response.get("description") == "Validation Error":
                        response["description"] = (
                            "`invalid_request`: a query or path value is out of its bounds"
                        )
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def build_openapi(app: FastAPI) -> dict:
    """The app's OpenAPI document (also what `python -m services.gateway.api.openapi` writes)."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (JobCreate, Problem):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    _problem_responses(schema)
    return schema


def _install_openapi(app: FastAPI) -> None:
    """OpenAPI with the job-creation body models, which no route declares as a parameter (the
    route reads JSON or streams multipart itself), and problem documents for every error."""

    def build() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


def create_app(state: GatewayState) -> FastAPI:
    """The REST app. Workers in `state.pool` start and stop with the app's lifespan."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if state.pool is not None:
            state.pool.start()
        for service in state.background:  # the retention sweeper, the job-event hub
            service.start()
        try:
            yield
        finally:
            for service in state.background:
                await run_in_threadpool(service.stop)
            if state.pool is not None:
                await run_in_threadpool(state.pool.stop, state.drain_s)
            for channel in state.health_channels.values():
                channel.close()

    app = FastAPI(
        title="Dynamics gateway",
        version="1",
        description="Animate a portrait photo with the motion of a hero video.",
        lifespan=lifespan,
    )
    app.state.gateway = state
    state.metrics.track_queue_depth(state.store.queue_depth)
    _install_error_handlers(app)
    _install_openapi(app)
    app.include_router(job_router)

    @app.get("/healthz", tags=["ops"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="The job database and the result storage answer",
        responses={
            503: {
                "description": (
                    "`dependencies_unavailable`: the detail names each failing dependency "
                    "(`database`, `storage`) and its state"
                )
            }
        },
    )
    def readyz(request: Request) -> JSONResponse:
        checks = _readiness(get_state(request))
        if all(value == "ok" for value in checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        failing = ", ".join(f"{name} {value}" for name, value in checks.items() if value != "ok")
        return problem_response(
            503,
            "dependencies_unavailable",
            f"not ready: {failing}",
            {"Retry-After": "5"},
            scope=request.scope,
        )

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

    if state.config.web_ui:
        install_web_ui(app)
    return app
