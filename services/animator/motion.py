"""The per-frame motion recipe of LivePortrait (SPEC §5.3/§5.4), batched over driving frames.

Every output frame depends only on the source, its own driving motion and driving frame 0
(`MotionReference`), so any batch of frames can be computed at once (SPEC §11). Quirks kept on
purpose (SPEC §15): t_z is zeroed, the absolute-mode row set leaves exp rows 0, 7, 10 to the
source, stitching adds one (Δt_x, Δt_y) to all keypoints, the expression-friendly multiplier
comes from frame 0 only and `driving_multiplier` is not folded into it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.spatial import ConvexHull, QhullError

from services.animator import retargeting
from services.animator.motion_types import (
    NEUTRAL_LIP,
    DrivingBatch,
    MotionOptions,
    Retargeters,
    SourceMotion,
    region_mask,
)

logger = logging.getLogger(__name__)


@dataclass
class MotionReference:
    """Driving frame 0 (rotation, exp, scale, t) plus the expression-friendly multiplier."""

    rot: torch.Tensor  # 1×3×3
    exp: torch.Tensor  # 1×K×3
    scale: torch.Tensor  # 1×1
    t: torch.Tensor  # 1×3
    x_d0: torch.Tensor | None = None  # 1×K×3, keypoints of frame 0 before the multiplier step
    multiplier: float | None = None  # sqrt(V(x_s)) / sqrt(V(x_d0))


def convex_hull_multiplier(x_s: np.ndarray, x_d0: np.ndarray) -> float:
    """m = sqrt(V(x_s)) / sqrt(V(x_d0)), V = volume of the 3-D convex hull of K points.

    Degenerate (flat) keypoint sets, where upstream would crash, give 1.0 with a warning.
    """
    try:
        source = ConvexHull(np.asarray(x_s, dtype=np.float64).reshape(-1, 3)).volume
        driving = ConvexHull(np.asarray(x_d0, dtype=np.float64).reshape(-1, 3)).volume
    except QhullError:
        logger.warning("degenerate keypoint hull; expression-friendly multiplier set to 1")
        return 1.0
    if not driving > 0:
        return 1.0
    return float(np.sqrt(source) / np.sqrt(driving))


def make_reference(
    source: SourceMotion, first: DrivingBatch, options: MotionOptions
) -> MotionReference:
    """Frame-0 reference of a job; computes the expression-friendly multiplier when it applies."""
    ref = MotionReference(
        rot=first.rot[:1], exp=first.exp[:1], scale=first.scale[:1], t=first.t[:1]
    )
    if not _expression_friendly(options):
        return ref
    x_d0 = driving_keypoints(source, first.head(1), ref, options)  # 1×K×3
    multiplier = convex_hull_multiplier(source.x_s[:1].cpu().numpy(), x_d0.cpu().numpy())
    return replace(ref, x_d0=x_d0, multiplier=multiplier)


def _expression_friendly(options: MotionOptions) -> bool:
    return options.relative and options.expression_friendly and not options.driving_image


def rotation_target(
    source: SourceMotion, drv: DrivingBatch, ref: MotionReference, options: MotionOptions
) -> torch.Tensor:
    """R_new, B×3×3: relative (R_d,i·R_d,0ᵀ)·R_s or absolute R_d,i for regions all/pose."""
    if options.region not in ("all", "pose"):
        return source.rot.expand(drv.batch_size, 3, 3)
    if not options.relative:
        return drv.rot
    return (drv.rot @ ref.rot.transpose(1, 2)) @ source.rot  # B×3×3


def expression_target(
    source: SourceMotion, drv: DrivingBatch, ref: MotionReference, options: MotionOptions
) -> torch.Tensor:
    """δ_new, B×K×3, by region; relative uses δ_s + (δ_d,i − δ_d,0) (or − L for an image)."""
    exp_s = source.exp.expand_as(drv.exp)  # B×K×3
    if options.region == "pose":
        return exp_s.clone()
    if options.relative:
        base = _lip_neutral(drv) if options.driving_image else ref.exp
        if options.region == "eyes" and options.driving_image:
            base = torch.zeros_like(ref.exp)  # upstream subtracts 0, not L, for the eyes region
        moved = exp_s + (drv.exp - base)  # B×K×3
        if options.region in ("all", "exp"):
            return moved
    else:
        moved = drv.exp  # absolute: only the region's entries are taken
    mask = torch.tensor(region_mask(options.region), device=drv.exp.device)  # K×3
    return torch.where(mask, moved, exp_s)


def _lip_neutral(drv: DrivingBatch) -> torch.Tensor:
    return torch.tensor(NEUTRAL_LIP, dtype=torch.float32, device=drv.exp.device)  # 1×21×3


def scale_translation_target(
    source: SourceMotion, drv: DrivingBatch, ref: MotionReference, options: MotionOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_new B×1, t_new B×3 with t_z = 0)."""
    batch = drv.batch_size
    scale = source.scale.expand(batch, 1)
    if options.relative and options.region == "all":
        scale = source.scale * (drv.scale / ref.scale)  # B×1
    t = source.t.expand(batch, 3)
    if options.region in ("all", "pose"):
        t = source.t + (drv.t - ref.t) if options.relative else drv.t  # B×3
    return scale, torch.cat([t[:, 0:2], torch.zeros_like(t[:, 2:3])], dim=1)  # t_z := 0


