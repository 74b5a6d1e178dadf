"""When a failed job runs again: capacity waits do not use up attempts, other transient
failures do, with exponential backoff between tries."""

from __future__ import annotations

from dataclasses import dataclass

# Failures that mean "the fleet is full right now", not "this job is broken" ("animator_busy"
# is the animator's RESOURCE_EXHAUSTED reason when all its job slots or its frame queue are full).
CAPACITY_CODES = frozenset({"busy", "resource_exhausted", "animator_busy"})
MAX_DELAY_S = 120.0


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
) -> RetryPlan | None:
    """A retry for a job that failed with `code` on its `attempts`-th try, or None to fail it.

    A job waiting for capacity is requeued until it is `max_queue_s` old; any other retryable
    failure gets `max_attempts` tries in all.
    """
    if not retryable:
        return None
    delay = min(MAX_DELAY_S, base_delay_s * 2 ** max(0, attempts - 1))
    if code in CAPACITY_CODES:
        return RetryPlan(delay, count_attempt=False) if age_s + delay < max_queue_s else None
    if attempts < max_attempts:
        return RetryPlan(delay, count_attempt=True)
    return None
