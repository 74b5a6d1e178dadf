"""Image formats outside the allow-list, against a real face_detect and a real gateway.

Pillow can open about forty formats; uploads may only be JPEG, PNG, WebP, GIF, BMP or TIFF
(`services.common.media.ALLOWED_FORMATS`). Each file below is a valid image that Pillow would
decode, and each is refused as `bad_image` without being decoded. EPS matters most: decoding it
runs Ghostscript. Both processes get a `gs` on their PATH that leaves a mark when it is run;
no request may run it.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from dynamics.v1 import common_pb2, face_detect_pb2, face_detect_pb2_grpc
from PIL import Image

from services.common.errors import REASON_METADATA_KEY
from services.common.grpc_client import make_channel
from tests.reliability.conftest import (
    SERVICE_ENVS,
    assert_rest_error,
    healthy,
    needs_ffmpeg,
    start_gateway,
)
from tests.reliability.image_corpus import face_image
from tests.service_process import ServiceProcess, start_service


def _save(img: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def _cases() -> dict[str, bytes]:
    face = face_image(112).convert("RGB")
    bits = face.convert("1")
    cases = {
        fmt.lower(): _save(face, fmt)
        for fmt in (
            "EPS",
            "ICO",
            "PCX",
            "TGA",
            "SGI",
            "PPM",
            "DDS",
            "IM",
            "QOI",
            "JPEG2000",
            "ICNS",
        )
    }
    cases["xbm"] = _save(bits, "XBM")
    cases["msp"] = _save(bits, "MSP")
    cases["spider"] = _save(face.convert("F"), "SPIDER")
    for name, data in cases.items():  # each one is an image Pillow itself would open
        assert min(Image.open(io.BytesIO(data)).size) >= 16, name
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def ghostscript_mark(tmp_path_factory) -> tuple[dict[str, str], Path]:
    """PATH with a `gs` that touches a file when run, and that file's path."""
    folder = tmp_path_factory.mktemp("fake-gs")
    mark = folder / "gs-was-run"
    gs = folder / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {mark}\nexit 1\n")
    gs.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}, mark


@pytest.fixture(scope="module")
def face_detect(ghostscript_mark) -> Iterator[face_detect_pb2_grpc.FaceDetectServiceStub]:
    env, _mark = ghostscript_mark
    service: ServiceProcess = start_service("face_detect", {**SERVICE_ENVS["face_detect"], **env})
    channel = make_channel(service.target)
    try:
        deadline = time.monotonic() + 120
        while healthy(service, "face_detect") != "SERVING":
            assert time.monotonic() < deadline, "face_detect never became SERVING"
            time.sleep(0.2)
        yield face_detect_pb2_grpc.FaceDetectServiceStub(channel)
    finally:
        channel.close()
        try:
            service.terminate(30)
        finally:
            service.kill()


@pytest.fixture(scope="module")
def gateway(ghostscript_mark, tmp_path_factory) -> Iterator[httpx.Client]:
    env, _mark = ghostscript_mark
    process, base = start_gateway(
        tmp_path_factory.mktemp("allow-list-gateway"),
        {
            **env,
            "GATEWAY_WORKERS": "0",
            "MAX_ACTIVE_JOBS": "100000",
            "RATE_LIMIT_JOBS": "100000",
            "MAX_SECONDS": "10",
        },
    )
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client
    finally:
        try:
            process.terminate(30)
        finally:
            process.kill()


@pytest.mark.parametrize("name", sorted(CASES))
def test_face_detect_refuses_formats_off_the_list(name: str, face_detect, ghostscript_mark):
    request = face_detect_pb2.DetectSourceRequest(
        image=common_pb2.Image(encoded=common_pb2.EncodedImage(data=CASES[name]))
    )
    with pytest.raises(grpc.RpcError) as info:
        face_detect.DetectSource(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    reason = dict(info.value.trailing_metadata() or ()).get(REASON_METADATA_KEY)
    assert reason == "bad_image", info.value.details()
    assert not ghostscript_mark[1].exists(), "Ghostscript was run"


@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(CASES))
def test_gateway_refuses_formats_off_the_list(name: str, gateway, hero_bytes, ghostscript_mark):
    files = {
        "source": (f"photo.{name}", CASES[name], "application/octet-stream"),
        "driving": ("hero.mp4", hero_bytes, "video/mp4"),
    }
    assert_rest_error(gateway.post("/v1/jobs", files=files), 422, "bad_image")
    assert not ghostscript_mark[1].exists(), "Ghostscript was run"
