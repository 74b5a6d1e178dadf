"""The video corpus against the real gateway: intake answers, then accepted clips run end to end
on the real services (fixture weights) and end succeeded or failed with a named, non-internal
reason; nothing stays queued or running."""

from __future__ import annotations

import time

import httpx
import pytest

from services.cli.demo_media import write_source_photo
from tests.reliability.conftest import assert_rest_error, needs_ffmpeg, start_gateway
from tests.reliability.video_corpus import VideoCase, video_case_ids, video_corpus

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]
IDS = video_case_ids()
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, VideoCase]:
    cases = video_corpus(tmp_path_factory.mktemp("videos"))
    assert [case.id for case in cases] == IDS
    return {case.id: case for case in cases}


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> bytes:
    return write_source_photo(tmp_path_factory.mktemp("photo") / "me.png", side=256).read_bytes()


def _post(client: httpx.Client, photo: bytes, case: VideoCase) -> httpx.Response:
    files = {
        "source": ("me.png", photo, "image/png"),
        "driving": (case.path.name, case.path.read_bytes(), "video/mp4"),
    }
    return client.post("/v1/jobs", files=files, data={"seconds": "2"})


@pytest.mark.parametrize("case_id", IDS)
def test_intake_answers_precisely(case_id: str, corpus, photo, rest) -> None:
    case = corpus[case_id]
    response = _post(rest, photo, case)
    if case.intake == "accept":
        assert response.status_code == 202, response.text
    else:
        assert_rest_error(response, 422, case.intake)


@pytest.fixture(scope="module")
def running_gateway(grpc_services, tmp_path_factory):
    targets = {f"{name.upper()}_ADDR": service.target for name, service in grpc_services.items()}
    gateway, base = start_gateway(
        tmp_path_factory.mktemp("run-gateway"),
        {
            **targets,
            "GATEWAY_WORKERS": "2",
            "JOB_POLL_S": "0.1",
            "JOB_MAX_ATTEMPTS": "2",
            "JOB_RETRY_BASE_S": "0.1",
            "MAX_SECONDS": "10",
            "MAX_ACTIVE_JOBS": "100",
        },
    )
    with httpx.Client(base_url=base, timeout=60) as client:
        yield client
    try:
        gateway.terminate(30)
    finally:
        gateway.kill()


def test_accepted_clips_end_with_a_precise_outcome(corpus, photo, running_gateway) -> None:
    accepted = [case for case in corpus.values() if case.intake == "accept"]
    jobs = {}
    for case in accepted:
        response = _post(running_gateway, photo, case)
        assert response.status_code == 202, response.text
        jobs[case.id] = response.json()["id"]
    deadline = time.monotonic() + 240
    views: dict[str, dict] = {}
    while len(views) < len(jobs):
        assert time.monotonic() < deadline, f"jobs still open: {set(jobs) - set(views)}"
        for case_id, job_id in jobs.items():
            view = running_gateway.get(f"/v1/jobs/{job_id}").json()
            if view["status"] in FINAL:
                views[case_id] = view
        time.sleep(0.3)
    outcomes = {
        case_id: (view["status"] if view["status"] == "succeeded" else view["error"]["code"])
        for case_id, view in views.items()
    }
    print("video corpus outcomes:", outcomes)
    for case in accepted:
        view = views[case.id]
        if view["status"] != "succeeded":
            assert view["error"]["message"] and view["error"]["code"] != "internal", view
        if case.job is not None:
            assert outcomes[case.id] == case.job, (case.id, view)
