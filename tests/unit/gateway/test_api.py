"""REST API: job creation (uploads and URLs), validation errors, idempotency, pagination,
rate limits, error format, health, readiness against real gRPC health servers, metrics."""

from __future__ import annotations

import json
import re
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.gateway.delivery.storage import StorageError
from services.gateway.domain import AnimationOptions, option_fields
from services.gateway.pipeline.clients import ANIMATOR_SERVICE, ENCODER_SERVICE, FACE_DETECT_SERVICE
from tests.unit.gateway.gateway_harness import build_gateway, make_video, png_bytes
from tests.unit.gateway.problem_shape import problem_of

pytestmark = pytest.mark.ffmpeg


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory) -> bytes:
    return make_video(tmp_path_factory.mktemp("media") / "hero.mp4").read_bytes()


@pytest.fixture
def make_client(tmp_path):
    made = []

    def build(**overrides) -> TestClient:
        gateway = build_gateway(tmp_path / f"gw{len(made)}", None, **overrides)
        client = TestClient(gateway.app, raise_server_exceptions=False)
        client.__enter__()
        made.append((gateway, client))
        return client

    yield build
    for gateway, client in made:
        client.__exit__(None, None, None)
        gateway.close()


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def upload(client, video_bytes, *, headers=None, **fields):
    files = {
        "source": ("me.png", png_bytes(), "image/png"),
        "driving": ("hero.mp4", video_bytes, "video/mp4"),
    }
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    return client.post("/v1/jobs", files=files, data=data, headers=headers or {})


def assert_error(response, status: int, code: str) -> dict:
    """An RFC 9457 problem document with this status and `code`; returns it."""
    return problem_of(response, status, code)


def test_multipart_upload_is_queued_and_readable(client, video_bytes):
    response = upload(
        client,
        video_bytes,
        seconds="5",
        source_max_dim="512",
        options={"relative_motion": False, "driving_multiplier": 1.5},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["progress"] == 0.0 and job["error"] is None
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    again = client.get(f"/v1/jobs/{job['id']}").json()
    assert again["id"] == job["id"] and again["status"] == "queued"
    store = client.app.state.gateway.store
    spec = store.get(job["id"]).spec
    assert spec["seconds"] == 5.0 and spec["source_max_dim"] == 512
    assert (
        spec["options"]
        == AnimationOptions(relative_motion=False, driving_multiplier=1.5).model_dump()
    )
    assert "sequential" not in spec
    assert Path(spec["driving"]["path"]).read_bytes() == video_bytes


def test_json_job_with_urls(client):
    body = {
        "source_url": "http://127.0.0.1:9/me.png",
        "driving_url": "http://127.0.0.1:9/v.mp4",
        "webhook_url": "http://127.0.0.1:9/hook",
        "fcm_token": "device-1",
    }
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    stored = client.app.state.gateway.store.get(response.json()["id"])
    assert stored.spec["source"] == {"path": None, "url": body["source_url"]}
    assert stored.notify == {"fcm_token": "device-1", "webhook_url": body["webhook_url"]}


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"driving_url": "http://127.0.0.1:9/v.mp4"}, 422, "invalid_request"),
        (
            {"source_url": "ftp://127.0.0.1/a.png", "driving_url": "http://127.0.0.1:9/v.mp4"},
            422,
            "url_refused",
        ),
        (
            {"source_url": "http://10.1.2.3/a.png", "driving_url": "http://127.0.0.1:9/v.mp4"},
            422,
            "url_refused",
        ),
        (
            {
                "source_url": "http://127.0.0.1:9/a",
                "driving_url": "http://127.0.0.1:9/b",
                "seconds": 11,
            },
            422,
            "invalid_request",
        ),
        (
            {
                "source_url": "http://127.0.0.1:9/a",
                "driving_url": "http://127.0.0.1:9/b",
                "seconds": -1,
            },
            422,
            "invalid_request",
        ),
        (
            {
                "source_url": "http://127.0.0.1:9/a",
                "driving_url": "http://127.0.0.1:9/b",
                "options": {"warp": 1},
            },
            422,
            "invalid_request",
        ),
        (
            {
                "source_url": "http://127.0.0.1:9/a",
                "driving_url": "http://127.0.0.1:9/b",
                "source_max_dim": 99999,
            },
            422,
            "invalid_request",
        ),
        (
            {
                "source_url": "http://127.0.0.1:9/a",
                "driving_url": "http://127.0.0.1:9/b",
                "webhook_url": "gopher://x",
            },
            422,
            "invalid_webhook_url",
        ),
        (
            {
                "source_url": "http://127.0.0.1:9/a",
                "driving_url": "http://127.0.0.1:9/b",
                "surprise": True,
            },
            422,
            "invalid_request",
        ),
    ],
)
def test_json_validation_errors(client, body, status, code):
    assert_error(client.post("/v1/jobs", json=body), status, code)


