from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_FORMAT_UNSPECIFIED: _ClassVar[PixelFormat]
    PIXEL_FORMAT_RGB24: _ClassVar[PixelFormat]
    PIXEL_FORMAT_I420: _ClassVar[PixelFormat]
    PIXEL_FORMAT_JPEG: _ClassVar[PixelFormat]
PIXEL_FORMAT_UNSPECIFIED: PixelFormat
PIXEL_FORMAT_RGB24: PixelFormat
PIXEL_FORMAT_I420: PixelFormat
PIXEL_FORMAT_JPEG: PixelFormat

class Effect(_message.Message):
    __slots__ = ("name", "params")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Chain(_message.Message):
    __slots__ = ("preset", "effects", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Struct
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
    PRESET_FIELD_NUMBER: _ClassVar[int]
    EFFECTS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    preset: str
    effects: _containers.RepeatedCompositeFieldContainer[Effect]
    params: _containers.MessageMap[str, _struct_pb2.Struct]
    def __init__(self, preset: _Optional[str] = ..., effects: _Optional[_Iterable[_Union[Effect, _Mapping]]] = ..., params: _Optional[_Mapping[str, _struct_pb2.Struct]] = ...) -> None: ...

class StreamConfig(_message.Message):
    __slots__ = ("chain", "output_format", "jpeg_quality")
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    chain: Chain
    output_format: PixelFormat
    jpeg_quality: int
    def __init__(self, chain: _Optional[_Union[Chain, _Mapping]] = ..., output_format: _Optional[_Union[PixelFormat, str]] = ..., jpeg_quality: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("format", "width", "height", "data", "frame_id", "pts")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FRAME_ID_FIELD_NUMBER: _ClassVar[int]
    PTS_FIELD_NUMBER: _ClassVar[int]
    format: PixelFormat
    width: int
    height: int
    data: bytes
    frame_id: int
    pts: int
    def __init__(self, format: _Optional[_Union[PixelFormat, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ..., frame_id: _Optional[int] = ..., pts: _Optional[int] = ...) -> None: ...

class ProcessRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: StreamConfig
    frame: Frame
    def __init__(self, config: _Optional[_Union[StreamConfig, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("processing_ms", "waited_ms", "stages_ms")
    class StagesMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PROCESSING_MS_FIELD_NUMBER: _ClassVar[int]
    WAITED_MS_FIELD_NUMBER: _ClassVar[int]
    STAGES_MS_FIELD_NUMBER: _ClassVar[int]
    processing_ms: float
    waited_ms: float
    stages_ms: _containers.ScalarMap[str, float]
    def __init__(self, processing_ms: _Optional[float] = ..., waited_ms: _Optional[float] = ..., stages_ms: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ProcessResponse(_message.Message):
    __slots__ = ("frame", "timing")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    timing: Timing
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "width", "height", "seed", "frames", "steps", "size", "format", "jpeg_quality")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    width: int
    height: int
    seed: int
    frames: int
    steps: int
    size: int
    format: PixelFormat
    jpeg_quality: int
    def __init__(self, prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., seed: _Optional[int] = ..., frames: _Optional[int] = ..., steps: _Optional[int] = ..., size: _Optional[int] = ..., format: _Optional[_Union[PixelFormat, str]] = ..., jpeg_quality: _Optional[int] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("frame", "timing", "seed")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    timing: Timing
    seed: int
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...
