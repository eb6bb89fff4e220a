"""Skipping frames that look like the last one processed (a still camera costs no UNet calls).

Each input is shrunk to a small thumbnail and compared with the thumbnail of the last input
that was processed, by cosine similarity of the mean-removed pixels (a plain cosine of
non-negative pixels is close to 1 for almost any two pictures). At or above `threshold` the
frame is skipped and its output is the last one; comparing with the last *processed* input,
not the last input, makes a slow drift add up until it is processed. After `max_skip` skips in
a row a frame is processed anyway, so the picture keeps moving with the noise schedule.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMBNAIL = (32, 32)


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    small = cv2.resize(rgb, THUMBNAIL, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    return small


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two thumbnails; two flat pictures count as identical."""
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm < 1e-6:
        return 1.0 if float(np.abs(a - b).max()) < 1e-3 else 0.0
    return float(np.dot(a, b)) / norm


class SimilarityFilter:
    def __init__(self, threshold: float, max_skip: int):
        self.threshold = threshold
        self.max_skip = max_skip
        self._reference: np.ndarray | None = None
        self._skipped = 0
        self.last_similarity: float | None = None

    def skip(self, rgb: np.ndarray) -> bool:
        """Whether `rgb` may reuse the last output; when not, it becomes the new reference."""
        if self.threshold >= 1.0 or self.max_skip == 0:
            return False
        current = thumbnail(rgb)
        if self._reference is not None and self._skipped < self.max_skip:
            self.last_similarity = similarity(current, self._reference)
            if self.last_similarity >= self.threshold:
                self._skipped += 1
                return True
        self._reference, self._skipped = current, 0
        return False

    def remember(self, rgb: np.ndarray) -> None:
        """`rgb` is being processed regardless (there is no output to reuse yet)."""
        if self.threshold < 1.0 and self.max_skip > 0:
            self._reference, self._skipped = thumbnail(rgb), 0

    def reset(self) -> None:
        self._reference, self._skipped = None, 0
