"""Domain types and constants of the motion recipe: options, source/driving motion, lip array L.

`DrivingFrame` is the per-frame motion as numpy (what templates store and the wire carries);
`DrivingBatch` is B of them as tensors on the compute device; `SourceMotion` is the source's
keypoint state (batch 1 for an image, N for a video source).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

REGIONS = ("all", "exp", "pose", "lip", "eyes")
LIP_ROWS = (6, 12, 14, 17, 19, 20)
EYE_ROWS = (11, 13, 15, 16, 18)


def _absolute_exp_mask() -> np.ndarray:
    """exp entries (21×3) absolute motion / video sources take from the driving side (SPEC §5.4)."""
    mask = np.zeros((21, 3), dtype=bool)
    mask[[1, 2, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], :] = True
    mask[3:5, 1] = True  # rows 3, 4: y only
    mask[5, 2] = True  # row 5: z only
    mask[8, 2] = True  # row 8: z only
    mask[9, 1:] = True  # row 9: y and z
    mask.setflags(write=False)
    return mask


ABSOLUTE_EXP_MASK = _absolute_exp_mask()


def region_mask(region: str) -> np.ndarray:
    """Boolean K×3 mask of the exp entries a region takes from the driving side.

    "all"/"exp" use the absolute-mode row set (rows 0, 7, 10 stay the source's), "lip" and
    "eyes" their rows, "pose" nothing.
    """
    if region in ("all", "exp"):
        return ABSOLUTE_EXP_MASK.copy()
    mask = np.zeros(ABSOLUTE_EXP_MASK.shape, dtype=bool)
    if region in ("lip", "eyes"):
        mask[list(LIP_ROWS if region == "lip" else EYE_ROWS), :] = True
    return mask


# Neutral lip expression L (1×21×3): subtracted instead of driving frame 0's exp when a single
# driving image drives the source. Values from SPEC §5.4 (float64, as the upstream resource).
NEUTRAL_LIP = np.array(
    [
        [
            [-9.4524e-05, 2.4222e-04, -4.00974e-05],
            [2.08596e-04, 4.68054e-04, 1.27464e-05],
            [-1.24602e-04, 3.24972e-04, 4.425e-06],
            [1.19652e-04, -4.56624e-04, 5.40852e-05],
            [-2.65254e-04, -7.4598e-05, -1.5528e-05],
            [-3.34884e-05, -1.83036e-04, -3.49404e-06],
            [-4.75428e-07, -4.52466e-07, 1.59498e-06],
            [-5.41296e-04, 2.6328e-03, 7.2486e-06],
            [-1.1694e-05, 5.00502e-06, 9.9888e-06],
            [8.0286e-07, 5.19132e-06, -4.09344e-04],
            [1.66878e-04, -1.9815e-05, -8.8548e-05],
            [-1.51536e-05, 8.2506e-05, 5.94012e-06],
            [-2.61054e-07, 2.7591e-06, 2.21028e-06],
            [-6.6282e-05, -6.8286e-05, -3.45318e-06],
            [-8.3262e-04, -1.79592e-03, -2.59176e-06],
            [6.9714e-06, 3.65514e-05, -1.8978e-06],
            [-4.80876e-06, 7.1148e-06, -1.03236e-05],
            [-6.3684e-04, -1.1661e-03, 5.62314e-05],
            [2.8329e-04, -1.45656e-05, 1.09746e-05],
            [-4.16022e-06, -1.50906e-02, -2.5494e-03],
            [2.22474e-04, 5.62788e-03, 2.72646e-03],
        ]
    ],
    dtype=np.float64,
)
NEUTRAL_LIP.setflags(write=False)


@dataclass(frozen=True)
class MotionOptions:
    """How driving motion is applied (SPEC §5.3/§5.4/§8; defaults = upstream CLI)."""

    relative: bool = True
    expression_friendly: bool = True  # False = pose-friendly
    stitching: bool = True
    normalize_lip: bool = False
    eye_retargeting: bool = False
    lip_retargeting: bool = False
    driving_multiplier: float = 1.0
    region: str = "all"
    driving_image: bool = False  # a single driving frame: neutral-lip path, no multiplier step
    lip_normalize_threshold: float = 0.03
    smooth_observation_variance: float = 3e-7  # video sources only (SPEC §9)
    source_video_eye_retargeting: bool = False
    source_video_eye_threshold: float = 0.18

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise ValueError(f"animation region {self.region!r} is not one of {REGIONS}")
        if not np.isfinite(self.driving_multiplier):
            raise ValueError("driving_multiplier must be finite")


@dataclass
class DrivingFrame:
    """Motion of one driving frame as M reports it (SPEC §7), numpy float32."""

    index: int
    scale: float
    rotation: np.ndarray  # 3×3 row-vector rotation R
    expression: np.ndarray  # K×3
    translation: np.ndarray  # 3
    keypoints: np.ndarray | None = None  # K×3 canonical kp (optional for driving)
    eye_ratio: tuple[float, float] = (0.0, 0.0)  # left, right
    lip_ratio: float = 0.0


@dataclass
class DrivingBatch:
    """B driving frames as tensors."""

    rot: torch.Tensor  # B×3×3
    exp: torch.Tensor  # B×K×3
    scale: torch.Tensor  # B×1
    t: torch.Tensor  # B×3
    eye_ratio: torch.Tensor  # B×2
    lip_ratio: torch.Tensor  # B×1

    @property
    def batch_size(self) -> int:
        return int(self.exp.shape[0])

    def head(self, n: int) -> DrivingBatch:
        return DrivingBatch(*(getattr(self, f)[:n] for f in _BATCH_FIELDS))

    @classmethod
    def from_frames(
        cls, frames: Sequence[DrivingFrame], device: torch.device | str = "cpu"
    ) -> DrivingBatch:
        def stack(values) -> torch.Tensor:
            arr = np.stack([np.asarray(v, dtype=np.float32) for v in values])
            return torch.from_numpy(arr).to(device)

        return cls(
            rot=stack(f.rotation.reshape(3, 3) for f in frames),
            exp=stack(f.expression.reshape(-1, 3) for f in frames),
            scale=stack([f.scale] for f in frames),
            t=stack(f.translation.reshape(3) for f in frames),
            eye_ratio=stack(f.eye_ratio for f in frames),
            lip_ratio=stack([f.lip_ratio] for f in frames),
        )


_BATCH_FIELDS = ("rot", "exp", "scale", "t", "eye_ratio", "lip_ratio")


@dataclass
class SourceMotion:
    """Keypoint state of the source (N = 1 for an image, N frames for a video source)."""

    kp: torch.Tensor  # N×K×3 canonical keypoints x_c_s
    rot: torch.Tensor  # N×3×3
    exp: torch.Tensor  # N×K×3
    scale: torch.Tensor  # N×1
    t: torch.Tensor  # N×3
    x_s: torch.Tensor  # N×K×3 transformed source keypoints
    eye_ratio: torch.Tensor  # N×2 (left, right)
    lip_ratio: torch.Tensor  # N×1


@dataclass
class Retargeters:
    """The three small MLPs: stitching S, lip R_lip and eye R_eye."""

    stitching: Callable[[torch.Tensor], torch.Tensor]
    lip: Callable[[torch.Tensor], torch.Tensor]
    eye: Callable[[torch.Tensor], torch.Tensor]
