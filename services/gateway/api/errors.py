"""The one error type of the HTTP layer and the one error body: RFC 9457 problem details.

Every error answer is `application/problem+json`:

    {"type": "tag:dynamics.app,2026:problem/not_found", "title": "Not Found", "status": 404,
     "detail": "no job 'abc'", "instance": "/v1/jobs/abc", "code": "not_found",
     "error": {"code": "not_found", "message": "no job 'abc'"}}

`code` (an extension member) is the stable machine reason apps switch on. `error` repeats code
and detail in the shape of API version 1's first release; it is deprecated and goes away in the
next breaking version (docs/gateway.md, "Errors").
"""

from __future__ import annotations

import http

from fastapi.responses import JSONResponse

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Problem type URIs are tag URIs (RFC 4151): stable names, not links to fetch.
PROBLEM_TYPE_PREFIX = "tag:dynamics.app,2026:problem/"
_MAX_INSTANCE_CHARS = 1024


class ApiError(Exception):
    """An error answered as a problem document with an HTTP status and a machine code."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def problem_title(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(status: int, code: str, detail: str, instance: str | None = None) -> dict:
    body = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": problem_title(status),
        "status": status,
        "detail": detail,
        "code": code,
        "error": {"code": code, "message": detail},
    }
    if instance:
        body["instance"] = instance
    return body


def request_instance(scope: dict) -> str | None:
    """The request's path as it arrived (no query: a signed result link's signature stays out
    of error bodies), when it is a short printable one."""
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
    try:
        path = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    path = path.split("?", 1)[0]
    if not path.startswith("/") or len(path) > _MAX_INSTANCE_CHARS or not path.isprintable():
        return None
    return path


def problem_response(
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    scope: dict | None = None,
) -> JSONResponse:
    instance = request_instance(scope) if scope is not None else None
    return JSONResponse(
        problem_body(status, code, detail, instance),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )
