"""Image decoding: orientation, modes, and precise errors for bad files."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from services.common.errors import InvalidInputError
from services.common.media import array_to_raw, decode_image, raw_to_array


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_raw_round_trip_and_validation() -> None:
    arr = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    raw = array_to_raw(arr)
    assert np.array_equal(raw_to_array(raw), arr)
    raw.data = raw.data[:-1]
    with pytest.raises(InvalidInputError, match="needs 60 bytes, got 59"):
        raw_to_array(raw)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _png(img, format="JPEG", exif=exif.tobytes())
    assert decode_image(data).shape == (40, 20, 3)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "I;16", "P", "LA"])
def test_modes_become_rgb(mode: str) -> None:
    img = Image.new(mode, (32, 24))
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    out = decode_image(_png(img, format=fmt))
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8


def test_bad_files_give_clear_errors() -> None:
    good = _png(Image.new("RGB", (64, 64), (1, 2, 3)))
    with pytest.raises(InvalidInputError, match="empty"):
        decode_image(b"")
    with pytest.raises(InvalidInputError, match="not a supported image"):
        decode_image(b"GIF89a-not-really" + b"\0" * 50)
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        decode_image(good[: len(good) // 2])
    with pytest.raises(InvalidInputError, match="at least 16x16"):
        decode_image(_png(Image.new("RGB", (4, 4))))


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A PNG header that declares 100000 x 100000 pixels: refused from the header alone.
    png = _png(Image.new("1", (100, 100)))
    ihdr = b"IHDR" + (100000).to_bytes(4, "big") * 2 + png[24:29]
    bomb = png[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + png[33:]
    with pytest.raises(InvalidInputError, match="too large") as info:
        decode_image(bomb)
    assert info.value.reason == "image_too_large"
