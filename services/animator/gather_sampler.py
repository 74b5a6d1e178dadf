"""Trilinear 3-D sampling written as eight gathers, for exports without a 5-D GridSample.

`grid_sample_3d_gather(x, grid)` computes exactly what
`F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)` computes
for a 5-D input (W's use: the warp of f_s and the dense-motion network's deformation of the
compressed features), bit for bit on torch's CPU kernel: the same source-index formula, the
same eight corner weights built in the same multiplication order, out-of-range corners
contributing nothing, and the eight terms added in torch's order (tnw, tne, tsw, tse, bnw, bne,
bsw, bse). It uses only floor, arithmetic, comparisons, `where` and a flat index gather, so
`torch.onnx.export` writes Floor/Gather/Where nodes at any opset and no GridSample node: the
fallback for runtimes without a rank-5 GridSample kernel (ONNX Runtime CUDA before opset 20,
TensorRT before rank-5 support). It costs eight B×P×C gathers, so it is a fallback, not the
default.

`sampler_for_export(kind, compute_dtype)` swaps `torch.nn.functional.grid_sample` while an
export traces W, so the network code (model/) stays untouched.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F

_PATCH_LOCK = threading.Lock()


def _source_index(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Grid coordinate in [-1, 1] → input index, align_corners=False: ((c + 1)·size − 1) / 2."""
    return ((coord + 1) * size - 1) / 2


def grid_sample_3d_gather(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear sample of x N×C×D×H×W at grid N×Do×Ho×Wo×3 (last axis x, y, z in [-1, 1];
    zeros outside) → N×C×Do×Ho×Wo, with eight gathers (see the module docstring)."""
    if x.dim() != 5 or grid.dim() != 5 or grid.shape[-1] != 3:
        raise ValueError(
            f"expected a 5-D input and an N×D×H×W×3 grid, got {tuple(x.shape)} "
            f"and {tuple(grid.shape)}"
        )
    n, c, d, h, w = x.shape
    out_spatial = grid.shape[1:4]
    grid = grid.to(x.dtype)
    ix = _source_index(grid[..., 0], w)  # N×Do×Ho×Wo
    iy = _source_index(grid[..., 1], h)
    iz = _source_index(grid[..., 2], d)
    # corner coordinates (t/b = z low/high, n/s = y low/high, w/e = x low/high)
    x0, y0, z0 = torch.floor(ix), torch.floor(iy), torch.floor(iz)
    x1, y1, z1 = x0 + 1, y0 + 1, z0 + 1
    # weights in torch's order of products (x term · y term · z term)
    weights = (
        ((x1 - ix) * (y1 - iy)) * (z1 - iz),  # tnw
        ((ix - x0) * (y1 - iy)) * (z1 - iz),  # tne
        ((x1 - ix) * (iy - y0)) * (z1 - iz),  # tsw
        ((ix - x0) * (iy - y0)) * (z1 - iz),  # tse
        ((x1 - ix) * (y1 - iy)) * (iz - z0),  # bnw
        ((ix - x0) * (y1 - iy)) * (iz - z0),  # bne
        ((x1 - ix) * (iy - y0)) * (iz - z0),  # bsw
        ((ix - x0) * (iy - y0)) * (iz - z0),  # bse
    )
    corners = (
        (x0, y0, z0),
        (x1, y0, z0),
        (x0, y1, z0),
        (x1, y1, z0),
        (x0, y0, z1),
        (x1, y0, z1),
        (x0, y1, z1),
        (x1, y1, z1),
    )
    # N·D·H·W rows of C values; one flat row index per output point and corner
    table = x.permute(0, 2, 3, 4, 1).reshape(n * d * h * w, c)  # (N·D·H·W)×C
    base = (torch.arange(n, device=x.device) * (d * h * w)).view(n, 1, 1, 1)  # N×1×1×1
    out = None
    for (cx, cy, cz), weight in zip(corners, weights, strict=True):
        inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h) & (cz >= 0) & (cz < d)
        zero = torch.zeros_like(cx)  # any in-range index for corners outside (masked below)
        xi = torch.where(inside, cx, zero).to(torch.int64)
        yi = torch.where(inside, cy, zero).to(torch.int64)
        zi = torch.where(inside, cz, zero).to(torch.int64)
        row = base + (zi * h + yi) * w + xi  # N×Do×Ho×Wo
        values = table[row.reshape(-1)].reshape(n, *out_spatial, c)  # N×Do×Ho×Wo×C
        values = torch.where(inside.unsqueeze(-1), values, torch.zeros_like(values))
        term = values * weight.unsqueeze(-1)
        out = term if out is None else out + term
    return out.permute(0, 4, 1, 2, 3)  # N×C×Do×Ho×Wo


def _fp32_grid_sample(original):
    """grid_sample that samples in fp32 whatever the input dtype (fp16 exports: GridSample and
    its gathers stay fp32, casts around them) and returns the input's dtype."""

    def sample(x, grid, *args, **kwargs):
        return original(x.float(), grid.float(), *args, **kwargs).to(x.dtype)

    return sample


def _gather_grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    if x.dim() != 5 or mode != "bilinear" or padding_mode != "zeros" or align_corners:
        raise ValueError(
            "the gather sampler implements only W's 5-D grid_sample "
            "(bilinear, zeros padding, align_corners=False)"
        )
    return grid_sample_3d_gather(x, grid)


@contextlib.contextmanager
def sampler_for_export(gather: bool, keep_fp32: bool) -> Iterator[None]:
    """While tracing an export: sample with the gather sampler (`gather`) and/or in fp32
    (`keep_fp32`, for fp16 exports). Replaces `torch.nn.functional.grid_sample` process-wide for
    the duration (one export at a time, serialised by a lock); restores it on exit."""
    if not gather and not keep_fp32:
        yield
        return
    with _PATCH_LOCK:
        original = F.grid_sample
        sample = _gather_grid_sample if gather else original
        F.grid_sample = _fp32_grid_sample(sample) if keep_fp32 else sample
        try:
            yield
        finally:
            F.grid_sample = original
