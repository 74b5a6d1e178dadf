"""What FFmpeg and ffprobe may open, and how every service starts them.

**Demuxers.** FFmpeg picks a demuxer from a file's content, not its name, and some demuxers
open other files or URLs named inside the data: HLS/DASH playlists, concat/ffconcat lists,
image2 patterns, SDP/RTP descriptions, MOV/MP4 external data references. A text playlist
uploaded as "hero.mp4" would otherwise make FFmpeg read server files. So every invocation on
anything that came from a user names the demuxers it may use (`-format_whitelist`), and every
FFmpeg run after the probe also forces the demuxer the probe found (`-f`):

* `mov` (one demuxer for mov, mp4, m4a, 3gp, 3g2, mj2): phone and camera recordings (iPhone
  .mov, Android .mp4), and the encoder's own intermediate MP4/M4A files;
* `matroska` (matroska and webm): browser recordings (MediaRecorder writes WebM), MKV files,
  and the gateway's trimmed hero video and extracted audio, which are Matroska;
* `avi`: older cameras and MJPEG recorders.

Nothing else: no playlists (hls, dash, concat), no image sequences (image2 and the *_pipe
image demuxers), no network descriptions (sdp, rtp, rtsp), no lavfi, no raw audio-only
containers. An audio-only file in an allowed container is still readable (the `mov`
demuxer reads M4A), so the audio source the encoder gets is covered by the same list.

**Protocols.** `-protocol_whitelist file` for files, `pipe` where we stream into FFmpeg's
stdin ourselves (then the format is forced too: `-f rawvideo`). That also refuses the
`concat:`, `subfile:`, `data:`, `crypto:`, `http(s):` and `tee:` URL schemes, including ones
a demuxer would open on its own (nested contexts inherit the whitelists).

**MOV external references.** The `mov` demuxer can follow a track's data reference (an `alis`
record) to another file when `enable_drefs` is on. It is off by default; probes pass
`-enable_drefs 0 -use_absolute_path 0` explicitly, and FFmpeg runs on a `mov` input pass them
too (FFmpeg, unlike ffprobe, rejects options the chosen demuxer does not have, so they are
given only with `-f mov`).

**Processes.** Every FFmpeg/ffprobe child runs in its own session and process group (killed as
a group), under `setpriv --pdeathsig KILL`, so it gets SIGKILL the moment the service dies,
however it dies. The death signal fires when the *thread* that forked the child ends, not
the process, so all children are started from one long-lived spawner thread of this module,
never from a gRPC worker or request thread that may end while FFmpeg still runs. No
`preexec_fn` is used: it would force a plain fork() of a gRPC process, whose fork handlers
can abort the child before exec.
"""

from __future__ import annotations

import atexit
import errno
import functools
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import Future

logger = logging.getLogger(__name__)

# Demuxer names as `-format_whitelist` and `-f` take them, with the `format_name` ffprobe
# reports for each (a demuxer that serves several extensions reports them all, comma-joined).
VIDEO_DEMUXERS: dict[str, str] = {
    "mov": "mov,mp4,m4a,3gp,3g2,mj2",
    "matroska": "matroska,webm",
    "avi": "avi",
}
FILE_PROTOCOLS = "file"
PIPE_PROTOCOLS = "pipe"
# Demuxer-private options of `mov` that would follow references to other files.
MOV_SAFE_OPTIONS: tuple[str, ...] = ("-enable_drefs", "0", "-use_absolute_path", "0")

PDEATHSIG = "KILL"


class UnsafeMediaError(ValueError):
    """The file's container is not one we open (a playlist, an image sequence, ...)."""

    def __init__(self, found: str | None) -> None:
        super().__init__(f"container {found or 'unknown'} is not allowed")
        self.found = found


def probe_input_args(demuxers: Sequence[str] = tuple(VIDEO_DEMUXERS)) -> list[str]:
    """ffprobe input options for a file of unknown container: only `demuxers`, files only.

    ffprobe ignores demuxer-private options the chosen demuxer lacks, so the `mov` reference
    options are always given.
    """
    return [
        "-format_whitelist",
        ",".join(demuxers),
        "-protocol_whitelist",
        FILE_PROTOCOLS,
        *MOV_SAFE_OPTIONS,
    ]


def demuxer_of(format_name: str) -> str:
    """The allowed demuxer for ffprobe's `format_name`; raises UnsafeMediaError otherwise."""
    for demuxer, reported in VIDEO_DEMUXERS.items():
        if format_name == reported:
            return demuxer
    raise UnsafeMediaError(format_name or None)


def input_options(demuxer: str) -> dict[str, str]:
    """ffmpeg-python `input(**kwargs)` options that force `demuxer` on a local file."""
    if demuxer not in VIDEO_DEMUXERS:
        raise UnsafeMediaError(demuxer)
    options = {"f": demuxer, "format_whitelist": demuxer, "protocol_whitelist": FILE_PROTOCOLS}
    if demuxer == "mov":
        options.update(
            zip((k.lstrip("-") for k in MOV_SAFE_OPTIONS[::2]), MOV_SAFE_OPTIONS[1::2], strict=True)
        )
    return options


def input_args(demuxer: str) -> list[str]:
    """The same as `input_options`, as argv to put before `-i`."""
    args: list[str] = []
    for key, value in input_options(demuxer).items():
        args += [f"-{key}", value]
    return args


def pipe_input_options(fmt: str = "rawvideo") -> dict[str, str]:
    """ffmpeg-python `input("pipe:0", **kwargs)` options for data we stream in ourselves."""
    return {"format": fmt, "format_whitelist": fmt, "protocol_whitelist": PIPE_PROTOCOLS}


