"""The job's typed animation options -> the contract's `AnimationOptions` message.

The options were validated when they were built (`domain.AnimationOptions`); this is a mapping.
"""

from __future__ import annotations

from dynamics.v1 import common_pb2

from services.gateway.domain import AnimationOptions, DrivingOption, Region

_DRIVING: dict[DrivingOption, int] = {
    "expression-friendly": common_pb2.AnimationOptions.EXPRESSION_FRIENDLY,
    "pose-friendly": common_pb2.AnimationOptions.POSE_FRIENDLY,
}
_REGION: dict[Region, int] = {
    "all": common_pb2.AnimationOptions.ALL,
    "exp": common_pb2.AnimationOptions.EXP,
    "pose": common_pb2.AnimationOptions.POSE,
    "lip": common_pb2.AnimationOptions.LIP,
    "eyes": common_pb2.AnimationOptions.EYES,
}


def animation_proto(options: AnimationOptions) -> common_pb2.AnimationOptions:
    """The message the animator's `AnimateSetup` carries (paste-back is the encoder's part)."""
    return common_pb2.AnimationOptions(
        absolute_motion=not options.relative_motion,
        driving_option=_DRIVING[options.driving_option],
        disable_stitching=not options.stitching,
        normalize_lip=options.normalize_lip,
        eye_retargeting=options.eye_retargeting,
        lip_retargeting=options.lip_retargeting,
        driving_multiplier=options.driving_multiplier,
        region=_REGION[options.region],
    )
