"""Image helpers shared by the services: proto RawImage <-> numpy, and safe image decoding."""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from dynamics.v1 import common_pb2
from PIL import Image, UnidentifiedImageError

from services.common.config import env_int
from services.common.errors import InvalidInputError

# 40 Mpx is far above any phone photo (a 12 Mpx camera gives 4032x3024) and far below what
# would exhaust memory; images above are refused before their pixels are decoded.
DEFAULT_MAX_PIXELS = 40_000_000
MAX_SIDE = 16_384
MIN_SIDE = 16


def raw_to_array(raw: common_pb2.RawImage, *, channels: int | None = 3) -> np.ndarray:
    """Validate a RawImage and view it as an H x W x C uint8 array (a copy, writable)."""
    w, h, c = raw.width, raw.height, raw.channels
    if w <= 0 or h <= 0 or c <= 0:
        raise InvalidInputError(f"raw image has invalid size {w}x{h}x{c}", reason="bad_image")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise InvalidInputError(f"raw image {w}x{h} exceeds {MAX_SIDE} px", reason="bad_image")
    if channels is not None and c != channels:
        raise InvalidInputError(
            f"raw image has {c} channels, expected {channels}", reason="bad_image"
        )
    expected = w * h * c
    if len(raw.data) != expected:
        raise InvalidInputError(
            f"raw image {w}x{h}x{c} needs {expected} bytes, got {len(raw.data)}", reason="bad_image"
        )
    return np.frombuffer(raw.data, dtype=np.uint8).reshape(h, w, c).copy()


def array_to_raw(image: np.ndarray) -> common_pb2.RawImage:
    """H x W x C (or H x W) uint8 array -> RawImage."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"expected H x W x C, got shape {image.shape}")
    h, w, c = image.shape
    return common_pb2.RawImage(
        width=w, height=h, channels=c, data=np.ascontiguousarray(image).tobytes()
    )


def decode_image(
    data: bytes | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_dim: int | None = None,
) -> np.ndarray:
    """Decode an uploaded image file (bytes or a path) into RGB uint8 H x W x 3, honouring EXIF
    orientation; alpha is composited on black.

    Animated images give their first frame. Only the formats in ALLOWED_FORMATS are opened.
    Raises InvalidInputError for empty, corrupt, truncated, oversized (decompression bombs) or
    degenerate images.

    With `max_dim`, an image at least twice that size on its long side is reduced while it is
    decoded, by the largest whole factor that keeps the long side >= `max_dim` (JPEG scales in
    the decoder; other formats are box-averaged band by band), so callers that shrink the photo
    anyway never hold a full-size RGB copy. Without it the full size is returned.

    Decodes run under the process's decode budget (`decode_gate()`), so concurrent requests
    cannot multiply the decoded size without bound.
    """
    with _image_errors(), _open(data, max_pixels) as img:
        _check_size(img.size, max_pixels)
        if max_dim is not None and img.format in _JPEG_FORMATS:
            w, h = img.size
            long_side = max(w, h)
            if long_side >= 2 * max_dim:
                img.draft(None, (-(-w * max_dim // long_side), -(-h * max_dim // long_side)))
        factor = 1 if max_dim is None else max(1, max(img.size) // max(1, max_dim))
        cost = _decode_cost(img, factor)
        with _GATE.reserve(cost):
            img.load()
            orientation = img.getexif().get(_ORIENTATION, 1)
            rgb = _to_rgb(img, factor)
            img.close()
    if cost >= _TRIM_AFTER_BYTES:
        release_free_memory()
    return _orient(rgb, orientation)


def check_image(data: bytes | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise InvalidInputError unless `data` decodes as `decode_image` would decode it.

    Every byte of the file is decoded (truncation and corrupt data are found), but into a
    reduced image, so checking an upload costs at most one decoded copy of it (less for JPEG).
    """
    decode_image(data, max_pixels=max_pixels, max_dim=_CHECK_DIM)


# Pillow plugins an upload may be decoded with: what phones and browsers produce (the JPEG
# plugin also opens multi-picture JPEGs, MPO). Everything else (EPS, which runs Ghostscript,
# PSD, ICO, SGI, PCX, ...) is refused unopened.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_JPEG_FORMATS = ("JPEG", "MPO")
_ORIENTATION = 0x0112
_CHECK_DIM = 64
_BAND_BYTES = 4 * 1024 * 1024
_TRIM_AFTER_BYTES = 16 * 1024 * 1024
DEFAULT_DECODE_BUDGET_MB = 256


class DecodeGate:
    """A per-process budget of decoded-image bytes, granted first come, first served.

    A decode reserves its estimated working set before it allocates it and waits while the
    decodes in progress hold too much of the budget; one that alone exceeds the budget runs by
    itself. Peak decode memory is then about max(budget, the largest single decode).
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes <= 0:
            raise ValueError("the decode budget must be positive")
        self.budget = budget_bytes
        self._cond = threading.Condition()
        self._in_use = 0
        self._next_ticket = 0
        self._serving = 0

    @property
    def in_use(self) -> int:
        with self._cond:
            return self._in_use

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        need = max(0, min(nbytes, self.budget))
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._cond.wait_for(
                lambda: self._serving == ticket and self._in_use + need <= self.budget
            )
            self._serving += 1
            self._in_use += need
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._in_use -= need
                self._cond.notify_all()


def _budget_from_env() -> int:
    mib = env_int(os.environ, "IMAGE_DECODE_BUDGET_MB", DEFAULT_DECODE_BUDGET_MB, minimum=16)
    return mib * 1024 * 1024


_GATE = DecodeGate(_budget_from_env())


def decode_gate() -> DecodeGate:
    """This process's decode budget (IMAGE_DECODE_BUDGET_MB, default 256 MiB)."""
    return _GATE


