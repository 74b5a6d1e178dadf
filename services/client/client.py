"""The client: typed job views, one exception type, an SSE parser and the HTTP calls.

Only the standard library and httpx are imported here (tests/unit/gateway/test_layers.py checks).
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_RECONNECT_S = 1.0


class DynamicsError(Exception):
    """The gateway refused a request, or could not be reached.

    `code` is the gateway's stable machine-readable reason (`invalid_request`, `bad_video`,
    `not_found`, ...); `unreachable` when no HTTP answer came, `http_<status>` when the answer
    carried no code. `status` is the HTTP status (None when unreachable).
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body

    @property
    def is_client_error(self) -> bool:
        """The request itself was refused (4xx other than 408 and 429): retrying won't help."""
        return (
            self.status is not None and 400 <= self.status < 500 and self.status not in (408, 429)
        )


def error_from_response(response: httpx.Response) -> DynamicsError:
    """The error of a non-2xx answer; `code` is read from either body shape the gateway uses:
    RFC 9457 problem+json with a top-level `code`, or the older `{"error": {"code", "message"}}`.
    """
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    code, message = None, ""
    if isinstance(body, dict):
        nested = body.get("error")
        if isinstance(nested, dict) and isinstance(nested.get("code"), str):
            code, message = nested["code"], str(nested.get("message") or "")
        if isinstance(body.get("code"), str):
            code = body["code"]
        message = str(body.get("detail") or body.get("message") or body.get("title") or message)
    if code is None:
        code = f"http_{response.status_code}"
    message = message or response.reason_phrase or ""
    retry_after = None
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    return DynamicsError(code, message, response.status_code, retry_after, body)


@dataclass(frozen=True)
class JobError:
    code: str
    message: str


def _when(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _job_error(value: object) -> JobError | None:
    if not isinstance(value, Mapping):
        return None
    return JobError(str(value.get("code", "")), str(value.get("message", "")))


@dataclass(frozen=True)
class Job:
    """A job as the gateway shows it (`GET /v1/jobs/{id}`). Fields the gateway adds later are
    kept in `raw`; fields it does not send yet are None."""

    id: str
    status: str
    stage: str = ""
    progress: float = 0.0
    frames_done: int = 0
    frames_total: int = 0
    eta_seconds: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: JobError | None = None
    # while queued or running again: the code and message of the latest failed attempt
    retrying: JobError | None = None
    result_url: str | None = None
    cache_hit: bool | None = None
    random_weights: bool | None = None
    attempts: int = 0
    queue_position: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        links = data.get("links")
        if isinstance(links, Mapping):  # plain URLs, or {"href": URL} objects
            links = {
                str(k): (v.get("href") if isinstance(v, Mapping) else v) for k, v in links.items()
            }
            links = {k: v for k, v in links.items() if isinstance(v, str)}
        else:
            links = {}
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            stage=str(data.get("stage") or ""),
            progress=float(data.get("progress") or 0.0),
            frames_done=int(data.get("frames_done") or 0),
            frames_total=int(data.get("frames_total") or 0),
            eta_seconds=None if data.get("eta_seconds") is None else float(data["eta_seconds"]),
            timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
            error=_job_error(data.get("error")),
            retrying=_job_error(data.get("retrying")),
            result_url=data.get("result_url"),
            cache_hit=data.get("cache_hit"),
            random_weights=data.get("random_weights"),
            attempts=int(data.get("attempts") or 0),
            queue_position=data.get("queue_position"),
            created_at=_when(data.get("created_at")),
            started_at=_when(data.get("started_at")),
            finished_at=_when(data.get("finished_at")),
            links=links,
            raw=dict(data),
        )


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event of a text/event-stream (WHATWG HTML, "Server-sent events")."""

    event: str = "message"
    data: str = ""
    id: str | None = None  # the last event ID in force when this event was dispatched
    retry_ms: int | None = None  # the latest `retry:` value seen before it


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Events from the lines of an event stream (line endings already removed).

    Per the spec: `:` lines are comments (heartbeats); `field: value` strips one space after
    the colon; `data` lines join with newlines; an `id` containing NUL is ignored and the last
    event ID persists across events; a blank line dispatches; an event with no data is dropped;
    an unterminated event at the end of the stream is dropped.
    """
    event, data, last_id, retry = "", [], None, None
    for line in lines:
        if line == "":
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data), last_id, retry)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)
        # any other field is ignored


def _is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


