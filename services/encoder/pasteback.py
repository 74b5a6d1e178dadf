"""Paste-back of animated face crops onto the source canvas (SPEC 5.1 step 5, 5.3, 6.5).

Upstream warps the 512x512 crop and a feathered square mask into the source photo with M_c2o
(OpenCV bilinear, black border), then blends `mask * warped + (1 - mask) * canvas` in float32
and truncates to uint8. The bilinear warp here is our own numpy code that follows OpenCV's
float32 warpAffine arithmetic (fused multiply-adds, round half to even), so results do not
depend on the installed OpenCV version: the reference fixtures are reproduced exactly, up to
single-unit flips at values that land exactly on .5.
"""

from __future__ import annotations

import numpy as np

TEMPLATE_SIZE = 512
# SPEC 6.5: 255 inside [16, 496]^2 of the 512 template, minus 16 per pixel of distance outside.
_INNER_LO, _INNER_HI, _FALLOFF = 16.0, 496.0, 16.0


def mask_template(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """The feathered paste-back mask, size x size x 3 uint8 (SPEC 6.5).

    At 512 it is 255 inside the square [16, 496]^2 and clip(255 - 16 d) outside, d being the
    Euclidean pixel distance to that square (rounded corners). Other sizes are the 512 template
    resampled bilinearly (half-pixel centres, as cv2.resize does), which is how crops of another
    size get their mask.
    """
    idx = np.arange(TEMPLATE_SIZE, dtype=np.float64)
    outside = np.maximum(np.maximum(_INNER_LO - idx, idx - _INNER_HI), 0.0)  # 512
    dist = np.hypot(outside[:, None], outside[None, :])  # 512 x 512
    template = np.rint(np.clip(255.0 - _FALLOFF * dist, 0.0, 255.0)).astype(np.uint8)
    if size != TEMPLATE_SIZE:
        template = _resize_bilinear(template, size)
    return np.repeat(template[:, :, None], 3, axis=2)  # size x size x 3


def _resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """Square single-channel uint8 resize with half-pixel centres and edge clamping."""
    n = image.shape[0]
    pos = (np.arange(size, dtype=np.float64) + 0.5) * (n / size) - 0.5
    pos = np.clip(pos, 0.0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    img = image.astype(np.float64)
    rows = img[lo] * (1 - frac)[:, None] + img[hi] * frac[:, None]  # size x n
    out = rows[:, lo] * (1 - frac)[None, :] + rows[:, hi] * frac[None, :]  # size x size
    return np.rint(out).astype(np.uint8)


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 a*b + c with one rounding (products of float32 are exact in float64)."""
    return (a.astype(np.float64) * b + c).astype(np.float32)


def _invert_affine(m_c2o: np.ndarray) -> np.ndarray:
    """Inverse of the 2x3 part of M (canvas -> crop), in float64 as warpAffine does."""
    m = np.asarray(m_c2o, dtype=np.float64).reshape(-1)
    if m.size not in (6, 9):
        raise ValueError(f"M_c2o needs 6 or 9 values, got {m.size}")
    a, b, c, d, e, f = m[:6]
    det = a * e - b * d
    if not np.isfinite(det) or abs(det) < 1e-12:
        raise ValueError("M_c2o is singular")
    inv = 1.0 / det
    i0, i1, i3, i4 = e * inv, -b * inv, -d * inv, a * inv
    return np.array([[i0, i1, -i0 * c - i1 * f], [i3, i4, -i3 * c - i4 * f]])


class _Sampler:
    """Bilinear sampling positions of a crop for every canvas pixel of a rectangle."""

    def __init__(self, inv: np.ndarray, crop_hw: tuple[int, int], box: tuple[int, int, int, int]):
        y0, y1, x0, x1 = box
        ys = np.arange(y0, y1, dtype=np.float64)[:, None]  # h x 1
        xs = np.arange(x0, x1, dtype=np.float32)[None, :].astype(np.float64)  # 1 x w
        # Row offsets are computed in double and rounded to float once, as OpenCV does.
        row_x = (ys * inv[0, 1] + inv[0, 2]).astype(np.float32)
        row_y = (ys * inv[1, 1] + inv[1, 2]).astype(np.float32)
        src_x = _fma32(np.float32(inv[0, 0]), xs, row_x)  # h x w
        src_y = _fma32(np.float32(inv[1, 0]), xs, row_y)  # h x w
        ix, iy = np.floor(src_x), np.floor(src_y)
        self.alpha = (src_x - ix.astype(np.float32))[:, :, None]  # h x w x 1
        self.beta = (src_y - iy.astype(np.float32))[:, :, None]  # h x w x 1
        ix, iy = ix.astype(np.int64), iy.astype(np.int64)
        ch, cw = crop_hw
        self.crop_hw = (ch, cw)
        # Flat pixel index of each of the 4 neighbours; taps outside the crop read entry ch*cw,
        # a black pixel appended to the table (OpenCV's constant black border).
        self.taps = []
        for dy in (0, 1):
            for dx in (0, 1):
                yy, xx = iy + dy, ix + dx
                inside = (yy >= 0) & (yy < ch) & (xx >= 0) & (xx < cw)  # h x w
                self.taps.append(np.where(inside, yy * cw + xx, ch * cw).astype(np.intp))

    def _gather(self, crop: np.ndarray) -> list[np.ndarray]:
        # One 32-bit word per RGB(A) pixel makes the 4 gathers single-element takes.
        ch, cw = self.crop_hw
        channels = crop.shape[2]
        table = np.zeros((ch * cw + 1, 4), np.uint8)  # (ch*cw + 1) x 4
        table[:-1, :channels] = crop.reshape(-1, channels)
        words = table.view(np.uint32)[:, 0]  # ch*cw + 1
        return [
            np.take(words, idx)
            .view(np.uint8)
            .reshape(*idx.shape, 4)[:, :, :channels]
            .astype(np.float32)
            for idx in self.taps
        ]  # 4 x (h x w x C)

    def warp(self, crop: np.ndarray) -> np.ndarray:
        """Sample the crop (ch x cw x C uint8); outside pixels read as black. -> h x w x C uint8."""
        if crop.shape[2] > 4:
            raise ValueError(f"at most 4 channels, got {crop.shape[2]}")
        p00, p01, p10, p11 = self._gather(crop)
        top = _fma32(self.alpha, p01 - p00, p00)  # h x w x C
        bottom = _fma32(self.alpha, p11 - p10, p10)  # h x w x C
        value = _fma32(self.beta, bottom - top, top)  # h x w x C
        return np.clip(np.rint(value), 0, 255).astype(np.uint8)


def warp_affine(crop: np.ndarray, m_c2o: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Warp a crop (h x w x C uint8) into an out_hw canvas with M_c2o, bilinear, black border."""
    sampler = _Sampler(_invert_affine(m_c2o), crop.shape[:2], (0, out_hw[0], 0, out_hw[1]))
    return sampler.warp(crop)


class PasteBack:
    """Composites face crops onto one canvas with one M_c2o (an image source).

    The warped mask and the sampling positions are computed once; per frame only the pixels
    the crop can reach (the mask's bounding box) are touched, the rest stays the canvas.
    """

    def __init__(
        self,
        canvas: np.ndarray,
        m_c2o: np.ndarray,
        crop_hw: tuple[int, int],
        mask_crop: np.ndarray | None = None,
    ) -> None:
        if canvas.ndim != 3 or canvas.shape[2] != 3 or canvas.dtype != np.uint8:
            raise ValueError(f"canvas must be H x W x 3 uint8, got {canvas.shape} {canvas.dtype}")
        if mask_crop is None:
            mask_crop = _mask_for(crop_hw)
        if mask_crop.shape[:2] != tuple(crop_hw):
            raise ValueError(f"mask {mask_crop.shape[:2]} does not match crops {tuple(crop_hw)}")
        self.canvas = canvas
        self.crop_hw = tuple(crop_hw)
        inv = _invert_affine(m_c2o)
        self.box = None  # stays None when the crop lands outside the canvas: frames = canvas
        reach = _reach(m_c2o, self.crop_hw, canvas.shape[:2])
        if reach is None:
            return
        reach_mask = _Sampler(inv, self.crop_hw, reach).warp(mask_crop)  # h x w x 3
        rows = np.flatnonzero(reach_mask.any(axis=(1, 2)))
        cols = np.flatnonzero(reach_mask.any(axis=(0, 2)))
        if rows.size == 0:
            return
        # Shrink to where the mask is non-zero: outside it the blend is the canvas exactly.
        ry0, ry1, rx0, rx1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        self.box = (reach[0] + ry0, reach[0] + ry1, reach[2] + rx0, reach[2] + rx1)
        y0, y1, x0, x1 = self.box
        self.mask = reach_mask[ry0:ry1, rx0:rx1].astype(np.float32) / np.float32(255.0)
        self._sampler = _Sampler(inv, self.crop_hw, self.box)
        self._canvas_part = (1 - self.mask) * canvas[y0:y1, x0:x1]  # float32

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """crop (ch x cw x 3 uint8) -> canvas with the crop blended in (H x W x 3 uint8)."""
        if crop.shape != (*self.crop_hw, 3):
            raise ValueError(f"crop is {crop.shape}, expected {(*self.crop_hw, 3)}")
        out = self.canvas.copy()
        if self.box is None:
            return out
        y0, y1, x0, x1 = self.box
        blended = self.mask * self._sampler.warp(crop) + self._canvas_part  # float32
        out[y0:y1, x0:x1] = np.clip(blended, 0, 255).astype(np.uint8)
        return out


def _reach(
    m_c2o: np.ndarray, crop_hw: tuple[int, int], canvas_hw: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """Canvas rectangle (y0, y1, x0, x1) outside which every bilinear tap misses the crop.

    A canvas pixel can see the crop only if its source position lies in (-1, cw) x (-1, ch);
    that parallelogram's corners, mapped with M_c2o and widened by 2 px for rounding, bound it.
    """
    ch, cw = crop_hw
    m = np.asarray(m_c2o, dtype=np.float64).reshape(-1)[:6].reshape(2, 3)
    corners = np.array([[-1, -1], [cw, -1], [-1, ch], [cw, ch]], dtype=np.float64)  # 4 x 2
    mapped = corners @ m[:, :2].T + m[:, 2]  # 4 x 2 canvas (x, y)
    x0, y0 = np.floor(mapped.min(axis=0)) - 2
    x1, y1 = np.ceil(mapped.max(axis=0)) + 3
    h, w = canvas_hw
    x0, x1 = int(max(x0, 0)), int(min(x1, w))
    y0, y1 = int(max(y0, 0)), int(min(y1, h))
    if x0 >= x1 or y0 >= y1:
        return None
    return (y0, y1, x0, x1)


def _mask_for(crop_hw: tuple[int, int]) -> np.ndarray:
    h, w = crop_hw
    if h != w:
        raise ValueError(f"paste-back needs square crops, got {w}x{h}")
    return mask_template(h)
