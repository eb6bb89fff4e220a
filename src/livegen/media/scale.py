"""Shrinking pictures on the host, fast.

OpenCV's area resize by exactly one half has a path of its own (each output pixel the mean of a
2×2 block): at 720p it costs about a quarter of a `pyrDown` step and much less than one area
resize by a larger factor, and it is anti-aliased (a box filter) where a plain bilinear resize
would alias. Larger reductions are therefore made of halvings.
"""

from __future__ import annotations

import cv2
import numpy as np


def halve(picture: np.ndarray, levels: int) -> np.ndarray:
    """`picture` halved `levels` times (odd sizes round down)."""
    for _ in range(levels):
        height, width = picture.shape[:2]
        picture = cv2.resize(picture, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    return picture


def shrink(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`picture` at `size` (width, height), no larger than it: halved while that stays at or
    above the size, the rest by one area resize."""
    while picture.shape[1] // 2 >= size[0] and picture.shape[0] // 2 >= size[1]:
        picture = halve(picture, 1)
    if (picture.shape[1], picture.shape[0]) != size:
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
    return picture
