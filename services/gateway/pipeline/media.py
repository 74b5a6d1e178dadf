"""Hero-video handling with FFmpeg: probe and validate, trim, hash, decode frames as a stream.

Every FFmpeg command is an argument list built with ffmpeg-python and run with a timeout; no
shell strings. Every ffprobe/FFmpeg call names the demuxers and protocols it may use
(services/common/ffmpeg_safety.py): the probe allows only the video containers we accept, and
later calls force the demuxer the probe found, so a playlist or any other file that names
further files is refused before anything is read from it. Children run as guarded processes
(own process group, killed when the gateway dies). Client-facing messages are short and fixed
per reason; FFmpeg's stderr (with server paths) goes to the log only.

The trimmed video is a stream copy (no re-encode) into Matroska written with
`+bitexact`, so the same input trims to the same bytes and its sha256 keys the motion cache.
The trim stops at a frame count derived from the probed frame rate as well as at the duration,
and videos whose frame timestamps do not increase are refused, so a file whose timestamps are
all 0 cannot carry more frames than `seconds` allows.
Matroska drops the display-matrix rotation, so the rotation is probed from the original and
applied explicitly when decoding (and it is part of `VideoInfo`, hence of the cache key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import ffmpeg
import numpy as np

from services.common import ffmpeg_safety as safety
from services.common.errors import InvalidInputError

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
# What a client sees for each refusal; FFmpeg's own messages (with server paths) are only logged.
ACCEPTED_CONTAINERS = "MP4/MOV, Matroska/WebM or AVI"
_VIDEO_CODECS = frozenset(
    {
        "h264",
        "hevc",
        "vp8",
        "vp9",
        "av1",
        "mpeg4",
        "mjpeg",
        "prores",
        "mpeg2video",
        "h263",
        "theora",
    }
)


class MediaError(InvalidInputError):
    """The hero video or source photo is unusable; `reason` names the rule it broke."""

    default_reason = "bad_video"


@dataclass(frozen=True)
class MediaLimits:
    """What the gateway accepts before trimming."""

    max_bytes: int = 200 * MIB
    max_duration_s: float = 600.0
    max_side: int = 4096
    max_fps: float = 120.0
    video_codecs: frozenset[str] = _VIDEO_CODECS
    probe_timeout_s: float = 30.0
    trim_timeout_s: float = 120.0
    # Packets of the video stream whose timestamps the probe checks (from the start): the
    # longest trim at the highest frame rate.
    timestamp_packets: int = 1200


@dataclass(frozen=True)
class VideoInfo:
    """A probed video. `width`/`height` are as displayed (after `rotation`, degrees CCW)."""

    width: int
    height: int
    fps: Fraction
    duration_s: float
    frames: int  # packet count of the trimmed file, or an estimate before trimming
    has_audio: bool
    codec: str
    rotation: int
    stream_index: int
    size_bytes: int
    container: str = "matroska"  # the demuxer (ffmpeg_safety.VIDEO_DEMUXERS) the file needs


def _run(args: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess:
    try:
        done = safety.run(args, timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise MediaError(
            f"{what} took longer than {timeout_s:.0f} s", reason="media_timeout"
        ) from exc
    except FileNotFoundError as exc:
        raise MediaError("FFmpeg is not installed on the server", reason="ffmpeg_missing") from exc
    return done


def _stderr_tail(stderr: bytes, lines: int = 3) -> str:
    text = stderr.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "no details"


def _failed(what: str, path: Path, stderr: bytes, message: str, reason: str) -> MediaError:
    """Log FFmpeg's message (server side, with paths) and return the client-facing error.

    A demuxer refused by the whitelist is `unsupported_container` whatever `reason` says.
    """
    logger.warning("%s failed for %s: %s", what, path, _stderr_tail(stderr, 5))
    refused = safety.refused_demuxer(stderr)
    if refused is not None:
        return _unsupported(refused)
    return MediaError(message, reason=reason)


def _unsupported(found: str | None) -> MediaError:
    logger.warning("refused a %s file as the hero video", found or "unknown")
    return MediaError(
        f"the hero video is not an {ACCEPTED_CONTAINERS} file", reason="unsupported_container"
    )


def _input(path: Path, demuxer: str, **options) -> ffmpeg.nodes.FilterableStream:
    """An FFmpeg input of a local file, read with exactly `demuxer` and the file protocol."""
    return ffmpeg.input(_file_url(path), **safety.input_options(demuxer), **options)


def _file_url(path: Path) -> str:
    """`file:` + the absolute path: FFmpeg reads the file, never a protocol named in the path."""
    return "file:" + str(Path(path).absolute())


def _rotation(stream: dict) -> int:
    """Display rotation in degrees counter-clockwise (0, 90, 180 or 270)."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return round(float(side["rotation"])) % 360
    tag = (stream.get("tags") or {}).get("rotate")
    return (-int(tag)) % 360 if tag and tag.lstrip("-").isdigit() else 0


def _fps(stream: dict) -> Fraction | None:
    for key in ("avg_frame_rate", "r_frame_rate"):
        num, _, den = str(stream.get(key, "0/0")).partition("/")
        try:
            value = Fraction(int(num), int(den or 1))
        except (ValueError, ZeroDivisionError):
            continue
        if value > 0:
            return value.limit_denominator(1001 * 1000)
    return None


def _ffprobe(
    path: Path,
    limits: MediaLimits,
    *extra: str,
    demuxer: str | None = None,
    show: tuple[str, ...] = ("-show_format", "-show_streams"),
) -> dict:
    """ffprobe's JSON for `path`: any allowed demuxer (None) or exactly `demuxer`."""
    inputs = safety.probe_input_args() if demuxer is None else safety.input_args(demuxer)
    args = ["ffprobe", "-v", "error", "-of", "json", *show, *extra, *inputs, _file_url(path)]
    done = _run(args, limits.probe_timeout_s, "probing the video")
    if done.returncode != 0:
        raise _failed("ffprobe", path, done.stderr, "the file is not a readable video", "bad_video")
    try:
        return json.loads(done.stdout or b"{}")
    except ValueError:
        raise MediaError("the file is not a readable video", reason="bad_video") from None


def _packet_times(
    path: Path, limits: MediaLimits, demuxer: str, stream_index: int, max_packets: int | None
) -> tuple[list[tuple[str, str]], float | None]:
    """(pts, dts) of the video stream's packets in file order ('N/A' where absent), and the
    container's duration in seconds (None when unknown)."""
    extra = ["-select_streams", str(stream_index)]
    if max_packets is not None:
        extra += ["-read_intervals", f"%+#{max_packets}"]
    data = _ffprobe(
        path,
        limits,
        *extra,
        demuxer=demuxer,
        show=("-show_entries", "packet=pts,dts:format=duration"),
    )
    packets = [
        (str(p.get("pts", "N/A")), str(p.get("dts", "N/A"))) for p in data.get("packets") or []
    ]
    try:
        duration = float((data.get("format") or {}).get("duration"))
    except (TypeError, ValueError):
        duration = None
    return packets, duration


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _check_timestamps(packets: list[tuple[str, str]]) -> None:
    """Refuse frame timestamps that do not increase: no two frames may share a presentation
    time, decode times must rise, and every packet needs one or the other (containers omit
    either: AVI has no presentation times, Matroska no decode times for reordered frames).
    A file whose frames are all at 0 would otherwise pass any duration cut whole."""
    if len(packets) < 2:
        return
    pts = [int(p) for p, _ in packets if _is_int(p)]
    dts = [int(d) for _, d in packets if _is_int(d)]
    if (
        any(not _is_int(p) and not _is_int(d) for p, d in packets)
        or len(set(pts)) != len(pts)
        or any(b <= a for a, b in pairwise(dts))
    ):
        raise MediaError("the video's frame timestamps do not increase", reason="bad_timestamps")


def probe_video(path: Path, limits: MediaLimits = MediaLimits()) -> VideoInfo:
    """Probe and validate a video file; raises `MediaError` with a precise reason."""
    if not path.is_file():
        raise MediaError("the hero video is missing", reason="not_found")
    size = path.stat().st_size
    if size == 0:
        raise MediaError("the video file is empty", reason="empty_file")
    if size > limits.max_bytes:
        raise MediaError(f"the video is {size} bytes, over {limits.max_bytes}", reason="too_large")
    data = _ffprobe(path, limits)
    try:
        container = safety.demuxer_of(str((data.get("format") or {}).get("format_name", "")))
    except safety.UnsafeMediaError as exc:
        raise _unsupported(exc.found) from None
    if container == "mov" and safety.mov_external_reference(path):
        logger.warning("%s refers to samples in other files", path)
        raise MediaError(
            f"the hero video is not a self-contained {ACCEPTED_CONTAINERS} file",
            reason="unsupported_container",
        )
    streams = data.get("streams") or []
    video = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    if not video:
        raise MediaError("the file has no video stream (audio-only?)", reason="no_video_stream")
    stream = video[0]
    codec = str(stream.get("codec_name", "unknown"))
    if codec not in limits.video_codecs:
        raise MediaError(f"video codec {codec!r} is not supported", reason="unsupported_codec")
    width, height = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if width <= 0 or height <= 0:
        raise MediaError("the video has no frame size", reason="bad_video")
    if max(width, height) > limits.max_side:
        raise MediaError(
            f"the video is {width}x{height}, over the {limits.max_side} px limit",
            reason="video_too_large",
        )
    fps = _fps(stream)
    if fps is None or fps > limits.max_fps:
        raise MediaError(f"unusable frame rate {fps}", reason="bad_frame_rate")
    duration = float(stream.get("duration") or (data.get("format") or {}).get("duration") or 0.0)
    if duration > limits.max_duration_s:
        raise MediaError(
            f"the video is {duration:.1f} s long, over the {limits.max_duration_s:.0f} s limit",
            reason="video_too_long",
        )
    rotation = _rotation(stream)
    if rotation in (90, 270):
        width, height = height, width
    stream_index = int(stream.get("index", 0))
    _check_timestamps(
        _packet_times(path, limits, container, stream_index, limits.timestamp_packets)[0]
    )
    return VideoInfo(
        width=width,
        height=height,
        fps=fps,
        duration_s=duration,
        frames=round(duration * fps),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
        codec=codec,
        rotation=rotation,
        stream_index=stream_index,
        size_bytes=size,
        container=container,
    )


def max_frames(seconds: float, fps: Fraction) -> int:
    """The most frames `seconds` of video at `fps` may have: those starting before `seconds`."""
    return max(1, math.ceil(Fraction(seconds).limit_denominator(10**6) * fps))


def trim_video(
    src: Path, dst: Path, seconds: float, limits: MediaLimits = MediaLimits()
) -> VideoInfo:
    """Copy the first `seconds` of `src` (video + first audio stream) to `dst` (Matroska).

    Returns the info of the trimmed file, with the original's rotation and an exact packet
    count in `frames`, at most `max_frames(seconds, fps)`: the cut is by duration and by that
    frame count, whichever comes first. Raises `MediaError` for unusable or frameless videos.
    """
    if not 0 < seconds <= limits.max_duration_s:
        raise MediaError(
            f"seconds must be in (0, {limits.max_duration_s:.0f}]", reason="bad_option"
        )
    info = probe_video(src, limits)
    limit = max_frames(seconds, info.fps)
    inp = _input(src, info.container)
    streams = [inp[str(info.stream_index)]] + ([inp["a:0"]] if info.has_audio else [])
    args = (
        ffmpeg.output(
            *streams,
            str(dst),
            c="copy",
            t=f"{seconds:.3f}",
            format="matroska",
            **{"frames:v": limit},
            map_metadata=-1,
            map_chapters=-1,
            fflags="+bitexact",
            sn=None,
            dn=None,
        )
        .global_args("-nostdin", "-v", "error")
        .overwrite_output()
        .get_args()
    )
    done = _run(["ffmpeg", *args], limits.trim_timeout_s, "trimming the video")
    if done.returncode != 0 or not dst.is_file():
        raise _failed("trim", src, done.stderr, "the video cannot be cut", "bad_video")
    packets, duration = _packet_times(dst, limits, "matroska", 0, None)
    frames = len(packets)
    if frames == 0:
        raise MediaError("the video has no frames", reason="no_frames")
    if frames > limit:  # FFmpeg honours -frames:v; this is the contract, checked
        raise MediaError(
            "the video has more frames than its length allows", reason="bad_timestamps"
        )
    _check_timestamps(packets)
    return replace(
        info,
        frames=frames,
        duration_s=duration or float(frames / info.fps),
        stream_index=0,
        size_bytes=dst.stat().st_size,
        container="matroska",
    )


