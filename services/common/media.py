"""Image helpers shared by the services: proto RawImage <-> numpy, and safe image decoding."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dynamics.v1 import common_pb2
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
        raise InvalidInputError(f"raw image has {c} channels, expected {channels}", reason="bad_image")
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
    return common_pb2.RawImage(width=w, height=h, channels=c, data=np.ascontiguousarray(image).tobytes())


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded image file into RGB uint8 H x W x 3, honouring EXIF orientation.

    Animated images give their first frame. Raises InvalidInputError for empty, corrupt,
    truncated, oversized (decompression bombs) or degenerate images.
    """
    if not data:
        raise InvalidInputError("image is empty", reason="bad_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels or w > MAX_SIDE or h > MAX_SIDE:
                raise InvalidInputError(
                    f"image is {w}x{h} pixels; the limit is {max_pixels} pixels and "
                    f"{MAX_SIDE} px per side",
                    reason="image_too_large",
                )
            if w < MIN_SIDE or h < MIN_SIDE:
                raise InvalidInputError(
                    f"image is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed",
                    reason="image_too_small",
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except InvalidInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInputError(f"image is too large to decode safely: {exc}",
                                reason="image_too_large") from None
    except UnidentifiedImageError:
        raise InvalidInputError("file is not a supported image (PNG, JPEG, WebP, ...)",
                                reason="bad_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInputError(f"image is corrupt or truncated: {exc}", reason="bad_image") from None
    return rgb


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode (P, L, LA, RGBA, CMYK, I;16, F) -> RGB uint8; alpha composited on black."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() if arr.size else 0.0
        arr = np.zeros_like(arr) if peak <= 0 else arr / peak * 255.0
        gray = arr.clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def encode_png(image: np.ndarray) -> bytes:
    """RGB uint8 array -> PNG bytes (lossless; used to ship canvases through gRPC)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def image_message_to_array(msg: common_pb2.Image, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """dynamics.v1.Image (raw or encoded) -> RGB uint8 array."""
    which = msg.WhichOneof("payload")
    if which == "raw":
        return raw_to_array(msg.raw)
    if which == "encoded":
        return decode_image(msg.encoded.data, max_pixels=max_pixels)
    raise InvalidInputError("image message carries neither raw pixels nor an encoded file",
                            reason="bad_image")
