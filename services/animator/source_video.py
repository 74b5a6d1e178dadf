"""Video sources (v2v, SPEC §5.4 "Source video"): per-frame sources, Kalman-smoothed motion.

Every source frame j has its own F, M, x_s and lip normalisation. The driving exp and rotation
(relative: composed with the source frame's) are smoothed over the **whole** sequence (non-causal,
SPEC §9), so all motion must exist before the first frame is generated; the rotation is smoothed
element-wise without re-orthonormalisation (SPEC §15.11). W + G then run in batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from services.animator import motion, retargeting
from services.animator.keypoints import KpInfo
from services.animator.motion_types import (
    NEUTRAL_LIP,
    DrivingBatch,
    DrivingFrame,
    MotionOptions,
    Retargeters,
    SourceMotion,
    region_mask,
)
from services.animator.pipeline import AnimatorOutput, AnimatorPipeline, Ratios
from services.animator.smoothing import rts_smooth
from services.common.errors import InvalidInputError

FALLBACK_EYE_RATIO = 0.39


@dataclass
class SourceVideoState:
    """N source frames: motion on the device plus prepared images (or precomputed f_s)."""

    motion: SourceMotion  # batch N
    kp_info: KpInfo
    options: MotionOptions
    images: torch.Tensor | None = None  # N×3×S×S, F runs per batch
    f_s: torch.Tensor | None = None  # N×C×D×H×W when already computed


def source_motion_from_kp_info(info: KpInfo, eye: torch.Tensor, lip: torch.Tensor) -> SourceMotion:
    """KpInfo of N frames + ratios (N×2, N×1) → SourceMotion with x_s and R_s."""
    return SourceMotion(
        kp=info.kp,
        rot=info.rotation(),
        exp=info.exp,
        scale=info.scale,
        t=info.t,
        x_s=info.transformed(),
        eye_ratio=eye,
        lip_ratio=lip,
    )


def smoothed_targets(
    src: SourceMotion, drv: DrivingBatch, options: MotionOptions
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R′ N×3×3, δ′ N×K×3): per-frame targets, Kalman-smoothed for a driving video."""
    n = src.exp.shape[0]
    if options.driving_image:
        d_rot, d_exp = drv.rot[:1].expand(n, 3, 3), drv.exp[:1].expand_as(src.exp)
        if not options.relative:
            return d_rot, d_exp
        lip = torch.tensor(NEUTRAL_LIP, dtype=torch.float32, device=src.exp.device)  # 1×K×3
        return src.rot, src.exp + (d_exp - lip)
    if options.relative:
        exp = src.exp + (drv.exp - drv.exp[:1])  # N×K×3
        rot = (drv.rot @ drv.rot[:1].transpose(1, 2)) @ src.rot  # N×3×3
    else:
        exp, rot = drv.exp, drv.rot
    var = options.smooth_observation_variance
    return _smooth(rot, var), _smooth(exp, var)


def _smooth(values: torch.Tensor, variance: float) -> torch.Tensor:
    out = rts_smooth(values.cpu().numpy(), observation_variance=variance)
    return torch.from_numpy(out.astype(np.float32)).to(values.device)


def video_driving_keypoints(
    src: SourceMotion, drv: DrivingBatch, options: MotionOptions
) -> torch.Tensor:
    """x_d,j = s_s,j·(x_c_s,j·R_new + δ_new) + t_new for all N frames (before S/R), N×K×3."""
    rot_t, exp_t = smoothed_targets(src, drv, options)
    rot = rot_t if options.region in ("all", "pose") else src.rot  # N×3×3
    mask = torch.tensor(region_mask(options.region), device=src.exp.device)  # K×3
    exp = torch.where(mask, exp_t, src.exp)  # N×K×3
    t = src.t
    if not options.relative and options.region in ("all", "pose"):
        t = drv.t[:1].expand_as(src.t) if options.driving_image else drv.t  # N×3
    t = torch.cat([t[:, 0:2], torch.zeros_like(t[:, 2:3])], dim=1)  # t_z := 0
    return src.scale[:, :, None] * (src.kp @ rot + exp) + t[:, None, :]  # N×K×3


