"""Appearance feature extractor (F): source image → 3-D appearance feature volume f_s.

Paper: LivePortrait (Guo et al., 2024), network F. Real config: B×3×256×256 → B×32×16×64×64.
"""

from __future__ import annotations

import torch
from torch import nn

from services.animator.model.blocks import DownBlock2d, ResBlock3d, SameBlock2d


class AppearanceFeatureExtractor(nn.Module):
    """2-D encoder, lifted to a C×D volume by a channel reshape, refined by 3-D residual blocks."""

    def __init__(
        self,
        image_channel: int,
        block_expansion: int,
        num_down_blocks: int,
        max_features: int,
        reshape_channel: int,
        reshape_depth: int,
        num_resblocks: int,
    ) -> None:
        super().__init__()
        if reshape_channel * reshape_depth != max_features:
            raise ValueError(
                f"F: reshape_channel·reshape_depth ({reshape_channel}·{reshape_depth}) must equal "
                f"max_features ({max_features})"
            )
        self.image_channel = image_channel
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.first = SameBlock2d(image_channel, block_expansion)
        blocks = []
        out_features = block_expansion
        for i in range(num_down_blocks):
            in_features = min(max_features, block_expansion * 2**i)
            out_features = min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(DownBlock2d(in_features, out_features))
        self.down_blocks = nn.ModuleList(blocks)
        self.second = nn.Conv2d(out_features, max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images B×3×H×W in [0, 1] to f_s B×C×D×H/4×W/4 (C=reshape_channel, D=depth)."""
        out = self.first(x)  # B×3×H×W → B×64×H×W
        for block in self.down_blocks:
            out = block(out)  # B×Cin×h×w → B×Cout×h/2×w/2 (→ B×256×H/4×W/4)
        out = self.second(out)  # B×512×H/4×W/4
        b, _, h, w = out.shape
        f_s = out.view(b, self.reshape_channel, self.reshape_depth, h, w)  # B×32×16×H/4×W/4
        return self.resblocks_3d(f_s)  # B×32×16×H/4×W/4
