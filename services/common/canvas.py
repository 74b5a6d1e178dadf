"""The source canvas: the photo that face crops are cut from and pasted back onto (SPEC §5.1).

The canvas is the photo after EXIF orientation, its long side down to `max_dim` and both sides
cropped to even numbers. face_detect cuts the source crop from it and the encoder pastes the
animated frames back onto it. A 12 Mpx photo makes a 36 MB canvas, more than one gRPC message
may carry, so no canvas is ever sent: face_detect reports its size, and each service that needs
the pixels builds them here from the same photo file. Both sides run this one function on the
same bytes, so their canvases are bit-identical.
"""

from __future__ import annotations

import cv2
import numpy as np
from dynamics.v1 import common_pb2

from services.common.errors import InvalidInputError
from services.common.media import DEFAULT_MAX_PIXELS, decode_image, raw_to_array

SOURCE_DIVISION = 2  # canvas sides are cropped down to multiples of this (SPEC §5.1)


def prepare_canvas(image: np.ndarray, max_dim: int, division: int = SOURCE_DIVISION) -> np.ndarray:
    """Upstream's source resize (SPEC §5.1): long side down to max_dim (bilinear, the other side
    truncated to int; max_dim <= 0 keeps the size), then crop (not resize) both sides down to
    multiples of ``division``."""
    h, w = image.shape[:2]
    if max_dim > 0 and max(h, w) > max_dim:
        size = (int(w * max_dim / h), max_dim) if h > w else (max_dim, int(h * max_dim / w))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    h, w = image.shape[:2]
    nh, nw = h - h % division, w - w % division
    if nh == 0 or nw == 0:
        return image
    return np.ascontiguousarray(image[:nh, :nw])


def source_canvas(data: bytes, max_dim: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The canvas (H x W x 3 RGB uint8) of an image file: decoded with EXIF orientation
    (`media.decode_image`, which refuses corrupt and oversized files), then `prepare_canvas`."""
    return prepare_canvas(decode_image(data, max_pixels=max_pixels), max_dim)


def canvas_from_message(image: common_pb2.Image, max_dim: int) -> np.ndarray:
    """The canvas of a dynamics.v1.Image: an encoded file through `source_canvas`, raw pixels
    (already oriented) through `prepare_canvas`."""
    which = image.WhichOneof("payload")
    if which == "encoded":
        return source_canvas(image.encoded.data, max_dim)
    if which == "raw":
        return prepare_canvas(raw_to_array(image.raw), max_dim)
    raise InvalidInputError(
        "image message carries neither raw pixels nor an encoded file", reason="bad_image"
    )