def driving_keypoints(
    source: SourceMotion, drv: DrivingBatch, ref: MotionReference, options: MotionOptions
) -> torch.Tensor:
    """x_d,i = s_new·(x_c_s·R_new + δ_new) + t_new, B×K×3 (no multiplier/stitching yet)."""
    rot = rotation_target(source, drv, ref, options)  # B×3×3
    exp = expression_target(source, drv, ref, options)  # B×K×3
    scale, t = scale_translation_target(source, drv, ref, options)  # B×1, B×3
    return scale[:, :, None] * (source.kp @ rot + exp) + t[:, None, :]  # B×K×3


def apply_expression_friendly(
    x_d: torch.Tensor, source: SourceMotion, ref: MotionReference, options: MotionOptions
) -> torch.Tensor:
    """x_d,i = x_s + (x_d,i − x_d,0)·m for expression-friendly relative video driving."""
    if not _expression_friendly(options) or ref.x_d0 is None or ref.multiplier is None:
        return x_d
    return (x_d - ref.x_d0) * ref.multiplier + source.x_s  # B×K×3


def source_lip_delta(
    source: SourceMotion, options: MotionOptions, nets: Retargeters
) -> torch.Tensor | None:
    """Lip normalisation Δ_lip0 = R_lip(x_s, [c_s_lip, 0]) when c_s_lip ≥ threshold, else None."""
    if not (options.normalize_lip and options.relative):
        return None
    ratio = torch.cat([source.lip_ratio, torch.zeros_like(source.lip_ratio)], dim=1)  # N×2
    if bool((source.lip_ratio < options.lip_normalize_threshold).all()):
        return None
    delta = retargeting.retarget_lip(nets.lip, source.x_s, ratio)  # N×K×3
    keep = (source.lip_ratio >= options.lip_normalize_threshold)[:, :, None]  # N×1×1
    return torch.where(keep, delta, torch.zeros_like(delta))


def stitch_and_retarget(
    x_d: torch.Tensor,
    source: SourceMotion,
    drv: DrivingBatch,
    options: MotionOptions,
    nets: Retargeters,
    lip_delta: torch.Tensor | None = None,
    eye_delta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Algorithm 1 of the paper as upstream runs it, then the driving multiplier."""
    x_s = source.x_s
    if not (options.eye_retargeting or options.lip_retargeting):
        if options.stitching:
            x_d = retargeting.stitch(nets.stitching, x_s, x_d)
        if lip_delta is not None:
            x_d = x_d + lip_delta
        if eye_delta is not None:
            x_d = x_d + eye_delta
    else:
        x_d = add_retargeting(x_s if options.relative else x_d, source, drv, options, nets)
        if options.stitching:
            x_d = retargeting.stitch(nets.stitching, x_s, x_d)
    return x_s + (x_d - x_s) * options.driving_multiplier  # B×K×3


def add_retargeting(
    base: torch.Tensor,
    source: SourceMotion,
    drv: DrivingBatch,
    options: MotionOptions,
    nets: Retargeters,
) -> torch.Tensor:
    """base + Δ_eye + Δ_lip (each only when its flag is on), B×K×3."""
    batch = drv.batch_size
    out = base.expand(batch, *base.shape[1:])  # B×K×3
    if options.eye_retargeting:
        c_s = source.eye_ratio.expand(batch, 2)  # B×2
        ratio = torch.cat([c_s, drv.eye_ratio[:, 0:1]], dim=1)  # B×3, driving *left* eye only
        out = out + retargeting.retarget_eye(nets.eye, source.x_s, ratio)
    if options.lip_retargeting:
        ratio = torch.cat([source.lip_ratio.expand(batch, 1), drv.lip_ratio], dim=1)  # B×2
        out = out + retargeting.retarget_lip(nets.lip, source.x_s, ratio)
    return out
