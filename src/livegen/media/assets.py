"""`AssetStore`: the images and videos effects use (backgrounds, logos), found by reference.

A reference is either `upload:<id>` — a file uploaded through the API and kept under the uploads
folder, named by the SHA-256 of its content — or a path relative to the bundled assets folder
(`configs/assets/`, e.g. `backgrounds/office.jpg`). Uploads are checked before they are kept:
size, declared type, and a full decode (Pillow for images, PyAV for videos), so a file that is
not what it claims never reaches an effect.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livegen.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType

UPLOAD_REF = re.compile(r"upload:([0-9a-f]{16,64})")
IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
VIDEO_TYPES = {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov"}
MAX_IMAGE_PIXELS = 4096 * 4096
IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
"""What Pillow must find in the bytes for each declared type."""
VIDEO_FORMATS = {"video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov"}
"""A name FFmpeg's demuxer must list for each declared type (its mov/mp4 demuxer is one)."""
MAX_VIDEO_SIDE = 3840
MAX_VIDEO_SECONDS = 600.0
MAX_VIDEO_FRAMES = 18_000
"""Frames decoded to check a video (10 minutes at 30 fps); the duration cap comes first."""


@dataclass(frozen=True)
class Asset:
    ref: str
    kind: str  # "image" | "video"
    content_type: str
    bytes: int
    width: int
    height: int

    def describe(self) -> dict:
        return {"ref": self.ref, "kind": self.kind, "content_type": self.content_type,
                "bytes": self.bytes, "width": self.width, "height": self.height}


class AssetStore:
    def __init__(self, uploads_dir: Path, bundled_dir: Path, max_bytes: int = 20 * 1024 * 1024):
        self.uploads_dir = uploads_dir
        self.bundled_dir = bundled_dir
        self.max_bytes = max_bytes

    def resolve(self, ref: str) -> Path:
        """The file behind a reference; `Unprocessable` (naming it) when there is none."""
        match = UPLOAD_REF.fullmatch(ref)
        if match:
            found = sorted(self.uploads_dir.glob(f"{match.group(1)}.*")) if self.uploads_dir.is_dir() else []
            if not found:
                raise Unprocessable(f"no uploaded asset {ref!r}")
            return found[0]
        path = (self.bundled_dir / ref).resolve()
        if not path.is_relative_to(self.bundled_dir.resolve()) or not path.is_file():
            raise Unprocessable(f"no asset {ref!r}: use upload:<id> or a file under configs/assets/")
        return path

    def resolve_video(self, ref: str) -> Path:
        """The uploaded video behind `upload:<id>` (a file job's input: probed in full when it was
        uploaded); `Unprocessable` for an unknown upload, an image, or any other reference."""
        if not UPLOAD_REF.fullmatch(ref):
            raise Unprocessable(f"{ref!r} is not an upload reference (upload:<id>)")
        path = self.resolve(ref)
        if path.suffix not in VIDEO_TYPES.values():
            raise Unprocessable(f"{ref!r} is an image, not a video")
        return path

    def load_image(self, ref: str) -> np.ndarray:
        """The image behind `ref` as (H, W, 3) uint8 RGB; `Unprocessable` when it is none."""
        from PIL import Image

        path = self.resolve(ref)
        try:
            with Image.open(path) as image:
                return np.ascontiguousarray(image.convert("RGB"))
        except Exception as exc:  # Pillow raises many kinds for bad files
            raise Unprocessable(f"{ref!r} is not a readable image ({exc})") from None

    def save_upload(self, data: bytes, content_type: str) -> Asset:
        """Check and keep an uploaded image or video; the same content always gets the same ref."""
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"the upload is {len(data)} bytes; the limit is {self.max_bytes}")
        if content_type in IMAGE_TYPES:
            kind, suffix = "image", IMAGE_TYPES[content_type]
            width, height = _check_image(data, content_type)
        elif content_type in VIDEO_TYPES:
            kind, suffix = "video", VIDEO_TYPES[content_type]
            width, height = _check_video(data, content_type)
        else:
            known = ", ".join([*IMAGE_TYPES, *VIDEO_TYPES])
            raise UnsupportedMediaType(f"uploads must be one of {known}, not {content_type!r}")
        digest = hashlib.sha256(data).hexdigest()[:32]
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        target = self.uploads_dir / f"{digest}{suffix}"
        if not target.exists():
            partial = target.with_suffix(target.suffix + ".part")
            partial.write_bytes(data)
            partial.replace(target)
        return Asset(f"upload:{digest}", kind, content_type, len(data), width, height)


def _check_image(data: bytes, content_type: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != IMAGE_FORMATS[content_type]:
                raise UnsupportedMediaType(
                    f"the bytes are {image.format or 'not an image'}, not the declared {content_type}"
                )
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise Unprocessable(f"the image is {image.width}x{image.height}; at most {MAX_IMAGE_PIXELS} pixels")
            image.load()  # a full decode: truncated or hostile files fail here
            return image.width, image.height
    except (Unprocessable, UnsupportedMediaType):
        raise
    except Exception as exc:  # Pillow raises many kinds for bad files
        raise Unprocessable(f"the image cannot be decoded: {exc}") from None


def _check_video(data: bytes, content_type: str) -> tuple[int, int]:
    """Probe the whole video before it is kept: its container is the declared one, its picture
    and duration are within the caps, and every frame (up to a cap) decodes."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if VIDEO_FORMATS[content_type] not in container.format.name.split(","):
                raise UnsupportedMediaType(f"the bytes are {container.format.name}, not the declared {content_type}")
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                raise Unprocessable("the file has no video stream")
            width, height, frames = stream.codec_context.width, stream.codec_context.height, 0
            if max(width, height) > MAX_VIDEO_SIDE:
                raise Unprocessable(f"the video is {width}x{height}; at most {MAX_VIDEO_SIDE} pixels a side")
            for frame in container.decode(stream):
                frames += 1
                seconds = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else 0.0
                if seconds > MAX_VIDEO_SECONDS or frames > MAX_VIDEO_FRAMES:
                    raise Unprocessable(f"the video is longer than {MAX_VIDEO_SECONDS:g} s")
                width, height = frame.width, frame.height
    except (Unprocessable, UnsupportedMediaType):
        raise
    except Exception as exc:
        raise Unprocessable(f"the video cannot be decoded: {exc}") from None
    if not frames:
        raise Unprocessable("the video has no frames")
    return width, height
