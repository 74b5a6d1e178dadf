"""Gateway settings from the environment, read once into a frozen dataclass."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.config import (
    ConfigError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_optional,
    env_port,
    env_str,
)
from services.common.grpc_server import MAX_MESSAGE_BYTES

MIB = 1024 * 1024
# The photo reaches face_detect in one DetectSource message: keep it well under the gRPC limit.
MAX_PHOTO_BYTES = MAX_MESSAGE_BYTES - MIB


def _networks(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of CIDRs (validated), e.g. `10.0.0.0/8,127.0.0.1/32`."""
    raw = env_optional(environ, name) or ""
    networks = tuple(part.strip() for part in raw.split(",") if part.strip())
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(name, raw, "comma-separated CIDR networks") from None
    return networks


def _optional_path(environ: Mapping[str, str], name: str) -> Path | None:
    raw = env_optional(environ, name)
    return Path(raw).expanduser() if raw else None


WEBHOOK_SECRET_PREFIX = "whsec_"


def webhook_secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret, `whsec_<base64 of 24-64 bytes>`; ValueError
    for anything else. The message never repeats the secret, so it is safe to log."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {WEBHOOK_SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after 'whsec_' must be standard base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the key must be 24-64 bytes, got {len(key)}")
    return key


def _webhook_secret(environ: Mapping[str, str]) -> str | None:
    """`WEBHOOK_SECRET`, checked by `webhook_secret_key`."""
    raw = env_optional(environ, "WEBHOOK_SECRET")
    if raw is not None:
        try:
            webhook_secret_key(raw)
        except ValueError as exc:  # the value itself is never echoed
            raise ConfigError("WEBHOOK_SECRET", "<redacted>", f"whsec_<base64>: {exc}") from None
    return raw


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway process needs; built by `from_env` in `__main__`."""

    port: int = 8080
    data_dir: Path = Path("gateway-data")
    database_url: str = ""
    auth_mode: str = "firebase"  # firebase | none
    firebase_project_id: str | None = None
    firebase_credentials: str = "default"  # default (ADC) | anonymous | path to a key file
    firebase_cert_url: str | None = None  # overrides Google's ID-token certificate URL (tests)
    auth_emulator_host: str | None = None  # firebase-admin then accepts unsigned tokens
    fcm_endpoint: str | None = None  # overrides the FCM v1 send URL (tests)
    storage_backend: str = "local"  # local | firebase
    storage_bucket: str | None = None
    storage_emulator_host: str | None = None
    public_url: str = "http://localhost:8080"
    workers: int = 3  # job slots of this replica (docs/gateway.md, "Job slots")
    drain_s: float = 120.0  # SIGTERM: running jobs get this long to finish, then are requeued
    job_lease_s: float = 60.0
    heartbeat_s: float = 0.0  # 0: a third of the lease
    poll_s: float = 1.0
    max_attempts: int = 3
    retry_base_s: float = 5.0
    max_queue_s: float = 1800.0
    max_image_bytes: int = 20 * MIB
    max_video_bytes: int = 200 * MIB
    max_seconds: float = 10.0
    max_source_dim: int = 4096
    allow_http_urls: bool = False
    fetch_trusted_networks: tuple[str, ...] = ()
    fetch_timeout_s: float = 60.0
    rate_limit_jobs: int = 60
    rate_limit_window_s: float = 3600.0
    max_active_jobs: int = 4
    webhook_secret: str | None = None
    result_url_secret: str | None = None  # shared by all replicas; random per process if unset
    result_url_ttl_s: float = 86400.0
    webhook_allow_private: bool = False
    webhook_attempts: int = 4
    webhook_progress_s: float = 2.0  # least time between two progress webhooks of one job
    face_detect_addr: str = "localhost:50051"
    animator_addr: str = "localhost:50052"
    encoder_addr: str = "localhost:50053"
    motion_cache_backend: str = "folder"  # folder (per replica) | storage (shared, result storage)
    motion_cache_dir: Path | None = None  # None: <data_dir>/motion-cache
    sse_poll_s: float = 0.5  # SQLite: how often the one shared poller reads watched jobs
    sse_heartbeat_s: float = 15.0  # SSE comment line after this long without an event
    sse_resync_s: float = 30.0  # PostgreSQL: re-read watched jobs this often besides NOTIFY
    input_ttl_s: float = 0.0  # 0: inputs are deleted when the job ends
    result_ttl_s: float = 7 * 86400.0
    job_ttl_s: float = 30 * 86400.0
    sweep_every_s: float = 300.0  # 0: no retention sweeper in this process
    motion_cache_max_bytes: int = 2 * 1024 * MIB
    web_ui: bool = False  # GATEWAY_WEB_UI: serve the try-it page at /
    log_level: str = "INFO"

    @property
    def lease_heartbeat_s(self) -> float:
        """Seconds between lease renewals (and cancel-flag checks) of a running job."""
        return self.heartbeat_s if self.heartbeat_s > 0 else max(0.2, self.job_lease_s / 3.0)

    def upload_dir(self, job_id: str) -> Path:
        """Where a job's uploaded photo and video are kept until the job is final."""
        return self.data_dir / "uploads" / job_id

    @property
    def motion_cache_root(self) -> Path:
        return self.motion_cache_dir or self.data_dir / "motion-cache"

    @property
    def sqlite_default_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'jobs.sqlite3').as_posix()}"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or self.sqlite_default_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> GatewayConfig:
        """Build the config; raises `ConfigError` naming the bad variable."""
        auth_mode = env_choice(environ, "GATEWAY_AUTH_MODE", ("firebase", "none"), "firebase")
        storage_backend = env_choice(environ, "STORAGE_BACKEND", ("local", "firebase"), "local")
        project_id = env_optional(environ, "FIREBASE_PROJECT_ID")
        bucket = env_optional(environ, "STORAGE_BUCKET")
        if auth_mode == "firebase" and not project_id:
            raise ConfigError(
                "FIREBASE_PROJECT_ID", None, "a project id when GATEWAY_AUTH_MODE=firebase"
            )
        if storage_backend == "firebase" and not bucket:
            raise ConfigError("STORAGE_BUCKET", None, "a bucket name when STORAGE_BACKEND=firebase")
        port = env_port(environ, "GATEWAY_PORT", 8080)
        database_url = env_str(environ, "DATABASE_URL", "")
        if database_url and not database_url.startswith(
            ("sqlite:///", "postgresql://", "postgres://")
        ):
            raise ConfigError("DATABASE_URL", database_url, "sqlite:///PATH or postgresql://...")
        return cls(
            port=port,
            data_dir=Path(env_str(environ, "GATEWAY_DATA_DIR", "gateway-data")).expanduser(),
            database_url=database_url,
            auth_mode=auth_mode,
            firebase_project_id=project_id,
            firebase_credentials=env_str(environ, "FIREBASE_CREDENTIALS", "default"),
            firebase_cert_url=env_optional(environ, "FIREBASE_CERT_URL"),
            auth_emulator_host=env_optional(environ, "FIREBASE_AUTH_EMULATOR_HOST"),
            fcm_endpoint=env_optional(environ, "FCM_ENDPOINT"),
            storage_backend=storage_backend,
            storage_bucket=bucket,
            storage_emulator_host=env_optional(environ, "STORAGE_EMULATOR_HOST"),
            public_url=env_str(environ, "GATEWAY_PUBLIC_URL", f"http://localhost:{port}").rstrip(
                "/"
            ),
            workers=env_int(environ, "GATEWAY_WORKERS", 3, minimum=0, maximum=64),
            drain_s=env_float(environ, "GATEWAY_DRAIN_S", 120.0, minimum=0.0, maximum=86400.0),
            job_lease_s=env_float(environ, "JOB_LEASE_S", 60.0, minimum=1.0),
            heartbeat_s=env_float(environ, "JOB_HEARTBEAT_S", 0.0, minimum=0.0),
            poll_s=env_float(environ, "JOB_POLL_S", 1.0, minimum=0.01),
            max_attempts=env_int(environ, "JOB_MAX_ATTEMPTS", 3, minimum=1),
            retry_base_s=env_float(environ, "JOB_RETRY_BASE_S", 5.0, minimum=0.0),
            max_queue_s=env_float(environ, "JOB_MAX_QUEUE_S", 1800.0, minimum=1.0),
            max_image_bytes=env_int(
                environ, "MAX_IMAGE_BYTES", 20 * MIB, minimum=1, maximum=MAX_PHOTO_BYTES
            ),
            max_video_bytes=env_int(environ, "MAX_VIDEO_BYTES", 200 * MIB, minimum=1),
            max_seconds=env_float(environ, "MAX_SECONDS", 10.0, minimum=1.0),
            max_source_dim=env_int(environ, "MAX_SOURCE_DIM", 4096, minimum=64),
            allow_http_urls=env_bool(environ, "ALLOW_HTTP_URLS", False),
            fetch_trusted_networks=_networks(environ, "FETCH_TRUSTED_NETWORKS"),
            fetch_timeout_s=env_float(environ, "FETCH_TIMEOUT_S", 60.0, minimum=1.0),
            rate_limit_jobs=env_int(environ, "RATE_LIMIT_JOBS", 60, minimum=1),
            rate_limit_window_s=env_float(environ, "RATE_LIMIT_WINDOW_S", 3600.0, minimum=1.0),
            max_active_jobs=env_int(environ, "MAX_ACTIVE_JOBS", 4, minimum=1),
            webhook_secret=_webhook_secret(environ),
            result_url_secret=env_optional(environ, "RESULT_URL_SECRET"),
            result_url_ttl_s=env_float(environ, "RESULT_URL_TTL_S", 86400.0, minimum=60.0),
            webhook_allow_private=env_bool(environ, "WEBHOOK_ALLOW_PRIVATE", False),
            webhook_attempts=env_int(environ, "WEBHOOK_ATTEMPTS", 4, minimum=1, maximum=10),
            webhook_progress_s=env_float(environ, "WEBHOOK_PROGRESS_S", 2.0, minimum=0.0),
            face_detect_addr=env_str(environ, "FACE_DETECT_ADDR", "localhost:50051"),
            animator_addr=env_str(environ, "ANIMATOR_ADDR", "localhost:50052"),
            encoder_addr=env_str(environ, "ENCODER_ADDR", "localhost:50053"),
            motion_cache_backend=env_choice(
                environ, "MOTION_CACHE_BACKEND", ("folder", "storage"), "folder"
            ),
            motion_cache_dir=_optional_path(environ, "MOTION_CACHE_DIR"),
            sse_poll_s=env_float(environ, "SSE_POLL_S", 0.5, minimum=0.05),
            sse_heartbeat_s=env_float(environ, "SSE_HEARTBEAT_S", 15.0, minimum=0.1),
            sse_resync_s=env_float(environ, "SSE_RESYNC_S", 30.0, minimum=1.0),
            input_ttl_s=env_float(environ, "INPUT_TTL_S", 0.0, minimum=0.0),
            result_ttl_s=env_float(environ, "RESULT_TTL_S", 7 * 86400.0, minimum=60.0),
            job_ttl_s=env_float(environ, "JOB_TTL_S", 30 * 86400.0, minimum=60.0),
            sweep_every_s=env_float(environ, "SWEEP_EVERY_S", 300.0, minimum=0.0),
            motion_cache_max_bytes=env_int(
                environ, "MOTION_CACHE_MAX_BYTES", 2 * 1024 * MIB, minimum=MIB
            ),
            web_ui=env_bool(environ, "GATEWAY_WEB_UI", False),
            log_level=env_choice(
                environ, "LOG_LEVEL", ("debug", "info", "warning", "error"), "info"
            ).upper(),
        )
