"""The typed animation options: one declaration of the fields and their bounds, validated when
built, mapped to the contract's message without a second check."""

from __future__ import annotations

import dataclasses

import pytest
from dynamics.v1 import common_pb2
from pydantic import ValidationError

from services.gateway.domain import AnimationOptions, JobSpec, MediaInput, option_fields
from services.gateway.pipeline.options import animation_proto

Opts = common_pb2.AnimationOptions


def test_defaults_are_upstream_defaults() -> None:
    proto = animation_proto(AnimationOptions())
    assert not proto.absolute_motion and not proto.disable_stitching
    assert proto.driving_option == Opts.EXPRESSION_FRIENDLY and proto.region == Opts.ALL
    assert proto.driving_multiplier == pytest.approx(1.0)
    assert not (proto.normalize_lip or proto.eye_retargeting or proto.lip_retargeting)
    assert AnimationOptions().paste_back


def test_every_option_maps_to_the_contract() -> None:
    options = AnimationOptions(
        relative_motion=False,
        driving_option="pose-friendly",
        driving_multiplier=1.25,
        stitching=False,
        paste_back=False,
        normalize_lip=True,
        eye_retargeting=True,
        lip_retargeting=True,
        region="lip",
    )
    proto = animation_proto(options)
    assert proto.absolute_motion and proto.disable_stitching
    assert proto.driving_option == Opts.POSE_FRIENDLY and proto.region == Opts.LIP
    assert proto.normalize_lip and proto.eye_retargeting and proto.lip_retargeting
    assert proto.driving_multiplier == pytest.approx(1.25)


@pytest.mark.parametrize(
    ("region", "value"),
    [
        ("all", Opts.ALL),
        ("exp", Opts.EXP),
        ("pose", Opts.POSE),
        ("lip", Opts.LIP),
        ("eyes", Opts.EYES),
    ],
)
def test_each_region_has_its_enum(region: str, value: int) -> None:
    assert animation_proto(AnimationOptions(region=region)).region == value


@pytest.mark.parametrize(
    "bad",
    [
        {"bogus": 1},
        {"region": "nose"},
        {"driving_option": "fast"},
        {"driving_multiplier": 0},
        {"driving_multiplier": 10.5},
        {"driving_multiplier": float("nan")},
        {"driving_multiplier": float("inf")},
        {"driving_multiplier": True},
        {"driving_multiplier": "1.5"},
        {"stitching": "false"},
        {"paste_back": 1},
    ],
)
def test_bad_values_are_refused_when_built(bad: dict) -> None:
    with pytest.raises(ValidationError):
        AnimationOptions.model_validate(bad)


def test_bounds_are_inclusive_and_exclusive_as_declared() -> None:
    assert AnimationOptions(driving_multiplier=10).driving_multiplier == 10.0
    assert AnimationOptions(driving_multiplier=1e-6).driving_multiplier == pytest.approx(1e-6)


def test_options_are_frozen_and_hashable() -> None:
    options = AnimationOptions(region="lip")
    with pytest.raises(ValidationError):
        options.region = "all"  # type: ignore[misc]
    assert hash(options) == hash(AnimationOptions(region="lip"))
    spec = JobSpec("j", MediaInput(url="https://x/a.png"), MediaInput(url="https://x/b.mp4"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.options = options  # type: ignore[misc]
    assert spec.options == AnimationOptions()


def test_stored_json_round_trips() -> None:
    options = AnimationOptions(relative_motion=False, driving_multiplier=2.5, region="eyes")
    assert AnimationOptions.model_validate(options.model_dump(mode="json")) == options


def test_field_list_is_read_from_the_declaration() -> None:
    fields = {f.name: f for f in option_fields()}
    assert list(fields) == list(AnimationOptions.model_fields)
    multiplier = fields["driving_multiplier"]
    assert multiplier.kind is float and multiplier.default == 1.0
    assert (multiplier.above, multiplier.at_most) == (
        0.0,
        10.0,
    ) and multiplier.bounds() == "(0, 10]"
    assert fields["region"].choices == ("all", "exp", "pose", "lip", "eyes")
    assert fields["driving_option"].choices == ("expression-friendly", "pose-friendly")
    assert fields["stitching"].kind is bool and fields["stitching"].default is True
    assert all(f.description for f in fields.values())


def test_openapi_schema_carries_the_same_bounds() -> None:
    schema = AnimationOptions.model_json_schema()
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    for field in option_fields():
        prop = props[field.name]
        assert prop["default"] == field.default and prop["description"] == field.description
        if field.choices:
            assert tuple(prop["enum"]) == field.choices
        if field.above is not None:
            assert prop["exclusiveMinimum"] == field.above
        if field.at_most is not None:
            assert prop["maximum"] == field.at_most
