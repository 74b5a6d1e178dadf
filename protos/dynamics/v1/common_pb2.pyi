from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Image(_message.Message):
    __slots__ = ("raw", "encoded")
    RAW_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    raw: RawImage
    encoded: EncodedImage
    def __init__(self, raw: _Optional[_Union[RawImage, _Mapping]] = ..., encoded: _Optional[_Union[EncodedImage, _Mapping]] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("width", "height", "channels", "data")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    channels: int
    data: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class EncodedImage(_message.Message):
    __slots__ = ("data", "mime_type")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    mime_type: str
    def __init__(self, data: _Optional[bytes] = ..., mime_type: _Optional[str] = ...) -> None: ...

class Matrix3x3(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Landmarks(_message.Message):
    __slots__ = ("count", "xy")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    XY_FIELD_NUMBER: _ClassVar[int]
    count: int
    xy: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, count: _Optional[int] = ..., xy: _Optional[_Iterable[float]] = ...) -> None: ...

class FaceRatios(_message.Message):
    __slots__ = ("eye_left", "eye_right", "lip")
    EYE_LEFT_FIELD_NUMBER: _ClassVar[int]
    EYE_RIGHT_FIELD_NUMBER: _ClassVar[int]
    LIP_FIELD_NUMBER: _ClassVar[int]
    eye_left: float
    eye_right: float
    lip: float
    def __init__(self, eye_left: _Optional[float] = ..., eye_right: _Optional[float] = ..., lip: _Optional[float] = ...) -> None: ...

class FaceBox(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2", "score", "landmarks")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    landmarks: Landmarks
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ..., score: _Optional[float] = ..., landmarks: _Optional[_Union[Landmarks, _Mapping]] = ...) -> None: ...

class Rational(_message.Message):
    __slots__ = ("num", "den")
    NUM_FIELD_NUMBER: _ClassVar[int]
    DEN_FIELD_NUMBER: _ClassVar[int]
    num: int
    den: int
    def __init__(self, num: _Optional[int] = ..., den: _Optional[int] = ...) -> None: ...

class FrameMotion(_message.Message):
    __slots__ = ("index", "scale", "rotation", "expression", "translation", "keypoints", "ratios")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    TRANSLATION_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_FIELD_NUMBER: _ClassVar[int]
    RATIOS_FIELD_NUMBER: _ClassVar[int]
    index: int
    scale: float
    rotation: _containers.RepeatedScalarFieldContainer[float]
    expression: _containers.RepeatedScalarFieldContainer[float]
    translation: _containers.RepeatedScalarFieldContainer[float]
    keypoints: _containers.RepeatedScalarFieldContainer[float]
    ratios: FaceRatios
    def __init__(self, index: _Optional[int] = ..., scale: _Optional[float] = ..., rotation: _Optional[_Iterable[float]] = ..., expression: _Optional[_Iterable[float]] = ..., translation: _Optional[_Iterable[float]] = ..., keypoints: _Optional[_Iterable[float]] = ..., ratios: _Optional[_Union[FaceRatios, _Mapping]] = ...) -> None: ...

class MotionTemplate(_message.Message):
    __slots__ = ("num_kp", "fps", "frames", "model_version")
    NUM_KP_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    num_kp: int
    fps: Rational
    frames: _containers.RepeatedCompositeFieldContainer[FrameMotion]
    model_version: str
    def __init__(self, num_kp: _Optional[int] = ..., fps: _Optional[_Union[Rational, _Mapping]] = ..., frames: _Optional[_Iterable[_Union[FrameMotion, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class AnimationOptions(_message.Message):
    __slots__ = ("absolute_motion", "driving_option", "disable_stitching", "normalize_lip", "eye_retargeting", "lip_retargeting", "driving_multiplier", "region")
    class DrivingOption(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DRIVING_OPTION_UNSPECIFIED: _ClassVar[AnimationOptions.DrivingOption]
        EXPRESSION_FRIENDLY: _ClassVar[AnimationOptions.DrivingOption]
        POSE_FRIENDLY: _ClassVar[AnimationOptions.DrivingOption]
    DRIVING_OPTION_UNSPECIFIED: AnimationOptions.DrivingOption
    EXPRESSION_FRIENDLY: AnimationOptions.DrivingOption
    POSE_FRIENDLY: AnimationOptions.DrivingOption
    class Region(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        REGION_UNSPECIFIED: _ClassVar[AnimationOptions.Region]
        ALL: _ClassVar[AnimationOptions.Region]
        EXP: _ClassVar[AnimationOptions.Region]
        POSE: _ClassVar[AnimationOptions.Region]
        LIP: _ClassVar[AnimationOptions.Region]
        EYES: _ClassVar[AnimationOptions.Region]
    REGION_UNSPECIFIED: AnimationOptions.Region
    ALL: AnimationOptions.Region
    EXP: AnimationOptions.Region
    POSE: AnimationOptions.Region
    LIP: AnimationOptions.Region
    EYES: AnimationOptions.Region
    ABSOLUTE_MOTION_FIELD_NUMBER: _ClassVar[int]
    DRIVING_OPTION_FIELD_NUMBER: _ClassVar[int]
    DISABLE_STITCHING_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_LIP_FIELD_NUMBER: _ClassVar[int]
    EYE_RETARGETING_FIELD_NUMBER: _ClassVar[int]
    LIP_RETARGETING_FIELD_NUMBER: _ClassVar[int]
    DRIVING_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    absolute_motion: bool
    driving_option: AnimationOptions.DrivingOption
    disable_stitching: bool
    normalize_lip: bool
    eye_retargeting: bool
    lip_retargeting: bool
    driving_multiplier: float
    region: AnimationOptions.Region
    def __init__(self, absolute_motion: _Optional[bool] = ..., driving_option: _Optional[_Union[AnimationOptions.DrivingOption, str]] = ..., disable_stitching: _Optional[bool] = ..., normalize_lip: _Optional[bool] = ..., eye_retargeting: _Optional[bool] = ..., lip_retargeting: _Optional[bool] = ..., driving_multiplier: _Optional[float] = ..., region: _Optional[_Union[AnimationOptions.Region, str]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("done", "total")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...
