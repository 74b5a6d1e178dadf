"""The job's shared types: what goes into and comes out of one orchestrated job, its typed
animation options, and a stored job.

The bottom of the gateway: the job queue, the HTTP layer and the pipeline all speak these
types; this module imports nothing from the gateway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

STAGES = ("fetch_trim", "detect", "motion", "animate", "encode")
TERMINAL = ("succeeded", "failed", "cancelled")  # job statuses that never change again
ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class MediaInput:
    """A local file or an https URL; exactly one is set."""

    path: Path | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.url is None):
            raise ValueError("MediaInput needs exactly one of path or url")


DrivingOption = Literal["expression-friendly", "pose-friendly"]
Region = Literal["all", "exp", "pose", "lip", "eyes"]


# The one declaration of the animation options and their bounds: the REST schema embeds this
# model, `dynamics render` derives its flags from `option_fields()`, a stored job's JSON is read
# back through it, and the pipeline maps it to the contract's message. Frozen and strict, it is
# validated once, when it is built. Its docstring and descriptions are the OpenAPI document's.
class AnimationOptions(BaseModel):
    """How the hero video's motion is applied to the photo (LivePortrait's options, with
    upstream's defaults). Numbers and switches are JSON numbers and booleans."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)

    relative_motion: bool = Field(
        True,
        description="true: the video's motion since its first frame moves the photo; "
        "false: the photo takes the video's absolute pose and expression",
    )
    driving_option: DrivingOption = Field(
        "expression-friendly",
        description="expression-friendly: the video's expression "
        "changes are scaled to the photo's face (relative motion); pose-friendly: taken as "
        "they are",
    )
    driving_multiplier: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description="strength of the motion: 1 as in the video, less is weaker, more stronger",
    )
    stitching: bool = Field(
        True,
        description="keep the animated face joined to the photo's head and shoulders "
        "(the stitching network)",
    )
    paste_back: bool = Field(
        True,
        description="paste the animated face back onto the photo; false: the result is "
        "the face crop",
    )
    normalize_lip: bool = Field(
        False,
        description="close the photo's lips before animating (relative motion, without "
        "eye or lip retargeting)",
    )
    eye_retargeting: bool = Field(
        False, description="make the eyes open and close as in the video (retargeting network)"
    )
    lip_retargeting: bool = Field(
        False, description="make the lips open and close as in the video (retargeting network)"
    )
    region: Region = Field(
        "all",
        description="what the video drives: all, exp (expression), pose (head pose), lip or eyes",
    )


@dataclass(frozen=True)
class OptionField:
    """One animation option as `AnimationOptions` declares it: its type, default, allowed
    values or numeric bounds, and description."""

    name: str
    kind: type  # bool, float or str
    default: object
    description: str
    choices: tuple[str, ...] = ()
    above: float | None = None  # exclusive lower bound
    at_least: float | None = None  # inclusive lower bound
    below: float | None = None  # exclusive upper bound
    at_most: float | None = None  # inclusive upper bound

    def bounds(self) -> str:
        """The numeric range in interval notation, e.g. `(0, 10]`; "" when unbounded."""
        if self.kind is not float:
            return ""
        low = (
            f"({self.above:g}"
            if self.above is not None
            else (f"[{self.at_least:g}" if self.at_least is not None else "(-inf")
        )
        high = (
            f"{self.below:g})"
            if self.below is not None
            else (f"{self.at_most:g}]" if self.at_most is not None else "inf)")
        )
        return f"{low}, {high}"


def option_fields() -> tuple[OptionField, ...]:
    """Every field of `AnimationOptions`, read from its declaration."""
    found = []
    for name, info in AnimationOptions.model_fields.items():
        choices = tuple(get_args(info.annotation)) if get_origin(info.annotation) is Literal else ()
        limits = {type(m).__name__: m for m in info.metadata}
        found.append(
            OptionField(
                name=name,
                kind=str if choices else info.annotation,
                default=info.default,
                description=info.description or "",
                choices=choices,
                above=getattr(limits.get("Gt"), "gt", None),
                at_least=getattr(limits.get("Ge"), "ge", None),
                below=getattr(limits.get("Lt"), "lt", None),
                at_most=getattr(limits.get("Le"), "le", None),
            )
        )
    return tuple(found)


@dataclass(frozen=True)
class JobSpec:
    """One job as the orchestrator sees it."""

    job_id: str
    source: MediaInput
    driving: MediaInput
    seconds: float = 10.0
    source_max_dim: int = 1280
    options: AnimationOptions = field(default_factory=AnimationOptions)


@dataclass
class ProgressUpdate:
    """Where a running job is. `timings` holds the stages finished so far (seconds)."""

    stage: str
    frames_done: int
    frames_total: int
    eta_seconds: float | None
    timings: dict[str, float]


@dataclass
class JobResult:
    """A finished job: the MP4 in the work folder and how long each stage took."""

    mp4_path: Path
    timings: dict[str, float]
    cache_hit: bool
    frames: int
    random_weights: bool
    # What animated it: `model` (the fingerprint its Animate replies named) and the `backend`
    # ("torch", "onnxruntime/CPUExecutionProvider", ...), `device` and `dtype` of the animator's GetInfo.
    animator: dict[str, str] = field(default_factory=dict)


class JobRunner(Protocol):
    """What a gateway worker runs a job with (the pipeline's `Orchestrator`, or a stand-in)."""

    def run(
        self,
        spec: JobSpec,
        work_dir: Path,
        *,
        on_progress: Callable[[ProgressUpdate], None],
        cancel: threading.Event,
    ) -> JobResult:
        """Run `spec` to an MP4 in `work_dir`, or raise `JobFailed`."""
        ...


class JobFailed(Exception):
    """A job that cannot finish: `code` is a short machine reason, `message` a human sentence,
    `retryable` says whether running it again may succeed (a service was unavailable)."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass
class Job:
    """One stored job (a row of the job table, decoded by `jobs.record.job_from_row`)."""

    id: str
    owner: str
    status: str
    stage: str
    spec: dict[str, Any]
    created_at: float
    updated_at: float
    frames_done: int = 0
    frames_total: int = 0
    eta_seconds: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notify: dict[str, Any] = field(default_factory=dict)
    animator: dict[str, str] = field(default_factory=dict)  # JobResult.animator, once it ran
    error_code: str | None = None
    error_message: str | None = None
    result_key: str | None = None
    cache_hit: bool | None = None
    random_weights: bool | None = None
    idempotency_key: str | None = None
    # sha256 of the canonical request that created the job (uploads by content hash): a reused
    # Idempotency-Key with another request is refused. None for jobs stored before it existed.
    request_hash: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    lease_token: str | None = None
    lease_expires: float | None = None
    not_before: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    version: int = 0  # bumped by every visible change; the SSE event id
    inputs_erased_at: float | None = None
    media_erased_at: float | None = None  # the result (and inputs) deleted by retention or DELETE
    sweep_token: str | None = None
    sweep_expires: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL
