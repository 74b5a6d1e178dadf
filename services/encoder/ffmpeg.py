"""FFmpeg command lines (built with ffmpeg-python, never shell strings) and process handling.

`video_encode_argv` reads raw RGB frames on stdin and writes H.264 (libx264, yuv420p) at an
exact rational frame rate while frames still arrive. When the job has audio and its length is
known up front (the header's frame count), `audio_encode_argv` turns the hero video's audio into
AAC cut or padded to exactly that length at the same time, and `mux_copy_argv` only copies both
streams together at the end; otherwise `mux_audio_argv` copies the video and encodes the audio
in one pass after the frames. Every final file gets `+faststart`.

Every input names its demuxer and protocol (services/common/ffmpeg_safety.py): the frames come
from our own pipe (`-f rawvideo`, protocol `pipe`), the audio source is read with the demuxer
`probe_audio_source` found (one of the video containers the gateway accepts), and our own
intermediate files with `mov`. FFmpeg runs as a guarded child: its own process group, killed
with the encoder. Its stderr goes to a file in the session's folder; errors name the exit code
and the log holds the stderr tail, never the client.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from fractions import Fraction
from pathlib import Path

import ffmpeg

from services.common import ffmpeg_safety as safety
from services.common.errors import DynamicsError, InvalidInputError, UnavailableError

logger = logging.getLogger(__name__)

STDERR_TAIL_CHARS = 2000
PROBE_TIMEOUT_S = 30.0
_GLOBAL_ARGS = ("-hide_banner", "-nostats", "-loglevel", "error")


class FFmpegError(DynamicsError):
    """FFmpeg failed; the message names the exit code (the stderr tail is logged)."""

    default_reason = "ffmpeg_failed"
    detail = ""  # the stderr tail: for logs, never sent


def seconds_arg(value: Fraction) -> str:
    """A duration for -t / whole_dur with microsecond precision (FFmpeg's time base)."""
    micros = round(value * 1_000_000)
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def video_encode_argv(
    binary: str,
    *,
    width: int,
    height: int,
    fps: Fraction,
    crf: int,
    preset: str,
    output: Path,
    faststart: bool,
    comment: str = "",
) -> list[str]:
    """rawvideo rgb24 on stdin -> H.264 yuv420p MP4 at exactly `fps` (width/height even)."""
    source = ffmpeg.input(
        "pipe:0",
        **safety.pipe_input_options("rawvideo"),
        pix_fmt="rgb24",
        s=f"{width}x{height}",
        framerate=f"{fps.numerator}/{fps.denominator}",
    )
    options = {"vcodec": "libx264", "pix_fmt": "yuv420p", "crf": crf, "preset": preset}
    if faststart:
        options["movflags"] = "+faststart"
    if comment:
        options["metadata"] = f"comment={comment}"
    stream = ffmpeg.output(source.video, str(output), **options).global_args(*_GLOBAL_ARGS)
    return ffmpeg.compile(stream, cmd=binary, overwrite_output=True)


def _own_file(path: Path):
    """An MP4/M4A this encoder wrote itself."""
    return ffmpeg.input(str(path), **safety.input_options("mov"))


def _fitted_audio(audio_source: Path, duration: Fraction, audio_format: str):
    """The source's first audio stream, exactly `duration` long.

    The input is read for at most `duration` (-t). A late-starting audio stream gets silence in
    front (aresample first_pts=0, so it stays in sync with the hero's start), a short one
    silence behind (apad whole_dur), and atrim cuts at exactly `duration`: audio and video end
    together, instead of `-shortest` cutting whichever ends first.
    """
    length = seconds_arg(duration)
    sound = ffmpeg.input(str(audio_source), t=length, **safety.input_options(audio_format))
    return (
        sound["a:0"]
        .filter("aresample", **{"async": 1, "first_pts": 0})
        .filter("apad", whole_dur=length)
        .filter("atrim", end=length)
    )


def mux_audio_argv(
    binary: str,
    *,
    video: Path,
    audio_source: Path,
    duration: Fraction,
    bitrate: str,
    output: Path,
    comment: str = "",
    audio_format: str = "matroska",
) -> list[str]:
    """Copy the video stream and add the source's first audio stream as AAC of equal length.

    `audio_format`: the audio source's demuxer, as `probe_audio_source` found it."""
    picture = _own_file(video)
    extra = {"metadata": f"comment={comment}"} if comment else {}
    stream = ffmpeg.output(
        picture["v:0"],
        _fitted_audio(audio_source, duration, audio_format),
        str(output),
        vcodec="copy",
        acodec="aac",
        audio_bitrate=bitrate,
        movflags="+faststart",
        **extra,
    ).global_args(*_GLOBAL_ARGS, "-nostdin")
    return ffmpeg.compile(stream, cmd=binary, overwrite_output=True)


def audio_encode_argv(
    binary: str,
    *,
    audio_source: Path,
    duration: Fraction,
    bitrate: str,
    output: Path,
    audio_format: str = "matroska",
) -> list[str]:
    """The source's first audio stream as AAC of exactly `duration`, alone in an M4A file."""
    stream = ffmpeg.output(
        _fitted_audio(audio_source, duration, audio_format),
        str(output),
        acodec="aac",
        audio_bitrate=bitrate,
    ).global_args(*_GLOBAL_ARGS, "-nostdin")
    return ffmpeg.compile(stream, cmd=binary, overwrite_output=True)


def mux_copy_argv(
    binary: str, *, video: Path, audio: Path, output: Path, comment: str = ""
) -> list[str]:
    """Put an encoded video stream and an encoded audio stream into one MP4, both copied."""
    extra = {"metadata": f"comment={comment}"} if comment else {}
    stream = ffmpeg.output(
        _own_file(video)["v:0"],
        _own_file(audio)["a:0"],
        str(output),
        vcodec="copy",
        acodec="copy",
        movflags="+faststart",
        **extra,
    ).global_args(*_GLOBAL_ARGS, "-nostdin")
    return ffmpeg.compile(stream, cmd=binary, overwrite_output=True)


def _tail(path: Path) -> str:
    try:
        text = path.read_bytes()[-STDERR_TAIL_CHARS:].decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return text or "(no message)"


class FFmpegProcess:
    """One running FFmpeg with stdin as a pipe and stderr captured to a file.

    A guarded child (services/common/ffmpeg_safety.py): its own process group, SIGKILLed when
    the encoder dies, killed as a group by `kill()`."""

    def __init__(self, argv: list[str], stderr_path: Path, *, stdin: bool) -> None:
        self.argv = argv
        self.stderr_path = stderr_path
        self._lock = threading.Lock()
        self._killed = False
        with open(stderr_path, "wb") as err:
            try:
                self.proc = safety.popen(
                    argv,
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            except OSError as exc:
                raise UnavailableError(
                    f"cannot start {argv[0]}: {exc}", reason="no_ffmpeg"
                ) from exc
        logger.debug("ffmpeg started", extra={"pid": self.proc.pid, "argv": " ".join(argv)})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def write(self, data: bytes) -> None:
        """Feed stdin; a dead FFmpeg becomes an FFmpegError with its message."""
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, ValueError, OSError):
            self.proc.wait()
            raise self._error() from None

    def finish(self, timeout_s: float) -> None:
        """Close stdin (if any), wait for the exit and raise FFmpegError when it failed."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise FFmpegError(f"ffmpeg did not finish within {timeout_s:.0f} s") from None
        if self.proc.returncode != 0:
            raise self._error()

    def kill(self) -> None:
        """Stop FFmpeg now (idempotent) and reap it, so no zombie stays behind."""
        with self._lock:
            if self.proc.poll() is None:
                self._killed = True
            safety.kill_group(self.proc)
            if self.proc.stdin is not None:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass

    def _error(self) -> FFmpegError:
        if self._killed:
            return FFmpegError("ffmpeg was stopped", reason="ffmpeg_killed")
        tail = _tail(self.stderr_path)
        logger.warning(
            "ffmpeg exited with code %s: %s",
            self.proc.returncode,
            tail,
            extra={"argv": " ".join(self.argv)},
        )
        error = FFmpegError(f"ffmpeg exited with code {self.proc.returncode}")
        error.detail = tail
        return error


def run_ffmpeg(argv: list[str], stderr_path: Path, timeout_s: float) -> None:
    """Run an FFmpeg command to completion (no stdin), raising FFmpegError on failure."""
    FFmpegProcess(argv, stderr_path, stdin=False).finish(timeout_s)


def probe_audio_source(ffprobe: str, path: Path) -> str | None:
    """The demuxer to read the audio source with, or None when it has no audio stream.

    Only the allowed containers are opened (a playlist or list of files is refused before
    anything it names is read); unreadable files are the caller's fault."""
    argv = [
        ffprobe,
        "-v",
        "error",
        "-show_streams",
        "-show_format",
        "-of",
        "json",
        *safety.probe_input_args(),
        str(path),
    ]
    try:
        done = safety.run(argv, PROBE_TIMEOUT_S)
    except OSError as exc:
        raise UnavailableError(f"cannot start {ffprobe}: {exc}", reason="no_ffmpeg") from exc
    except subprocess.TimeoutExpired:
        raise InvalidInputError("probing the audio source timed out", reason="bad_audio") from None
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip()[-STDERR_TAIL_CHARS:]
        logger.warning("ffprobe refused the audio source %s: %s", path, tail)
        if safety.refused_demuxer(done.stderr) is not None:
            raise InvalidInputError(
                "the audio source is not in an accepted container", reason="unsupported_container"
            )
        raise InvalidInputError("the audio source is not a readable media file", reason="bad_audio")
    data = json.loads(done.stdout.decode("utf-8") or "{}")
    try:
        demuxer = safety.demuxer_of(str((data.get("format") or {}).get("format_name", "")))
    except safety.UnsafeMediaError:
        raise InvalidInputError(
            "the audio source is not in an accepted container", reason="unsupported_container"
        ) from None
    if demuxer == "mov" and safety.mov_external_reference(path):
        raise InvalidInputError(
            "the audio source refers to other files", reason="unsupported_container"
        )
    streams = data.get("streams") or []
    return demuxer if any(s.get("codec_type") == "audio" for s in streams) else None


def probe_has_audio(ffprobe: str, path: Path) -> bool:
    """Whether a media file (in an accepted container) has an audio stream."""
    return probe_audio_source(ffprobe, path) is not None


def check_tools(ffmpeg_bin: str, ffprobe: str) -> str:
    """Verify FFmpeg has libx264 and aac and that ffprobe runs; returns FFmpeg's version line."""
    try:
        version = safety.run([ffmpeg_bin, "-hide_banner", "-version"], PROBE_TIMEOUT_S)
        encoders = safety.run([ffmpeg_bin, "-hide_banner", "-encoders"], PROBE_TIMEOUT_S)
        probe = safety.run([ffprobe, "-hide_banner", "-version"], PROBE_TIMEOUT_S)
        for done in (version, encoders, probe):
            done.check_returncode()
    except (OSError, subprocess.SubprocessError) as exc:
        raise UnavailableError(f"FFmpeg tools are not usable: {exc}", reason="no_ffmpeg") from exc
    names = {
        line.split()[1]
        for line in encoders.stdout.decode().splitlines()
        if len(line.split()) > 1 and line.startswith(" ")
    }
    missing = [name for name in ("libx264", "aac") if name not in names]
    if missing:
        raise UnavailableError(
            f"{ffmpeg_bin} lacks the encoders {', '.join(missing)}", reason="no_ffmpeg"
        )
    return version.stdout.decode().splitlines()[0]
