"""LivePortrait face-crop geometry (SPEC §5.5, §6): two-point axis, crop rectangle, similarity
transforms, warped crops, the driving box crop and eye/lip open ratios.

Pure numpy + cv2, shared by face_detect (source and driving crops), the animator (source-video
crops) and the gateway.  Points are ``N x 2`` arrays of (x, y) pixels; matrices are 2x3 or 3x3
homogeneous affine transforms acting on column vectors (x, y, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import acos, cos, sin

import cv2
import numpy as np

SOURCE_DSIZE = 512  # source crop side (SPEC §6.3)
SOURCE_SCALE = 2.3
SOURCE_VY_RATIO = -0.125
DRIVING_DSIZE = 512  # driving box crop side before the resize to the network input (SPEC §6.4)
DRIVING_SCALE = 2.2
DRIVING_VY_RATIO = -0.1
NETWORK_INPUT = 256  # side of the crop fed to F and M
RATIO_EPS = 1e-6

# Landmark layouts: (left-eye indices, right-eye indices, mouth indices) per point count.
# The 9-point animal layout has no separate eyes: the eye centre is the mean of points 0..3.
_AXIS_LAYOUTS: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    5: ((0,), (1,), (3, 4)),
    68: ((36, 39), (42, 45), (48, 54)),
    101: ((39, 42, 45, 48), (51, 54, 57, 60), (75, 81)),
    106: ((33, 35, 40, 39), (87, 89, 94, 93), (52, 61)),
    203: ((0, 6, 12, 18), (24, 30, 36, 42), (48, 66)),
}


@dataclass(frozen=True)
class CropRect:
    """A (possibly rotated) square face rectangle in image pixels.

    Attributes:
        center: (2,) rectangle centre (x, y).
        size: (2,) side lengths (w, h); equal when the rectangle was made square.
        angle: rotation of the rectangle's x axis in radians (image coordinates, y down).
    """

    center: np.ndarray
    size: np.ndarray
    angle: float


@dataclass(frozen=True)
class FaceCrop:
    """A crop cut out of an image by an affine transform.

    Attributes:
        image: dsize x dsize x C uint8 crop.
        m_o2c: 3x3 original -> crop transform.
        m_c2o: 3x3 crop -> original transform (inverse of m_o2c).
        points: N x 2 landmarks mapped into crop coordinates (None when none were given).
    """

    image: np.ndarray
    m_o2c: np.ndarray
    m_c2o: np.ndarray
    points: np.ndarray | None


def _as_points(pts: np.ndarray) -> np.ndarray:
    arr = np.asarray(pts, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 1:
        raise ValueError(f"landmarks must be N x 2, got shape {arr.shape}")
    return arr


def two_point_axis(pts: np.ndarray, use_lip: bool = True) -> np.ndarray:
    """Eye centre and mouth point of a landmark set (SPEC §6.2).

    Args:
        pts: N x 2 landmarks, N in {5, 9, 68, 101, 106, 203} or any N > 101 (first 101 used).
        use_lip: True: (eye centre, mouth point). False: (left eye, right eye) turned by 90° so
            that the second point again lies "below" the first.

    Returns:
        2 x 2 array (first point, second point).
    """
    pts = _as_points(pts)
    n = pts.shape[0]
    if n == 9:
        eye_center = pts[0:4].mean(axis=0)
        if use_lip:
            pair = np.stack([eye_center, pts[5:7].mean(axis=0)])
        else:
            # the animal layout lists the image-right eye first (points 0, 1)
            pair = np.stack([pts[2:4].mean(axis=0), pts[0:2].mean(axis=0)])
    else:
        if n not in _AXIS_LAYOUTS:
            if n <= 101:
                raise ValueError(f"unsupported landmark count {n}")
            pts, n = pts[:101], 101
        left_idx, right_idx, mouth_idx = _AXIS_LAYOUTS[n]
        left = pts[list(left_idx)].mean(axis=0)
        right = pts[list(right_idx)].mean(axis=0)
        if use_lip:
            pair = np.stack([(left + right) / 2.0, pts[list(mouth_idx)].mean(axis=0)])
        else:
            pair = np.stack([left, right])
    if not use_lip:
        # eye-to-eye vector turned by +90°, so the axis points down the face like eye->mouth
        v = pair[1] - pair[0]
        pair[1] = pair[0] + np.array([-v[1], v[0]])
    return pair


def crop_rect(
    pts: np.ndarray,
    scale: float = 1.5,
    vx_ratio: float = 0.0,
    vy_ratio: float = 0.0,
    use_lip: bool = True,
    need_square: bool = True,
) -> CropRect:
    """Face rectangle aligned with the two-point axis (SPEC §6.3 steps 1-3).

    Args:
        pts: N x 2 landmarks.
        scale: multiplier of the landmark extent.
        vx_ratio, vy_ratio: shift of the centre along the face x / y axis, in units of the size
            (vy_ratio < 0 moves towards the forehead).
        use_lip: axis from eye centre to mouth (default) or from the eyes.
        need_square: make both sides equal to the larger one.
    """
    pts = _as_points(pts)
    pair = two_point_axis(pts, use_lip=use_lip)
    uy = pair[1] - pair[0]
    length = float(np.linalg.norm(uy))
    uy = np.array([0.0, 1.0]) if length <= 1e-3 else uy / length
    ux = np.array([uy[1], -uy[0]])
    angle = acos(max(-1.0, min(1.0, float(ux[0]))))
    if ux[1] < 0:
        angle = -angle
    rot = np.stack([ux, uy])  # 2 x 2, rows are the face axes
    center0 = pts.mean(axis=0)
    rpts = (pts - center0) @ rot.T  # N x 2 in the face frame
    lo, hi = rpts.min(axis=0), rpts.max(axis=0)
    center1 = (lo + hi) / 2.0
    size = hi - lo
    if need_square:
        size = np.full(2, size.max())
    size = size * scale
    center = center0 + ux * center1[0] + uy * center1[1]
    center = center + ux * (vx_ratio * size) + uy * (vy_ratio * size)
    return CropRect(center=center, size=size, angle=angle)


def similarity_from_rect(rect: CropRect, dsize: int, rotate: bool = True) -> np.ndarray:
    """2x3 original -> crop similarity that maps ``rect`` onto a dsize x dsize square."""
    s = dsize / float(rect.size[0])
    theta = rect.angle if rotate else 0.0
    c, si = cos(theta), sin(theta)
    cx, cy = float(rect.center[0]), float(rect.center[1])
    half = dsize / 2.0
    return np.array(
        [
            [s * c, s * si, half - s * (c * cx + si * cy)],
            [-s * si, s * c, half - s * (-si * cx + c * cy)],
        ]
    )


def similarity_o2c(
    pts: np.ndarray,
    dsize: int,
    scale: float,
    vx_ratio: float = 0.0,
    vy_ratio: float = 0.0,
    rotate: bool = True,
    use_lip: bool = True,
) -> np.ndarray:
    """2x3 original -> crop similarity for a landmark set (SPEC §6.3 step 4)."""
    rect = crop_rect(pts, scale=scale, vx_ratio=vx_ratio, vy_ratio=vy_ratio, use_lip=use_lip)
    return similarity_from_rect(rect, dsize, rotate=rotate)


def to_homogeneous(m: np.ndarray) -> np.ndarray:
    """2x3 or 3x3 affine -> 3x3 homogeneous matrix (float64)."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape == (3, 3):
        return m.copy()
    if m.shape != (2, 3):
        raise ValueError(f"affine matrix must be 2x3 or 3x3, got {m.shape}")
    return np.vstack([m, [0.0, 0.0, 1.0]])


