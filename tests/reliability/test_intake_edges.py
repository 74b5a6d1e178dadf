"""Intake edges that need to see the gateway's data folder and log: a client that vanishes
mid-upload (over real sockets), and byte ranges and signed links on a real stored result.

Runs its own intake-only gateway subprocess (no workers) so the test knows where uploads are
spooled and where results live.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.reliability.conftest import start_gateway
from tests.reliability.raw_http import KeepAliveConnection
from tests.service_process import ServiceProcess
from tests.unit.gateway.problem_shape import raw_problem_of

URLS = {"source_url": "https://93.184.216.34/a.png", "driving_url": "https://93.184.216.34/b.mp4"}
RESULT = bytes(range(256)) * 4  # 1024 bytes


@pytest.fixture(scope="module")
def edge_gateway(tmp_path_factory) -> Iterator[tuple[ServiceProcess, str, Path]]:
    data = tmp_path_factory.mktemp("edge-gateway")
    gateway, base = start_gateway(
        data,
        {
            "GATEWAY_WORKERS": "0",
            "RATE_LIMIT_JOBS": "100000",
            "MAX_ACTIVE_JOBS": "100000",
            "MAX_IMAGE_BYTES": str(2 * 1024 * 1024),
            "MAX_VIDEO_BYTES": str(8 * 1024 * 1024),
            "RESULT_URL_SECRET": "edge-secret",
        },
    )
    try:
        yield gateway, base, data
    finally:
        try:
            gateway.terminate(30)
        finally:
            gateway.kill()


def _spooled(data: Path) -> list[Path]:
    return [p for p in (data / "uploads").rglob("*") if p.is_file()]


def _wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _log_entries(lines: list[str]) -> list[dict]:
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            entries.append({"severity": "RAW", "message": line})
    return entries


MULTIPART_HEAD = (
    b'--b\r\nContent-Disposition: form-data; name="source_url"\r\n\r\n'
    b"https://93.184.216.34/a.png\r\n"
    b'--b\r\nContent-Disposition: form-data; name="driving"; filename="v.mp4"\r\n'
    b"Content-Type: video/mp4\r\n\r\n"
)


@pytest.mark.parametrize("close", ["fin", "rst"])
@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_client_gone_mid_upload_is_one_info_line_and_nothing_stays_spooled(
    edge_gateway, kind: str, close: str
) -> None:
    gateway, base, data = edge_gateway
    before = set(_spooled(data))
    first_line = len(gateway.lines)
    port = int(base.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if kind == "multipart":
        content_type, body = b"multipart/form-data; boundary=b", MULTIPART_HEAD + b"\0" * 300_000
    else:
        content_type, body = b"application/json", json.dumps(URLS).encode()[:-1] + b', "x": "'
    sock.sendall(
        b"POST /v1/jobs HTTP/1.1\r\nHost: g\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: 4000000\r\n\r\n"
        + body
    )
    if kind == "multipart":  # the upload really is being written to disk when the client goes
        assert _wait_for(lambda: any(p.stat().st_size > 0 for p in set(_spooled(data)) - before))
    else:
        time.sleep(0.5)
    if close == "rst":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()

    def gone_logged() -> bool:
        return any(
            "disconnected" in e.get("message", "") for e in _log_entries(gateway.lines[first_line:])
        )

    assert _wait_for(gone_logged), gateway.lines[first_line:]
    entries = _log_entries(gateway.lines[first_line:])
    gone = [e for e in entries if "disconnected" in e.get("message", "")]
    assert len(gone) == 1 and gone[0]["severity"] in ("INFO", "WARNING"), gone
    assert not [e for e in entries if e["severity"] not in ("INFO", "DEBUG", "WARNING")], entries
    assert not [e for e in entries if "exception" in e or "Traceback" in e.get("message", "")]
    assert set(_spooled(data)) - before == set()
    # The gateway serves the next client normally.
    with KeepAliveConnection(base) as conn:
        assert conn.alive()


@pytest.fixture(scope="module")
def stored_result(edge_gateway) -> tuple[str, str]:
    """A job marked succeeded in the gateway's database with a 1024-byte result file; returns
    (job id, its signed result URL's path and query)."""
    _, base, data = edge_gateway
    with KeepAliveConnection(base) as conn:
        created = conn.request(
            "POST", "/v1/jobs", [("Content-Type", "application/json")], json.dumps(URLS).encode()
        )
        assert created.status == 202, created.body
        job_id = json.loads(created.body)["id"]
        stored = data / "results" / "results" / f"{job_id}.mp4"  # local storage root + key
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(RESULT)
        with sqlite3.connect(data / "jobs.sqlite3") as db:
            db.execute(
                "UPDATE jobs SET status = 'succeeded', stage = 'done', result_key = ? WHERE id = ?",
                (f"results/{job_id}.mp4", job_id),
            )
        view = json.loads(conn.request("GET", f"/v1/jobs/{job_id}").body)
    assert view["status"] == "succeeded" and view["result_url"], view
    url = urlsplit(view["result_url"])
    return job_id, f"{url.path}?{url.query}"


RANGES = [
    ("bytes=0-9", 206, None),
    ("bytes=-10", 206, None),
    ("bytes=1000-", 206, None),
    ("BYTES = 0-0", 206, None),
    ("bytes=0-1, 4-5", 206, None),
    ("bytes=\u00b2-5", 400, "bad_range"),
    ("bytes=\uff11-\uff15", 400, "bad_range"),
    ("bytes=1_0-2_0", 400, "bad_range"),
    ("bytes=+1-5", 400, "bad_range"),
    ("bytes=0x1-5", 400, "bad_range"),
    ("bytes=5-2", 400, "bad_range"),
    ("bytes=" + "9" * 40 + "-", 400, "bad_range"),
    ("bytes=", 400, "bad_range"),
    ("bytes=-", 400, "bad_range"),
    ("items=0-5", 400, "bad_range"),
    ("bytes=" + ",".join(["0-1"] * 100), 400, "bad_range"),
    ("bytes=5000-", 416, "range_not_satisfiable"),
    ("bytes=-0", 416, "range_not_satisfiable"),
]


@pytest.mark.parametrize(("value", "status", "code"), RANGES, ids=[r[0][:24] for r in RANGES])
def test_range_on_a_stored_result(edge_gateway, stored_result, value, status, code) -> None:
    job_id, _ = stored_result
    with KeepAliveConnection(edge_gateway[1]) as conn:
        response = conn.request(
            "GET", f"/v1/jobs/{job_id}/result", [("Range", value.encode("utf-8"))]
        )
        assert response.status == status, (response.headers, response.body[:200])
        if code is not None:
            raw_problem_of(response, status, code)
        if status == 416:
            assert response.headers["content-range"] == f"bytes */{len(RESULT)}"
        if value == "bytes=0-9":
            assert response.body == RESULT[:10]
        if value == "bytes=-10":
            assert response.body == RESULT[-10:]
        assert conn.alive()


def test_signed_link_and_its_forgeries(edge_gateway, stored_result) -> None:
    job_id, link = stored_result
    query = parse_qs(urlsplit(link).query)
    expires, sig = query["expires"][0], query["sig"][0]
    path = f"/v1/jobs/{job_id}/result"
    forged = [
        f"?expires={expires}&sig={sig.upper()}",
        f"?expires={expires}&sig={sig[:-1]}%C3%A9",
        f"?expires=0{expires}&sig={sig}",
        f"?expires=%EF%BC%91{expires[1:]}&sig={sig}",
        f"?expires={expires}%00&sig={sig}",
        f"?expires={expires}&sig={sig}%00",
        f"?expires={int(expires) + 3600}&sig={sig}",
        f"?expires=\u00b2&sig={sig}",
    ]
    with KeepAliveConnection(edge_gateway[1]) as conn:
        good = conn.request("GET", link)
        assert good.status == 200 and good.body == RESULT
        for query_string in forged:
            response = conn.request("GET", path + query_string.replace("\u00b2", "%C2%B2"))
            assert response.status == 403, (query_string, response.body)
            problem = raw_problem_of(response, 403, "invalid_link")
            assert "sig" not in problem.get("instance", ""), problem
        assert conn.alive()
