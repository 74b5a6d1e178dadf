"""A 12 Mpx phone photo (4032x3024) at source_max_dim=4096, through real face_detect, animator
and encoder subprocesses and the gateway's orchestrator.

Its canvas is 36.6 MB of RGB, more than one gRPC message may carry (32 MiB). No message may
carry it: face_detect answers with the canvas's size and the encoder rebuilds it from the photo
file, which it receives in chunks. A photo over a limit fails at once with its reason, never as
a capacity wait that requeues the job.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from dynamics.v1 import common_pb2, face_detect_pb2, face_detect_pb2_grpc
from PIL import Image

from services.cli.demo_media import portrait, write_hero_clip
from services.common.canvas import source_canvas
from services.common.grpc_client import make_channel
from services.common.grpc_server import MAX_MESSAGE_BYTES
from services.encoder.pasteback import PasteBack
from services.gateway.domain import JobFailed, JobSpec, MediaInput
from services.gateway.jobs.retry_policy import plan_retry
from services.gateway.net.fetch import MediaFetcher
from services.gateway.pipeline.clients import ServiceClients, ServiceTargets
from services.gateway.pipeline.motion_cache import NullMotionCache
from services.gateway.pipeline.orchestrator import Orchestrator
from tests.reliability.conftest import needs_ffmpeg
from tests.unit.encoder.media_tools import decode_rgb, ffprobe, psnr, stream

pytestmark = [pytest.mark.ffmpeg, needs_ffmpeg]

PHONE = (4032, 3024)


def phone_photo(width: int, height: int, face_px: int = 700) -> bytes:
    """A JPEG of `width` x `height`: a colour gradient with the packaged portrait (a real face)
    enlarged to `face_px` in the middle."""
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 128)], -1)
    pixels = pixels.astype(np.uint8)  # H x W x 3
    face = portrait()
    scale = face_px / face.shape[0]
    big = cv2.resize(face, (round(face.shape[1] * scale), face_px), interpolation=cv2.INTER_CUBIC)
    y0, x0 = (height - big.shape[0]) // 2, (width - big.shape[1]) // 2
    pixels[y0 : y0 + big.shape[0], x0 : x0 + big.shape[1]] = big
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def _targets(services) -> ServiceTargets:
    return ServiceTargets(
        services["face_detect"].target, services["animator"].target, services["encoder"].target
    )


def _run(services, photo: Path, hero: Path, work: Path, max_dim: int):
    with ServiceClients(_targets(services)) as clients:
        orchestrator = Orchestrator(clients, NullMotionCache(), MediaFetcher())
        spec = JobSpec(
            job_id="large-photo",
            source=MediaInput(path=photo),
            driving=MediaInput(path=hero),
            seconds=1.0,
            source_max_dim=max_dim,
        )
        return orchestrator.run(
            spec, work, on_progress=lambda update: None, cancel=threading.Event()
        )


def _no_requeue(exc: JobFailed) -> bool:
    """The worker would fail this job now: neither a capacity wait nor another try."""
    return (
        plan_retry(
            exc.code,
            exc.retryable,
            attempts=1,
            max_attempts=3,
            age_s=10.0,
            base_delay_s=5.0,
            max_queue_s=1800.0,
        )
        is None
    )


def test_phone_photo_at_full_size_is_animated_on_its_full_canvas(grpc_services, tmp_path):
    data = phone_photo(*PHONE)
    canvas = source_canvas(data, 4096)
    assert canvas.shape == (PHONE[1], PHONE[0], 3) and canvas.nbytes > MAX_MESSAGE_BYTES
    photo = tmp_path / "phone.jpg"
    photo.write_bytes(data)
    hero = write_hero_clip(tmp_path / "hero.mp4", seconds=1.0, fps=4, size=192)

    try:
        result = _run(grpc_services, photo, hero, tmp_path / "work", 4096)
    except JobFailed as exc:  # the old contract: "Sent message larger than max" read as "busy"
        pytest.fail(
            f"job failed: {exc.code} (retryable={exc.retryable}, requeued="
            f"{not _no_requeue(exc)}): {exc.message}"
        )

    assert result.frames == 4
    info = ffprobe(result.mp4_path)
    video = stream(info, "video")
    assert (video["width"], video["height"]) == PHONE and int(video["nb_read_frames"]) == 4
    assert stream(info, "audio") is not None

    # Where the face was pasted is where face_detect put the crop; elsewhere the frames are the
    # photo's canvas (through H.264).
    with make_channel(grpc_services["face_detect"].target) as channel:
        reply = face_detect_pb2_grpc.FaceDetectServiceStub(channel).DetectSource(
            face_detect_pb2.DetectSourceRequest(
                image=common_pb2.Image(encoded=common_pb2.EncodedImage(data=data)),
                source_max_dim=4096,
            ),
            timeout=120,
        )
    assert (reply.canvas_width, reply.canvas_height) == PHONE
    assert reply.ByteSize() < 1_000_000
    paste = PasteBack(canvas, np.array(reply.crop_to_canvas.values).reshape(3, 3), (512, 512))
    assert paste.box is not None
    y0, y1, x0, x1 = paste.box
    outside = np.ones(canvas.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert outside.mean() > 0.5  # the face region is a part of the photo, not all of it
    first = decode_rgb(result.mp4_path, *PHONE)[0]  # H x W x 3
    assert psnr(first[outside], canvas[outside]) >= 35.0
    assert psnr(first[y0:y1, x0:x1], canvas[y0:y1, x0:x1]) < 30.0  # the animated face is there


def test_photo_over_the_pixel_limit_fails_at_once_with_its_reason(grpc_services, tmp_path):
    photo = tmp_path / "huge.jpg"
    photo.write_bytes(phone_photo(8000, 6000))  # 48 Mpx: over the 40 Mpx decode limit
    hero = write_hero_clip(tmp_path / "hero.mp4", seconds=0.5, fps=4, size=192)
    with pytest.raises(JobFailed) as info:
        _run(grpc_services, photo, hero, tmp_path / "work", 8192)
    assert info.value.code == "image_too_large" and not info.value.retryable
    assert _no_requeue(info.value)
