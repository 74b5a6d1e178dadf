"""The `/v1/jobs` routes: create, read, list, follow (SSE), fetch the result, cancel."""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Security
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.security import HTTPBearer
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool

from services.gateway.api.auth import User
from services.gateway.api.errors import PROBLEM_MEDIA_TYPE, ApiError
from services.gateway.api.intake import request_fingerprint
from services.gateway.api.schemas import JobCreate, JobDeleted, JobPage, JobView, job_view
from services.gateway.api.state import GatewayState, get_state
from services.gateway.delivery.storage import StorageError, result_key
from services.gateway.domain import Job
from services.gateway.jobs.inputs import drop_inputs, share_uploads
from services.gateway.jobs.record import decode_cursor
from services.gateway.jobs.retention import erase_media, release_inputs
from services.gateway.jobs.store import Quota, QuotaExceeded
from services.gateway.net.strict_input import StrictInputError, parse_byte_ranges, parse_uint

# Declares the scheme in the OpenAPI document (HTTP bearer, so generated clients send
# `Authorization: Bearer <token>`); the header itself is read raw and checked by the gateway's
# authenticator, which tells a missing header from a malformed one.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="FirebaseIdToken",
    bearerFormat="JWT",
    description="A Firebase ID token of the signed-in user: `Authorization: Bearer <token>`",
)
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
# What a job id can look like (ids are uuid4 hex); anything else is answered 404 unseen by the
# database, so control characters and odd encodings never reach a query.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PROBLEM = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}
_ERROR_DESCRIPTIONS = {
    400: (
        "malformed request: `malformed_json`, `bad_multipart`, `malformed_content_type`, "
        "`bad_content_length`, `bad_cursor`, `bad_idempotency_key`, `bad_range`"
    ),
    401: (
        "no usable ID token: `missing_token`, `malformed_authorization`, `invalid_token`, "
        "`token_expired`"
    ),
    403: "`invalid_link`: a tampered or expired signed result link",
    404: "`not_found` (also another user's job), `result_missing`",
    409: "`not_ready`: the job has no result yet",
    413: "`too_large`",
    415: "`unsupported_media_type`, `unsupported_content_encoding`",
    416: "`range_not_satisfiable`: no requested byte range lies in the file",
    422: (
        "the request is well-formed but refused: `invalid_request`, `url_refused`, "
        "`invalid_webhook_url`, `idempotency_key_reused`, a media reason (`bad_video`, ...)"
    ),
    429: "`rate_limited`, `too_many_active_jobs`",
    500: "`internal`: the detail is generic; the stack trace goes only to the log",
    503: (
        "`database_unavailable`, `storage_unavailable`, `auth_unavailable` (the identity "
        "provider's certificates cannot be fetched); retry after `Retry-After` seconds"
    ),
}