def transform_points(pts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 / 3x3 affine to N x 2 points."""
    m = to_homogeneous(m)
    pts = _as_points(pts)
    return pts @ m[:2, :2].T + m[:2, 2]


def warp_crop(image: np.ndarray, m_o2c: np.ndarray, dsize: int) -> np.ndarray:
    """dsize x dsize crop of ``image`` through m_o2c (bilinear, black border)."""
    m = to_homogeneous(m_o2c)[:2].astype(np.float32)
    return cv2.warpAffine(image, m, (dsize, dsize), flags=cv2.INTER_LINEAR)


def _finish_crop(
    image: np.ndarray, m_o2c: np.ndarray, dsize: int, pts: np.ndarray | None
) -> FaceCrop:
    m3 = to_homogeneous(m_o2c)
    crop = warp_crop(image, m3, dsize)
    points = transform_points(pts, m3) if pts is not None else None
    return FaceCrop(image=crop, m_o2c=m3, m_c2o=np.linalg.inv(m3), points=points)


def crop_face(
    image: np.ndarray,
    pts: np.ndarray,
    dsize: int = SOURCE_DSIZE,
    scale: float = SOURCE_SCALE,
    vy_ratio: float = SOURCE_VY_RATIO,
    rotate: bool = True,
) -> FaceCrop:
    """Source-style rotated face crop (SPEC §6.3).

    Upstream's source crop never forwards a vx ratio, so there is none here either.

    Args:
        image: H x W x C uint8 picture.
        pts: N x 2 landmarks in image pixels.
    """
    m_o2c = similarity_o2c(pts, dsize, scale, 0.0, vy_ratio, rotate=rotate)
    return _finish_crop(image, m_o2c, dsize, pts)


def resize_area(image: np.ndarray, side: int = NETWORK_INPUT) -> np.ndarray:
    """Square resize with cv2 INTER_AREA (the source 512 -> 256 step, SPEC §5.1)."""
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


def resize_linear(image: np.ndarray, side: int = NETWORK_INPUT) -> np.ndarray:
    """Square resize with cv2 bilinear (the driving frame / box-crop -> 256 step, SPEC §6.4)."""
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)


def landmark_box(
    pts: np.ndarray, scale: float = DRIVING_SCALE, vy_ratio: float = DRIVING_VY_RATIO
) -> tuple[np.ndarray, np.ndarray]:
    """Driving box of one frame's landmarks (SPEC §6.4).

    The vx option of upstream is ignored there, so it is absent here.

    Returns:
        (bbox, bbox_rot): 4 x 2 corners (left-top, right-top, right-bottom, left-bottom) of the
        axis-aligned square and of the same square turned by the face angle.
    """
    rect = crop_rect(pts, scale=scale, vx_ratio=0.0, vy_ratio=vy_ratio)
    cx, cy = rect.center
    w, h = rect.size
    bbox = np.array(
        [
            [cx - w / 2, cy - h / 2],
            [cx + w / 2, cy - h / 2],
            [cx + w / 2, cy + h / 2],
            [cx - w / 2, cy + h / 2],
        ]
    )
    c, s = cos(rect.angle), sin(rect.angle)
    rot = np.array([[c, -s], [s, c]])
    bbox_rot = (bbox - rect.center) @ rot.T + rect.center
    return bbox, bbox_rot


def box_ltrb(bbox: np.ndarray) -> np.ndarray:
    """4 x 2 corners -> (left, top, right, bottom)."""
    bbox = np.asarray(bbox, dtype=np.float64)
    return np.array([bbox[0, 0], bbox[0, 1], bbox[2, 0], bbox[2, 1]])


def average_boxes(boxes: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Mean (left, top, right, bottom) of several boxes (the global driving box, SPEC §6.4)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] == 0:
        raise ValueError(f"boxes must be K x 4 with K >= 1, got shape {arr.shape}")
    return arr.mean(axis=0)


def crop_by_box(
    image: np.ndarray, box: np.ndarray, pts: np.ndarray | None = None, dsize: int = DRIVING_DSIZE
) -> FaceCrop:
    """Axis-aligned crop of the square box (left, top, right, bottom) to dsize x dsize."""
    left, top, right, bottom = (float(v) for v in box)
    size = right - left
    if size <= 0 or bottom <= top:
        raise ValueError(f"degenerate box {box!r}")
    s = dsize / size
    cx, cy = (left + right) / 2.0, (top + bottom) / 2.0
    m_o2c = np.array([[s, 0.0, dsize / 2.0 - s * cx], [0.0, s, dsize / 2.0 - s * cy]])
    return _finish_crop(image, m_o2c, dsize, pts)


def _dist(pts: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(pts[a] - pts[b]))


def eye_ratios(lmk203: np.ndarray) -> np.ndarray:
    """(left, right) eye open ratios of 203-point landmarks (SPEC §5.5)."""
    pts = _as_points(lmk203)
    if pts.shape[0] != 203:
        raise ValueError(f"eye ratios need 203 landmarks, got {pts.shape[0]}")
    left = _dist(pts, 6, 18) / (_dist(pts, 0, 12) + RATIO_EPS)
    right = _dist(pts, 30, 42) / (_dist(pts, 24, 36) + RATIO_EPS)
    return np.array([left, right])


def lip_ratio(lmk203: np.ndarray) -> float:
    """Lip open ratio of 203-point landmarks (SPEC §5.5)."""
    pts = _as_points(lmk203)
    if pts.shape[0] != 203:
        raise ValueError(f"lip ratio needs 203 landmarks, got {pts.shape[0]}")
    return _dist(pts, 90, 102) / (_dist(pts, 48, 66) + RATIO_EPS)
