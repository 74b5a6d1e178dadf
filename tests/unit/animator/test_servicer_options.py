"""Proto AnimationOptions / FaceRatios -> domain options (defaults = upstream CLI)."""

from __future__ import annotations

import pytest
from dynamics.v1 import common_pb2

from services.animator.motion_types import MotionOptions
from services.animator.servicer import options_from_proto, ratios_from_proto
from services.common.errors import InvalidInputError

Opts = common_pb2.AnimationOptions


def test_empty_options_are_the_cli_defaults():
    assert options_from_proto(Opts(), total_frames=0) == MotionOptions()
    assert options_from_proto(Opts(), total_frames=250) == MotionOptions()


def test_every_field_maps():
    msg = Opts(
        absolute_motion=True,
        driving_option=Opts.POSE_FRIENDLY,
        disable_stitching=True,
        normalize_lip=True,
        eye_retargeting=True,
        lip_retargeting=True,
        driving_multiplier=1.5,
        region=Opts.LIP,
    )
    assert options_from_proto(msg, 10) == MotionOptions(
        relative=False,
        expression_friendly=False,
        stitching=False,
        normalize_lip=True,
        eye_retargeting=True,
        lip_retargeting=True,
        driving_multiplier=1.5,
        region="lip",
    )
    regions = {Opts.ALL: "all", Opts.EXP: "exp", Opts.POSE: "pose", Opts.EYES: "eyes"}
    for value, name in regions.items():
        assert options_from_proto(Opts(region=value), 0).region == name


def test_single_frame_job_is_image_driven():
    assert options_from_proto(Opts(), total_frames=1).driving_image


@pytest.mark.parametrize(
    "msg",
    [
        Opts(driving_multiplier=-1.0),
        Opts(driving_multiplier=50.0),
        Opts(driving_multiplier=float("inf")),
        Opts(region=17),
        Opts(driving_option=9),
    ],
)
def test_bad_options_are_invalid_input(msg):
    with pytest.raises(InvalidInputError):
        options_from_proto(msg, 0)


def test_ratios():
    got = ratios_from_proto(common_pb2.FaceRatios(eye_left=0.25, eye_right=0.5, lip=0.125))
    assert (got.eye_left, got.eye_right, got.lip) == (0.25, 0.5, 0.125)
    with pytest.raises(InvalidInputError):
        ratios_from_proto(common_pb2.FaceRatios(eye_left=float("nan")))
    with pytest.raises(InvalidInputError):
        ratios_from_proto(common_pb2.FaceRatios(lip=-1.0))
