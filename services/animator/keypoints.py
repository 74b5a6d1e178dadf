"""Implicit-keypoint maths of LivePortrait: head-pose bins, rotation matrices, Eq. 2 transform.

Conventions (SPEC §4.2/4.3): head-pose logits over 66 bins become degrees as a softmax
expectation (3·E[i] − 97.5); the rotation is built from pitch (x), yaw (y) and roll (z) as
R = (Rz·Ry·Rx)ᵀ and applied to **row vectors** (kp · R); the transformed keypoints are
x = s·(kp·R + exp) + t with only t_x, t_y added (t_z is ignored, SPEC §15.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

NUM_BINS = 66
BIN_WIDTH_DEG = 3.0
BIN_OFFSET_DEG = 97.5


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Head-pose logits B×66 → angles B (degrees, in [−97.5, 97.5]).

    Any other shape (e.g. angles already in degrees, B×1) is returned unchanged, as upstream.
    """
    if logits.ndim < 2 or logits.shape[1] != NUM_BINS:
        return logits
    probs = torch.softmax(logits, dim=1)  # B×66
    idx = torch.arange(NUM_BINS, dtype=probs.dtype, device=probs.device)  # 66
    return (probs * idx).sum(dim=1) * BIN_WIDTH_DEG - BIN_OFFSET_DEG  # B


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Euler angles in degrees (B or B×1 each) → row-vector rotation R = (Rz·Ry·Rx)ᵀ, B×3×3."""
    x, y, z = (a.reshape(-1, 1) / 180 * math.pi for a in (pitch, yaw, roll))  # B×1 radians
    one, zero = torch.ones_like(x), torch.zeros_like(x)  # B×1
    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    rot_x = torch.cat([one, zero, zero, zero, cx, -sx, zero, sx, cx], dim=1).reshape(-1, 3, 3)
    rot_y = torch.cat([cy, zero, sy, zero, one, zero, -sy, zero, cy], dim=1).reshape(-1, 3, 3)
    rot_z = torch.cat([cz, -sz, zero, sz, cz, zero, zero, zero, one], dim=1).reshape(-1, 3, 3)
    return (rot_z @ rot_y @ rot_x).transpose(1, 2)  # B×3×3


def transform_keypoints(
    kp: torch.Tensor, rot: torch.Tensor, exp: torch.Tensor, scale: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Eq. 2: x = s·(kp·R + exp) + t_xy.

    Args:
        kp: canonical keypoints B×K×3.  rot: B×3×3 row-vector rotation.  exp: B×K×3.
        scale: B×1 (or B).  t: B×3; only t_x, t_y are added.

    Returns:
        B×K×3 transformed keypoints.
    """
    x = (kp @ rot + exp) * scale.reshape(-1, 1, 1)  # B×K×3
    xy = x[:, :, 0:2] + t[:, None, 0:2]  # B×K×2
    return torch.cat([xy, x[:, :, 2:3]], dim=2)  # B×K×3


@dataclass
class KpInfo:
    """Post-processed output of the motion extractor M for B images (degrees, B×K×3 points)."""

    pitch: torch.Tensor  # B×1 degrees
    yaw: torch.Tensor  # B×1 degrees
    roll: torch.Tensor  # B×1 degrees
    t: torch.Tensor  # B×3
    exp: torch.Tensor  # B×K×3
    scale: torch.Tensor  # B×1
    kp: torch.Tensor  # B×K×3

    @property
    def batch_size(self) -> int:
        return int(self.kp.shape[0])

    def rotation(self) -> torch.Tensor:
        """B×3×3 row-vector rotation of the head pose."""
        return rotation_matrix(self.pitch, self.yaw, self.roll)

    def transformed(self) -> torch.Tensor:
        """B×K×3 keypoints x = s·(kp·R + exp) + t_xy."""
        return transform_keypoints(self.kp, self.rotation(), self.exp, self.scale, self.t)

    @classmethod
    def concat(cls, parts: list[KpInfo]) -> KpInfo:
        """Concatenate several KpInfo along the batch."""
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in _FIELDS))

    def select(self, index: int) -> KpInfo:
        """The 1-sample KpInfo of batch element `index`."""
        sl = slice(index, index + 1)
        return KpInfo(*(getattr(self, f)[sl] for f in _FIELDS))


_FIELDS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


def kp_info_from_motion_output(raw: Mapping[str, torch.Tensor]) -> KpInfo:
    """Raw heads of M (pitch/yaw/roll B×66, t B×3, exp B×3K, scale B×1, kp B×3K) → KpInfo."""
    missing = [f for f in _FIELDS if f not in raw]
    if missing:
        raise KeyError(f"motion extractor output lacks {missing}")
    batch = raw["kp"].shape[0]
    return KpInfo(
        pitch=bins_to_degrees(raw["pitch"].float()).reshape(batch, 1),  # B×1
        yaw=bins_to_degrees(raw["yaw"].float()).reshape(batch, 1),  # B×1
        roll=bins_to_degrees(raw["roll"].float()).reshape(batch, 1),  # B×1
        t=raw["t"].float(),  # B×3
        exp=raw["exp"].float().reshape(batch, -1, 3),  # B×K×3
        scale=raw["scale"].float(),  # B×1
        kp=raw["kp"].float().reshape(batch, -1, 3),  # B×K×3
    )
