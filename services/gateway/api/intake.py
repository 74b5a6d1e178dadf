"""Turning a `POST /v1/jobs` request into a validated job spec (JSON or streamed multipart)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from services.common.errors import InvalidInputError
from services.common.media import check_image
from services.gateway.api.errors import ApiError
from services.gateway.api.schemas import JobCreate
from services.gateway.api.uploads import parse_multipart
from services.gateway.config import MIB, GatewayConfig
from services.gateway.delivery.webhook import WebhookTarget
from services.gateway.net.fetch import FetchError, MediaFetcher
from services.gateway.net.strict_input import (
    MediaType,
    StrictInputError,
    load_json,
    parse_media_type,
    parse_uint,
)
from services.gateway.pipeline.media import MediaLimits, probe_video

logger = logging.getLogger(__name__)

MAX_JSON_BYTES = MIB
_TEXT_FIELDS = set(JobCreate.model_fields)
# RFC 2046 boundary: 1-70 of these characters, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


@dataclass
class Intake:
    """A request that passed validation: what to store for the job."""

    spec: dict[str, Any]
    notify: dict[str, Any]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def request_fingerprint(intake: Intake) -> str:
    """sha256 of the canonical request: the validated job (defaults filled in, numbers as
    numbers, so JSON and multipart spellings of one job agree) with each upload replaced by
    its content hash, and the notification targets. Stored with an idempotency key, it tells
    a retry (same fingerprint) from a different request under a reused key."""
    spec = dict(intake.spec)
    for name in ("source", "driving"):
        entry = spec.get(name) or {}
        if entry.get("path"):
            spec[name] = {"sha256": _file_sha256(Path(entry["path"]))}
        else:
            spec[name] = {"url": entry.get("url")}
    canonical = json.dumps(
        {"job": spec, "notify": intake.notify},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def validation_message(exc: ValidationError) -> str:
    """One readable sentence from pydantic's first error."""
    first = exc.errors()[0]
    # Keys come from the client: each is cut short, so a 60 KB key is not echoed back whole.
    where = ".".join(str(p)[:64] for p in first.get("loc", ()) if p != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid value')}"


async def _read_json(request: Request) -> JobCreate:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise ApiError(
                413, "too_large", f"a JSON job body is limited to {MAX_JSON_BYTES} bytes"
            )
    try:
        data = load_json(bytes(body))
    except StrictInputError as exc:
        raise ApiError(400, exc.code, f"the body is not usable JSON: {exc.message}") from None
    try:
        return JobCreate.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", validation_message(exc)) from None


def _form_to_model(fields: dict[str, str]) -> JobCreate:
    data: dict[str, Any] = dict(fields)
    if "options" in data:
        try:
            data["options"] = load_json(data["options"])
        except StrictInputError as exc:
            raise ApiError(422, "invalid_request", f"options: {exc.message}") from None
    try:
        return JobCreate.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid_request", validation_message(exc)) from None


def _media_entry(name: str, url: str | None, path: Path | None) -> dict[str, str | None]:
    if (url is None) == (path is None):
        raise ApiError(
            422,
            "invalid_request",
            f"send exactly one of the file '{name}' or '{name}_url'",
        )
    return {"path": str(path) if path else None, "url": url}


def _content_type(request: Request) -> MediaType:
    raw = request.headers.get("content-type", "")
    if not raw.strip():
        raise ApiError(
            415,
            "unsupported_media_type",
            "send application/json (URLs) or multipart/form-data (uploads)",
        )
    try:
        return parse_media_type(raw)
    except StrictInputError as exc:
        raise ApiError(400, "malformed_content_type", exc.message) from None


def _boundary(media: MediaType) -> str:
    boundary = media.params.get("boundary", "")
    if not _BOUNDARY.fullmatch(boundary):
        raise ApiError(
            400, "bad_multipart", "multipart/form-data needs a boundary of 1-70 RFC 2046 characters"
        )
    return boundary


class JobIntake:
    """Validates job requests against the gateway's limits."""

    def __init__(self, config: GatewayConfig, fetcher: MediaFetcher) -> None:
        self.config = config
        self.fetcher = fetcher
        self.webhooks = WebhookTarget(
            allow_private=config.webhook_allow_private, allow_http=config.allow_http_urls
        )

    async def read(self, request: Request, upload_dir: Path) -> Intake:
        """Parse and validate the body; uploaded files end up in `upload_dir`."""
        media = _content_type(request)
        self._check_length(request)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise ApiError(
                415, "unsupported_content_encoding", "send the body without a Content-Encoding"
            )
        paths: dict[str, Path] = {}
        if media.essence == "application/json":
            if media.params.get("charset", "utf-8").lower() != "utf-8":
                raise ApiError(415, "unsupported_media_type", "JSON bodies must be UTF-8")
            job = await _read_json(request)
        elif media.essence == "multipart/form-data":
            form = await parse_multipart(
                f'multipart/form-data; boundary="{_boundary(media)}"',
                request.stream(),
                upload_dir,
                {"source": self.config.max_image_bytes, "driving": self.config.max_video_bytes},
                _TEXT_FIELDS,
            )
            job, paths = _form_to_model(form.fields), form.files
        else:
            raise ApiError(
                415,
                "unsupported_media_type",
                "send application/json (URLs) or multipart/form-data (uploads)",
            )
        spec = {
            "source": _media_entry("source", job.source_url, paths.get("source")),
            "driving": _media_entry("driving", job.driving_url, paths.get("driving")),
            "seconds": job.seconds,
            "source_max_dim": job.source_max_dim,
            "options": job.options.model_dump(mode="json"),
        }
        self._check_limits(job)
        await self._check_media(job, paths)
        notify: dict[str, Any] = {"fcm_token": job.fcm_token, "webhook_url": job.webhook_url}
        if job.webhook_url is not None and job.webhook_progress:
            notify["webhook_progress"] = True
        return Intake(spec=spec, notify=notify)

    def _check_length(self, request: Request) -> None:
        declared = request.headers.get("content-length")
        limit = self.config.max_image_bytes + self.config.max_video_bytes + MIB
        if declared is not None:
            try:
                length = parse_uint(declared, max_digits=20, what="Content-Length")
            except StrictInputError as exc:
                raise ApiError(400, "bad_content_length", exc.message) from None
            if length > limit:
                raise ApiError(413, "too_large", f"the request body is larger than {limit} bytes")

    def _check_limits(self, job: JobCreate) -> None:
        if job.seconds > self.config.max_seconds:
            raise ApiError(
                422,
                "invalid_request",
                f"seconds: at most {self.config.max_seconds:g} seconds can be rendered",
            )
        if job.source_max_dim > self.config.max_source_dim:
            raise ApiError(
                422, "invalid_request", f"source_max_dim: at most {self.config.max_source_dim}"
            )

    async def _check_media(self, job: JobCreate, paths: dict[str, Path]) -> None:
        """Refuse bad URLs and unusable uploads now, with a precise reason, not at run time."""
        try:
            for url in (job.source_url, job.driving_url):
                if url is not None:
                    await run_in_threadpool(self.fetcher.check_url, url)
        except FetchError as exc:
            raise ApiError(422, exc.reason, exc.message) from None
        if job.webhook_url is not None:
            try:
                await run_in_threadpool(self.webhooks.check, job.webhook_url)
            except ValueError as exc:
                raise ApiError(422, "invalid_webhook_url", str(exc)) from None
            if not self.config.webhook_secret:
                # Webhooks are only ever sent signed; without a secret there are none.
                raise ApiError(
                    422,
                    "webhooks_disabled",
                    "webhook_url: this gateway sends no webhooks (no WEBHOOK_SECRET is "
                    "configured); leave webhook_url out or ask the operator to set one",
                )
        try:
            if "source" in paths:
                await run_in_threadpool(self._check_image, paths["source"])
            if "driving" in paths:
                limits = MediaLimits(max_bytes=self.config.max_video_bytes)
                await run_in_threadpool(probe_video, paths["driving"], limits)
        except InvalidInputError as exc:
            raise ApiError(422, exc.reason, exc.message) from None

    def _check_image(self, path: Path) -> None:
        check_image(path)
