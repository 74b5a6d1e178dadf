"""A generated corpus of hostile and unusual image files, each with the answer it must get.

`expect` is one of:
- "face": a usable photo with a face (odd modes, EXIF rotation, animation, trailing junk);
- "no_face": a decodable photo without a usable face;
- a reason string ("bad_image", "image_too_large", "image_too_small"): refused as bad input.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from services.cli.demo_media import portrait

BAD = "bad_image"
TOO_LARGE = "image_too_large"
TOO_SMALL = "image_too_small"


@dataclass(frozen=True)
class ImageCase:
    """One corpus entry: a test id, the file's bytes and the expected answer."""

    id: str
    data: bytes
    expect: str


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def face_image(side: int = 320) -> Image.Image:
    """The packaged portrait, `side` px on its longer edge."""
    img = Image.fromarray(portrait())
    img.thumbnail((side, side))
    return img


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_header(width: int, height: int, *, bit_depth: int = 8, color: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height grey pixels, with a tiny compressed body."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * width
    body = b"".join(compressor.compress(row) for _ in range(min(height, 64))) + compressor.flush()
    return (
        _png_header(width, height, color=0) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")
    )


def _bomb_gif(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b"\x3b"


def _bomb_jpeg(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is rewritten to claim width x height."""
    data = bytearray(_save(Image.new("RGB", (16, 16), (90, 90, 90)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _bomb_bmp(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info


def _bomb_tiff(width: int, height: int) -> bytes:
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 1),
        (279, 4, 1, width * height),
    ]
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


_UNDO_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _exif_rotated(orientation: int) -> bytes:
    """Pixels stored turned so that only honouring the EXIF orientation shows the face upright."""
    img = face_image(240)
    if orientation in _UNDO_ORIENTATION:
        img = img.transpose(_UNDO_ORIENTATION[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(img, "JPEG", exif=exif.tobytes(), quality=90)


def _animated(fmt: str) -> bytes:
    first = face_image(200)
    frames = [first, first.rotate(10), Image.new("RGB", first.size, (0, 0, 0))]
    if fmt == "PNG":
        return _save(first, "PNG", save_all=True, append_images=frames[1:], duration=100)
    return _save(first, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _grid(count: int, side: int, canvas: int) -> bytes:
    """`count` faces of `side` px on a grey canvas."""
    out = Image.new("RGB", (canvas, canvas), (128, 128, 128))
    face = face_image(side)
    per_row = max(1, canvas // side)
    for i in range(count):
        out.paste(face, ((i % per_row) * side, (i // per_row) * side))
    return _save(out, "PNG")


def _truncations(name: str, data: bytes) -> list[ImageCase]:
    cuts = {
        "8b": 8,
        "header": 40,
        "quarter": len(data) // 4,
        "half": len(data) // 2,
        "most": len(data) * 9 // 10,
    }
    return [ImageCase(f"truncated-{name}-{label}", data[:n], BAD) for label, n in cuts.items()]


def _mode_cases() -> list[ImageCase]:
    face = face_image(300)
    rgba = face.convert("RGBA")
    rgba.putalpha(200)
    conversions: dict[str, Callable[[], bytes]] = {
        "cmyk-jpeg": lambda: _save(face.convert("CMYK"), "JPEG"),
        "cmyk-tiff": lambda: _save(face.convert("CMYK"), "TIFF"),
        "gray-png": lambda: _save(face.convert("L"), "PNG"),
        "gray-jpeg": lambda: _save(face.convert("L"), "JPEG"),
        "gray-alpha-png": lambda: _save(face.convert("LA"), "PNG"),
        "rgba-png": lambda: _save(rgba, "PNG"),
        "rgba-webp": lambda: _save(rgba, "WEBP"),
        "palette-png": lambda: _save(face.convert("P"), "PNG"),
        "palette-gif": lambda: _save(face.convert("P"), "GIF"),
        "16bit-gray-png": lambda: _save(
            Image.fromarray(np.asarray(face.convert("L"), np.uint16) * 257), "PNG"
        ),
        "32bit-int-tiff": lambda: _save(face.convert("I"), "TIFF"),
        "float-tiff": lambda: _save(face.convert("F"), "TIFF"),
        "bmp": lambda: _save(face, "BMP"),
        "webp-lossy": lambda: _save(face, "WEBP", quality=60),
        "jpeg-progressive": lambda: _save(face, "JPEG", progressive=True),
        "ycbcr-tiff": lambda: _save(face, "TIFF", compression="jpeg"),
    }
    cases = [ImageCase(f"mode-{name}", make(), "face") for name, make in conversions.items()]
    cases += [ImageCase(f"exif-orientation-{o}", _exif_rotated(o), "face") for o in range(1, 9)]
    cases += [
        ImageCase(f"animated-{fmt.lower()}", _animated(fmt), "face")
        for fmt in ("GIF", "WEBP", "PNG")
    ]
    return cases


def _bomb_cases() -> list[ImageCase]:
    dims = {
        "wide": (65_000, 16),
        "tall": (16, 65_000),
        "square": (60_000, 60_000),
        "max": (0xFFFF, 0xFFFF),
    }
    makers = {
        "png": _bomb_png,
        "gif": _bomb_gif,
        "jpeg": _bomb_jpeg,
        "bmp": _bomb_bmp,
        "tiff": _bomb_tiff,
    }
    cases = [
        ImageCase(f"bomb-{fmt}-{label}", make(*wh), TOO_LARGE)
        for fmt, make in makers.items()
        for label, wh in dims.items()
    ]
    cases.append(ImageCase("bomb-png-real-20k", _bomb_png(20_000, 20_000), TOO_LARGE))
    return cases


def _junk_cases() -> list[ImageCase]:
    png = _save(face_image(200), "PNG")
    mp4_like = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 200
    junk = {
        "empty": b"",
        "one-byte": b"\xff",
        "zeros-4k": b"\x00" * 4096,
        "random-4k": np.random.default_rng(9).integers(0, 256, 4096, np.uint8).tobytes(),
        "text": b"hello, I am not a picture\n" * 10,
        "html": b"<!doctype html><html><body><script>alert(1)</script></body></html>",
        "json": b'{"image": "data:image/png;base64,AAAA"}',
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect/></svg>',
        "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "zip": b"PK\x03\x04" + b"\x00" * 60,
        "mp4-as-image": mp4_like,
        "elf": b"\x7fELF\x02\x01\x01" + b"\x00" * 100,
        "png-magic-only": b"\x89PNG\r\n\x1a\n",
        "png-bad-crc": _png_header(64, 64)[:-4] + b"\x00\x00\x00\x00",
        "png-no-idat": _png_header(64, 64) + _png_chunk(b"IEND", b""),
        "png-garbage-idat": _png_header(64, 64)
        + _png_chunk(b"IDAT", b"garbage!" * 20)
        + _png_chunk(b"IEND", b""),
        "png-zero-size": _png_header(0, 0) + _png_chunk(b"IEND", b""),
        "jpeg-soi-only": b"\xff\xd8\xff",
        "gif-header-only": b"GIF89a",
        "bmp-header-only": b"BM" + b"\x00" * 12,
        "tiff-header-only": b"II*\x00\x08\x00\x00\x00",
        "webp-header-only": b"RIFF\x10\x00\x00\x00WEBPVP8 ",
        "png-inside-zip-header": b"PK\x03\x04" + png,
    }
    return [ImageCase(f"junk-{name}", data, BAD) for name, data in junk.items()]


def _polyglot_cases() -> list[ImageCase]:
    """Valid images carrying a second format: they decode as the image they start with."""
    face = face_image(220)
    png, jpeg, gif = _save(face, "PNG"), _save(face, "JPEG"), _save(face.convert("P"), "GIF")
    tails = {
        "zip": b"PK\x03\x04" + b"\x00" * 40 + b"PK\x05\x06" + b"\x00" * 18,
        "html": b"<html><script>alert(document.cookie)</script></html>",
        "php": b"<?php system($_GET['c']); ?>",
        "pdf": b"%PDF-1.4\n%%EOF",
    }
    cases = [
        ImageCase(f"polyglot-{name}-{tail}", base + extra, "face")
        for name, base in (("png", png), ("jpeg", jpeg), ("gif", gif))
        for tail, extra in tails.items()
    ]
    cases.append(ImageCase("polyglot-gifar-js", b"GIF89a/*" + gif[8:] + b"*/=alert(1);", "no_face"))
    return cases


def _face_cases() -> list[ImageCase]:
    rng = np.random.default_rng(3)
    noise = Image.fromarray(rng.integers(0, 256, (256, 256, 3), np.uint8))
    return [
        ImageCase("noface-noise", _save(noise, "PNG"), "no_face"),
        ImageCase(
            "noface-flat", _save(Image.new("RGB", (300, 300), (40, 90, 200)), "PNG"), "no_face"
        ),
        ImageCase(
            "noface-gradient", _save(Image.linear_gradient("L").convert("RGB"), "PNG"), "no_face"
        ),
        ImageCase("tiny-face-12px", _grid(1, 12, 640), "no_face"),
        ImageCase("tiny-face-20px", _grid(1, 20, 800), "no_face"),
        ImageCase("many-faces-4", _grid(4, 160, 320), "face"),
        ImageCase("many-faces-9", _grid(9, 120, 360), "face"),
        ImageCase("many-faces-16", _grid(16, 96, 384), "face"),
        ImageCase("too-small-1x1", _save(Image.new("RGB", (1, 1)), "PNG"), TOO_SMALL),
        ImageCase("too-small-8x8", _save(Image.new("RGB", (8, 8)), "PNG"), TOO_SMALL),
        ImageCase("sliver-1x2000", _save(Image.new("RGB", (1, 2000)), "PNG"), TOO_SMALL),
    ]


def image_corpus() -> list[ImageCase]:
    """Every image case (about 110)."""
    face = face_image(260)
    cases: list[ImageCase] = []
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        data = _save(face.convert("P") if fmt == "GIF" else face, fmt)
        cases += _truncations(fmt.lower(), data)
    cases += _junk_cases() + _bomb_cases() + _mode_cases() + _polyglot_cases() + _face_cases()
    return cases
