"""Warping module (W): warps the source feature volume f_s by the keypoint-driven motion field.

Paper: LivePortrait, network W. Real config: f_s B×32×16×64×64 and keypoints B×21×3 →
`out` B×256×64×64 (input of G), `deformation` B×16×64×64×3, `occlusion_map` B×1×64×64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from services.animator.model.blocks import SameBlock2d
from services.animator.model.dense_motion import DenseMotionNetwork


class WarpingNetwork(nn.Module):
    """Dense motion → trilinear warp of f_s → 2-D projection (`third`, `fourth`) × occlusion."""

    def __init__(
        self,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        reshape_channel: int,
        dense_motion_params: dict,
        estimate_occlusion_map: bool = True,
    ) -> None:
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp,
            feature_channel=reshape_channel,
            estimate_occlusion_map=estimate_occlusion_map,
            **dense_motion_params,
        )
        out_channels = block_expansion * 2**num_down_blocks
        self.out_channels = out_channels
        self.third = SameBlock2d(max_features, out_channels, kernel_size=3, lrelu=True)
        self.fourth = nn.Conv2d(out_channels, out_channels, kernel_size=1)

    def forward(
        self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Warp f_s B×C×D×H×W (or 1×C×D×H×W, broadcast) by keypoints B×K×3.

        Returns {'out': B×256×H×W, 'deformation': B×D×H×W×3, 'occlusion_map': B×1×H×W}
        ('occlusion_map' only when the config estimates it).
        """
        b = kp_driving.shape[0]
        if feature_3d.shape[0] == 1 and b > 1:
            feature_3d = feature_3d.expand(b, *feature_3d.shape[1:])  # B×C×D×H×W (no copy)
        dense = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        deformation = dense["deformation"]  # B×D×H×W×3
        warped = F.grid_sample(feature_3d, deformation, align_corners=False)  # B×C×D×H×W
        _, c, d, h, w = warped.shape
        out = self.third(warped.reshape(b, c * d, h, w))  # B×(C·D)×H×W → B×256×H×W
        out = self.fourth(out)  # B×256×H×W
        result = {"deformation": deformation}
        if "occlusion_map" in dense:
            out = out * dense["occlusion_map"]  # B×256×H×W · B×1×H×W
            result["occlusion_map"] = dense["occlusion_map"]  # B×1×H×W
        result["out"] = out
        return result
