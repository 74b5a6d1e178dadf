"""Stitching and retargeting MLPs (S, R_lip, R_eye) on flattened implicit keypoints.

Paper: LivePortrait §3.2 — stitching S (input x_s ⊕ x_d, 126 → 65: 63 keypoint deltas + Δt_x,
Δt_y), lip retargeting R_lip (x_s ⊕ [c_s_lip, c_d_lip], 65 → 63) and eye retargeting R_eye
(x_s ⊕ [c_s_left, c_s_right, c_d_eye], 66 → 63). Upstream file keys: `retarget_shoulder`,
`retarget_mouth`, `retarget_eye`; each a state dict of `mlp.<i>.weight/bias`.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn


class StitchingRetargetingNetwork(nn.Module):
    """Linear → ReLU → … → Linear (no output activation); Linear layers at even indices."""

    def __init__(self, input_size: int, hidden_sizes: list[int], output_size: int) -> None:
        super().__init__()
        sizes = [input_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(sizes[-1], output_size))
        self.mlp = nn.Sequential(*layers)
        self.input_size = input_size
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×input_size → B×output_size."""
        return self.mlp(x)  # B×in → B×out