def test_malformed_bodies(client, video_bytes):
    assert_error(
        client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}),
        400,
        "malformed_json",
    )
    assert_error(
        client.post("/v1/jobs", content=b"x", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_error(
        client.post(
            "/v1/jobs",
            content=b"--zz\r\nbroken",
            headers={"Content-Type": "multipart/form-data; boundary=zz"},
        ),
        400,
        "bad_multipart",
    )
    assert_error(upload(client, video_bytes, options="{nope"), 422, "invalid_request")
    assert_error(upload(client, video_bytes, seconds="ten"), 422, "invalid_request")
    both = upload(client, video_bytes, source_url="http://127.0.0.1:9/a.png")
    assert "exactly one" in assert_error(both, 422, "invalid_request")["detail"]
    assert not any((client.app.state.gateway.config.data_dir / "uploads").glob("*/*"))


def test_unusable_uploads_are_refused_with_a_reason(client, video_bytes):
    bad_image = client.post(
        "/v1/jobs",
        files={
            "source": ("me.png", b"\x89PNG\r\n\x1a\nbroken", "image/png"),
            "driving": ("v.mp4", video_bytes, "video/mp4"),
        },
    )
    assert problem_of(bad_image, 422)["code"] != "internal"
    bad_video = client.post(
        "/v1/jobs",
        files={
            "source": ("me.png", png_bytes(), "image/png"),
            "driving": ("v.mp4", b"\x00" * 1000, "video/mp4"),
        },
    )
    assert problem_of(bad_video, 422)["code"] != "internal"


def test_size_limits_give_413(make_client, video_bytes):
    client = make_client(max_image_bytes=1000, max_video_bytes=len(video_bytes) + 10)
    big = client.post(
        "/v1/jobs",
        files={
            "source": ("me.png", b"\x00" * 5000, "image/png"),
            "driving": ("v.mp4", video_bytes, "video/mp4"),
        },
    )
    assert "'source'" in assert_error(big, 413, "too_large")["detail"]
    huge = client.post(
        "/v1/jobs",
        content=b"x",
        headers={"Content-Type": "multipart/form-data; boundary=zz", "Content-Length": str(10**9)},
    )
    assert_error(huge, 413, "too_large")


def test_idempotency_key_returns_the_same_job(client, video_bytes):
    first = upload(client, video_bytes, headers={"Idempotency-Key": "order-42"})
    second = upload(client, video_bytes, headers={"Idempotency-Key": "order-42"})
    other = upload(client, video_bytes, headers={"Idempotency-Key": "order-43"})
    assert first.status_code == second.status_code == 202
    assert (
        second.json()["id"] == first.json()["id"]
        and second.headers["Idempotent-Replayed"] == "true"
    )
    assert other.json()["id"] != first.json()["id"]
    assert_error(
        upload(client, video_bytes, headers={"Idempotency-Key": "x" * 201}),
        400,
        "bad_idempotency_key",
    )


def test_pagination_walks_every_job_once(make_client):
    client = make_client(max_active_jobs=50)
    body = {"source_url": "http://127.0.0.1:9/a", "driving_url": "http://127.0.0.1:9/b"}
    created = [client.post("/v1/jobs", json=body).json()["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(created) and len(seen) == 5
    assert_error(client.get("/v1/jobs", params={"cursor": "garbage"}), 400, "bad_cursor")
    assert_error(client.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request")


def test_rate_limit_and_active_job_limit_answer_429(make_client):
    body = {"source_url": "http://127.0.0.1:9/a", "driving_url": "http://127.0.0.1:9/b"}
    client = make_client(rate_limit_jobs=2, max_active_jobs=10)
    assert [client.post("/v1/jobs", json=body).status_code for _ in range(2)] == [202, 202]
    limited = client.post("/v1/jobs", json=body)
    assert_error(limited, 429, "rate_limited")
    assert 3000 < int(limited.headers["Retry-After"]) <= 3601
    active = make_client(max_active_jobs=1)
    assert active.post("/v1/jobs", json=body).status_code == 202
    busy = active.post("/v1/jobs", json=body)
    assert_error(busy, 429, "too_many_active_jobs")
    assert int(busy.headers["Retry-After"]) > 0


def test_unknown_job_route_and_method(client):
    assert_error(client.get("/v1/jobs/0123"), 404, "not_found")
    assert_error(client.delete("/v1/jobs/0123"), 404, "not_found")
    assert_error(client.get("/v1/jobs/0123/result"), 404, "not_found")
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.put("/v1/jobs"), 405, "method_not_allowed")


def test_result_before_success_is_409_and_cancel_of_queued_job(client):
    body = {"source_url": "http://127.0.0.1:9/a", "driving_url": "http://127.0.0.1:9/b"}
    job = client.post("/v1/jobs", json=body).json()
    assert_error(client.get(f"/v1/jobs/{job['id']}/result"), 409, "not_ready")
    cancelled = client.delete(f"/v1/jobs/{job['id']}").json()
    assert cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "cancelled"


def test_a_job_shows_why_it_is_retrying_until_it_is_final(make_client):
    client = make_client(workers=0)  # the test claims through the real store itself
    store = client.app.state.gateway.store
    body = {"source_url": "http://127.0.0.1:9/a", "driving_url": "http://127.0.0.1:9/b"}
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    assert client.get(f"/v1/jobs/{job_id}").json()["retrying"] is None

    claimed = store.claim("w1", lease_s=60.0, max_attempts=3)
    assert claimed is not None and claimed.id == job_id
    running = client.get(f"/v1/jobs/{job_id}").json()
    assert running["status"] == "running" and running["retrying"] is None
    reason = {"code": "service_unavailable", "message": "The animator did not answer."}
    assert store.requeue(job_id, claimed.lease_token, **reason)

    queued = client.get(f"/v1/jobs/{job_id}").json()
    assert queued["status"] == "queued" and queued["error"] is None
    assert queued["retrying"] == reason

    again = store.claim("w2", lease_s=60.0, max_attempts=3)
    assert again is not None and again.id == job_id
    running = client.get(f"/v1/jobs/{job_id}").json()
    assert running["status"] == "running" and running["error"] is None
    assert running["retrying"] == reason

    final = {"code": "no_face", "message": "No face in the photo."}
    assert store.fail(job_id, again.lease_token, **final, timings={})
    failed = client.get(f"/v1/jobs/{job_id}").json()
    assert failed["status"] == "failed" and failed["retrying"] is None
    assert failed["error"] == final

    # A job that succeeds on a later try keeps the old code in its row but shows no reason.
    other = client.post("/v1/jobs", json=body).json()["id"]
    first = store.claim("w1", lease_s=60.0, max_attempts=3)
    assert first is not None and first.id == other
    assert store.requeue(other, first.lease_token, code="animator_busy", message="busy")
    listed = client.get("/v1/jobs").json()["jobs"]
    assert [j["retrying"] for j in listed if j["id"] == other] == [
        {"code": "animator_busy", "message": "busy"}
    ]
    second = store.claim("w1", lease_s=60.0, max_attempts=3)
    assert second is not None and second.id == other
    assert store.finish(
        other,
        second.lease_token,
        result_key="r.mp4",
        timings={},
        cache_hit=False,
        random_weights=True,
        frames=1,
    )
    assert store.get(other).error_code == "animator_busy"  # stale, and not shown
    done = client.get(f"/v1/jobs/{other}").json()
    assert done["status"] == "succeeded" and done["retrying"] is None and done["error"] is None


def test_openapi_health_and_metrics(client):
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/result",
    } <= set(spec["paths"])
    content = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert (
        {"JobCreate", "AnimationOptions", "JobView"} <= refs <= set(spec["components"]["schemas"])
    )
    schemas = spec["components"]["schemas"]
    assert "sequential" not in schemas["JobCreate"]["properties"]
    options = schemas["AnimationOptions"]
    assert options["additionalProperties"] is False
    assert list(options["properties"]) == [field.name for field in option_fields()]
    multiplier = options["properties"]["driving_multiplier"]
    assert (multiplier["exclusiveMinimum"], multiplier["maximum"]) == (0.0, 10.0)
    assert options["properties"]["region"]["enum"] == ["all", "exp", "pose", "lip", "eyes"]
    assert client.get("/healthz").json() == {"status": "ok"}
    text = client.get("/metrics").text
    for name in (
        "dynamics_stage_seconds",
        "dynamics_job_seconds",
        "dynamics_queue_wait_seconds",
        "dynamics_jobs_total",
        "dynamics_queue_depth",
        "dynamics_job_gpu_seconds",
        "dynamics_motion_cache_total",
    ):
        assert name in text


def _health_server(serving: bool) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in (FACE_DETECT_SERVICE, ANIMATOR_SERVICE, ENCODER_SERVICE):
        servicer.set(name, status)
    server.start()
    return server, port


class _DownStorage:
    """A result storage that fails every lookup (an outage)."""

    def exists(self, key: str) -> bool:
        raise StorageError("the bucket does not answer", transient=True)


def test_readyz_covers_the_database_and_storage_not_the_grpc_services(make_client):
    """A NOT_SERVING animator and services nobody listens for leave the replica ready: status
    reads and downloads must stay on the Ingress. A storage outage makes it not ready."""
    down, down_port = _health_server(False)
    try:
        client = make_client(
            face_detect_addr="127.0.0.1:1",
            animator_addr=f"127.0.0.1:{down_port}",
            encoder_addr="127.0.0.1:1",
        )
        answer = client.get("/readyz")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}
        client.app.state.gateway.storage = _DownStorage()
        answer = client.get("/readyz")
        assert_error(answer, 503, "dependencies_unavailable")  # a problem document
        assert answer.json()["detail"] == "not ready: storage unreachable"
        assert answer.headers["Retry-After"] == "5"
    finally:
        down.stop(0)


def test_database_outage_is_503_not_a_stack_trace(client):
    client.app.state.gateway.store.db.close()
    answer = client.get("/v1/jobs")
    assert_error(answer, 503, "database_unavailable")
    assert answer.headers["Retry-After"] == "5"


_URLS = {"source_url": "http://127.0.0.1:9/a", "driving_url": "http://127.0.0.1:9/b"}


@pytest.mark.parametrize(
    "raw, status, code",
    [
        (b"", 400, "malformed_json"),
        (b"\xff\xfe", 400, "malformed_json"),
        (b"null", 422, "invalid_request"),
        (b"[]", 422, "invalid_request"),
        (b"1", 422, "invalid_request"),
        (b'{"source_url": NaN}', 400, "malformed_json"),
        *[
            (json.dumps(_URLS | {key: value}).encode(), 422, "invalid_request")
            for key, value in [
                ("seconds", "inf"),
                ("seconds", "nan"),
                ("seconds", True),
                ("seconds", None),
                ("seconds", [1]),
                ("options", []),
                ("options", None),
                ("options", "x"),
                ("options", {"driving_multiplier": "nan"}),
                ("options", {"region": 1}),
                ("options", {"driving_multiplier": True}),
                ("options", {"driving_multiplier": "1.5"}),
                ("options", {"stitching": "false"}),
                ("options", {"crf": 20}),
                ("sequential", True),
                ("source_max_dim", 1.5),
                ("fcm_token", ""),
                ("source_url", "h" * 3000),
            ]
        ],
        (json.dumps(_URLS | {"source_url": "https://0x7f.1/a"}).encode(), 422, "url_refused"),
        (
            json.dumps(_URLS | {"driving_url": "http://[::ffff:10.0.0.1]/"}).encode(),
            422,
            "url_refused",
        ),
    ],
)
def test_bad_json_bodies_get_precise_4xx(client, raw, status, code):
    answer = client.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert_error(answer, status, code)


@pytest.mark.parametrize("query", ["limit=-1", "limit=abc", "cursor=" + "A" * 600, "status=bogus"])
def test_bad_list_parameters_are_422(client, query):
    assert_error(client.get("/v1/jobs?" + query), 422, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        (
            b'--b\r\nContent-Disposition: form-data; name="seconds"\r\n\r\n5\r\n'
            b'--b\r\nContent-Disposition: form-data; name="seconds"\r\n\r\n6\r\n--b--\r\n'
        ),
        b'--b\r\nContent-Disposition: form-data; name="source"; filename="x.png"\r\n\r\nabc',
        b"--b\r\nContent-Disposition: attachment\r\n\r\nx\r\n--b--\r\n",
    ],
)
def test_broken_multipart_is_400(client, body):
    answer = client.post(
        "/v1/jobs", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_error(answer, 400, "bad_multipart")
