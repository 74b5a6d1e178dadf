from dynamics.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DetectRequest(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("width", "height", "faces", "backend")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    faces: _containers.RepeatedCompositeFieldContainer[_common_pb2.FaceBox]
    backend: str
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., faces: _Optional[_Iterable[_Union[_common_pb2.FaceBox, _Mapping]]] = ..., backend: _Optional[str] = ...) -> None: ...

class DetectSourceRequest(_message.Message):
    __slots__ = ("image", "source_max_dim", "face_index")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MAX_DIM_FIELD_NUMBER: _ClassVar[int]
    FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.Image
    source_max_dim: int
    face_index: int
    def __init__(self, image: _Optional[_Union[_common_pb2.Image, _Mapping]] = ..., source_max_dim: _Optional[int] = ..., face_index: _Optional[int] = ...) -> None: ...

class DetectSourceResponse(_message.Message):
    __slots__ = ("crop", "crop_to_canvas", "landmarks", "ratios", "face", "faces_found", "canvas_width", "canvas_height", "source_max_dim")
    CROP_FIELD_NUMBER: _ClassVar[int]
    CROP_TO_CANVAS_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    RATIOS_FIELD_NUMBER: _ClassVar[int]
    FACE_FIELD_NUMBER: _ClassVar[int]
    FACES_FOUND_FIELD_NUMBER: _ClassVar[int]
    CANVAS_WIDTH_FIELD_NUMBER: _ClassVar[int]
    CANVAS_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MAX_DIM_FIELD_NUMBER: _ClassVar[int]
    crop: _common_pb2.RawImage
    crop_to_canvas: _common_pb2.Matrix3x3
    landmarks: _common_pb2.Landmarks
    ratios: _common_pb2.FaceRatios
    face: _common_pb2.FaceBox
    faces_found: int
    canvas_width: int
    canvas_height: int
    source_max_dim: int
    def __init__(self, crop: _Optional[_Union[_common_pb2.RawImage, _Mapping]] = ..., crop_to_canvas: _Optional[_Union[_common_pb2.Matrix3x3, _Mapping]] = ..., landmarks: _Optional[_Union[_common_pb2.Landmarks, _Mapping]] = ..., ratios: _Optional[_Union[_common_pb2.FaceRatios, _Mapping]] = ..., face: _Optional[_Union[_common_pb2.FaceBox, _Mapping]] = ..., faces_found: _Optional[int] = ..., canvas_width: _Optional[int] = ..., canvas_height: _Optional[int] = ..., source_max_dim: _Optional[int] = ...) -> None: ...

class TrackDrivingConfig(_message.Message):
    __slots__ = ("width", "height", "total_frames", "crop_driving_video")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    CROP_DRIVING_VIDEO_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    total_frames: int
    crop_driving_video: bool
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., total_frames: _Optional[int] = ..., crop_driving_video: _Optional[bool] = ...) -> None: ...

class TrackDrivingRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: TrackDrivingConfig
    frame: DrivingFrame
    def __init__(self, config: _Optional[_Union[TrackDrivingConfig, _Mapping]] = ..., frame: _Optional[_Union[DrivingFrame, _Mapping]] = ...) -> None: ...

class DrivingFrame(_message.Message):
    __slots__ = ("index", "image")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: _common_pb2.RawImage
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.RawImage, _Mapping]] = ...) -> None: ...

class TrackDrivingResponse(_message.Message):
    __slots__ = ("index", "crop", "ratios", "landmarks", "face_found")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    RATIOS_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    FACE_FOUND_FIELD_NUMBER: _ClassVar[int]
    index: int
    crop: _common_pb2.RawImage
    ratios: _common_pb2.FaceRatios
    landmarks: _common_pb2.Landmarks
    face_found: bool
    def __init__(self, index: _Optional[int] = ..., crop: _Optional[_Union[_common_pb2.RawImage, _Mapping]] = ..., ratios: _Optional[_Union[_common_pb2.FaceRatios, _Mapping]] = ..., landmarks: _Optional[_Union[_common_pb2.Landmarks, _Mapping]] = ..., face_found: _Optional[bool] = ...) -> None: ...
