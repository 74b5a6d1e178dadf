"""Shared layers of the LivePortrait networks (conv/BN blocks, 3-D residual blocks, SPADE, GRN).

Attribute names follow the upstream checkpoint keys (`conv`, `norm`, `mlp_shared.0`, ...) so a
state dict loads by plain copy. All normalisation layers run in eval mode at inference: BatchNorm
uses its running statistics (eps 1e-5), InstanceNorm and LayerNorm normalise within one sample,
so every block is independent across the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPADE_HIDDEN = 128  # hidden width of every SPADE modulation MLP (fixed upstream, not in the config)


class SameBlock2d(nn.Module):
    """Conv k×k (same size) → BatchNorm2d → ReLU or LeakyReLU(0.01)."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, lrelu: bool = False
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))  # B×Cin×H×W → B×Cout×H×W
        return F.leaky_relu(out) if self.lrelu else F.relu(out)  # B×Cout×H×W


class DownBlock2d(nn.Module):
    """Conv 3×3 → BatchNorm2d → ReLU → 2×2 average pool (halves H and W)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)))  # B×Cin×H×W → B×Cout×H×W
        return F.avg_pool2d(out, 2)  # B×Cout×H/2×W/2


class ResBlock3d(nn.Module):
    """Pre-activation 3-D residual block: x + conv2(relu(norm2(conv1(relu(norm1(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))  # B×C×D×H×W
        out = self.conv2(F.relu(self.norm2(out)))  # B×C×D×H×W
        return out + x  # B×C×D×H×W


class DownBlock3d(nn.Module):
    """Conv 3×3×3 → BatchNorm3d → ReLU → average pool (1, 2, 2): depth is never pooled."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, 3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)))  # B×Cin×D×H×W → B×Cout×D×H×W
        return F.avg_pool3d(out, kernel_size=(1, 2, 2))  # B×Cout×D×H/2×W/2


class UpBlock3d(nn.Module):
    """Nearest upsample ×(1, 2, 2) → conv 3×3×3 → BatchNorm3d → ReLU."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, 3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")  # B×Cin×D×2H×2W
        return F.relu(self.norm(self.conv(out)))  # B×Cout×D×2H×2W


class LayerNormChannelsFirst(nn.Module):
    """LayerNorm over the channel axis of a B×C×H×W tensor (ConvNeXt-V2 style, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)  # B×1×H×W
        var = (x - mean).pow(2).mean(1, keepdim=True)  # B×1×H×W (biased)
        x = (x - mean) / torch.sqrt(var + self.eps)  # B×C×H×W
        return self.weight[:, None, None] * x + self.bias[:, None, None]  # B×C×H×W


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2) on channels-last input B×H×W×C."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)  # B×1×1×C: L2 over positions
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)  # B×1×1×C: relative to channel mean
        return self.gamma * (x * nx) + self.beta + x  # B×H×W×C


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: InstanceNorm(x)·(1 + gamma(seg)) + beta(seg)."""

    def __init__(self, norm_channels: int, label_channels: int) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_channels, affine=False)
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_channels, SPADE_HIDDEN, 3, padding=1), nn.ReLU()
        )
        self.mlp_gamma = nn.Conv2d(SPADE_HIDDEN, norm_channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(SPADE_HIDDEN, norm_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)  # B×C×H×W
        seg = F.interpolate(segmap, size=x.shape[2:], mode="nearest")  # B×L×h×w → B×L×H×W
        actv = self.mlp_shared(seg)  # B×128×H×W
        gamma = self.mlp_gamma(actv)  # B×C×H×W
        beta = self.mlp_beta(actv)  # B×C×H×W
        return normalized * (1 + gamma) + beta  # B×C×H×W


class SPADEResBlock(nn.Module):
    """SPADE residual block fin → fout; learned 1×1 shortcut (no bias) when fin ≠ fout.

    Upstream wraps conv_0, conv_1 and conv_s in spectral norm; the loader folds W_orig / sigma
    into these plain convs once, so no power iteration runs here.
    """

    def __init__(self, fin: int, fout: int, label_channels: int) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, fmiddle, 3, padding=1)
        self.conv_1 = nn.Conv2d(fmiddle, fout, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, 1, bias=False)
        self.norm_0 = SPADE(fin, label_channels)
        self.norm_1 = SPADE(fmiddle, label_channels)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_channels)

    def spectral_conv_names(self) -> list[str]:
        """Names of the convs stored as spectral-norm triplets in the checkpoint."""
        return ["conv_0", "conv_1"] + (["conv_s"] if self.learned_shortcut else [])

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        if self.learned_shortcut:
            x_s = self.conv_s(self.norm_s(x, seg))  # B×fin×H×W → B×fout×H×W (no activation)
        else:
            x_s = x  # B×fout×H×W
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))  # B×fmiddle×H×W
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))  # B×fout×H×W
        return x_s + dx  # B×fout×H×W
