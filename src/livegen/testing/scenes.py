"""Test scenes with a real person in them, for quality tests and `livegen bench pipeline`.

The person is the astronaut portrait that scikit-image ships (`skimage.data.astronaut`, a NASA
photo in the public domain). Its cut-out is taken once from the photo as it ships — MediaPipe's
general selfie model on the original picture, thresholded, the largest region kept and its holes
filled — and then pasted with that hard edge over backgrounds the test knows. The effects under
test see a new picture (the person over a background the model never saw with them), and the
test knows exactly which pixels are person and which are background.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np


@functools.lru_cache(maxsize=1)
def person_cutout() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut photo as (H, W, 3) uint8 RGB and its person mask as (H, W) bool."""
    from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut())
    with SelfieSegmentation(model_selection=0) as graph:
        soft = graph.process(photo).segmentation_mask
    hard = (soft > 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hard, connectivity=8)
    if count < 2:
        raise RuntimeError("the segmentation model found no person in the astronaut photo")
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    person = (labels == largest).astype(np.uint8)
    # fill holes: everything not reachable from the border through background is person
    flood = np.pad(1 - person, 1, constant_values=1)
    cv2.floodFill(flood, None, (0, 0), 2)
    person = np.where(flood[1:-1, 1:-1] == 2, 0, 1).astype(bool)
    return photo, person


def known_background(size: tuple[int, int], kind: str = "stripes", seed: int = 0) -> np.ndarray:
    """A background the test can recognise, (H, W, 3) uint8 RGB at size (width, height).

    `stripes`: diagonal colour bands (edges everywhere, hard for a blur to hide);
    `gradient`: a smooth two-colour ramp; `noise`: smooth random blobs (like a real room);
    `flat`: one colour.
    """
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "stripes":
        phase = (x + y) / 40.0
        picture = np.stack(
            [127 + 100 * np.sin(phase), 127 + 100 * np.sin(phase + 2.1), 127 + 100 * np.sin(phase + 4.2)], axis=-1
        )
    elif kind == "gradient":
        t = (x / max(width - 1, 1))[..., None]
        picture = (1 - t) * np.array([20, 60, 140], np.float32) + t * np.array([230, 180, 60], np.float32)
    elif kind == "noise":
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (max(2, height // 60), max(2, width // 60), 3)).astype(np.uint8)
        picture = cv2.GaussianBlur(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), (0, 0), 8)
    elif kind == "flat":
        picture = np.broadcast_to(np.array([90, 140, 90], np.float32), (height, width, 3))
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    return np.ascontiguousarray(np.clip(picture, 0, 255).astype(np.uint8))


def compose_scene(
    background: np.ndarray, person_height: float = 0.85, center_x: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """The person pasted over `background`, standing on its bottom edge.

    `person_height` is the person's height as a share of the frame; `center_x` where the person
    stands (0 left, 1 right). Returns the scene (H, W, 3) uint8 and the true person mask (H, W) bool.
    """
    photo, person = person_cutout()
    height, width = background.shape[:2]
    scaled_h = max(8, round(height * person_height))
    scaled_w = max(8, round(photo.shape[1] * scaled_h / photo.shape[0]))
    photo = cv2.resize(photo, (scaled_w, scaled_h), interpolation=cv2.INTER_AREA)
    person = cv2.resize(person.astype(np.uint8), (scaled_w, scaled_h), interpolation=cv2.INTER_NEAREST).astype(bool)
    left = round(center_x * width - scaled_w / 2)
    top = height - scaled_h
    # clip the pasted rectangle to the frame
    x0, x1 = max(0, left), min(width, left + scaled_w)
    y0, y1 = max(0, top), min(height, top + scaled_h)
    scene = background.copy()
    truth = np.zeros((height, width), bool)
    region = person[y0 - top : y1 - top, x0 - left : x1 - left]
    scene[y0:y1, x0:x1][region] = photo[y0 - top : y1 - top, x0 - left : x1 - left][region]
    truth[y0:y1, x0:x1] = region
    return scene, truth


def sensor_noise(picture: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`picture` with Gaussian noise as a camera adds it, frame after frame."""
    noisy = picture.astype(np.float32) + rng.normal(0.0, sigma, picture.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def region_ssim(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Mean SSIM of two RGB pictures over `region` (bool mask), computed on its bounding box."""
    from skimage.metrics import structural_similarity

    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    _, full = structural_similarity(a[y0:y1, x0:x1], b[y0:y1, x0:x1], channel_axis=2, full=True, data_range=255)
    return float(full.mean(axis=2)[region[y0:y1, x0:x1]].mean())


def erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """`mask` shrunk by `pixels` (the part of a region safely away from its edge)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
