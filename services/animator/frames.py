"""Tensor <-> host conversions of the animator: generated images to uint8 frames, M's output to
per-frame `DrivingFrame`s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from services.animator.keypoints import KpInfo
from services.animator.motion_types import DrivingFrame

if TYPE_CHECKING:
    from services.animator.pipeline import Ratios


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """B×3×H×W float → B×H×W×3 uint8 with upstream's clip-then-truncate conversion.

    On CUDA the uint8 frames (4× smaller than float) come back through a pinned buffer."""
    scaled = (image.clamp(0, 1) * 255).clamp(0, 255)  # B×3×H×W
    frames = scaled.to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # B×H×W×3
    if frames.device.type != "cuda":
        return frames.numpy()
    host = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(frames, non_blocking=True)
    torch.cuda.current_stream(frames.device).synchronize()
    return host.numpy()


def frames_from_kp_info(info: KpInfo, ratios: Sequence[Ratios], start: int) -> list[DrivingFrame]:
    """M's post-processed output for N crops → N DrivingFrames (host numpy), indexed from start."""
    rot = info.rotation().cpu().numpy()  # N×3×3
    frames = []
    for i in range(info.batch_size):
        frames.append(
            DrivingFrame(
                index=start + i,
                scale=float(info.scale[i, 0]),
                rotation=rot[i],
                expression=info.exp[i].cpu().numpy(),
                translation=info.t[i].cpu().numpy(),
                keypoints=info.kp[i].cpu().numpy(),
                eye_ratio=(ratios[i].eye_left, ratios[i].eye_right),
                lip_ratio=ratios[i].lip,
            )
        )
    return frames
