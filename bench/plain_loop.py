"""The baseline of table 5: upstream's inference loop shape, one driving frame at a time.

Upstream LivePortrait prepares the source once, then for every driving frame computes that
frame's keypoints, runs W and G on a batch of 1 and converts the frame to uint8 on the host
before looking at the next one. This loop does exactly that over the same networks, weights and
motion recipe as `AnimatorPipeline`, so the comparison isolates batching and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from services.animator import motion
from services.animator.motion_types import DrivingBatch, DrivingFrame
from services.animator.pipeline import AnimatorPipeline, SourceState


@torch.no_grad()
def plain_frames(
    pipe: AnimatorPipeline, state: SourceState, motions: Sequence[DrivingFrame]
) -> list[np.ndarray]:
    """H×W×3 uint8 frames, each computed on its own (batch 1, host copy per frame)."""
    frames = []
    reference = None
    src = state.motion
    for frame in motions:
        drv = DrivingBatch.from_frames([frame], pipe.device)
        if reference is None:
            reference = motion.make_reference(src, drv.head(1), state.options)
        x_d = motion.driving_keypoints(src, drv, reference, state.options)  # 1×K×3
        x_d = motion.apply_expression_friendly(x_d, src, reference, state.options)
        x_d = motion.stitch_and_retarget(
            x_d, src, drv, state.options, pipe.retargeters, lip_delta=state.lip_delta
        )
        with pipe.autocast():
            warped = pipe.W(state.f_s, kp_driving=x_d, kp_source=src.x_s)
            image = pipe.G(feature=warped["out"]).float()  # 1×3×H×W
        out = image[0].permute(1, 2, 0).cpu().numpy()  # H×W×3
        frames.append((np.clip(out, 0, 1) * 255).astype(np.uint8))
    return frames
