"""Helpers for the gateway tests: an orchestrator stand-in, local HTTP endpoints, ID tokens,
small real media, and a gateway built the same way `__main__` builds it."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from PIL import Image

from services.gateway.config import GatewayConfig
from services.gateway.domain import JobFailed, JobResult, JobSpec, ProgressUpdate
from services.gateway.runtime import Gateway

PROJECT = "dynamics-test"


# ------------------------------------------------------------------ orchestrator stand-in --


@dataclass
class StandInOrchestrator:
    """Implements `Orchestrator.run` without the gRPC services: it walks the stages, reports
    per-frame progress, honours `cancel`, and writes the driving upload (a real MP4) as result.

    `failures` are raised on successive runs before any succeeds; `frame_s` paces frames.
    """

    frames: int = 6
    frame_s: float = 0.01
    failures: list[JobFailed] = field(default_factory=list)
    gate: threading.Event | None = None  # when set, runs wait on it before animating
    runs: list[tuple[str, float, float]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(
        self,
        spec: JobSpec,
        work_dir: Path,
        *,
        on_progress: Callable[[ProgressUpdate], None],
        cancel: threading.Event,
    ) -> JobResult:
        begin = time.monotonic()
        self.started.set()
        try:
            return self._run(spec, work_dir, on_progress, cancel)
        finally:
            with self._lock:
                self.runs.append((spec.job_id, begin, time.monotonic()))

    def _run(self, spec, work_dir, on_progress, cancel) -> JobResult:
        timings = {"fetch_trim": 0.01, "detect": 0.01, "motion": 0.01}
        on_progress(ProgressUpdate("detect", 0, self.frames, None, dict(timings)))
        with self._lock:
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        if self.gate is not None:
            while not self.gate.wait(0.02):
                if cancel.is_set():
                    break
        for done in range(1, self.frames + 1):
            if cancel.is_set():
                self.cancelled.append(spec.job_id)
                raise JobFailed("cancelled", "The job was cancelled.")
            time.sleep(self.frame_s)
            eta = (self.frames - done) * self.frame_s
            on_progress(ProgressUpdate("animate", done, self.frames, eta, dict(timings)))
        timings.update(animate=self.frames * self.frame_s, encode=0.01, gpu_seconds=0.02)
        out = work_dir / "result.mp4"
        if spec.driving.path is not None:
            shutil.copyfile(spec.driving.path, out)
        else:
            out.write_bytes(b"result of " + spec.job_id.encode())
        return JobResult(out, timings, cache_hit=False, frames=self.frames, random_weights=True)


# ------------------------------------------------------------------------ local endpoints --


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class LocalEndpoint:
    """A loopback HTTP server that records requests and answers from a script.

    `replies` is consumed one per request: (status, JSON body); the last entry repeats.
    """

    def __init__(
        self,
        replies: list[tuple[int, object]] | None = None,
        static: dict[str, bytes] | None = None,
    ) -> None:
        self.requests: list[Recorded] = []
        self.replies = list(replies or [(200, {"ok": True})])
        self.static = static or {}
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                return

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                endpoint.requests.append(
                    Recorded(self.command, self.path, dict(self.headers), body)
                )
                if self.path in endpoint.static:
                    status, payload = 200, endpoint.static[self.path]
                else:
                    reply = (
                        endpoint.replies.pop(0)
                        if len(endpoint.replies) > 1
                        else endpoint.replies[0]
                    )
                    status, payload = reply[0], json.dumps(reply[1]).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- ID tokens --


class TokenFactory:
    """Signs Firebase-shaped RS256 ID tokens with a test key; `certs` is what Google would serve."""

    def __init__(self, project: str = PROJECT, kid: str = "test-key-1") -> None:
        self.project, self.kid = project, kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "securetoken test")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.certs = {kid: cert.public_bytes(serialization.Encoding.PEM).decode()}

    def token(
        self, uid: str, *, audience: str | None = None, expires_in: int = 3600, issued_ago: int = 10
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": f"https://securetoken.google.com/{self.project}",
            "aud": audience or self.project,
            "sub": uid,
            "user_id": uid,
            "iat": now - issued_ago,
            "auth_time": now - issued_ago,
            "exp": now + expires_in,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


# ------------------------------------------------------------------------------- media --


def png_bytes(size: tuple[int, int] = (96, 80)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_video(path: Path, seconds: float = 0.4) -> Path:
    """A tiny H.264 + AAC MP4 made by FFmpeg from its test sources."""
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size=64x48:rate=10:duration={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


# ------------------------------------------------------------------------------ gateway --


# A Standard Webhooks secret (32 bytes of 0x2a) so that jobs in tests may name a webhook_url.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"*" * 32).decode()


def gateway_config(tmp_path: Path, **overrides) -> GatewayConfig:
    """Local-mode defaults tuned for fast tests."""
    base = GatewayConfig(
        port=0,
        data_dir=tmp_path / "gateway",
        auth_mode="none",
        workers=1,
        job_lease_s=5.0,
        heartbeat_s=0.1,
        poll_s=0.05,
        sse_poll_s=0.05,
        public_url="http://testserver",
        allow_http_urls=True,
        fetch_trusted_networks=("127.0.0.0/8",),
        webhook_allow_private=True,
        webhook_secret=WEBHOOK_SECRET,
        retry_base_s=0.0,
    )
    return replace(base, **overrides)


def build_gateway(tmp_path: Path, orchestrator=None, **overrides) -> Gateway:
    return Gateway.build(gateway_config(tmp_path, **overrides), orchestrator, drain_s=2.0)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, every: float = 0.02):
    """Poll until `predicate()` is truthy; returns its value or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("condition not reached in time")
