"""Hostile "videos" that name other files or URLs (playlists, lists, references) and a sentinel
that notices when anything opens what they name.

The sentinel is a FIFO (`secret.mkv`) watched by a thread, plus an HTTP server on loopback.
Opening a FIFO for reading blocks until a writer appears; the watcher polls for a reader with
a non-blocking open for writing, so every open of the secret by any process (FFmpeg in the
test, or in a gateway or encoder subprocess) is recorded in `hits`; the reader then sees an
empty file. Every HTTP request is recorded too. A case is safe when it is refused (or, for an
inert attachment, accepted) and the sentinel saw nothing.
"""

from __future__ import annotations

import errno
import http.server
import os
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

UNSUPPORTED = "unsupported_container"


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        timeout=120,
    )


def colour_clip(
    path: Path,
    colour: str,
    *,
    seconds: float = 1.0,
    rate: int = 10,
    size: str = "64x48",
    extra: tuple[str, ...] = (),
) -> Path:
    """A plain-colour H.264 clip (the colour tells whose frames a result carries)."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"color=c={colour}:size={size}:rate={rate}:d={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        *extra,
        str(path),
    )
    return path


@dataclass
class Sentinel:
    """A FIFO and an HTTP server that record every attempt to read them."""

    folder: Path
    name: str = "secret.mkv"
    hits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fifo = self.folder / self.name
        os.mkfifo(self.fifo)
        self._stop = threading.Event()
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(f"http {self.path}")
                self.send_error(404)

            def log_message(self, *args) -> None:
                pass

        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._threads = [
            threading.Thread(target=self._http.serve_forever, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: nobody has it open for reading
                    raise
                time.sleep(0.01)
                continue
            self.hits.append(f"file {self.fifo}")
            os.close(fd)
            time.sleep(0.05)

    def settle(self) -> list[str]:
        """The hits so far, after a moment for a blocked reader to be seen."""
        time.sleep(0.1)
        return list(self.hits)

    def close(self) -> None:
        self._stop.set()
        self._http.shutdown()
        self._http.server_close()


@dataclass(frozen=True)
class HostileCase:
    """One file; `reason` is the refusal expected at intake/probe, or "accept" (inert)."""

    id: str
    path: Path
    reason: str


def _hls(segment: str, *, key: str | None = None) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:0"]
    if key is not None:
        lines.append(f'#EXT-X-KEY:METHOD=AES-128,URI="{key}",IV=0x{"00" * 16}')
    lines += ["#EXTINF:1.0,", segment, "#EXT-X-ENDLIST", ""]
    return "\n".join(lines)


# -- MP4 with an external data reference (a Mac alias record naming another file) ------------

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf"}


def _boxes(data: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos, header, size
        pos += size


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _alias_record(name: str) -> bytes:
    """An `alis` dref entry (not self-contained) whose path ends in `name`; read by FFmpeg's
    mov demuxer as "the samples are in `name`, next to this file" when enable_drefs is on."""
    volume = b"Vol"
    path = b"Vol:dir:" + name.encode()
    body = bytearray()
    body += bytes(10)
    body += bytes([len(volume)]) + volume.ljust(27, b"\0")
    body += bytes(12)
    body += bytes([len(name)]) + name.encode().ljust(63, b"\0")
    body += bytes(16)
    body += struct.pack(">HH", 1, 1)  # nlvl_from, nlvl_to: same folder
    body += bytes(16)
    body += struct.pack(">HH", 2, len(path)) + path + (b"\0" if len(path) % 2 else b"")
    body += struct.pack(">hH", -1, 0)
    entry = struct.pack(">I", 0) + bytes(body)  # version 0, flags 0: not self-contained
    return _box(b"alis", entry)


def _rewrite_drefs(data: bytes, start: int, end: int, name: str) -> bytes:
    out = bytearray()
    for kind, pos, header, size in _boxes(data, start, end):
        if kind in _CONTAINERS:
            out += _box(kind, _rewrite_drefs(data, pos + header, pos + size, name))
        elif kind == b"dref":
            out += _box(b"dref", struct.pack(">II", 0, 1) + _alias_record(name))
        else:
            out += (
                data[pos : pos + size] if header == 8 else _box(kind, data[pos + 16 : pos + size])
            )
    return bytes(out)


def mp4_with_external_reference(dest: Path, donor: Path, name: str) -> Path:
    """`donor`'s ftyp and moov with every track's data reference pointing at `name` (next to
    `dest`) and no mdata of its own: all samples would come from `name`."""
    data = donor.read_bytes()
    kept = bytearray()
    for kind, pos, _header, size in _boxes(data, 0, len(data)):
        if kind == b"ftyp":
            kept += data[pos : pos + size]
        elif kind == b"moov":
            kept += _rewrite_drefs(data, pos, pos + size, name)
    dest.write_bytes(bytes(kept))
    return dest


# -- the corpus --------------------------------------------------------------------------------


# Every case `hostile_cases` writes (dash-mpd only where FFmpeg has that demuxer);
# the last one is a fine video carrying an inert playlist attachment, not a refused input.
CASE_IDS = (
    "hls-file-url",
    "hls-absolute-path",
    "hls-http",
    "hls-crypto-protocol",
    "hls-aes-key-from-file",
    "hls-concat-protocol",
    "hls-subfile-protocol",
    "hls-data-uri",
    "hls-master-to-variant",
    "ffconcat",
    "ffconcat-file-url",
    "ffconcat-http",
    "sdp-rtp",
    "dash-mpd",
    "mp4-external-reference",
    "png-image-as-video",
    "mkv-playlist-attachment",
)
INERT_CASE_IDS = ("mkv-playlist-attachment",)


def has_demuxer(name: str) -> bool:
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-demuxers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return any(line.split()[1:2] == [name] for line in done.stdout.splitlines()[4:])


def hostile_cases(sentinel: Sentinel) -> list[HostileCase]:
    """Every indirection case as a file named like an upload (`*.mp4` unless noted), written
    next to the sentinel's FIFO so that relative references reach it too."""
    folder = sentinel.folder
    secret, url = sentinel.fifo, sentinel.url
    texts = {
        "hls-file-url": (_hls(f"file://{secret}"), UNSUPPORTED),
        "hls-absolute-path": (_hls(str(secret)), UNSUPPORTED),
        "hls-http": (_hls(f"{url}/segment.mkv"), UNSUPPORTED),
        "hls-crypto-protocol": (_hls(f"crypto:{secret}"), UNSUPPORTED),
        "hls-aes-key-from-file": (_hls(f"{url}/seg.ts", key=f"file://{secret}"), UNSUPPORTED),
        "hls-concat-protocol": (_hls(f"concat:{secret}|{secret}"), UNSUPPORTED),
        "hls-subfile-protocol": (_hls(f"subfile,,start,0,end,0,,:{secret}"), UNSUPPORTED),
        "hls-data-uri": (_hls("data:video/mp4;base64,AAAAGGZ0eXBtcDQy"), UNSUPPORTED),
        "hls-master-to-variant": (
            (f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\n{folder / 'variant.m3u8'}\n"),
            UNSUPPORTED,
        ),
        "ffconcat": (f"ffconcat version 1.0\nfile '{secret.name}'\n", UNSUPPORTED),
        "ffconcat-file-url": (f"ffconcat version 1.0\nfile 'file:{secret}'\n", UNSUPPORTED),
        "ffconcat-http": (f"ffconcat version 1.0\nfile '{url}/c.mkv'\n", UNSUPPORTED),
        "sdp-rtp": (
            (
                "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
                "m=video 5004 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
            ),
            UNSUPPORTED,
        ),
    }
    if has_demuxer("dash"):
        texts["dash-mpd"] = (
            (
                '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" '
                'type="static" mediaPresentationDuration="PT1S" minBufferTime="PT1S" '
                'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period><AdaptationSet>'
                '<Representation id="1" bandwidth="1000" mimeType="video/mp4" codecs="avc1">'
                f"<BaseURL>file://{secret}</BaseURL></Representation></AdaptationSet></Period>"
                "</MPD>\n"
            ),
            UNSUPPORTED,
        )
    (folder / "variant.m3u8").write_text(_hls(f"file://{secret}"))
    cases = []
    for name, (text, reason) in texts.items():
        path = folder / f"{name}.mp4"
        path.write_text(text)
        cases.append(HostileCase(name, path, reason))
    # A Matroska video with a playlist naming the secret as an attachment: the attachment is
    # inert data (never opened, and the trim drops it); the video itself is fine.
    playlist = folder / "attached.m3u8"
    playlist.write_text(_hls(f"file://{secret}"))
    attached = colour_clip(
        folder / "mkv-playlist-attachment.mkv",
        "blue",
        extra=("-attach", str(playlist), "-metadata:s:t", "mimetype=application/vnd.apple.mpegurl"),
    )
    cases.append(HostileCase("mkv-playlist-attachment", attached, "accept"))
    donor = colour_clip(folder / "donor.mp4", "red", extra=("-movflags", "+faststart"))
    dref = mp4_with_external_reference(folder / "mp4-external-reference.mp4", donor, secret.name)
    cases.append(HostileCase("mp4-external-reference", dref, UNSUPPORTED))
    png = folder / "png-image.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=32x32",
        "-frames:v",
        "1",
        "-f",
        "image2",
        "-c:v",
        "png",
        str(png),
    )
    cases.append(HostileCase("png-image-as-video", png, UNSUPPORTED))
    written = [case.id for case in cases]
    assert set(written) <= set(CASE_IDS), written  # CASE_IDS names every case
    return cases
