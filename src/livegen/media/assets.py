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
            width, height = _check_image(data)
        elif content_type in VIDEO_TYPES:
            kind, suffix = "video", VIDEO_TYPES[content_type]
            width, height = _check_video(data)
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


def _check_image(data: bytes) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise Unprocessable(f"the image is {image.width}x{image.height}; at most {MAX_IMAGE_PIXELS} pixels")
            image.load()  # a full decode: truncated or hostile files fail here
            return image.width, image.height
    except Unprocessable:
        raise
    except Exception as exc:  # Pillow raises many kinds for bad files
        raise Unprocessable(f"the image cannot be decoded: {exc}") from None


def _check_video(data: bytes) -> tuple[int, int]:
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = next(s for s in container.streams if s.type == "video")
            for frame in container.decode(stream):
                return frame.width, frame.height
    except Exception as exc:
        raise Unprocessable(f"the video cannot be decoded: {exc}") from None
    raise Unprocessable("the video has no frames")
