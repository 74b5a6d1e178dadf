"""REST animation options -> the contract's AnimationOptions."""

from __future__ import annotations

import pytest
from dynamics.v1 import common_pb2

from services.gateway.domain import JobFailed
from services.gateway.pipeline.options import animation_options


def test_defaults_are_the_cli_defaults() -> None:
    proto, paste_back = animation_options({})
    assert paste_back and not proto.absolute_motion and not proto.disable_stitching
    assert proto.driving_option == common_pb2.AnimationOptions.EXPRESSION_FRIENDLY
    assert proto.region == common_pb2.AnimationOptions.ALL
    assert proto.driving_multiplier == pytest.approx(1.0)


def test_every_option_maps() -> None:
    proto, paste_back = animation_options({
        "relative_motion": False, "driving_option": "pose-friendly", "driving_multiplier": 1.25,
        "stitching": False, "paste_back": False, "normalize_lip": True, "eye_retargeting": True,
        "lip_retargeting": True, "region": "lip", "crf": 20,
    })
    assert not paste_back and proto.absolute_motion and proto.disable_stitching
    assert proto.driving_option == common_pb2.AnimationOptions.POSE_FRIENDLY
    assert proto.normalize_lip and proto.eye_retargeting and proto.lip_retargeting
    assert proto.region == common_pb2.AnimationOptions.LIP
    assert proto.driving_multiplier == pytest.approx(1.25)


@pytest.mark.parametrize("options", [
    {"bogus": 1}, {"region": "nose"}, {"driving_option": "fast"}, {"driving_multiplier": 0},
    {"driving_multiplier": 11},
])
def test_bad_options_are_refused(options: dict) -> None:
    with pytest.raises(JobFailed) as err:
        animation_options(options)
    assert err.value.code == "bad_option" and not err.value.retryable
