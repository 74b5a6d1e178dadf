"""SPADE generator (G): warped feature map → RGB image (decoder).

Paper: LivePortrait, network G. Real config: B×256×64×64 → B×3×512×512 in (0, 1). The input
feature is also the SPADE "segmentation map" that modulates every normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from services.animator.model.blocks import SPADEResBlock

NUM_MIDDLE_BLOCKS = 6


class SPADEGenerator(nn.Module):
    """fc → 6 SPADE blocks → (×2, up_0) → (×2, up_1) → LeakyReLU(0.2) → conv_img (+ shuffle)."""

    def __init__(
        self,
        upscale: int = 1,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        out_channels: int = 64,
    ) -> None:
        super().__init__()
        if num_down_blocks < 1:
            raise ValueError("G: num_down_blocks must be ≥ 1")
        in_channels = min(max_features, block_expansion * 2**num_down_blocks)
        self.in_channels = in_channels
        self.upscale = upscale
        self.fc = nn.Conv2d(in_channels, 2 * in_channels, 3, padding=1)
        for i in range(NUM_MIDDLE_BLOCKS):
            self.add_module(
                f"G_middle_{i}", SPADEResBlock(2 * in_channels, 2 * in_channels, in_channels)
            )
        self.up_0 = SPADEResBlock(2 * in_channels, in_channels, in_channels)
        self.up_1 = SPADEResBlock(in_channels, out_channels, in_channels)
        if upscale is None or upscale <= 1:
            self.conv_img = nn.Conv2d(out_channels, 3, 3, padding=1)
        else:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * 4, 3, padding=1), nn.PixelShuffle(2)
            )

    def spade_blocks(self) -> dict[str, SPADEResBlock]:
        """All SPADE residual blocks by attribute name (their convs are spectral in the file)."""
        return {name: m for name, m in self.named_children() if isinstance(m, SPADEResBlock)}

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Feature B×256×h×w (W's `out`) → image B×3×(2·2·2)h×(…)w in (0, 1), 512² for h=64."""
        seg = feature  # B×256×h×w
        x = self.fc(feature)  # B×512×h×w
        for i in range(NUM_MIDDLE_BLOCKS):
            x = getattr(self, f"G_middle_{i}")(x, seg)  # B×512×h×w
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # B×512×2h×2w
        x = self.up_0(x, seg)  # B×256×2h×2w
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # B×256×4h×4w
        x = self.up_1(x, seg)  # B×64×4h×4w
        x = self.conv_img(F.leaky_relu(x, 0.2))  # B×3×8h×8w (PixelShuffle 12 → 3 channels)
        return torch.sigmoid(x)  # B×3×8h×8w
