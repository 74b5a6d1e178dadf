"""Image decoding: orientation, modes, and precise errors for bad files."""

from __future__ import annotations

import io
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from services.common.errors import InvalidInputError
from services.common.media import (
    DecodeGate,
    array_to_raw,
    check_image,
    decode_image,
    raw_to_array,
)


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


# ----------------------------------------------------------------- decoding at scale --


def _reference_rgb(img: Image.Image) -> np.ndarray:
    """Full-size decode as a whole-image conversion: EXIF orientation, alpha on black, integer
    and float modes scaled by their peak."""
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max()
        arr = np.zeros_like(arr) if peak <= 0 else arr / peak * 255.0
        return np.repeat(arr.clip(0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = Image.alpha_composite(
            Image.new("RGBA", img.size, (0, 0, 0, 255)), img.convert("RGBA")
        )
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _noise(mode: str, size: tuple[int, int], seed: int = 1) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgba = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), np.uint8), "RGBA")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), np.uint16))
    if mode == "F":
        return Image.fromarray(rng.random((size[1], size[0]), np.float32) * 1000)
    if mode == "P-transparent":
        img = rgba.convert("RGB").convert("P")
        img.info["transparency"] = 3
        return img
    return rgba.convert(mode)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("L", "PNG"),
        ("P-transparent", "PNG"),
        ("I;16", "PNG"),
        ("F", "TIFF"),
        ("CMYK", "TIFF"),
        ("RGBA", "WEBP"),
        ("1", "BMP"),
    ],
)
def test_banded_decode_matches_a_whole_image_conversion(mode: str, fmt: str) -> None:
    # 1500 rows of 700 px are several bands: the seams must not show.
    data = _png(
        _noise(mode, (700, 1500)), format=fmt, **({"lossless": True} if fmt == "WEBP" else {})
    )
    expected = _reference_rgb(Image.open(io.BytesIO(data)))
    assert np.array_equal(decode_image(data), expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _png(_noise("RGB", (48, 30)), format="PNG", exif=exif.tobytes())
    expected = _reference_rgb(Image.open(io.BytesIO(data)))
    assert np.array_equal(decode_image(data), expected)
    assert np.array_equal(decode_image(data, max_dim=25), expected)  # below 2 x max_dim: as is


def test_max_dim_reduces_while_decoding() -> None:
    big = _noise("RGB", (2000, 1000))
    png, jpeg = _png(big), _png(big, format="JPEG", quality=90)
    for data in (png, jpeg):
        full = decode_image(data)
        assert full.shape == (1000, 2000, 3)
        assert decode_image(data, max_dim=1001).shape == (1000, 2000, 3)  # < 2 x max_dim
        reduced = decode_image(data, max_dim=600)  # 3x box (PNG) / 1/2 scale (JPEG)
        assert 600 <= max(reduced.shape[:2]) < 1200 and reduced.dtype == np.uint8
    assert decode_image(png, max_dim=600).shape == (334, 667, 3)
    assert decode_image(jpeg, max_dim=600).shape == (500, 1000, 3)
    # The box reduction is the mean of each 3x3 block.
    ref = np.asarray(big, np.float64)[:999, :1998].reshape(333, 3, 666, 3, 3).mean(axis=(1, 3))
    assert np.abs(decode_image(png, max_dim=600)[:333, :666] - ref).max() <= 1.0


def test_only_allowed_formats_are_opened(tmp_path) -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"
    for data in (
        eps,
        _png(_noise("RGB", (32, 32)), format="ICO"),
        _png(_noise("RGB", (32, 32)), format="PCX"),
        _png(_noise("RGB", (32, 32)), format="TGA"),
    ):
        with pytest.raises(InvalidInputError, match="not a supported image") as info:
            decode_image(data)
        assert info.value.reason == "bad_image"
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"):
        img = _noise("RGB", (40, 40))
        assert decode_image(_png(img if fmt != "GIF" else img.convert("P"), format=fmt)).shape == (
            40,
            40,
            3,
        )


def test_check_image_reads_a_path_and_finds_truncation(tmp_path) -> None:
    good = _png(_noise("RGBA", (300, 200)))
    path = tmp_path / "photo.png"
    path.write_bytes(good)
    check_image(path)
    path.write_bytes(good[: len(good) * 3 // 4])
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        check_image(path)
    path.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="empty"):
        check_image(path)


def test_decode_gate_holds_the_budget_first_come_first_served() -> None:
    gate = DecodeGate(100)
    order: list[str] = []
    peak = [0]
    lock = threading.Lock()

    def hold(name: str, size: int, started: threading.Event) -> None:
        started.set()
        with gate.reserve(size):
            with lock:
                order.append(name)
                peak[0] = max(peak[0], gate.in_use)
            time.sleep(0.05)

    threads = []
    for name, size in (("a", 60), ("big", 500), ("b", 30), ("c", 30)):
        started = threading.Event()
        thread = threading.Thread(target=hold, args=(name, size, started))
        thread.start()
        started.wait()
        time.sleep(0.01)  # queue in this order
        threads.append(thread)
    for thread in threads:
        thread.join(5)
    # "big" (over the whole budget) waits for "a" and runs alone; "b" and "c" queue behind it.
    assert order == ["a", "big", "b", "c"]
    assert peak[0] <= 100 and gate.in_use == 0


@pytest.mark.parametrize("mode", ["1", "P", "P-transparent", "PA", "I;16", "L", "LA", "CMYK"])
def test_every_mode_can_be_reduced(mode: str) -> None:
    img = _noise(mode, (300, 200)) if mode != "PA" else _noise("RGBA", (300, 200)).convert("PA")
    fmt = "TIFF" if mode in ("CMYK", "PA") else "PNG"
    data = _png(img, format=fmt)
    out = decode_image(data, max_dim=50)
    assert out.shape == (34, 50, 3) and out.dtype == np.uint8
    check_image(data)


def test_decode_budget_setting_is_validated_like_every_other_setting():
    import os

    from services.common import media
    from services.common.config import ConfigError

    saved = os.environ.get("IMAGE_DECODE_BUDGET_MB")
    try:
        os.environ["IMAGE_DECODE_BUDGET_MB"] = "²"
        with pytest.raises(ConfigError, match="IMAGE_DECODE_BUDGET_MB"):
            media._budget_from_env()
        os.environ["IMAGE_DECODE_BUDGET_MB"] = "8"
        with pytest.raises(ConfigError, match="IMAGE_DECODE_BUDGET_MB"):
            media._budget_from_env()
        os.environ["IMAGE_DECODE_BUDGET_MB"] = "64"
        assert media._budget_from_env() == 64 * 1024 * 1024
    finally:
        if saved is None:
            os.environ.pop("IMAGE_DECODE_BUDGET_MB", None)
        else:
            os.environ["IMAGE_DECODE_BUDGET_MB"] = saved
