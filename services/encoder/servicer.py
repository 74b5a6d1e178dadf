"""gRPC adapter of the encoder: EncodeRequest stream -> EncodeSession -> EncodeResponse stream."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from fractions import Fraction

import grpc
import numpy as np
from dynamics.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc

from services.common.errors import InvalidInputError, handle_errors
from services.common.media import decode_image, raw_to_array
from services.encoder.config import EncoderConfig
from services.encoder.encoder import EncodeCancelled, EncodeParams, EncodeSession

logger = logging.getLogger(__name__)

SERVICE_NAME = encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name
PROGRESS_EVERY = 25  # frames between two Progress messages


def _image(image: common_pb2.Image) -> np.ndarray:
    kind = image.WhichOneof("payload")
    if kind == "raw":
        return raw_to_array(image.raw)
    if kind == "encoded":
        return decode_image(image.encoded.data)
    raise InvalidInputError("canvas image has no payload", reason="bad_image")


def _matrix(matrix: common_pb2.Matrix3x3) -> np.ndarray:
    values = list(matrix.values)
    if len(values) not in (6, 9) or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"crop_to_canvas needs 6 or 9 finite values, got {len(values)}",
                                reason="bad_pasteback")
    rows = np.array(values, dtype=np.float64).reshape(-1, 3)  # 2 x 3 or 3 x 3
    return np.vstack([rows[:2], [0.0, 0.0, 1.0]])  # 3 x 3


def header_to_params(header: encoder_pb2.EncodeHeader, config: EncoderConfig) -> EncodeParams:
    """Proto header -> validated domain parameters (service defaults for 0 / "")."""
    if header.fps.num <= 0 or header.fps.den <= 0:
        raise InvalidInputError(f"fps must be a positive fraction, got "
                                f"{header.fps.num}/{header.fps.den}", reason="bad_fps")
    width, height = header.frame_width, header.frame_height
    if (width or height) and (width <= 0 or height <= 0):
        raise InvalidInputError(f"frame size {width}x{height} is invalid", reason="bad_frame")
    canvas = m_c2o = None
    if header.HasField("canvas"):
        canvas = _image(header.canvas)
        if not header.HasField("crop_to_canvas"):
            raise InvalidInputError("a canvas needs crop_to_canvas (M_c2o)", reason="bad_pasteback")
        m_c2o = _matrix(header.crop_to_canvas)
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
        params = header_to_params(first.header, self.config)
        with EncodeSession(self.config, params) as session:
            # A cancelled or broken stream ends here too: kill FFmpeg, drop the temp files.
            if not context.add_callback(session.abort):
                session.abort()  # the RPC ended already
            for request in requests:
                kind = request.WhichOneof("item")
                if kind == "frame":
                    session.add_frame(request.frame.index, raw_to_array(request.frame.image))
                    if session.frames % PROGRESS_EVERY == 0:
                        yield _progress(session.frames, params.total_frames)
                elif kind == "audio_chunk":
                    session.add_audio(request.audio_chunk)
                else:
                    raise InvalidInputError(f"unexpected message ({kind or 'empty'}) after the "
                                            "header", reason="bad_order")
            result = session.finish()
            yield _progress(result.frames, params.total_frames or result.frames)
            for chunk in session.read_chunks():
                yield encoder_pb2.EncodeResponse(mp4_chunk=chunk)
            yield encoder_pb2.EncodeResponse(summary=encoder_pb2.EncodeSummary(
                frames=result.frames, duration_seconds=float(result.duration),
                has_audio=result.has_audio, bytes=result.bytes))
