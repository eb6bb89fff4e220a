"""Pictures as the frame API carries them (RGB24, I420 or JPEG bytes) ↔ `av.VideoFrame`.

Everything here touches every pixel, so the service runs it on its conversion threads, never on
the event loop. What a client sent is checked before it is decoded: a size over the limits, a
byte count that does not match the size, an odd I420 size or a file that is not a JPEG is a
`BadRequest` naming the field (INVALID_ARGUMENT), never an error inside the node.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import cv2
import numpy as np
from PIL import Image

from livegen.errors import BadRequest
from livegen.grpcapi import livegen_pb2 as pb

RGB24, I420, JPEG = pb.PIXEL_FORMAT_RGB24, pb.PIXEL_FORMAT_I420, pb.PIXEL_FORMAT_JPEG
NAMES = {RGB24: "RGB24", I420: "I420", JPEG: "JPEG"}
DEFAULT_JPEG_QUALITY = 90


@dataclass(frozen=True)
class Limits:
    max_width: int
    max_height: int

    @property
    def max_message_bytes(self) -> int:
        """Largest message a call may carry: an RGB24 frame of the largest size, and room for
        the rest of the message."""
        return self.max_width * self.max_height * 3 + 64 * 1024


def format_name(value: int) -> str:
    return NAMES.get(value, str(value))


def check_format(value: int, field: str, *, unspecified_ok: bool = False) -> None:
    if value in NAMES or (unspecified_ok and value == pb.PIXEL_FORMAT_UNSPECIFIED):
        return
    raise BadRequest(f"{field}: must be PIXEL_FORMAT_RGB24, PIXEL_FORMAT_I420 or PIXEL_FORMAT_JPEG, not {value}")


def check_size(width: int, height: int, limits: Limits, field: str, *, even: bool = False) -> None:
    """`BadRequest` for an empty picture, one over the limits, or an odd size where I420 needs an even one."""
    if width < 1 or height < 1:
        raise BadRequest(f"{field}: width and height must be at least 1, not {width}x{height}")
    if width > limits.max_width or height > limits.max_height:
        raise BadRequest(
            f"{field}: {width}x{height} is larger than this node takes "
            f"({limits.max_width}x{limits.max_height}, grpc.max_width/max_height)"
        )
    if even and (width % 2 or height % 2):
        raise BadRequest(f"{field}: I420 needs an even width and height, not {width}x{height}")


def check_quality(quality: int, field: str) -> int:
    """The JPEG quality asked for (0: the default)."""
    if quality == 0:
        return DEFAULT_JPEG_QUALITY
    if not 1 <= quality <= 100:
        raise BadRequest(f"{field}: must be 1-100 (0: {DEFAULT_JPEG_QUALITY}), not {quality}")
    return quality


def decode(message: pb.Frame, limits: Limits, output_format: int, field: str = "frame") -> av.VideoFrame:
    """The picture of `message` as a frame the device worker takes: rgb24 (RGB24, JPEG) or
    yuv420p (I420, converted to RGB on the worker). `output_format` is what it will be sent back
    as (UNSPECIFIED: as it came), so a size I420 cannot carry is refused before any work."""
    fmt = message.format
    check_format(fmt, f"{field}.format")
    data = message.data
    if fmt == JPEG:
        rgb = decode_jpeg(data, limits, field)
        height, width = rgb.shape[:2]
        check_size(width, height, limits, field, even=output_format == I420)
        return av.VideoFrame.from_ndarray(rgb, format="rgb24")
    width, height = message.width, message.height
    check_size(width, height, limits, field, even=I420 in (fmt, output_format))
    expected = width * height * 3 if fmt == RGB24 else width * height * 3 // 2
    if len(data) != expected:
        raise BadRequest(
            f"{field}.data: {len(data)} bytes; {format_name(fmt)} at {width}x{height} is {expected} bytes"
        )
    if fmt == RGB24:
        return av.VideoFrame.from_ndarray(np.frombuffer(data, np.uint8).reshape(height, width, 3), format="rgb24")
    return av.VideoFrame.from_ndarray(np.frombuffer(data, np.uint8).reshape(height * 3 // 2, width), format="yuv420p")


def decode_jpeg(data: bytes, limits: Limits, field: str = "frame") -> np.ndarray:
    """(H, W, 3) uint8 RGB of a JPEG file; its size is checked from the header before decoding."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                raise BadRequest(f"{field}.data: not a JPEG file ({image.format or 'unknown format'})")
            check_size(*image.size, limits, field)
            return np.asarray(image.convert("RGB"))
    except BadRequest:
        raise
    except Exception as exc:  # any way a decoder can fail on what a client sent is bad input
        raise BadRequest(f"{field}.data: not a decodable JPEG file ({type(exc).__name__})") from None


def encode(frame: av.VideoFrame, fmt: int, jpeg_quality: int, into: pb.Frame) -> None:
    """A processed frame written into the message `into` as the client asked for it (`fmt`:
    RGB24, I420 or JPEG); built in place, so the picture's bytes are copied once."""
    width, height = frame.width, frame.height
    if fmt == I420:
        if frame.format.name == "yuv420p":
            data = frame.to_ndarray().tobytes()
        else:  # the same BT.601 limited-range conversion the node's encoders are fed with
            data = cv2.cvtColor(frame.to_ndarray(format="rgb24"), cv2.COLOR_RGB2YUV_I420).tobytes()
    elif fmt == JPEG:
        buffer = io.BytesIO()
        Image.fromarray(frame.to_ndarray(format="rgb24")).save(buffer, "JPEG", quality=jpeg_quality)
        data = buffer.getvalue()
    else:
        data = frame.to_ndarray(format="rgb24").tobytes()
    into.format, into.width, into.height, into.data = fmt, width, height, data
