"""The job's shared types: what goes into and comes out of one orchestrated job, and a stored job.

The bottom of the gateway: the job queue, the HTTP layer and the pipeline all speak these
types; this module imports nothing from the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class JobSpec:
    """One job as the orchestrator sees it.

    `options` holds the animation options by their REST names: relative_motion, driving_option
    ("expression-friendly" | "pose-friendly"), driving_multiplier, stitching, paste_back,
    normalize_lip, eye_retargeting, lip_retargeting, region ("all" | "exp" | "pose" | "lip" |
    "eyes"), and optionally crf / preset for the encoder and crop_driving_video.
    """

    job_id: str
    source: MediaInput
    driving: MediaInput
    seconds: float = 10.0
    source_max_dim: int = 1280
    options: dict = field(default_factory=dict)
    sequential: bool = False


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
    error_code: str | None = None
    error_message: str | None = None
    result_key: str | None = None
    cache_hit: bool | None = None
    random_weights: bool | None = None
    idempotency_key: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    lease_token: str | None = None
    lease_expires: float | None = None
    not_before: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL
