"""Schemathesis fuzzes the real gateway process from its own OpenAPI document: a bounded run
(fixed seed, a few examples per operation) that must see no 5xx and only documented,
schema-conformant responses; a negative run (inputs that break the schema) must see no
5xx and the error shape on every 4xx. /readyz is left out: with no services behind this intake-only
gateway its documented answer is 503. Two checks are off: `positive_data_acceptance` (the
schema cannot say "exactly one of source/source_url" nor the URL policy, so some schema-valid
bodies are rightly 422) and `ignored_auth` (this gateway runs without auth; auth has its own
tests). (Schemathesis' pytest plugin does not load under
pytest 9, so each operation's strategy is driven by Hypothesis directly.)"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from tests.unit.gateway.problem_shape import problem_of

OPERATIONS = [
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
    ("DELETE", "/v1/jobs/{job_id}"),
    ("GET", "/v1/jobs/{job_id}/result"),
    ("GET", "/v1/jobs/{job_id}/events"),
    ("GET", "/healthz"),
]


@pytest.fixture(scope="module")
def gateway_schema(intake_gateway):
    return schemathesis.openapi.from_url(intake_gateway[1] + "/openapi.json")


def test_every_documented_operation_is_fuzzed(gateway_schema) -> None:
    documented = {
        (method.upper(), path)
        for path, ops in gateway_schema.raw_schema["paths"].items()
        for method in ops
    }
    assert documented - {("GET", "/readyz")} == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_conforms_to_the_schema(gateway_schema, method: str, path: str) -> None:
    operation = gateway_schema[path][method]

    @given(case=operation.as_strategy())
    @seed(20261125)
    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case) -> None:
        response = case.call_and_validate(
            timeout=20, excluded_checks=[positive_data_acceptance, ignored_auth]
        )
        assert response.status_code < 500, response.text

    fuzz()


WITH_INPUT = [op for op in OPERATIONS if op != ("GET", "/healthz")]  # /healthz takes none


@pytest.mark.parametrize(("method", "path"), WITH_INPUT, ids=[f"{m} {p}" for m, p in WITH_INPUT])
def test_operation_refuses_schema_violations_in_the_error_shape(
    gateway_schema, method: str, path: str
) -> None:
    """Negative mode: bodies, query values and path ids that break the schema (wrong types,
    out-of-range numbers, odd strings). Every answer is below 500, and every 4xx carries the
    gateway's error shape with a code."""
    operation = gateway_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    @seed(20261130)
    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case) -> None:
        response = case.call(timeout=20)
        assert response.status_code < 500, response.text
        if response.status_code >= 400:
            problem_of(response, response.status_code)

    fuzz()


def test_fuzzing_logged_no_unhandled_error(intake_gateway) -> None:
    bad = [
        line
        for line in intake_gateway[0].lines
        if '"severity": "ERROR"' in line or "Traceback" in line
    ]
    assert not bad, bad[:3]
