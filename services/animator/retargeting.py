"""Stitching (S) and eye/lip retargeting (R_eye, R_lip) as the pipeline applies them (SPEC §4.6).

The MLPs themselves live in `model/`; these wrappers build their inputs (flattened source
keypoints concatenated with driving keypoints or ratios) and turn their outputs into keypoint
deltas. Every function is batched: x_s may have batch 1 and is expanded to the driving batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Mlp = Callable[[torch.Tensor], torch.Tensor]


def _flat_source(x_s: torch.Tensor, batch: int) -> torch.Tensor:
    return x_s.reshape(x_s.shape[0], -1).expand(batch, -1)  # B×3K


def stitch(mlp: Mlp, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """x_d' = x_d + Δ_exp, then the same (Δt_x, Δt_y) added to every keypoint (SPEC §15.3).

    Args:
        mlp: stitching MLP 6K → 3K+2.  x_s: 1×K×3 or B×K×3.  x_d: B×K×3.
    """
    batch, num_kp = x_d.shape[:2]
    feat = torch.cat([_flat_source(x_s, batch), x_d.reshape(batch, -1)], dim=1)  # B×6K
    with torch.no_grad():
        delta = mlp(feat)  # B×(3K+2)
    delta_exp = delta[:, : 3 * num_kp].reshape(batch, num_kp, 3)  # B×K×3
    delta_txy = delta[:, 3 * num_kp : 3 * num_kp + 2].reshape(batch, 1, 2)  # B×1×2
    out = x_d + delta_exp  # B×K×3
    xy = out[:, :, 0:2] + delta_txy  # B×K×2
    return torch.cat([xy, out[:, :, 2:3]], dim=2)  # B×K×3


def retarget_eye(mlp: Mlp, x_s: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Δ_eye = R_eye(x_s, [c_s_left, c_s_right, c_d_eye]); ratio B×3 → delta B×K×3."""
    return _retarget(mlp, x_s, ratio)


def retarget_lip(mlp: Mlp, x_s: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Δ_lip = R_lip(x_s, [c_s_lip, c_d_lip]); ratio B×2 → delta B×K×3."""
    return _retarget(mlp, x_s, ratio)


def _retarget(mlp: Mlp, x_s: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    batch, num_kp = ratio.shape[0], x_s.shape[1]
    feat = torch.cat([_flat_source(x_s, batch), ratio.to(x_s.dtype)], dim=1)  # B×(3K+r)
    with torch.no_grad():
        delta = mlp(feat)  # B×3K
    return delta.reshape(batch, num_kp, 3)  # B×K×3