def _problems(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI responses for these error statuses: each a problem document."""
    responses: dict[int | str, dict] = {}
    for status in statuses:
        response: dict = {"description": _ERROR_DESCRIPTIONS[status], "content": _PROBLEM}
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
            }
        responses[status] = response
    return responses


# Every route of the router can answer these.
_ERRORS = _problems(401, 500, 503)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=_ERRORS)


def _raw_authorization(request: Request) -> str | None:
    return request.headers.get("authorization")


def _authorization(request: Request, _declared: Annotated[object, Security(_bearer)]) -> str | None:
    """The raw Authorization header (the bearer scheme only documents it)."""
    return _raw_authorization(request)


def current_user(
    request: Request, authorization: Annotated[str | None, Depends(_authorization)]
) -> User:
    """Authenticate the caller (runs in the thread pool: verification may fetch certificates)."""
    return get_state(request).auth.authenticate(authorization)


CurrentUser = Annotated[User, Depends(current_user)]


def _strict_int(value: object) -> object:
    """Query integers in plain ASCII digits only (not `1_0`, ` 5`, `+5` or `５`)."""
    return parse_uint(value, max_digits=9) if isinstance(value, str) else value


StrictInt = Annotated[int, BeforeValidator(_strict_int)]


def _check_job_id(job_id: str) -> None:
    if not _JOB_ID.fullmatch(job_id):
        raise ApiError(404, "not_found", "no such job")


def _check_cursor(cursor: str) -> None:
    """A page cursor names a creation time and a job id; one naming anything else (a NUL in the
    id makes PostgreSQL refuse the query) is malformed."""
    try:
        created_at, job_id = decode_cursor(cursor)
    except ValueError:
        created_at, job_id = math.nan, ""
    if not math.isfinite(created_at) or not _JOB_ID.fullmatch(job_id):
        raise ApiError(400, "bad_cursor", "the page cursor is malformed")


def _owned(state: GatewayState, job_id: str, user: User) -> Job:
    _check_job_id(job_id)
    job = state.store.get(job_id, owner=user.uid)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return job


def _multipart_schema() -> dict:
    properties = {name: {"type": "string"} for name in JobCreate.model_fields}
    properties.update(
        {
            "source": {"type": "string", "format": "binary"},
            "driving": {"type": "string", "format": "binary"},
            "options": {"type": "string", "description": "AnimationOptions as JSON"},
        }
    )
    return {"type": "object", "properties": properties}


_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
            "multipart/form-data": {"schema": _multipart_schema()},
        },
    }
}


def _quota(state: GatewayState) -> Quota:
    config = state.config
    return Quota(config.max_active_jobs, config.rate_limit_jobs, config.rate_limit_window_s)


def _too_many(exc: QuotaExceeded) -> ApiError:
    return ApiError(429, exc.code, exc.message, {"Retry-After": str(exc.retry_after_s)})


def _check_quota(state: GatewayState, user: User) -> None:
    """Refuse early, before the body is read, when the quota is already used up; the job's
    insert checks again atomically (`JobStore.create`)."""
    exceeded = state.store.check_quota(user.uid, _quota(state))
    if exceeded is not None:
        raise _too_many(exceeded)


def _view(state: GatewayState, job: Job) -> JobView:
    """The job's view; a queued job's with its place in the queue (database reads: call it
    from a worker thread)."""
    queue = state.store.queue_estimate(job) if job.status == "queued" else None
    return job_view(job, state.links, queue)


def _accepted(state: GatewayState, job: Job, replayed: bool) -> JSONResponse:
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    body = _view(state, job).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers=headers)


def _same_request(job: Job, request_hash: str | None, key: str) -> None:
    """Refuse a reused Idempotency-Key whose request differs from the one that made `job`
    (jobs stored before request hashes existed have none and are replayed)."""
    if (
        job.request_hash is not None
        and request_hash is not None
        and (job.request_hash != request_hash)
    ):
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"Idempotency-Key {key!r} was already used for a different request (job "
            f"{job.id}); use a new key for a new job, or resend the same request to get "
            "that job",
        )


async def _intake_and_store(
    state: GatewayState,
    request: Request,
    user: User,
    idempotency_key: str | None,
    earlier: Job | None,
) -> tuple[Job, bool]:
    """Validate the body, keep the uploads where workers can read them, insert the job.

    With an idempotency key the request's hash (uploads by content) is stored with the job; a
    key already used (`earlier`, or found by a concurrent insert) replays that job when the
    request is the same and is refused with 422 when it differs. Whatever fails (a quota used
    up while the body was read included), and a replay, leaves no uploaded files behind.
    """
    job_id = uuid.uuid4().hex
    upload_dir = state.config.upload_dir(job_id)
    spec: dict | None = None
    try:
        intake = await state.intake.read(request, upload_dir)
        request_hash = None
        if idempotency_key is not None:
            request_hash = await run_in_threadpool(request_fingerprint, intake)
            if earlier is not None:
                _same_request(earlier, request_hash, idempotency_key)
                shutil.rmtree(upload_dir, ignore_errors=True)
                return earlier, False
        try:
            spec = await run_in_threadpool(share_uploads, state.storage, job_id, intake.spec)
        except StorageError:
            raise ApiError(
                503,
                "storage_unavailable",
                "Uploads cannot be stored right now.",
                {"Retry-After": "30"},
            ) from None
        try:
            job, created = await run_in_threadpool(
                lambda: state.store.create(
                    user.uid,
                    spec,
                    notify=intake.notify,
                    idempotency_key=idempotency_key,
                    request_hash=request_hash,
                    job_id=job_id,
                    quota=_quota(state),
                )
            )
        except QuotaExceeded as exc:
            raise _too_many(exc) from None
        if not created and idempotency_key is not None:
            _same_request(job, request_hash, idempotency_key)
    except BaseException:
        await run_in_threadpool(drop_inputs, state.storage, spec or {}, upload_dir)
        raise
    if not created:
        await run_in_threadpool(drop_inputs, state.storage, spec, upload_dir)
    elif not state.storage.local_path_supported:
        shutil.rmtree(upload_dir, ignore_errors=True)
    return job, created


@router.post(
    "",
    status_code=202,
    response_model=JobView,
    openapi_extra=_CREATE_BODY,
    responses=_problems(400, 413, 415, 422, 429),
    summary="Queue a job: photo + hero video (uploads or https URLs)",
)
async def create_job(
    request: Request,
    user: CurrentUser,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    state = get_state(request)
    earlier = None
    if idempotency_key is not None:
        if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise ApiError(
                400, "bad_idempotency_key", "Idempotency-Key must be 1-200 visible ASCII characters"
            )
        earlier = await run_in_threadpool(
            state.store.get_by_idempotency_key, user.uid, idempotency_key
        )
    if earlier is None:  # a replay does not count against the quota
        await run_in_threadpool(_check_quota, state, user)
    job, created = await _intake_and_store(state, request, user, idempotency_key, earlier)
    if created and state.pool is not None:
        state.pool.wake()
    return await run_in_threadpool(_accepted, state, job, not created)


@router.get(
    "",
    response_model=JobPage,
    responses=_problems(400, 422),
    summary="The caller's jobs, newest first",
)
def list_jobs(
    request: Request,
    user: CurrentUser,
    limit: Annotated[StrictInt, Query(ge=1, le=100)] = 20,
    cursor: str | None = Query(None, max_length=512),
    status: str | None = Query(None, pattern="^(queued|running|succeeded|failed|cancelled)$"),
) -> JobPage:
    state = get_state(request)
    if cursor is not None:
        _check_cursor(cursor)
    try:
        jobs, next_cursor = state.store.list(user.uid, limit=limit, cursor=cursor, status=status)
    except ValueError:
        raise ApiError(400, "bad_cursor", "the page cursor is malformed") from None
    return JobPage(jobs=[_view(state, j) for j in jobs], next_cursor=next_cursor)


@router.get(
    "/{job_id}",
    response_model=JobView,
    responses=_problems(404),
    summary="Status, queue position, progress, ETA, timings, links",
)
def get_job(job_id: str, request: Request, user: CurrentUser) -> JobView:
    state = get_state(request)
    return _view(state, _owned(state, job_id, user))


@router.delete(
    "/{job_id}",
    response_model=JobDeleted,
    responses=_problems(404),
    summary="Cancel a job; on a finished job, erase its media",
)
def cancel_job(job_id: str, request: Request, user: CurrentUser) -> JobDeleted:
    """A queued or running job is cancelled (`erased: false`). A job that had already finished
    has its inputs and result deleted from storage at once (`erased: true`); the row stays
    until `JOB_TTL_S`, so the app can still read what happened."""
    state = get_state(request)
    before = _owned(state, job_id, user)
    if before.terminal:
        try:
            erase_media(state.store, state.storage, state.config, before)
        except StorageError:
            raise ApiError(
                503,
                "storage_unavailable",
                "The job's media cannot be deleted right now.",
                {"Retry-After": "30"},
            ) from None
        job = state.store.get(job_id, user.uid) or before
        return JobDeleted(**_view(state, job).model_dump(), erased=True)
    job = state.store.request_cancel(job_id, user.uid)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    if job.status == "cancelled":
        # Settled by this request (queued, or its worker's lease had expired): no worker holds
        # it, so its uploads go now. A live running job keeps them until its worker stops.
        release_inputs(state.store, state.storage, state.config, job)
    if state.pool is not None:
        state.pool.cancel_local(job_id)
    return JobDeleted(**_view(state, job).model_dump(), erased=False)


@router.get(
    "/{job_id}/result",
    summary="The MP4 (or a redirect to a signed storage URL)",
    # The signed `result_url` needs no token: the ID token is optional here.
    openapi_extra={"security": [{"FirebaseIdToken": []}, {}]},
    responses={
        200: {"content": {"video/mp4": {}}},
        307: {"description": "signed URL"},
        **_problems(400, 403, 404, 409, 416),
    },
)
def get_result(
    job_id: str,
    request: Request,
    authorization: Annotated[str | None, Depends(_raw_authorization)],
    expires: Annotated[str | None, Query(max_length=16)] = None,
    sig: Annotated[str | None, Query(max_length=128)] = None,
):
    """With `expires` and `sig` (the signed `result_url`) no ID token is needed."""
    state = get_state(request)
    if expires is not None or sig is not None:
        if not state.links.verify(job_id, expires or "", sig or ""):
            raise ApiError(403, "invalid_link", "the result link is invalid or has expired")
        _check_job_id(job_id)
        job = state.store.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
    else:
        job = _owned(state, job_id, state.auth.authenticate(authorization))
    if job.status != "succeeded" or not job.result_key:
        raise ApiError(409, "not_ready", f"the job is {job.status}; there is no result yet")
    key = job.result_key or result_key(job.id)
    local = state.storage.local_path(key)
    if local is not None:
        _check_range(request.headers.get("range"), local)
        return FileResponse(local, media_type="video/mp4", filename=f"{job.id}.mp4")
    signed = state.storage.signed_url(key)
    if signed:
        return RedirectResponse(signed, status_code=307)
    if not state.storage.exists(key):
        raise ApiError(404, "result_missing", "the stored result is gone")
    return StreamingResponse(
        state.storage.iter_bytes(key),
        media_type="video/mp4",
        headers={"Content-Disposition": f'attachment; filename="{job.id}.mp4"'},
    )


def _check_range(header: str | None, path) -> None:
    """Answer a malformed or unsatisfiable Range in the API's error shape; a valid one is left
    to the file response, whose parser accepts every range this one does."""
    if header is None:
        return
    size = path.stat().st_size
    try:
        parse_byte_ranges(header, size)
    except StrictInputError as exc:
        if exc.code == "range_not_satisfiable":
            raise ApiError(
                416, exc.code, exc.message, {"Content-Range": f"bytes */{size}"}
            ) from None
        raise ApiError(400, "bad_range", exc.message) from None


@router.get(
    "/{job_id}/events",
    summary="Server-sent events with the job's fields as they change",
    responses={
        200: {
            "description": "`id: <version>`, `event: job`, `data: <the job>` whenever it "
            "changes, `: keep-alive` comments while it does not; ends after a final state",
            "content": {"text/event-stream": {}},
        },
        204: {"description": "`Last-Event-ID` names the final state already: nothing to send"},
        **_problems(404),
    },
)
def job_events(
    job_id: str,
    request: Request,
    user: CurrentUser,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
):
    """Resume with `Last-Event-ID`: the stream starts with the job's current state when it is
    newer than that id (each event carries the whole job, so the latest state is all a
    reconnecting client missed)."""
    state = get_state(request)
    job = _owned(state, job_id, user)
    seen = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1
    if job.terminal and seen >= job.version:
        return Response(status_code=204)  # EventSource stops reconnecting on 204
    return StreamingResponse(
        _event_stream(state, job, seen),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class _Views:
    """One rendering per job version, shared by every stream of this process (a view may read
    the database: a queued job's place in the queue), so watchers add no queries."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int], asyncio.Future]] = {}

    async def render(self, state: GatewayState, job: Job, bucket: int = 0) -> str:
        key = (job.version, bucket)
        hit = self._cache.get(job.id)
        if hit is None or hit[0] != key:
            if len(self._cache) > 10_000:
                self._cache.clear()
            future = asyncio.ensure_future(
                run_in_threadpool(lambda: _view(state, job).model_dump_json())
            )
            self._cache[job.id] = hit = (key, future)
        return await asyncio.shield(hit[1])


_VIEWS = _Views()
# A queued job's queue position changes without a change to its row: its streams re-render it
# this often (one query per job and period, shared by its watchers).
_QUEUED_REFRESH_S = 5.0


async def _event_stream(state: GatewayState, first: Job, seen: int) -> AsyncIterator[str]:
    """`event: job` (id = the job's version) whenever it changes, from the process's one
    event source (`jobs/events.py`); `: keep-alive` comments every `SSE_HEARTBEAT_S` without
    one; ends after a final state or when the job is gone."""
    events = state.events
    assert events is not None
    sub = events.subscribe(first.id)
    heartbeat = state.config.sse_heartbeat_s
    try:
        # Read again now that the subscription exists: no change can fall between the two.
        job = await run_in_threadpool(state.store.get, first.id) or first
        sub.offer(job)
        last_sent, quiet_since, last_view = seen, time.monotonic(), ""
        while True:
            job = sub.latest or job
            if sub.gone:
                return
            bucket = int(time.monotonic() / _QUEUED_REFRESH_S) if job.status == "queued" else 0
            if job.version > last_sent or (job.status == "queued" and last_sent >= 0):
                view = await _VIEWS.render(state, job, bucket)
                if job.version > last_sent or view != last_view:
                    last_sent, last_view, quiet_since = job.version, view, time.monotonic()
                    yield f"id: {job.version}\nevent: job\ndata: {view}\n\n"
            if job.terminal:
                return
            wait = heartbeat - (time.monotonic() - quiet_since)
            if job.status == "queued":
                wait = min(wait, _QUEUED_REFRESH_S)
            woke = wait > 0 and await sub.changed(wait)
            if not woke and time.monotonic() - quiet_since >= heartbeat:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
    finally:
        events.unsubscribe(sub)
