"""gRPC adapter of the encoder: EncodeRequest stream -> EncodeSession -> EncodeResponse stream."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from fractions import Fraction

import grpc
import numpy as np
from dynamics.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc

from services.common.canvas import source_canvas
from services.common.errors import InvalidInputError, ResourceExhaustedError, handle_errors
from services.common.media import raw_to_array
from services.encoder.config import EncoderConfig
from services.encoder.encoder import EncodeCancelled, EncodeParams, EncodeSession

logger = logging.getLogger(__name__)

SERVICE_NAME = encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name
PROGRESS_EVERY = 25  # frames between two Progress messages
# The source photo arrives whole before the first frame. The gateway's upload limit
# (MAX_IMAGE_BYTES, 20 MiB by default) keeps real photos far below this.
MAX_PHOTO_BYTES = 64 * 1024 * 1024


def canvas_from_photo(header: encoder_pb2.EncodeHeader, photo: bytes) -> np.ndarray:
    """The paste-back canvas: the photo file rebuilt exactly as face_detect built it
    (services/common/canvas.py), checked against the size face_detect reported."""
    canvas = source_canvas(photo, header.source_max_dim)
    height, width = canvas.shape[:2]
    if (width, height) != (header.canvas_width, header.canvas_height):
        raise InvalidInputError(
            f"the photo gives a {width}x{height} canvas at source_max_dim "
            f"{header.source_max_dim}; the header says {header.canvas_width}x"
            f"{header.canvas_height}",
            reason="bad_pasteback",
        )
    return canvas


def _matrix(matrix: common_pb2.Matrix3x3) -> np.ndarray:
    values = list(matrix.values)
    if len(values) not in (6, 9) or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(
            f"crop_to_canvas needs 6 or 9 finite values, got {len(values)}", reason="bad_pasteback"
        )
    rows = np.array(values, dtype=np.float64).reshape(-1, 3)  # 2 x 3 or 3 x 3
    return np.vstack([rows[:2], [0.0, 0.0, 1.0]])  # 3 x 3


def check_header(header: encoder_pb2.EncodeHeader) -> None:
    """Refuse a header before any photo byte is read."""
    if header.fps.num <= 0 or header.fps.den <= 0:
        raise InvalidInputError(
            f"fps must be a positive fraction, got {header.fps.num}/{header.fps.den}",
            reason="bad_fps",
        )
    width, height = header.frame_width, header.frame_height
    if (width or height) and (width <= 0 or height <= 0):
        raise InvalidInputError(f"frame size {width}x{height} is invalid", reason="bad_frame")
    if header.photo_bytes < 0 or header.photo_bytes > MAX_PHOTO_BYTES:
        raise ResourceExhaustedError(
            f"a source photo of {header.photo_bytes} bytes; the limit is {MAX_PHOTO_BYTES}",
            reason="photo_too_large",
        )
    if header.photo_bytes and not header.HasField("crop_to_canvas"):
        raise InvalidInputError("a photo needs crop_to_canvas (M_c2o)", reason="bad_pasteback")
    if header.photo_bytes and (
        header.canvas_width <= 0 or header.canvas_height <= 0 or header.source_max_dim < 0
    ):
        raise InvalidInputError(
            "a photo needs canvas_width, canvas_height > 0 and source_max_dim >= 0",
            reason="bad_pasteback",
        )
    if header.HasField("crop_to_canvas") and not header.photo_bytes:
        raise InvalidInputError("crop_to_canvas needs a photo", reason="bad_pasteback")


def header_to_params(
    header: encoder_pb2.EncodeHeader, config: EncoderConfig, photo: bytes = b""
) -> EncodeParams:
    """Proto header (+ the photo file it announced) -> validated domain parameters (service
    defaults for 0 / "")."""
    check_header(header)
    if len(photo) != header.photo_bytes:
        raise InvalidInputError(
            f"photo has {len(photo)} bytes, the header announced {header.photo_bytes}",
            reason="bad_photo",
        )
    width, height = header.frame_width, header.frame_height
    canvas = m_c2o = None
    if header.photo_bytes:
        m_c2o = _matrix(header.crop_to_canvas)
        canvas = canvas_from_photo(header, photo)
    return EncodeParams(
        fps=Fraction(header.fps.num, header.fps.den),
        crf=header.crf or config.crf,
        preset=(header.preset or config.preset).lower(),
        audio_bytes=header.audio_bytes,
        total_frames=header.total_frames,
        expected_frames=header.expected_frames,
        frame_size=(width, height) if width else None,
        canvas=canvas,
        m_c2o=m_c2o,
        comment=header.comment,
    )


def _read_photo(requests: Iterator, size: int) -> tuple[bytes, list]:
    """The `photo_chunk`s that follow the header (at most `size` bytes in all) and the first
    request after them (in a list, empty when the stream ended)."""
    photo = bytearray()
    for request in requests:
        if request.WhichOneof("item") != "photo_chunk":
            return bytes(photo), [request]
        if len(photo) + len(request.photo_chunk) > size:
            raise InvalidInputError(
                f"the photo exceeds the {size} bytes the header announced", reason="bad_photo"
            )
        photo += request.photo_chunk
    return bytes(photo), []


def _until_cancelled(requests: Iterator) -> Iterator:
    """The request stream; a cancelled call ends it with EncodeCancelled (logged as info)."""
    try:
        yield from requests
    except grpc.RpcError:
        raise EncodeCancelled("the client cancelled the stream") from None


def _progress(done: int, total: int) -> encoder_pb2.EncodeResponse:
    return encoder_pb2.EncodeResponse(progress=common_pb2.Progress(done=done, total=total))


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    """Streams frames into an EncodeSession and the finished MP4 back."""

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config

    @handle_errors
    def Encode(self, request_iterator, context) -> Iterator[encoder_pb2.EncodeResponse]:
        requests = _until_cancelled(iter(request_iterator))
        first = next(requests, None)
        if first is None or first.WhichOneof("item") != "header":
            raise InvalidInputError("the first message must be the header", reason="bad_order")
        check_header(first.header)
        photo, after = _read_photo(requests, first.header.photo_bytes)
        params = header_to_params(first.header, self.config, photo)
        del photo  # the canvas is built; the file is not needed any more
        with EncodeSession(self.config, params) as session:
            # A cancelled or broken stream ends here too: kill FFmpeg, drop the temp files.
            if not context.add_callback(session.abort):
                session.abort()  # the RPC ended already
            for request in itertools.chain(after, requests):
                kind = request.WhichOneof("item")
                if kind == "frame":
                    session.add_frame(request.frame.index, raw_to_array(request.frame.image))
                    if session.frames % PROGRESS_EVERY == 0:
                        yield _progress(session.frames, params.total_frames)
                elif kind == "audio_chunk":
                    session.add_audio(request.audio_chunk)
                elif kind == "photo_chunk":
                    raise InvalidInputError(
                        "photo chunks must follow the header directly", reason="bad_order"
                    )
                else:
                    raise InvalidInputError(
                        f"unexpected message ({kind or 'empty'}) after the header",
                        reason="bad_order",
                    )
            result = session.finish()
            yield _progress(result.frames, params.total_frames or result.frames)
            for chunk in session.read_chunks():
                yield encoder_pb2.EncodeResponse(mp4_chunk=chunk)
            yield encoder_pb2.EncodeResponse(
                summary=encoder_pb2.EncodeSummary(
                    frames=result.frames,
                    duration_seconds=float(result.duration),
                    has_audio=result.has_audio,
                    bytes=result.bytes,
                )
            )
