"""services.client on its own: the SSE parser follows the spec, errors carry the stable code from
both error-body shapes, job views tolerate fields added later, and the event iterator resumes a
dropped stream with Last-Event-ID (an httpx transport plays the gateway)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from services.cli.gateway_client import Progress, describe
from services.client import Client, DynamicsError, Job, JobError, ServerSentEvent, parse_sse
from services.client import client as client_module


def _job(status: str = "running", **extra) -> dict:
    return {
        "id": "j1",
        "status": status,
        "stage": "animate",
        "progress": 0.5,
        "frames_done": 5,
        "frames_total": 10,
        "eta_seconds": 4.2,
        "timings": {"detect": 0.5},
        "error": None,
        "result_url": None,
        "cache_hit": False,
        "random_weights": True,
        "attempts": 1,
        "created_at": "2026-01-02T03:04:05Z",
        "started_at": None,
        "finished_at": None,
        **extra,
    }


def test_sse_parser_follows_the_spec() -> None:
    lines = [
        ": heartbeat",
        "",  # a comment alone dispatches nothing
        "retry: 2500",
        "id: 7",
        "event: job",
        'data: {"a":',
        "data:1}",
        "",
        "data: no space after colon is fine",
        "",  # default event type, id persists
        "id",
        "data: x",
        "",  # a bare `id` resets the last id to ""
        "id: a\0b",
        "data: y",
        "",  # an id with NUL is ignored
        "event: job",
        "",  # no data: dropped
        "data: unterminated",  # no blank line at the end: dropped
    ]
    assert list(parse_sse(lines)) == [
        ServerSentEvent("job", '{"a":\n1}', "7", 2500),
        ServerSentEvent("message", "no space after colon is fine", "7", 2500),
        ServerSentEvent("message", "x", "", 2500),
        ServerSentEvent("message", "y", "", 2500),
    ]


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"error": {"code": "bad_video", "message": "not a video"}}, "bad_video", "not a video"),
        (
            {
                "type": "about:blank",
                "title": "Unprocessable",
                "status": 422,
                "code": "bad_video",
                "detail": "not a video",
            },
            "bad_video",
            "not a video",
        ),
        ({"title": "Unprocessable", "code": "url_refused"}, "url_refused", "Unprocessable"),
        ({"detail": "no code here"}, "http_422", "no code here"),
        ("plain text", "http_422", "Unprocessable Entity"),
    ],
)
def test_errors_carry_the_code_from_either_body_shape(body, code: str, message: str) -> None:
    if isinstance(body, str):
        response = httpx.Response(422, text=body, headers={"Retry-After": "7"})
    else:
        media = "application/problem+json" if "title" in body else "application/json"
        response = httpx.Response(
            422, json=body, headers={"Retry-After": "7", "Content-Type": media}
        )
    error = client_module.error_from_response(response)
    assert (error.code, error.message, error.status, error.retry_after) == (code, message, 422, 7.0)
    assert error.is_client_error


def test_a_job_view_keeps_unknown_fields_and_reads_links() -> None:
    job = Job.from_json(
        _job(
            queue_position=3,
            links={"self": "/v1/jobs/j1", "events": {"href": "/v1/jobs/j1/events"}},
            something_new=[1, 2],
        )
    )
    assert job.queue_position == 3 and job.links == {
        "self": "/v1/jobs/j1",
        "events": "/v1/jobs/j1/events",
    }
    assert job.raw["something_new"] == [1, 2] and job.created_at.year == 2026
    assert not job.terminal and Job.from_json(_job("cancelled")).terminal
    assert describe(job) == "j1 running animate  50% 5/10 frames ETA 4s"


def _stream(text: str) -> httpx.Response:
    return httpx.Response(200, text=text, headers={"Content-Type": "text/event-stream"})


def test_events_resume_a_dropped_stream_with_last_event_id(monkeypatch) -> None:
    monkeypatch.setattr(client_module.time, "sleep", lambda s: sleeps.append(s))
    sleeps: list[float] = []
    seen_ids: list[str | None] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        seen_ids.append(request.headers.get("last-event-id"))
        if len(seen_ids) == 1:  # two events, then the connection ends before a final state
            return _stream(
                f"retry: 250\n: keep-alive\n\nid: 1\nevent: job\ndata: "
                f"{json.dumps(_job())}\n\nid: 2\nevent: job\ndata: "
                f"{json.dumps(_job(progress=0.9))}\n\n"
            )
        if len(seen_ids) == 2:
            raise httpx.ReadError("connection reset")
        return _stream(
            f"id: 3\nevent: job\ndata: {json.dumps(_job('succeeded', progress=1))}"
            f"\n\nid: 4\nevent: job\ndata: {json.dumps(_job('succeeded'))}\n\n"
        )

    with Client("http://gw", transport=httpx.MockTransport(gateway)) as client:
        jobs = list(client.events("j1"))
    assert [j.progress for j in jobs] == [0.5, 0.9, 1.0]  # stops at the first final state
    assert seen_ids == [None, "2", "2"] and sleeps == [0.25, 0.25]


def test_events_give_up_after_repeated_drops(monkeypatch) -> None:
    monkeypatch.setattr(client_module.time, "sleep", lambda s: None)
    calls = []

    def gateway(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return _stream(": nothing but a heartbeat\n\n")

    with (
        Client("http://gw", transport=httpx.MockTransport(gateway)) as client,
        pytest.raises(DynamicsError) as caught,
    ):
        list(client.events("j1", max_reconnects=2))
    assert caught.value.code == "unreachable" and len(calls) == 3


def test_a_refused_event_stream_raises_its_code() -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"code": "not_found", "detail": "no job 'j1'"})

    with (
        Client("http://gw", transport=httpx.MockTransport(gateway)) as client,
        pytest.raises(DynamicsError) as caught,
    ):
        next(client.events("j1"))
    assert (caught.value.code, caught.value.status) == ("not_found", 404)


def test_submit_uploads_files_and_sends_urls_as_json(tmp_path: Path) -> None:
    photo, video = tmp_path / "me.png", tmp_path / "hero.mp4"
    photo.write_bytes(b"PNG")
    video.write_bytes(b"MP4")
    requests: list[httpx.Request] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        request.read()
        return httpx.Response(202, json=_job("queued"))

    with Client("http://gw", token="tok", transport=httpx.MockTransport(gateway)) as client:
        client.submit(photo, video, {"stitching": False}, seconds=5, idempotency_key="k1")
        client.submit("https://a.example/p.png", "https://a.example/v.mp4", seconds=2)
    upload, urls = requests
    assert upload.headers["authorization"] == "Bearer tok"
    assert upload.headers["idempotency-key"] == "k1"
    assert upload.headers["content-type"].startswith("multipart/form-data")
    body = upload.content
    for part in (
        b'name="source"; filename="me.png"',
        b'name="driving"; filename="hero.mp4"',
        b"Content-Type: image/png",
        b'{"stitching": false}',
        b"PNG",
        b"MP4",
    ):
        assert part in body, part
    assert json.loads(urls.content) == {
        "source_url": "https://a.example/p.png",
        "driving_url": "https://a.example/v.mp4",
        "seconds": 2,
    }


def test_an_unreachable_gateway_is_an_error_with_a_code() -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with (
        Client("http://gw", transport=httpx.MockTransport(gateway)) as client,
        pytest.raises(DynamicsError) as caught,
    ):
        client.get("j1")
    assert caught.value.code == "unreachable" and caught.value.status is None
    assert not caught.value.is_client_error


def test_progress_bar_and_lines(capsys) -> None:
    import io

    out = io.StringIO()
    bar = Progress(out, bar=True)
    bar(Job.from_json(_job()))
    bar(Job.from_json(_job("succeeded", progress=1.0, stage="done")))
    text = out.getvalue()
    assert text.startswith("\r[" + "#" * 15 + "." * 15 + "]  50% animate ETA 4s")
    assert "\r[" + "#" * 30 + "] 100% done" in text and text.endswith("\n")
    lines = io.StringIO()
    plain = Progress(lines, bar=False)
    for job in (_job(), _job(), _job(progress=0.6)):
        plain(Job.from_json(job))
    assert lines.getvalue().count("\n") == 2 and "\r" not in lines.getvalue()


def test_a_job_view_reads_why_it_is_retrying(monkeypatch, capsys) -> None:
    from services.cli import gateway_client

    reason = {"code": "service_unavailable", "message": "The animator did not answer."}
    job = Job.from_json(_job("queued", retrying=reason, queue_position=0))
    assert job.retrying == JobError("service_unavailable", "The animator did not answer.")
    assert job.error is None
    assert Job.from_json(_job()).retrying is None  # an older gateway sends no `retrying`
    assert Job.from_json(_job(retrying=None)).retrying is None
    assert describe(job).endswith(
        "queue position 0 ETA 4s retrying after: service_unavailable: The animator did not answer."
    )
    failed = Job.from_json(_job("failed", retrying=reason, error={"code": "x", "message": "y"}))
    assert "retrying" not in describe(failed) and describe(failed).endswith("x: y")

    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_job("running", retrying=reason))

    monkeypatch.setattr(
        gateway_client,
        "_client",
        lambda args, environ: Client("http://gw", transport=httpx.MockTransport(gateway)),
    )
    assert gateway_client.status_main(["j1"], environ={}) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["retrying"] == reason  # stdout stays one JSON document
    assert err == (
        "dynamics status: retrying after: service_unavailable: The animator did not answer.\n"
    )
