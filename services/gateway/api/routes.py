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

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool

from services.gateway.api.auth import User
from services.gateway.api.errors import PROBLEM_MEDIA_TYPE, ApiError
from services.gateway.api.intake import request_fingerprint
from services.gateway.api.schemas import JobCreate, JobPage, JobView, job_view
from services.gateway.api.state import GatewayState, get_state
from services.gateway.delivery.storage import StorageError, result_key
from services.gateway.domain import Job
from services.gateway.jobs.inputs import drop_inputs, share_uploads
from services.gateway.jobs.record import decode_cursor
from services.gateway.jobs.store import Quota, QuotaExceeded
from services.gateway.net.strict_input import StrictInputError, parse_byte_ranges, parse_uint

_auth_header = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    scheme_name="FirebaseIdToken",
    description="`Bearer <Firebase ID token>`",
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
    400: ("malformed request: `malformed_json`, `bad_multipart`, `malformed_content_type`, "
          "`bad_content_length`, `bad_cursor`, `bad_idempotency_key`, `bad_range`"),
    401: ("no usable ID token: `missing_token`, `malformed_authorization`, `invalid_token`, "
          "`token_expired`"),
    403: "`invalid_link`: a tampered or expired signed result link",
    404: "`not_found` (also another user's job), `result_missing`",
    409: "`not_ready`: the job has no result yet",
    413: "`too_large`",
    415: "`unsupported_media_type`, `unsupported_content_encoding`",
    416: "`range_not_satisfiable`: no requested byte range lies in the file",
    422: ("the request is well-formed but refused: `invalid_request`, `url_refused`, "
          "`invalid_webhook_url`, `idempotency_key_reused`, a media reason (`bad_video`, ...)"),
    429: "`rate_limited`, `too_many_active_jobs`",
    500: "`internal`: the detail is generic; the stack trace goes only to the log",
    503: ("`database_unavailable`, `storage_unavailable`, `auth_unavailable` (the identity "
          "provider's certificates cannot be fetched); retry after `Retry-After` seconds"),
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
_SSE_KEEPALIVE_S = 15.0

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=_ERRORS)


def current_user(
    request: Request, authorization: Annotated[str | None, Depends(_auth_header)]
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
    if job.request_hash is not None and request_hash is not None and (
        job.request_hash != request_hash
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
    "/{job_id}", response_model=JobView, responses=_problems(404), summary="Cancel a job"
)
def cancel_job(job_id: str, request: Request, user: CurrentUser) -> JobView:
    state = get_state(request)
    _owned(state, job_id, user)
    job = state.store.request_cancel(job_id, user.uid)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    if job.status == "cancelled":
        # Settled by this request (queued, or its worker's lease had expired): no worker holds
        # it, so its uploads go now. A live running job keeps them until its worker stops.
        drop_inputs(state.storage, job.spec, state.config.upload_dir(job.id))
    if state.pool is not None:
        state.pool.cancel_local(job_id)
    return _view(state, job)


@router.get(
    "/{job_id}/result",
    summary="The MP4 (or a redirect to a signed storage URL)",
    responses={
        200: {"content": {"video/mp4": {}}},
        307: {"description": "signed URL"},
        **_problems(400, 403, 404, 409, 416),
    },
)
def get_result(
    job_id: str,
    request: Request,
    authorization: Annotated[str | None, Depends(_auth_header)],
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
    responses={200: {"content": {"text/event-stream": {}}}, **_problems(404)},
)
def job_events(job_id: str, request: Request, user: CurrentUser):
    state = get_state(request)
    _owned(state, job_id, user)
    return StreamingResponse(
        _event_stream(state, request, job_id, user.uid),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(
    state: GatewayState, request: Request, job_id: str, owner: str
) -> AsyncIterator[str]:
    """`event: job` whenever the view changes; ends after a final state."""
    last, sent_at, number = "", time.monotonic(), 0
    while not await request.is_disconnected():
        job = await run_in_threadpool(state.store.get, job_id, owner)
        if job is None:
            return
        view = (await run_in_threadpool(_view, state, job)).model_dump_json()
        if view != last:
            number += 1
            last, sent_at = view, time.monotonic()
            yield f"id: {number}\nevent: job\ndata: {view}\n\n"
        elif time.monotonic() - sent_at > _SSE_KEEPALIVE_S:
            sent_at = time.monotonic()
            yield ": keep-alive\n\n"
        if job.terminal:
            return
        await asyncio.sleep(state.config.sse_poll_s)
