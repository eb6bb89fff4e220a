"""The one place where frames change representation: av.VideoFrame ↔ numpy ↔ torch.

Device tensors are float RGB in [0, 1], shaped (3, H, W). Call these from the engine worker
thread only: they touch every pixel.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import torch


def frame_to_rgb(frame: av.VideoFrame, scale: float = 1.0) -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of a decoded frame; with `scale` < 1, at that fraction of its
    width and height (even sizes), scaled by FFmpeg in the same conversion."""
    if scale >= 1.0:
        return frame.to_ndarray(format="rgb24")
    width, height = max(2, int(frame.width * scale) // 2 * 2), max(2, int(frame.height * scale) // 2 * 2)
    return frame.to_ndarray(format="rgb24", width=width, height=height)


def rgb_to_tensor(rgb: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float in [0, 1] on `device`."""
    pixels = torch.from_numpy(rgb)
    if device.type == "cuda":
        pixels = pixels.pin_memory().to(device, non_blocking=True)
    return pixels.permute(2, 0, 1).to(dtype).div_(255.0)


def tensor_to_rgb(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] → (H, W, 3) contiguous uint8 on the host."""
    pixels = image.clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(1, 2, 0).cpu().numpy())


def rgb_to_frame(rgb: np.ndarray, like: av.VideoFrame | None = None) -> av.VideoFrame:
    """A yuv420p frame (what the encoders take) from RGB, keeping `like`'s timing. OpenCV's
    I420 conversion is the same BT.601 limited range as FFmpeg's and several times faster."""
    height, width = rgb.shape[:2]
    if width % 2 or height % 2:  # I420 needs even sizes; let FFmpeg handle odd ones
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    else:
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    if like is not None:
        frame.pts = like.pts
        if like.time_base is not None:
            frame.time_base = like.time_base
    return frame


def frame_to_tensor(
    frame: av.VideoFrame, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return rgb_to_tensor(frame_to_rgb(frame), device, dtype)


def tensor_to_frame(image: torch.Tensor, like: av.VideoFrame | None = None) -> av.VideoFrame:
    return rgb_to_frame(tensor_to_rgb(image), like)
