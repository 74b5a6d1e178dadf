"""When a failed job runs again: capacity waits do not use up attempts, other transient
failures do, with exponential backoff between tries."""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.pipeline.clients import CAPACITY_REASONS

# Failures that mean "the fleet is full right now", not "this job is broken": only the
# animator's `animator_busy` (all its job slots or its frame queue are full). Any other
# RESOURCE_EXHAUSTED (a size limit, a gRPC message over the size limit) fails the job.
CAPACITY_CODES = CAPACITY_REASONS
MAX_DELAY_S = 120.0
# A capacity wait lasts this fraction of the time the job has waited since its first try, at
# least the base delay: waits grow by about 1.5x each (0.5 * age each time), so a full fleet
# sees few retries of the same job instead of one every base delay.
CAPACITY_BACKOFF = 0.5
CAPACITY_TIMEOUT = "capacity_timeout"


@dataclass(frozen=True)
class RetryPlan:
    delay_s: float
    count_attempt: bool


def plan_retry(
    code: str,
    retryable: bool,
    *,
    attempts: int,
    max_attempts: int,
    age_s: float,
    base_delay_s: float,
    max_queue_s: float,
    waited_s: float | None = None,
) -> RetryPlan | None:
    """A retry for a job that failed with `code` on its `attempts`-th try, or None to fail it.

    A job waiting for capacity is requeued until it is `max_queue_s` old (`age_s`, since it was
    created), after a delay that grows with `waited_s` (the time since its first try; `age_s`
    when not given). Any other retryable failure gets `max_attempts` tries in all, with delays
    doubling from `base_delay_s`.
    """
    if not retryable:
        return None
    if code in CAPACITY_CODES:
        waited = age_s if waited_s is None else waited_s
        delay = min(MAX_DELAY_S, max(base_delay_s, CAPACITY_BACKOFF * max(0.0, waited)))
        return RetryPlan(delay, count_attempt=False) if age_s + delay < max_queue_s else None
    delay = min(MAX_DELAY_S, base_delay_s * 2 ** max(0, attempts - 1))
    if attempts < max_attempts:
        return RetryPlan(delay, count_attempt=True)
    return None


def final_failure(
    code: str, message: str, retryable: bool, *, max_queue_s: float
) -> tuple[str, str]:
    """The (code, message) a job fails with once `plan_retry` gives up: a capacity wait that
    reached `max_queue_s` says so; any other failure keeps its own."""
    if retryable and code in CAPACITY_CODES:
        return CAPACITY_TIMEOUT, (
            f"No capacity became free within {max_queue_s:.0f} s of "
            f"queueing; try again later (last answer: {message})"
        )
    return code, message
