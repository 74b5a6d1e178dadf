"""Dense motion network of W: keypoints → dense 3-D deformation field and occlusion map.

Part of the warping module W (LivePortrait, after face-vid2vid). The K driving/source keypoint
pairs define K+1 candidate motions (index 0 = identity background, k = pure translation
x_s[k] − x_d[k]); a 3-D hourglass predicts a softmax mask over them.

Grid convention (upstream quirk, kept on purpose): the identity grid spans [−1, 1] with the
align_corners=True convention, while every grid_sample uses align_corners=False.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from services.animator.model.blocks import DownBlock3d, UpBlock3d

KP_VARIANCE = 0.01  # Gaussian heatmap variance in normalised grid units


def make_coordinate_grid(d: int, h: int, w: int, ref: torch.Tensor) -> torch.Tensor:
    """Identity grid D×H×W×3 with last axis (x, y, z), each in [−1, 1] (corner-aligned)."""
    x = torch.arange(w, dtype=ref.dtype, device=ref.device)  # W
    y = torch.arange(h, dtype=ref.dtype, device=ref.device)  # H
    z = torch.arange(d, dtype=ref.dtype, device=ref.device)  # D
    x = 2 * (x / (w - 1)) - 1  # W
    y = 2 * (y / (h - 1)) - 1  # H
    z = 2 * (z / (d - 1)) - 1  # D
    xx = x.view(1, 1, w).expand(d, h, w)  # D×H×W
    yy = y.view(1, h, 1).expand(d, h, w)  # D×H×W
    zz = z.view(d, 1, 1).expand(d, h, w)  # D×H×W
    return torch.stack([xx, yy, zz], dim=3)  # D×H×W×3


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """exp(−‖grid − kp‖² / (2·0.01)) for every keypoint: B×K×3, D×H×W×3 → B×K×D×H×W."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]  # B×K×D×H×W×3
    return torch.exp(-0.5 * (diff**2).sum(-1) / KP_VARIANCE)  # B×K×D×H×W


class Hourglass3d(nn.Module):
    """3-D U-Net: `encoder.down_blocks.*`, `decoder.up_blocks.*`, `decoder.conv`, `decoder.norm`."""

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int, max_features: int
    ) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.down_blocks = nn.ModuleList(
            DownBlock3d(
                in_features if i == 0 else min(max_features, block_expansion * 2**i),
                min(max_features, block_expansion * 2 ** (i + 1)),
            )
            for i in range(num_blocks)
        )
        ups = []
        for i in reversed(range(num_blocks)):
            factor = 1 if i == num_blocks - 1 else 2  # later blocks also take the skip
            ups.append(
                UpBlock3d(
                    factor * min(max_features, block_expansion * 2 ** (i + 1)),
                    min(max_features, block_expansion * 2**i),
                )
            )
        self.decoder = nn.Module()
        self.decoder.up_blocks = nn.ModuleList(ups)
        self.out_filters = block_expansion + in_features
        self.decoder.conv = nn.Conv3d(self.out_filters, self.out_filters, 3, padding=1)
        self.decoder.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]  # B×Cin×D×H×W
        for block in self.encoder.down_blocks:
            skips.append(block(skips[-1]))  # B×C_i×D×H/2^i×W/2^i
        out = skips.pop()  # B×C_n×D×H/2^n×W/2^n
        for block in self.decoder.up_blocks:
            out = block(out)  # B×C×D×2h×2w
            out = torch.cat([out, skips.pop()], dim=1)  # B×(C + C_skip)×D×2h×2w
        out = self.decoder.conv(out)  # B×(be + Cin)×D×H×W
        return F.relu(self.decoder.norm(out))  # B×(be + Cin)×D×H×W


class DenseMotionNetwork(nn.Module):
    """Predicts deformation B×D×H×W×3, occlusion map B×1×H×W and part mask B×(K+1)×D×H×W."""

    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        feature_channel: int,
        reshape_depth: int,
        compress: int,
        estimate_occlusion_map: bool = True,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.hourglass = Hourglass3d(
            block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features
        )
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        self.occlusion = None
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(
                self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3
            )

    def sparse_motions(
        self, grid: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> torch.Tensor:
        """Part 0 = identity, part k = grid − kp_d[k] + kp_s[k] → B×(K+1)×D×H×W×3."""
        b = kp_driving.shape[0]
        shifted = grid[None, None] - kp_driving[:, :, None, None, None, :]  # B×K×D×H×W×3
        shifted = shifted + kp_source[:, :, None, None, None, :]  # B×K×D×H×W×3
        identity = grid[None, None].expand(b, 1, *grid.shape)  # B×1×D×H×W×3
        return torch.cat([identity, shifted], dim=1)  # B×(K+1)×D×H×W×3

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """f_s B×C×D×H×W, keypoints B×K×3 → {'mask', 'deformation', 'occlusion_map'}."""
        b, _, d, h, w = feature.shape
        parts = self.num_kp + 1
        feature = F.relu(self.norm(self.compress(feature)))  # B×c×D×H×W (c = compress)
        grid = make_coordinate_grid(d, h, w, feature)  # D×H×W×3
        motions = self.sparse_motions(grid, kp_driving, kp_source)  # B×P×D×H×W×3
        repeated = feature.unsqueeze(1).expand(b, parts, -1, d, h, w)  # B×P×c×D×H×W
        deformed = F.grid_sample(
            repeated.reshape(b * parts, -1, d, h, w),
            motions.reshape(b * parts, d, h, w, 3),
            align_corners=False,
        )  # (B·P)×c×D×H×W
        deformed = deformed.view(b, parts, -1, d, h, w)  # B×P×c×D×H×W
        heat = keypoint_gaussians(kp_driving, grid) - keypoint_gaussians(
            kp_source, grid
        )  # B×K×D×H×W
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1)  # B×P×D×H×W
        hg_in = torch.cat([heat.unsqueeze(2), deformed], dim=2)  # B×P×(1+c)×D×H×W
        prediction = self.hourglass(hg_in.view(b, -1, d, h, w))  # B×F×D×H×W
        mask = F.softmax(self.mask(prediction), dim=1)  # B×P×D×H×W
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)  # B×D×H×W×3
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            flat = prediction.reshape(b, -1, h, w)  # B×(F·D)×H×W
            out["occlusion_map"] = torch.sigmoid(self.occlusion(flat))  # B×1×H×W
        return out