class Client:
    """Calls to one gateway. `token` is a Firebase ID token (None when the gateway runs with
    `GATEWAY_AUTH_MODE=none`, as under `dynamics up`)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "dynamics-client/1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def __enter__(self) -> Client:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise DynamicsError("unreachable", f"{self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def submit(
        self,
        photo: str | Path | BinaryIO,
        video: str | Path | BinaryIO,
        options: Mapping[str, Any] | None = None,
        *,
        seconds: float | None = None,
        source_max_dim: int | None = None,
        idempotency_key: str | None = None,
        fcm_token: str | None = None,
        webhook_url: str | None = None,
    ) -> Job:
        """Queue a job. `photo` and `video` are files (a path or an open binary file, uploaded)
        or https URLs the gateway fetches. `options` are the animation options
        (`relative_motion`, `driving_multiplier`, ...; see the gateway's OpenAPI)."""
        fields: dict[str, Any] = {}
        if seconds is not None:
            fields["seconds"] = seconds
        if source_max_dim is not None:
            fields["source_max_dim"] = source_max_dim
        if options:
            fields["options"] = dict(options)
        if fcm_token is not None:
            fields["fcm_token"] = fcm_token
        if webhook_url is not None:
            fields["webhook_url"] = webhook_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if _is_url(photo) and _is_url(video):
            body = {"source_url": photo, "driving_url": video, **fields}
            return Job.from_json(
                self._request("POST", "/v1/jobs", json=body, headers=headers).json()
            )
        form = {k: (json.dumps(v) if isinstance(v, dict) else str(v)) for k, v in fields.items()}
        with ExitStack() as stack:
            files = {}
            for name, media, default in (
                ("source", photo, "source.png"),
                ("driving", video, "driving.mp4"),
            ):
                if _is_url(media):
                    form[f"{name}_url"] = str(media)
                    continue
                if isinstance(media, (str, Path)):
                    path = Path(media)
                    handle = stack.enter_context(open(path, "rb"))
                    filename = path.name
                else:
                    handle, filename = media, Path(getattr(media, "name", default)).name
                kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
                files[name] = (filename, handle, kind)
            response = self._request("POST", "/v1/jobs", data=form, files=files, headers=headers)
        return Job.from_json(response.json())

    def get(self, job_id: str) -> Job:
        return Job.from_json(self._request("GET", f"/v1/jobs/{job_id}").json())

    def cancel(self, job_id: str) -> Job:
        """Ask the gateway to cancel; the answer is the job as it is now (a running job stops
        within a lease heartbeat: `wait` for the final state)."""
        return Job.from_json(self._request("DELETE", f"/v1/jobs/{job_id}").json())

    def events(
        self, job_id: str, *, last_event_id: str | None = None, max_reconnects: int = 5
    ) -> Iterator[Job]:
        """The job each time it changes, from `GET /v1/jobs/{id}/events`, until a final state.

        A dropped stream (network error, or an end before a final state) is reopened with
        `Last-Event-ID` after the server's `retry:` delay (1 s unless it says); more than
        `max_reconnects` drops in a row without a new event raise `DynamicsError("unreachable")`.
        """
        drops, delay = 0, DEFAULT_RECONNECT_S
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            problem: Exception | None = None
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=90.0),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise error_from_response(response)
                    for sse in parse_sse(response.iter_lines()):
                        if sse.retry_ms is not None:
                            delay = sse.retry_ms / 1000.0
                        last_event_id = sse.id
                        if sse.event != "job":
                            continue
                        job = Job.from_json(json.loads(sse.data))
                        drops = 0
                        yield job
                        if job.terminal:
                            return
            except httpx.HTTPError as exc:
                problem = exc
            drops += 1
            if drops > max_reconnects:
                raise DynamicsError(
                    "unreachable",
                    f"the event stream of job {job_id} kept "
                    f"dropping ({drops} times): {problem or 'ended early'}",
                )
            time.sleep(delay)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Follow the job's events until it is final (succeeded, failed or cancelled) and return
        it; `TimeoutError` after `timeout` seconds (checked as events arrive)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = None
        for job in self.events(job_id):
            if on_update is not None:
                on_update(job)
            if job.terminal:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.status} after {timeout} s")
        return job if job is not None else self.get(job_id)

    def download(self, job: Job | str, dest: str | Path) -> Path:
        """Write the job's MP4 to `dest` (streamed; a redirect to signed storage is followed).
        Uses the signed `result_url` when the job has one, else the authenticated route."""
        if isinstance(job, str):
            job = self.get(job)
        url = job.result_url or f"/v1/jobs/{job.id}/result"
        dest = Path(dest)
        partial = dest.with_name(dest.name + ".part")
        try:
            with self._http.stream("GET", url, follow_redirects=True) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                with open(partial, "wb") as out:
                    out.writelines(response.iter_bytes())
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise DynamicsError("unreachable", f"{self.base_url}: {exc}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(dest)
        return dest
