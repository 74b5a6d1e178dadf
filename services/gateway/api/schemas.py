"""Request and response bodies of the REST API (they also make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.gateway.delivery.result_links import ResultLinks
from services.gateway.domain import AnimationOptions, Job
from services.gateway.jobs.store import QueueEstimate
from services.gateway.net.strict_input import parse_decimal, parse_uint


class LegacyError(BaseModel):
    code: str = Field(description="the same as the problem's `code`")
    message: str = Field(description="the same as the problem's `detail`")


class Problem(BaseModel):
    """An error, as an RFC 9457 problem document (`application/problem+json`)."""

    model_config = ConfigDict(title="Problem")

    type: str = Field(
        description="a URI naming the kind of problem: `tag:dynamics.app,2026:problem/<code>`"
    )
    title: str = Field(description="the HTTP status phrase, e.g. `Not Found`")
    status: int = Field(ge=400, le=599, description="the HTTP status code of this answer")
    detail: str = Field(description="a human sentence about this occurrence")
    instance: str | None = Field(None, description="the request path, when short and printable")
    code: str = Field(
        description="the stable machine reason apps switch on, e.g. `invalid_request`, "
        "`not_found`, `token_expired` (docs/gateway.md lists them)"
    )
    error: LegacyError = Field(
        deprecated=True,
        description="deprecated: `{code, message}` as in the first release of version 1; "
        "read `code` and `detail` instead. Removed in the next breaking version.",
    )


def _number(value: object, *, integer: bool = False) -> object:
    """Numbers come as JSON numbers or as form strings in one plain ASCII spelling (`10`,
    `2.5`), never as true/false, and never as what `float()`/`int()` would also take
    (`inf`, `1_0`, ` 5 `, `１０`)."""
    if isinstance(value, bool):
        raise ValueError("a number is required, not a boolean")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(value, str):
        return parse_uint(value, max_digits=9) if integer else parse_decimal(value)
    return value


class JobCreate(BaseModel):
    """A job as JSON (URLs); multipart uploads send the same fields as form fields plus the
    files `source` (photo) and `driving` (hero video), with `options` as a JSON string."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    source_url: str | None = Field(None, max_length=2048, description="https URL of the photo")
    driving_url: str | None = Field(None, max_length=2048, description="https URL of the video")
    seconds: float = Field(10.0, gt=0.0, description="length of the result; the video is trimmed")
    source_max_dim: int = Field(1280, ge=64, description="longest side the photo is scaled to")
    options: AnimationOptions = Field(default_factory=AnimationOptions)
    fcm_token: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        pattern=r"^[\x21-\x7e]+$",
        description="FCM registration token (visible ASCII)",
    )
    webhook_url: str | None = Field(
        None,
        max_length=2048,
        description="https URL that gets a signed POST (Standard Webhooks) when the job ends; "
        "refused with `webhooks_disabled` when the gateway has no WEBHOOK_SECRET",
    )
    webhook_progress: bool = Field(
        False,
        description="also POST `job.progress` events to webhook_url while the job runs "
        "(best effort, at most one every WEBHOOK_PROGRESS_S seconds or stage change)",
    )

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        return _number(value)

    @field_validator("source_max_dim", mode="before")
    @classmethod
    def _dimension(cls, value: object) -> object:
        return _number(value, integer=True)


class JobError(BaseModel):
    code: str
    message: str


class JobLinks(BaseModel):
    """Where to go from a job (absolute URLs, based on `GATEWAY_PUBLIC_URL`)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    self_: str = Field(alias="self", description="GET: this job")
    events: str = Field(description="GET: server-sent events with this job's fields")
    cancel: str | None = Field(
        description="DELETE: cancel the job; null once it is final (nothing to cancel)"
    )
    result: str | None = Field(
        description="GET: the MP4 (the signed `result_url`, no ID token needed); null until "
        "the job succeeded"
    )


class JobAnimator(BaseModel):
    """What animated a succeeded job's frames."""

    model: str = Field(
        description="fingerprint of the model that made the frames (as its Animate replies "
        "named it; GetInfo's `model_fingerprint`)"
    )
    backend: str | None = Field(
        default=None,
        description="the animator's backend and, for ONNX Runtime, its execution provider: "
        "`torch`, or `onnxruntime/` and the ONNX Runtime provider name, e.g. "
        "`onnxruntime/TensorrtExecutionProvider`, `onnxruntime/CPUExecutionProvider`; null when the "
        "animator's GetInfo could not be asked or described another model",
    )
    device: str | None = Field(default=None, description="e.g. `cpu`, `cuda:0`")
    dtype: str | None = Field(
        default=None, description="what the networks compute in: `float32`, `float16`, `bfloat16`"
    )


class JobView(BaseModel):
    """A job as the app sees it."""

    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str
    queue_position: int | None = Field(
        ge=0,
        description="while queued: how many jobs are ahead of it, fleet-wide (0: it is next); "
        "null otherwise",
    )
    progress: float = Field(ge=0.0, le=1.0)
    frames_done: int
    frames_total: int
    eta_seconds: float | None = Field(
        description="seconds until the result should exist: while queued, from the jobs ahead "
        "and the measured run time of recent jobs (null before any job has succeeded); while "
        "running, from the measured frame throughput"
    )
    timings: dict[str, float]
    error: JobError | None = Field(
        description="once the job failed or was cancelled: why (`cancelled` when cancelled); "
        "null otherwise"
    )
    retrying: JobError | None = Field(
        description="while the job is queued or running again after a failed attempt: the code "
        "and message of the latest failed attempt (e.g. `service_unavailable`, `animator_busy` "
        "while a service is at capacity, `interrupted` when the gateway restarted); null before "
        "any attempt failed and once the job is final (see `error`)"
    )
    result_url: str | None
    cache_hit: bool | None
    random_weights: bool | None
    animator: JobAnimator | None = Field(
        description="once the job succeeded: the model and backend that animated it; null before "
        "and for jobs that did not succeed (or finished before the gateway recorded it)"
    )
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: JobLinks


class JobPage(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null at the end"
    )


def _when(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc)


def progress_of(job: Job) -> float:
    """0..1; 1 only once the result is stored."""
    if job.status == "succeeded":
        return 1.0
    if job.frames_total <= 0:
        return 0.0
    return min(0.99, job.frames_done / job.frames_total)


def job_links(job: Job, links: ResultLinks) -> JobLinks:
    here = f"{links.public_url}/v1/jobs/{job.id}"
    return JobLinks(
        self_=here,
        events=f"{here}/events",
        cancel=None if job.terminal else here,
        result=(
            links.url(job.id) if job.status == "succeeded" and job.media_erased_at is None else None
        ),
    )


def job_view(job: Job, links: ResultLinks, queue: QueueEstimate | None = None) -> JobView:
    """The app's view of `job`; `queue` is its place in the queue while it is queued."""
    error = None
    if job.status == "failed":
        error = JobError(code=job.error_code or "failed", message=job.error_message or "")
    elif job.status == "cancelled":
        error = JobError(code="cancelled", message="The job was cancelled.")
    # The store keeps a requeued attempt's error_code on the row until the job ends (a claim
    # does not clear it, nor does success), so it is only a retry reason while not final.
    retrying = None
    if not job.terminal and job.error_code:
        retrying = JobError(code=job.error_code, message=job.error_message or "")
    return JobView(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        stage=job.stage,
        queue_position=queue.position if queue is not None else None,
        progress=progress_of(job),
        frames_done=job.frames_done,
        frames_total=job.frames_total,
        eta_seconds=queue.eta_seconds if queue is not None else job.eta_seconds,
        timings=job.timings,
        error=error,
        retrying=retrying,
        result_url=(
            links.url(job.id) if job.status == "succeeded" and job.media_erased_at is None else None
        ),
        cache_hit=job.cache_hit,
        random_weights=job.random_weights,
        animator=JobAnimator(**job.animator) if job.animator.get("model") else None,
        attempts=job.attempts,
        created_at=_when(job.created_at),
        started_at=_when(job.started_at),
        finished_at=_when(job.finished_at),
        links=job_links(job, links),
    )


class JobDeleted(JobView):
    """The answer to `DELETE /v1/jobs/{id}`: the job after the request."""

    erased: bool = Field(
        description="true: the job had finished and this request deleted its media (inputs "
        "and result); false: it cancelled a queued or running job"
    )