_MOV_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"dinf"})
_MAX_DREF_ENTRIES = 64


def mov_external_reference(path: os.PathLike | str) -> bool:
    """Whether an MP4/MOV names another file or URL for its samples: a data reference entry
    (`url `, `urn `, `alis`, ...) without the self-contained flag, or a compressed movie
    header (`cmov`) this check cannot see into. Only box headers are read.

    FFmpeg does not follow such references with `enable_drefs` off (the default, and set
    explicitly here); refusing the file gives a clear answer instead of a track of garbage.
    """
    with open(path, "rb") as handle:
        end = os.fstat(handle.fileno()).st_size
        return _mov_walk(handle, 0, end, 0)


def _mov_walk(handle, start: int, end: int, depth: int) -> bool:
    pos = start
    while pos + 8 <= end and depth < 8:
        handle.seek(pos)
        head = handle.read(16)
        size, kind = int.from_bytes(head[:4], "big"), head[4:8]
        header = 8
        if size == 1 and len(head) == 16:
            size, header = int.from_bytes(head[8:16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return False  # a cut or broken file: FFmpeg's own checks refuse it
        if kind == b"cmov":
            return True
        if kind in _MOV_CONTAINERS and _mov_walk(handle, pos + header, pos + size, depth + 1):
            return True
        if kind == b"dref" and _dref_external(handle, pos + header, pos + size):
            return True
        pos += size
    return False


def _dref_external(handle, start: int, end: int) -> bool:
    handle.seek(start)
    head = handle.read(8)  # version + flags, entry count
    if len(head) < 8:
        return False
    pos = start + 8
    for _ in range(min(int.from_bytes(head[4:8], "big"), _MAX_DREF_ENTRIES)):
        if pos + 12 > end:
            break
        handle.seek(pos)
        entry = handle.read(12)  # size, type, version + flags
        size, flags = int.from_bytes(entry[:4], "big"), int.from_bytes(entry[9:12], "big")
        if not flags & 1:  # 1 = the data is in this file
            return True
        if size < 12:
            break
        pos += size
    return False


_REFUSED = re.compile(r"\[([A-Za-z0-9_,]+) @ [^\]]*\] Format not on whitelist")


def refused_demuxer(stderr: bytes | str) -> str | None:
    """The demuxer FFmpeg refused by the whitelist ('hls', 'concat', ...), or None."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    match = _REFUSED.search(text)
    if match:
        return match.group(1)
    if "Format not on whitelist" in text or ("Protocol '" in text and "not on whitelist" in text):
        return "unknown"
    return None


# -- child processes -------------------------------------------------------------------------

_SETPRIV = shutil.which("setpriv")


def guarded_argv(argv: Sequence[str]) -> list[str]:
    """`argv` under `setpriv --pdeathsig KILL` (unchanged where setpriv is missing)."""
    if _SETPRIV is None:
        _warn_no_setpriv()
        return list(argv)
    return [_SETPRIV, f"--pdeathsig={PDEATHSIG}", "--", *argv]


@functools.cache
def _warn_no_setpriv() -> None:
    logger.warning(
        "setpriv (util-linux) is missing: FFmpeg children are killed on shutdown "
        "and cancel, but not when this process is killed"
    )


class _Spawner:
    """Starts every child from one long-lived daemon thread (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._owner_pid = 0
        self.children: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._owner_pid == os.getpid():
                return
            # First use, or a forked copy of the process: the old thread is not here.
            self._requests = queue.SimpleQueue()
            self.children = weakref.WeakSet()
            threading.Thread(
                target=self._loop, args=(self._requests,), name="child-spawner", daemon=True
            ).start()
            self._owner_pid = os.getpid()

    @staticmethod
    def _loop(requests: queue.SimpleQueue) -> None:
        while True:
            argv, kwargs, future = requests.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(subprocess.Popen(argv, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        if shutil.which(argv[0]) is None:  # as Popen would say, not setpriv's exit code 127
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
        self._ensure_thread()
        future: Future = Future()
        self._requests.put((guarded_argv(argv), {**kwargs, "start_new_session": True}, future))
        proc = future.result()
        with self._lock:
            self.children.add(proc)
        return proc

    def snapshot(self) -> list[subprocess.Popen]:
        with self._lock:
            return list(self.children)


_SPAWNER = _Spawner()


def popen(argv: Sequence[str], **kwargs) -> subprocess.Popen:
    """`subprocess.Popen(argv, **kwargs)` as a guarded child: own process group, SIGKILL when
    this process dies. Stop it with `kill_group`."""
    return _SPAWNER.popen(argv, **kwargs)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (FFmpeg and anything it started), then reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.kill()
        except OSError:
            pass
    proc.wait()


def run(
    argv: Sequence[str], timeout_s: float, *, stdout=subprocess.PIPE, stderr=subprocess.PIPE
) -> subprocess.CompletedProcess:
    """Like `subprocess.run(argv, capture_output=True, timeout=...)` for a guarded child; on
    timeout the whole group is killed before TimeoutExpired is raised."""
    proc = popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except BaseException:
        kill_group(proc)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def live_children() -> list[subprocess.Popen]:
    """Children started here that are still running."""
    return [proc for proc in _SPAWNER.snapshot() if proc.poll() is None]


def kill_children() -> None:
    """Kill every child still running (at interpreter exit, and for a service's shutdown)."""
    for proc in live_children():
        logger.info("killing child process %d at shutdown", proc.pid)
        kill_group(proc)


atexit.register(kill_children)
