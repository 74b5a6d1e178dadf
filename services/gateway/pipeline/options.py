"""The REST animation options (by name) -> the contract's `AnimationOptions` and paste-back."""

from __future__ import annotations

from collections.abc import Mapping

from dynamics.v1 import common_pb2

from services.gateway.domain import JobFailed

_DRIVING = {
    "expression-friendly": common_pb2.AnimationOptions.EXPRESSION_FRIENDLY,
    "pose-friendly": common_pb2.AnimationOptions.POSE_FRIENDLY,
}
_REGION = {
    "all": common_pb2.AnimationOptions.ALL,
    "exp": common_pb2.AnimationOptions.EXP,
    "pose": common_pb2.AnimationOptions.POSE,
    "lip": common_pb2.AnimationOptions.LIP,
    "eyes": common_pb2.AnimationOptions.EYES,
}
# Keys the orchestrator itself reads (not animation options).
_OTHER = {"crf", "preset", "crop_driving_video"}
_KNOWN = {
    "relative_motion", "driving_option", "driving_multiplier", "stitching", "paste_back",
    "normalize_lip", "eye_retargeting", "lip_retargeting", "region",
} | _OTHER


def _choice(table: Mapping[str, int], name: str, value: object) -> int:
    if value not in table:
        raise JobFailed("bad_option", f"{name} must be one of {', '.join(table)}; got {value!r}")
    return table[value]


def animation_options(options: Mapping[str, object]) -> tuple[common_pb2.AnimationOptions, bool]:
    """Build the proto options; returns (options, paste_back). Unknown keys are refused."""
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise JobFailed("bad_option", f"unknown option(s): {', '.join(unknown)}")
    multiplier = float(options.get("driving_multiplier", 1.0))
    if not 0.0 < multiplier <= 10.0:
        raise JobFailed("bad_option", f"driving_multiplier must be in (0, 10]; got {multiplier}")
    proto = common_pb2.AnimationOptions(
        absolute_motion=not bool(options.get("relative_motion", True)),
        driving_option=_choice(_DRIVING, "driving_option",
                               options.get("driving_option", "expression-friendly")),
        disable_stitching=not bool(options.get("stitching", True)),
        normalize_lip=bool(options.get("normalize_lip", False)),
        eye_retargeting=bool(options.get("eye_retargeting", False)),
        lip_retargeting=bool(options.get("lip_retargeting", False)),
        driving_multiplier=multiplier,
        region=_choice(_REGION, "region", options.get("region", "all")),
    )
    return proto, bool(options.get("paste_back", True))
