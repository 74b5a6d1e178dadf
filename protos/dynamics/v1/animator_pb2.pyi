from dynamics.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AnimatorInfo(_message.Message):
    __slots__ = ("model_fingerprint", "config_name", "provenance", "backend", "device", "dtype", "input_size", "num_kp", "batch_size")
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_NAME_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_KP_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    model_fingerprint: str
    config_name: str
    provenance: str
    backend: str
    device: str
    dtype: str
    input_size: int
    num_kp: int
    batch_size: int
    def __init__(self, model_fingerprint: _Optional[str] = ..., config_name: _Optional[str] = ..., provenance: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., input_size: _Optional[int] = ..., num_kp: _Optional[int] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ExtractMotionRequest(_message.Message):
    __slots__ = ("config", "crop")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    config: ExtractMotionConfig
    crop: DrivingCrop
    def __init__(self, config: _Optional[_Union[ExtractMotionConfig, _Mapping]] = ..., crop: _Optional[_Union[DrivingCrop, _Mapping]] = ...) -> None: ...

class ExtractMotionConfig(_message.Message):
    __slots__ = ("fps", "total_frames")
    FPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    fps: _common_pb2.Rational
    total_frames: int
    def __init__(self, fps: _Optional[_Union[_common_pb2.Rational, _Mapping]] = ..., total_frames: _Optional[int] = ...) -> None: ...

class DrivingCrop(_message.Message):
    __slots__ = ("index", "image", "ratios")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    RATIOS_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: _common_pb2.RawImage
    ratios: _common_pb2.FaceRatios
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.RawImage, _Mapping]] = ..., ratios: _Optional[_Union[_common_pb2.FaceRatios, _Mapping]] = ...) -> None: ...

class ExtractMotionResponse(_message.Message):
    __slots__ = ("template",)
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    template: _common_pb2.MotionTemplate
    def __init__(self, template: _Optional[_Union[_common_pb2.MotionTemplate, _Mapping]] = ...) -> None: ...

class AnimateSetup(_message.Message):
    __slots__ = ("source_crop", "source_ratios", "options", "total_frames", "job_id", "motion_fingerprint")
    SOURCE_CROP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_RATIOS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MOTION_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    source_crop: _common_pb2.RawImage
    source_ratios: _common_pb2.FaceRatios
    options: _common_pb2.AnimationOptions
    total_frames: int
    job_id: str
    motion_fingerprint: str
    def __init__(self, source_crop: _Optional[_Union[_common_pb2.RawImage, _Mapping]] = ..., source_ratios: _Optional[_Union[_common_pb2.FaceRatios, _Mapping]] = ..., options: _Optional[_Union[_common_pb2.AnimationOptions, _Mapping]] = ..., total_frames: _Optional[int] = ..., job_id: _Optional[str] = ..., motion_fingerprint: _Optional[str] = ...) -> None: ...

class AnimateRequest(_message.Message):
    __slots__ = ("setup", "motion", "crop")
    SETUP_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    setup: AnimateSetup
    motion: _common_pb2.FrameMotion
    crop: DrivingCrop
    def __init__(self, setup: _Optional[_Union[AnimateSetup, _Mapping]] = ..., motion: _Optional[_Union[_common_pb2.FrameMotion, _Mapping]] = ..., crop: _Optional[_Union[DrivingCrop, _Mapping]] = ...) -> None: ...

class AnimatedFrame(_message.Message):
    __slots__ = ("index", "image")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: _common_pb2.RawImage
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.RawImage, _Mapping]] = ...) -> None: ...

class AnimateResponse(_message.Message):
    __slots__ = ("frame", "progress", "random_weights", "device_seconds", "motion", "model_fingerprint")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RANDOM_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    frame: AnimatedFrame
    progress: _common_pb2.Progress
    random_weights: bool
    device_seconds: float
    motion: _common_pb2.FrameMotion
    model_fingerprint: str
    def __init__(self, frame: _Optional[_Union[AnimatedFrame, _Mapping]] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., random_weights: _Optional[bool] = ..., device_seconds: _Optional[float] = ..., motion: _Optional[_Union[_common_pb2.FrameMotion, _Mapping]] = ..., model_fingerprint: _Optional[str] = ...) -> None: ...
