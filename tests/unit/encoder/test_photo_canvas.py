"""The encoder rebuilds the paste-back canvas from the photo file: the same pixels face_detect
cut its crop from (what the contract used to send as a raw canvas), the same paste-back output,
and clear refusals when the photo and the header disagree."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from dynamics.v1 import common_pb2, encoder_pb2
from PIL import Image, ImageOps

from services.common.canvas import canvas_from_message, source_canvas
from services.common.errors import InvalidInputError, ResourceExhaustedError
from services.encoder.config import EncoderConfig
from services.encoder.pasteback import PasteBack
from services.encoder.servicer import MAX_PHOTO_BYTES, header_to_params

M_C2O = [2.1, 0.3, 40.0, -0.3, 2.1, 25.0, 0.0, 0.0, 1.0]


def _photo(width: int, height: int, *, orientation: int = 1, fmt: str = "JPEG") -> bytes:
    """A smooth test photo (stored `width` x `height`) with an EXIF orientation tag."""
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1)
    img = Image.fromarray(pixels.astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    img.save(out, format=fmt, exif=exif.tobytes(), **({"quality": 92} if fmt == "JPEG" else {}))
    return out.getvalue()


def _reference_canvas(data: bytes, max_dim: int) -> np.ndarray:
    """SPEC 5.1 written out independently: orientation, long side to max_dim with bilinear
    (other side truncated), crop to even sides."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    h, w = rgb.shape[:2]
    if max(h, w) > max_dim:
        size = (int(w * max_dim / h), max_dim) if h > w else (max_dim, int(h * max_dim / w))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    h, w = rgb.shape[:2]
    return rgb[: h - h % 2, : w - w % 2]


def _header(data: bytes, max_dim: int, width: int, height: int) -> encoder_pb2.EncodeHeader:
    return encoder_pb2.EncodeHeader(
        fps=common_pb2.Rational(num=25, den=1),
        photo_bytes=len(data),
        source_max_dim=max_dim,
        canvas_width=width,
        canvas_height=height,
        crop_to_canvas=common_pb2.Matrix3x3(values=M_C2O),
    )


@pytest.mark.parametrize(
    ("width", "height", "orientation", "max_dim", "expected"),
    [
        (641, 479, 6, 500, (500, 372)),  # rotated 90 degrees: 479 x 641 -> 373 x 500 -> even
        (641, 479, 1, 320, (238, 320)),  # 641 x 479 -> 320 x 239 -> even
        (333, 201, 3, 1280, (200, 332)),  # smaller than max_dim: only the even crop
    ],
)
def test_rebuilt_canvas_is_the_reference_and_what_face_detect_saw(
    width, height, orientation, max_dim, expected
):
    data = _photo(width, height, orientation=orientation)
    params = header_to_params(
        _header(data, max_dim, expected[1], expected[0]), EncoderConfig(), data
    )
    assert params.canvas.shape == (*expected, 3)
    assert np.array_equal(params.canvas, _reference_canvas(data, max_dim))
    # What face_detect cut its crop from (and used to send whole): DetectSource's image
    # message through canvas_from_message.
    image = common_pb2.Image(encoded=common_pb2.EncodedImage(data=data))
    assert np.array_equal(params.canvas, canvas_from_message(image, max_dim))
    assert np.array_equal(params.m_c2o, np.array(M_C2O).reshape(3, 3))


def test_pasteback_output_equals_the_raw_canvas_path():
    """Frames pasted on the rebuilt canvas equal frames pasted on the canvas face_detect
    computed in-process and used to send raw: byte for byte."""
    data = _photo(1021, 767, orientation=8)
    max_dim = 900
    sent = _reference_canvas(data, max_dim)  # what DetectSourceResponse.canvas carried
    params = header_to_params(
        _header(data, max_dim, sent.shape[1], sent.shape[0]), EncoderConfig(), data
    )
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, (3, 512, 512, 3), dtype=np.uint8)
    m_c2o = np.array(M_C2O).reshape(3, 3)
    old, new = PasteBack(sent, m_c2o, (512, 512)), PasteBack(params.canvas, m_c2o, (512, 512))
    for crop in crops:
        assert np.array_equal(old(crop), new(crop))


def test_png_photo_and_no_resize():
    data = _photo(120, 90, fmt="PNG")
    params = header_to_params(_header(data, 0, 120, 90), EncoderConfig(), data)
    assert np.array_equal(params.canvas, source_canvas(data, 0))
    assert np.array_equal(params.canvas, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_canvas_size_mismatch_is_refused():
    data = _photo(641, 479)
    with pytest.raises(InvalidInputError, match="640x478 canvas") as info:
        header_to_params(_header(data, 1280, 641, 479), EncoderConfig(), data)
    assert info.value.reason == "bad_pasteback"
    with pytest.raises(InvalidInputError) as info:  # another max-dim than face_detect used
        header_to_params(_header(data, 320, 640, 478), EncoderConfig(), data)
    assert info.value.reason == "bad_pasteback"


def test_photo_must_match_its_announced_size_and_limit():
    data = _photo(64, 48)
    with pytest.raises(InvalidInputError) as info:
        header_to_params(_header(data, 1280, 64, 48), EncoderConfig(), data[:-1])
    assert info.value.reason == "bad_photo"
    header = _header(data, 1280, 64, 48)
    header.photo_bytes = MAX_PHOTO_BYTES + 1
    with pytest.raises(ResourceExhaustedError) as info:
        header_to_params(header, EncoderConfig(), data)
    assert info.value.reason == "photo_too_large"


@pytest.mark.parametrize("field", ["crop_to_canvas", "canvas_width", "canvas_height"])
def test_photo_needs_its_geometry(field):
    data = _photo(64, 48)
    header = _header(data, 1280, 64, 48)
    header.ClearField(field)
    with pytest.raises(InvalidInputError) as info:
        header_to_params(header, EncoderConfig(), data)
    assert info.value.reason == "bad_pasteback"
