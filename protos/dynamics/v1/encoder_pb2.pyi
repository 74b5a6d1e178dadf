from dynamics.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EncodeHeader(_message.Message):
    __slots__ = ("fps", "crop_to_canvas", "crf", "preset", "audio_bytes", "total_frames", "frame_width", "frame_height", "comment", "expected_frames", "photo_bytes", "source_max_dim", "canvas_width", "canvas_height")
    FPS_FIELD_NUMBER: _ClassVar[int]
    CROP_TO_CANVAS_FIELD_NUMBER: _ClassVar[int]
    CRF_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    AUDIO_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FRAME_WIDTH_FIELD_NUMBER: _ClassVar[int]
    FRAME_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PHOTO_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_MAX_DIM_FIELD_NUMBER: _ClassVar[int]
    CANVAS_WIDTH_FIELD_NUMBER: _ClassVar[int]
    CANVAS_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    fps: _common_pb2.Rational
    crop_to_canvas: _common_pb2.Matrix3x3
    crf: int
    preset: str
    audio_bytes: int
    total_frames: int
    frame_width: int
    frame_height: int
    comment: str
    expected_frames: int
    photo_bytes: int
    source_max_dim: int
    canvas_width: int
    canvas_height: int
    def __init__(self, fps: _Optional[_Union[_common_pb2.Rational, _Mapping]] = ..., crop_to_canvas: _Optional[_Union[_common_pb2.Matrix3x3, _Mapping]] = ..., crf: _Optional[int] = ..., preset: _Optional[str] = ..., audio_bytes: _Optional[int] = ..., total_frames: _Optional[int] = ..., frame_width: _Optional[int] = ..., frame_height: _Optional[int] = ..., comment: _Optional[str] = ..., expected_frames: _Optional[int] = ..., photo_bytes: _Optional[int] = ..., source_max_dim: _Optional[int] = ..., canvas_width: _Optional[int] = ..., canvas_height: _Optional[int] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("header", "audio_chunk", "frame", "photo_chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    PHOTO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: EncodeHeader
    audio_chunk: bytes
    frame: AnimatedFrameData
    photo_chunk: bytes
    def __init__(self, header: _Optional[_Union[EncodeHeader, _Mapping]] = ..., audio_chunk: _Optional[bytes] = ..., frame: _Optional[_Union[AnimatedFrameData, _Mapping]] = ..., photo_chunk: _Optional[bytes] = ...) -> None: ...

class AnimatedFrameData(_message.Message):
    __slots__ = ("index", "image")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: _common_pb2.RawImage
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[_common_pb2.RawImage, _Mapping]] = ...) -> None: ...

class EncodeSummary(_message.Message):
    __slots__ = ("frames", "duration_seconds", "has_audio", "bytes")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HAS_AUDIO_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    frames: int
    duration_seconds: float
    has_audio: bool
    bytes: int
    def __init__(self, frames: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., has_audio: _Optional[bool] = ..., bytes: _Optional[int] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("mp4_chunk", "progress", "summary")
    MP4_CHUNK_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    mp4_chunk: bytes
    progress: _common_pb2.Progress
    summary: EncodeSummary
    def __init__(self, mp4_chunk: _Optional[bytes] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., summary: _Optional[_Union[EncodeSummary, _Mapping]] = ...) -> None: ...
