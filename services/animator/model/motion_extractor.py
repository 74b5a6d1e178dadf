"""Motion extractor (M): image → canonical keypoints, head pose bins, translation, expression, scale.

Paper: LivePortrait, network M — a ConvNeXt-V2 backbone (Tiny for the human model: depths
3, 3, 9, 3; dims 96, 192, 384, 768) with seven linear heads. Every weight lives under the
`detector.` prefix, as in the upstream checkpoint. The heads are returned raw: head-pose logits
over `num_bins` bins, keypoints and expression as flat B×(3·num_kp) vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from services.animator.model.blocks import GRN, LayerNormChannelsFirst

CONVNEXTV2_TINY = {"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768]}
HEADS = ("kp", "scale", "pitch", "yaw", "roll", "t", "exp")


class ConvNeXtV2Block(nn.Module):
    """Depthwise 7×7 → LayerNorm → Linear ×4 → GELU → GRN → Linear → residual (no layer scale)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dwconv(x)  # B×C×H×W
        out = out.permute(0, 2, 3, 1)  # B×H×W×C
        out = self.pwconv1(self.norm(out))  # B×H×W×4C
        out = self.grn(F.gelu(out))  # B×H×W×4C (exact erf GELU)
        out = self.pwconv2(out)  # B×H×W×C
        return x + out.permute(0, 3, 1, 2)  # B×C×H×W


class ConvNeXtV2Detector(nn.Module):
    """ConvNeXt-V2 feature pyramid (stride 4, 8, 16, 32) and the keypoint / pose heads."""

    def __init__(
        self, depths: list[int], dims: list[int], num_kp: int, num_bins: int, in_chans: int = 3
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"M: need 4 stages, got depths={depths} dims={dims}")
        stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNormChannelsFirst(dims[0])
        )
        layers = [stem]
        for i in range(3):
            layers.append(
                nn.Sequential(
                    LayerNormChannelsFirst(dims[i]),
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
                )
            )
        self.downsample_layers = nn.ModuleList(layers)
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtV2Block(dims[i]) for _ in range(depths[i])]) for i in range(4)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        width = dims[-1]
        self.fc_kp = nn.Linear(width, 3 * num_kp)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, num_bins)
        self.fc_yaw = nn.Linear(width, num_bins)
        self.fc_roll = nn.Linear(width, num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))  # B×C_i×H/(4·2^i)×W/(4·2^i)
        feat = self.norm(x.mean(dim=(-2, -1)))  # B×768 (global average, then LayerNorm)
        return {name: getattr(self, f"fc_{name}")(feat) for name in HEADS}  # B×{63,1,66,66,66,3,63}


class MotionExtractor(nn.Module):
    """M: wraps the detector so state-dict keys carry the upstream `detector.` prefix."""

    def __init__(
        self,
        num_kp: int,
        backbone: str = "convnextv2_tiny",
        num_bins: int = 66,
        depths: list[int] | None = None,
        dims: list[int] | None = None,
    ) -> None:
        super().__init__()
        if backbone == "convnextv2_tiny":
            depths = depths or CONVNEXTV2_TINY["depths"]
            dims = dims or CONVNEXTV2_TINY["dims"]
        elif backbone != "convnextv2" or depths is None or dims is None:
            raise ValueError(
                f"M: unsupported backbone {backbone!r} (use 'convnextv2_tiny', or "
                "'convnextv2' with explicit depths and dims)"
            )
        self.num_kp = num_kp
        self.num_bins = num_bins
        self.detector = ConvNeXtV2Detector(list(depths), list(dims), num_kp, num_bins)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images B×3×H×W in [0, 1] → raw heads: pitch/yaw/roll B×66 logits, t B×3,
        exp B×63, scale B×1, kp B×63."""
        return self.detector(x)  # dict of B×k tensors