def extract_audio(
    src: Path, dst: Path, timeout_s: float = 60.0, container: str = "matroska"
) -> Path:
    """Copy the first audio stream of `src` (a trimmed video: Matroska) into `dst` (Matroska):
    what the encoder muxes."""
    args = (
        _input(src, container)["a:0"]
        .output(str(dst), c="copy", format="matroska", fflags="+bitexact")
        .global_args("-nostdin", "-v", "error")
        .overwrite_output()
        .get_args()
    )
    done = _run(["ffmpeg", *args], timeout_s, "extracting the audio")
    if done.returncode != 0 or not dst.is_file():
        raise _failed(
            "audio extraction",
            src,
            done.stderr,
            "the hero video's audio cannot be read",
            "bad_audio",
        )
    return dst


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def decoded_size(info: VideoInfo, max_side: int) -> tuple[int, int]:
    """(width, height) of decoded frames: the display size, shrunk to fit `max_side`."""
    scale = min(1.0, max_side / max(info.width, info.height))
    return max(2, round(info.width * scale)), max(2, round(info.height * scale))


_ROTATE = {90: ("transpose", "cclock"), 270: ("transpose", "clock")}


class FrameDecoder:
    """Decodes a video to RGB frames one at a time through an FFmpeg pipe (never all in memory).

    Use as a context manager or call `close()`; closing early kills FFmpeg. At most
    `info.frames` frames come out (the trimmed file's packet count).
    """

    def __init__(self, path: Path, info: VideoInfo, max_side: int = 1280) -> None:
        self.width, self.height = decoded_size(info, max_side)
        self._path = path
        stream = _input(path, info.container, noautorotate=None)[str(info.stream_index)]
        if info.rotation == 180:
            stream = stream.filter("hflip").filter("vflip")
        elif info.rotation in _ROTATE:
            stream = stream.filter(*_ROTATE[info.rotation])
        stream = stream.filter("scale", self.width, self.height)
        args = (
            stream.output(
                "pipe:",
                format="rawvideo",
                pix_fmt="rgb24",
                fps_mode="passthrough",
                **({"frames:v": info.frames} if info.frames > 0 else {}),
            )
            .global_args("-nostdin", "-v", "error")
            .get_args()
        )
        self._proc = safety.popen(
            ["ffmpeg", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._stderr = b""
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        self.frames_read = 0
        self._closing = False

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr = (self._stderr + line)[-4096:]

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield H x W x 3 uint8 RGB frames in order."""
        frame_bytes = self.width * self.height * 3
        assert self._proc.stdout is not None
        while True:
            data = self._proc.stdout.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            self.frames_read += 1
            yield np.frombuffer(data, np.uint8).reshape(self.height, self.width, 3)  # H x W x 3
        code = self._proc.wait()
        self._drain.join(timeout=5)
        if self._closing:
            return  # stopped on purpose (the job failed elsewhere or was cancelled)
        if self.frames_read == 0:
            raise _failed(
                "decoding",
                self._path,
                self._stderr,
                "no frame of the video could be decoded",
                "no_frames",
            )
        if code != 0:
            # FFmpeg died mid-video (crash, OOM kill): the frames so far are not the video.
            logger.warning(
                "decoding %s stopped after %d frames (exit %d): %s",
                self._path,
                self.frames_read,
                code,
                _stderr_tail(self._stderr, 5),
            )
            raise MediaError("decoding the video stopped part way", reason="decode_failed")

    def close(self) -> None:
        """Stop FFmpeg (if still running) and release its pipes."""
        self._closing = True
        safety.kill_group(self._proc)
        self._drain.join(timeout=5)
        for pipe in (self._proc.stdout, self._proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> FrameDecoder:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_image_file(path: Path, max_bytes: int = 20 * MIB) -> bytes:
    """The source photo's bytes, size-checked (the face_detect service decodes and validates)."""
    if not path.is_file():
        raise MediaError("the source photo is missing", reason="not_found")
    size = path.stat().st_size
    if size == 0:
        raise MediaError("the source photo is empty", reason="empty_file")
    if size > max_bytes:
        raise MediaError(f"the photo is {size} bytes, over {max_bytes}", reason="too_large")
    return path.read_bytes()
