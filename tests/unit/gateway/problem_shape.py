"""The gateway's error body as tests check it: an RFC 9457 problem document
(`application/problem+json`) with the stable `code` extension and, while it is deprecated, the
legacy `error` member."""

from __future__ import annotations

import json

from services.gateway.api.errors import PROBLEM_TYPE_PREFIX

REQUIRED = {"type", "title", "status", "detail", "code"}
ALLOWED = REQUIRED | {"instance", "error"}


def assert_problem(
    status: int,
    content_type: str | None,
    body: bytes | str | dict,
    expected_status: int,
    code: str | None = None,
) -> dict:
    """Check one error answer; returns the problem document."""
    assert status == expected_status, (status, body)
    essence = (content_type or "").split(";", 1)[0].strip().lower()
    assert essence == "application/problem+json", (content_type, body)
    problem = body if isinstance(body, dict) else json.loads(body)
    assert REQUIRED <= set(problem) <= ALLOWED, problem
    assert problem["status"] == expected_status, problem
    assert problem["code"] and problem["detail"] and problem["title"], problem
    assert problem["type"] == PROBLEM_TYPE_PREFIX + problem["code"], problem
    assert problem["error"] == {"code": problem["code"], "message": problem["detail"]}, problem
    if "instance" in problem:
        assert problem["instance"].startswith("/") and "?" not in problem["instance"], problem
    if code is not None:
        assert problem["code"] == code, problem
    return problem


def _header(headers, name: str) -> str | None:
    """A header from httpx / TestClient headers or schemathesis' `{name: [values]}`."""
    for key, value in headers.items():
        if key.lower() == name:
            return (value[0] if value else None) if isinstance(value, list) else value
    return None


def problem_of(response, expected_status: int, code: str | None = None) -> dict:
    """`assert_problem` for an httpx / TestClient / schemathesis response."""
    return assert_problem(
        response.status_code,
        _header(response.headers, "content-type"),
        response.content,
        expected_status,
        code,
    )


def raw_problem_of(response, expected_status: int, code: str | None = None) -> dict:
    """`assert_problem` for a `tests.reliability.raw_http.RawResponse`."""
    return assert_problem(
        response.status, response.headers.get("content-type"), response.body, expected_status, code
    )
