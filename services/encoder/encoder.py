"""One encode: spool the audio source, paste frames back, pipe them into FFmpeg, finish the MP4.

Lifecycle of an `EncodeSession` (all state lives in its own temporary directory):
    session = EncodeSession(config, params)     # creates the temp dir
    session.add_audio(chunk) ...                # the trimmed hero video, before any frame
    session.add_frame(index, rgb) ...           # FFmpeg starts with frame 0; frames stream in
    result = session.finish()                   # closes stdin, waits, adds the audio
    for chunk in session.read_chunks(): ...     # the finished MP4
    session.abort()                             # kills FFmpeg if still running, removes the dir
`with EncodeSession(...) as session:` calls abort() on the way out, whatever happened.
Frames are never collected: each one is written to FFmpeg's stdin and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import grpc
import numpy as np

from services.common.errors import DynamicsError, InvalidInputError, ResourceExhaustedError
from services.encoder import ffmpeg as ff
from services.encoder.config import X264_PRESETS, EncoderConfig
from services.encoder.metrics import ENCODER_FFMPEG_SECONDS, ENCODER_FRAMES
from services.encoder.pasteback import PasteBack

logger = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
FINISH_TIMEOUT_S = 300.0
MAX_FPS = Fraction(240)
MAX_COMMENT_CHARS = 500


class EncodeCancelled(DynamicsError):
    """The session was aborted (client cancelled, stream broke, server stopping)."""

    status = grpc.StatusCode.CANCELLED
    default_reason = "cancelled"


@dataclass(frozen=True)
class EncodeParams:
    """What the header of one encode says, already validated and in domain types."""

    fps: Fraction
    crf: int
    preset: str
    audio_bytes: int = 0
    total_frames: int = 0  # 0 = unknown; else enforced
    expected_frames: int = 0  # a hint for making the audio early; 0 = none
    frame_size: tuple[int, int] | None = None  # (width, height); None = from the first frame
    canvas: np.ndarray | None = None  # H x W x 3 uint8 source photo; None = no paste-back
    m_c2o: np.ndarray | None = None  # 3 x 3 crop -> canvas
    comment: str = ""  # the MP4's `comment` metadata tag


@dataclass(frozen=True)
class EncodeResult:
    """The finished MP4 of one session."""

    path: Path
    frames: int
    duration: Fraction  # frames / fps, exactly
    has_audio: bool
    bytes: int


def validate_params(params: EncodeParams, config: EncoderConfig) -> None:
    """Reject headers the encoder cannot honour, with a precise message."""
    if params.fps <= 0 or params.fps > MAX_FPS:
        raise InvalidInputError(f"fps {params.fps} is outside (0, {MAX_FPS}]", reason="bad_fps")
    if not 0 <= params.crf <= 51:
        raise InvalidInputError(f"crf {params.crf} is outside 0..51", reason="bad_quality")
    if params.preset not in X264_PRESETS:
        raise InvalidInputError(f"unknown x264 preset {params.preset!r}", reason="bad_quality")
    if params.audio_bytes < 0 or params.audio_bytes > config.max_audio_bytes:
        raise ResourceExhaustedError(
            f"audio source of {params.audio_bytes} bytes exceeds {config.max_audio_bytes}",
            reason="audio_too_large",
        )
    if params.expected_frames < 0:
        raise InvalidInputError(
            f"expected_frames must be >= 0, got {params.expected_frames}", reason="bad_header"
        )
    if params.total_frames < 0 or params.total_frames > config.max_frames:
        raise ResourceExhaustedError(
            f"{params.total_frames} frames announced; the limit is {config.max_frames}",
            reason="too_many_frames",
        )
    if params.frame_size is not None and min(params.frame_size) <= 0:
        raise InvalidInputError(f"frame size {params.frame_size} is invalid", reason="bad_frame")
    if len(params.comment) > MAX_COMMENT_CHARS or not params.comment.isprintable():
        raise InvalidInputError(
            f"comment must be printable and at most {MAX_COMMENT_CHARS} characters",
            reason="bad_comment",
        )
    if (params.canvas is None) != (params.m_c2o is None):
        raise InvalidInputError(
            "paste-back needs both the canvas and crop_to_canvas", reason="bad_pasteback"
        )


class EncodeSession:
    """The state of one streaming encode; see the module docstring for the call order."""

    def __init__(self, config: EncoderConfig, params: EncodeParams) -> None:
        validate_params(params, config)
        self.config = config
        self.params = params
        self.tmp = Path(tempfile.mkdtemp(prefix="dynamics-encode-", dir=config.tmp_dir))
        self._lock = threading.Lock()
        self._aborted = False
        self._audio_path = self.tmp / "audio-source"
        self._audio_received = 0
        self._has_audio = False
        self._audio_format: str | None = None  # the audio source's demuxer, once probed
        self._frames = 0
        self._frame_size = params.frame_size
        self._paste: PasteBack | None = None
        self._process: ff.FFmpegProcess | None = None
        self._audio_process: ff.FFmpegProcess | None = None  # AAC made while frames stream
        self._started_at = 0.0
        self.result: EncodeResult | None = None

    # -- input -------------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        return self._frames

    def add_audio(self, chunk: bytes) -> None:
        """Append a piece of the audio source (the trimmed hero video)."""
        self._check_alive()
        if self._frames:
            raise InvalidInputError(
                "audio chunks must come before the first frame", reason="bad_order"
            )
        if self._audio_received + len(chunk) > self.params.audio_bytes:
            raise InvalidInputError(
                f"audio source exceeds the {self.params.audio_bytes} bytes the header announced",
                reason="bad_audio",
            )
        with open(self._audio_path, "ab") as f:
            f.write(chunk)
        self._audio_received += len(chunk)

    def add_frame(self, index: int, image: np.ndarray) -> None:
        """Paste back (if configured) and hand one H x W x 3 RGB frame to FFmpeg."""
        self._check_alive()
        if index != self._frames:
            raise InvalidInputError(
                f"frame {index} arrived, expected frame {self._frames}", reason="bad_order"
            )
        limit = self.params.total_frames or self.config.max_frames
        if self._frames >= limit:
            raise ResourceExhaustedError(f"more than {limit} frames", reason="too_many_frames")
        if self._frames == 0:
            self._start(image)
        elif image.shape[1::-1] != self._frame_size:
            raise InvalidInputError(
                f"frame {index} is {image.shape[1]}x{image.shape[0]}, "
                f"expected {self._frame_size[0]}x{self._frame_size[1]}",
                reason="bad_frame",
            )
        picture = self._paste(image) if self._paste is not None else image  # H x W x 3
        with self._cancel_aware():
            self._process.write(np.ascontiguousarray(_even(picture)).data)
        self._frames += 1
        ENCODER_FRAMES.inc()

    def _start(self, first: np.ndarray) -> None:
        if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
            raise InvalidInputError(
                f"frames must be H x W x 3 uint8, got {first.shape}", reason="bad_frame"
            )
        size = (first.shape[1], first.shape[0])
        if self._frame_size is not None and size != self._frame_size:
            raise InvalidInputError(
                f"frame 0 is {size[0]}x{size[1]}, the header said "
                f"{self._frame_size[0]}x{self._frame_size[1]}",
                reason="bad_frame",
            )
        self._frame_size = size
        if self._audio_received != self.params.audio_bytes:
            raise InvalidInputError(
                f"audio source incomplete: {self._audio_received} of "
                f"{self.params.audio_bytes} bytes before the first frame",
                reason="bad_audio",
            )
        if self.params.audio_bytes:
            self._audio_format = ff.probe_audio_source(self.config.ffprobe, self._audio_path)
            self._has_audio = self._audio_format is not None
        out_h, out_w = first.shape[:2]
        if self.params.canvas is not None:
            try:
                self._paste = PasteBack(self.params.canvas, self.params.m_c2o, first.shape[:2])
            except ValueError as exc:
                raise InvalidInputError(f"paste-back: {exc}", reason="bad_pasteback") from exc
            out_h, out_w = self.params.canvas.shape[:2]
        argv = ff.video_encode_argv(
            self.config.ffmpeg,
            width=out_w + out_w % 2,
            height=out_h + out_h % 2,
            fps=self.params.fps,
            crf=self.params.crf,
            preset=self.params.preset,
            output=self._video_path,
            faststart=not self._has_audio,
            comment=self.params.comment,
        )
        with self._lock:
            self._check_alive()
            self._started_at = time.monotonic()
            self._process = ff.FFmpegProcess(argv, self.tmp / "encode.log", stdin=True)
            if self._has_audio and self._announced_frames:
                # The audio's length is known now: encode it while the frames stream, so the
                # end of the job only copies it next to the video.
                self._audio_process = ff.FFmpegProcess(
                    ff.audio_encode_argv(
                        self.config.ffmpeg,
                        audio_source=self._audio_path,
                        duration=Fraction(self._announced_frames) / self.params.fps,
                        bitrate=self.config.audio_bitrate,
                        output=self._audio_aac_path,
                        audio_format=self._audio_format,
                    ),
                    self.tmp / "audio.log",
                    stdin=False,
                )

    # -- output ------------------------------------------------------------------------------

    @property
    def _video_path(self) -> Path:
        return self.tmp / ("video.mp4" if self._has_audio else "out.mp4")

    @property
    def _audio_aac_path(self) -> Path:
        return self.tmp / "audio.m4a"

    @property
    def _announced_frames(self) -> int:
        """The frame count the header gave: enforced (total_frames) or a hint (expected)."""
        return self.params.total_frames or min(self.params.expected_frames, self.config.max_frames)

    def finish(self) -> EncodeResult:
        """End of input: let FFmpeg finish, add the audio, and describe the MP4."""
        self._check_alive()
        if self._frames == 0:
            raise InvalidInputError("the stream ended before any frame", reason="no_frames")
        if self.params.total_frames and self._frames != self.params.total_frames:
            raise InvalidInputError(
                f"the stream ended after {self._frames} of {self.params.total_frames} frames",
                reason="missing_frames",
            )
        with self._cancel_aware():
            self._process.finish(FINISH_TIMEOUT_S)
        duration = Fraction(self._frames) / self.params.fps
        final = self._video_path
        if self._has_audio:
            final = self.tmp / "out.mp4"
            early = self._audio_process
            if early is not None and self._frames != self._announced_frames:
                logger.info(
                    "audio made for %d frames, the stream had %d: making it again",
                    self._announced_frames,
                    self._frames,
                )
                early.kill()
                early = None
            if early is not None:  # made for exactly `duration`
                with self._cancel_aware():
                    early.finish(FINISH_TIMEOUT_S)
                argv = ff.mux_copy_argv(
                    self.config.ffmpeg,
                    video=self._video_path,
                    audio=self._audio_aac_path,
                    output=final,
                    comment=self.params.comment,
                )
            else:
                argv = ff.mux_audio_argv(
                    self.config.ffmpeg,
                    video=self._video_path,
                    audio_source=self._audio_path,
                    duration=duration,
                    bitrate=self.config.audio_bitrate,
                    output=final,
                    comment=self.params.comment,
                    audio_format=self._audio_format,
                )
            with self._lock:
                self._check_alive()
                self._process = ff.FFmpegProcess(argv, self.tmp / "mux.log", stdin=False)
            with self._cancel_aware():
                self._process.finish(FINISH_TIMEOUT_S)
        ENCODER_FFMPEG_SECONDS.observe(time.monotonic() - self._started_at)
        self.result = EncodeResult(
            final, self._frames, duration, self._has_audio, final.stat().st_size
        )
        logger.info(
            "encoded",
            extra={
                "frames": self._frames,
                "seconds": float(duration),
                "has_audio": self._has_audio,
                "bytes": self.result.bytes,
            },
        )
        return self.result

    def read_chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The finished MP4 in pieces of at most `size` bytes."""
        if self.result is None:
            raise RuntimeError("finish() first")
        with open(self.result.path, "rb") as f:
            while chunk := f.read(size):
                self._check_alive()
                yield chunk

    # -- teardown ----------------------------------------------------------------------------

    def abort(self) -> None:
        """Kill FFmpeg (if running) and remove every temporary file; safe from any thread."""
        with self._lock:
            self._aborted = True
            for process in (self._process, self._audio_process):
                if process is not None:
                    process.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> EncodeSession:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()

    @contextlib.contextmanager
    def _cancel_aware(self) -> Iterator[None]:
        # FFmpeg dying because abort() killed it is a cancellation, not an FFmpeg failure.
        try:
            yield
        except ff.FFmpegError:
            if self._aborted:
                raise EncodeCancelled("the encode was cancelled") from None
            raise

    def _check_alive(self) -> None:
        if self._aborted:
            raise EncodeCancelled("the encode was cancelled")


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row/column once where a side is odd."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # H' x W' x 3