def source_eye_delta(
    src: SourceMotion, options: MotionOptions, nets: Retargeters
) -> torch.Tensor | None:
    """Optional eye retargeting towards frame 0's mean eye ratio (0.39 if that is below 0.18)."""
    if not options.source_video_eye_retargeting:
        return None
    target = float(src.eye_ratio[0, :2].mean())
    if target < options.source_video_eye_threshold:
        target = FALLBACK_EYE_RATIO
    goal = torch.full_like(src.lip_ratio, target)  # N×1
    return retargeting.retarget_eye(nets.eye, src.x_s, torch.cat([src.eye_ratio, goal], dim=1))


def video_keypoints(
    src: SourceMotion, drv: DrivingBatch, options: MotionOptions, nets: Retargeters
) -> torch.Tensor:
    """Full v2v recipe: x_d for all N frames, N×K×3 (no expression-friendly step)."""
    x_d = video_driving_keypoints(src, drv, options)
    return motion.stitch_and_retarget(
        x_d,
        src,
        drv,
        options,
        nets,
        lip_delta=motion.source_lip_delta(src, options, nets),
        eye_delta=source_eye_delta(src, options, nets),
    )


def driving_for_source_video(
    frames: Sequence[DrivingFrame], n_source: int, options: MotionOptions
) -> tuple[list[DrivingFrame], int]:
    """Pair driving frames with source frames by index: (frames, n_frames)."""
    if not frames:
        raise InvalidInputError("no driving motion given", reason="bad_motion")
    if options.driving_image:
        return [frames[0]] * n_source, n_source
    n = min(n_source, len(frames))
    return list(frames[:n]), n


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most `size` covering range(n)."""
    for lo in range(0, n, size):
        yield slice(lo, min(n, lo + size))


def prepare(
    pipe: AnimatorPipeline,
    crops: Sequence[np.ndarray] | torch.Tensor,
    ratios: Sequence[Ratios],
    options: MotionOptions,
) -> SourceVideoState:
    """N source-video crops (or prepared N×3×S×S) + their ratios → SourceVideoState (M only;
    F runs per batch in `generate`)."""
    images = (
        crops.to(pipe.device) if isinstance(crops, torch.Tensor) else pipe.prepare_images(crops)
    )
    if len(ratios) != images.shape[0]:
        raise InvalidInputError("one ratio triple per source frame is needed", reason="bad_image")
    with pipe.on_device():
        info = KpInfo.concat(
            [pipe.kp_info(images[sl]) for sl in batches(images.shape[0], pipe.batch_size)]
        )
    eye = torch.tensor([[r.eye_left, r.eye_right] for r in ratios], device=pipe.device)  # N×2
    lip = torch.tensor([[r.lip] for r in ratios], device=pipe.device)  # N×1
    return SourceVideoState(
        motion=source_motion_from_kp_info(info, eye, lip),
        kp_info=info,
        options=options,
        images=images,
    )


@torch.no_grad()
def generate(
    pipe: AnimatorPipeline, state: SourceVideoState, motions: Sequence[DrivingFrame]
) -> Iterator[AnimatorOutput]:
    """v2v: smooth over all frames first, then W + G per batch with each frame's own f_s."""
    frames, n = driving_for_source_video(motions, state.motion.x_s.shape[0], state.options)
    src = SourceMotion(*(getattr(state.motion, f)[:n] for f in SourceMotion.__dataclass_fields__))
    drv = DrivingBatch.from_frames(frames, pipe.device)
    x_d_all = video_keypoints(src, drv, state.options, pipe.retargeters)  # N×K×3
    for sl in batches(n, pipe.batch_size):
        t0 = time.perf_counter()
        with pipe.on_device():
            f_s = state.f_s[sl] if state.f_s is not None else pipe.appearance(state.images[sl])
            out = pipe.warp_decode(f_s, src.x_s[sl], x_d_all[sl], sl.start)  # b frames
        out.seconds = time.perf_counter() - t0
        yield out