def set_decode_budget(budget_bytes: int) -> DecodeGate:
    """Replace the process's decode budget (decodes already waiting keep the old one)."""
    global _GATE
    _GATE = DecodeGate(budget_bytes)
    return _GATE


def _libc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _libc_trim()


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them in each thread's arena; after a
    large decode in a pool thread that is hundreds of MB that would otherwise stay resident)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@contextmanager
def _image_errors() -> Iterator[None]:
    """Pillow's and the format's failures -> InvalidInputError with a stable reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except InvalidInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInputError(
            f"image is too large to decode safely: {exc}", reason="image_too_large"
        ) from None
    except UnidentifiedImageError:
        raise InvalidInputError(
            "file is not a supported image (PNG, JPEG, WebP, ...)", reason="bad_image"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise InvalidInputError(
            f"image is corrupt or truncated: {exc}", reason="bad_image"
        ) from None


def _open(data: bytes | os.PathLike[str], max_pixels: int) -> Image.Image:
    if isinstance(data, (bytes, bytearray, memoryview)):
        if not data:
            raise InvalidInputError("image is empty", reason="bad_image")
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    if os.path.getsize(data) == 0:
        raise InvalidInputError("image is empty", reason="bad_image")
    return Image.open(data, formats=ALLOWED_FORMATS)


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels or w > MAX_SIDE or h > MAX_SIDE:
        raise InvalidInputError(
            f"image is {w}x{h} pixels; the limit is {max_pixels} pixels and {MAX_SIDE} px per side",
            reason="image_too_large",
        )
    if w < MIN_SIDE or h < MIN_SIDE:
        raise InvalidInputError(
            f"image is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed",
            reason="image_too_small",
        )


def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel in Pillow's memory (3-band modes are stored 4 bytes wide)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _decode_cost(img: Image.Image, factor: int) -> int:
    """Decoded pixels plus the RGB result: what one decode holds at its peak."""
    w, h = img.size
    out = -(-w // factor) * -(-h // factor) * 3
    return w * h * _pixel_bytes(img.mode) + 2 * out


def _to_rgb(img: Image.Image, factor: int = 1) -> np.ndarray:
    """Any Pillow mode (P, L, LA, RGBA, CMYK, I;16, F, ...) -> RGB uint8, reduced `factor`
    times; alpha composited on black. Works in bands of rows, so the only full-size buffers
    are the decoded image and the result."""
    w, h = img.size
    out = np.empty((-(-h // factor), -(-w // factor), 3), np.uint8)
    peak = None
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        peak = float(img.getextrema()[1])
    rows = max(factor, _BAND_BYTES // max(1, w * 4) // factor * factor)
    for top in range(0, h, rows):
        band = img.crop((0, top, w, min(h, top + rows)))
        if factor > 1:
            band = _reducible(band).reduce(factor)
        row = top // factor
        out[row : row + band.height] = _band_to_rgb(band, peak)
    return out


def _reducible(img: Image.Image) -> Image.Image:
    """A mode whose pixels can be averaged: palettes become colours, bits grey levels."""
    if img.mode == "1":
        return img.convert("L")
    if img.mode == "PA" or (img.mode == "P" and "transparency" in img.info):
        return img.convert("RGBA")
    if img.mode == "P":
        return img.convert("RGB")
    if img.mode.startswith("I;16"):
        return img.convert("I")
    return img


def _band_to_rgb(img: Image.Image, peak: float | None) -> np.ndarray:
    """One band -> RGB uint8; integer and float modes are scaled by the whole image's `peak`."""
    if peak is not None:
        arr = np.asarray(img, dtype=np.float64)
        arr = np.zeros_like(arr) if peak <= 0 else arr / peak * 255.0
        gray = arr.clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an H x W x C array, as ImageOps.exif_transpose."""
    if orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    elif orientation == 5:
        image = image.transpose(1, 0, 2)
    elif orientation == 6:
        image = np.rot90(image, k=-1)
    elif orientation == 7:
        image = image[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:
        image = np.rot90(image, k=1)
    else:
        return image
    return np.ascontiguousarray(image)


def image_message_to_array(
    msg: common_pb2.Image, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """dynamics.v1.Image (raw or encoded) -> RGB uint8 array."""
    which = msg.WhichOneof("payload")
    if which == "raw":
        return raw_to_array(msg.raw)
    if which == "encoded":
        return decode_image(msg.encoded.data, max_pixels=max_pixels)
    raise InvalidInputError(
        "image message carries neither raw pixels nor an encoded file", reason="bad_image"
    )
