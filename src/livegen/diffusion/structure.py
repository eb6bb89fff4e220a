"""Structure control: the condition pictures a ControlNet follows, made from the camera frame.

A condition picture is (3, h, w) in [0, 1] at the stage's working size, the layout the
Stable Diffusion ControlNets were trained on. One per frame, from the same working-size picture
the frame is encoded from:

- `canny`: white edges on black, with the thresholds of the ControlNet canny annotator
  (100 / 200 on the L1 Sobel gradient of 8-bit luma). On a CPU node OpenCV's `cv2.Canny` runs on
  the host uint8 picture (`canny_on_host`). On a GPU node `canny_on_device` runs the same steps
  in torch on the frame's tensor, which is already on the device, so no picture crosses between
  host and device: Sobel gradients of luma, thinning to the local maxima across the edge
  (non-maximum suppression, OpenCV's direction rule) and hysteresis between the two thresholds.
  The hysteresis grows strong edges into weak ones by a fixed `HYSTERESIS_STEPS` pixels instead
  of to the end of every chain, so its cost is fixed (and CUDA-graph friendly); a weak chain
  longer than that from any strong pixel is cut short. The two paths agree on nearly every edge
  pixel of a synthetic picture (tested), not bit for bit.
- `depth`: a monocular depth estimator (transformers' `AutoModelForDepthEstimation`: DPT,
  Depth Anything) on the device, on all streams' pictures at once; its relative inverse depth
  is normalised per picture to [0, 1] (near = white), as the depth ControlNets were trained.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

CONTROL_KINDS = ("canny", "depth")
"""What a ControlNet can follow (`GenerationParams.controlnet`, besides "none")."""
CANNY_LOW = 100
CANNY_HIGH = 200
HYSTERESIS_STEPS = 16
"""Pixels a strong edge grows along weak ones on the device path."""
_LUMA = (0.299, 0.587, 0.114)  # Rec. 601, what cv2.COLOR_RGB2GRAY uses
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
_TAN_22_5 = 0.41421356237309503
_TAN_67_5 = 2.414213562373095


def canny_on_host(picture: np.ndarray, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> np.ndarray:
    """(h, w, 3) uint8 RGB → (h, w) uint8 edges (0 or 255), OpenCV's Canny on its luma."""
    return cv2.Canny(cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY), low, high)


def edges_to_condition(edges: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(h, w) uint8 edges → (3, h, w) in [0, 1] on `device`."""
    return torch.from_numpy(edges).to(device).to(dtype).div_(255.0).expand(3, -1, -1)


def canny_on_device(images: torch.Tensor, low: int = CANNY_LOW, high: int = CANNY_HIGH,
                    steps: int = HYSTERESIS_STEPS) -> torch.Tensor:
    """(B, 3, h, w) RGB in [0, 1] → (B, 3, h, w) edges in {0, 1}, in `images`' dtype; the steps
    of `canny_on_host` in torch (see the module docstring). Computed in float32, where 8-bit
    luma and its Sobel sums are exact."""
    pixels = images.float()
    weights = torch.tensor(_LUMA, device=pixels.device).view(1, 3, 1, 1)
    gray = (pixels * 255.0).round_().mul_(weights).sum(1, keepdim=True).round_()
    sobel_x = torch.tensor(_SOBEL_X, device=pixels.device)
    kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1)  # (2, 1, 3, 3)
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    gx, gy = grad[:, 0:1], grad[:, 1:2]
    ax, ay = gx.abs(), gy.abs()
    magnitude = ax + ay  # L1, as cv2.Canny without L2gradient
    height, width = magnitude.shape[-2:]
    padded = F.pad(magnitude, (1, 1, 1, 1))  # outside the picture counts as no edge

    def at(dy: int, dx: int) -> torch.Tensor:
        return padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]

    # keep a pixel when it is the maximum across the edge (along the quantised gradient)
    across_x = (magnitude > at(0, -1)) & (magnitude >= at(0, 1))
    across_y = (magnitude > at(-1, 0)) & (magnitude >= at(1, 0))
    falling = (magnitude > at(-1, -1)) & (magnitude > at(1, 1))  # gx and gy of one sign
    rising = (magnitude > at(-1, 1)) & (magnitude > at(1, -1))
    diagonal = torch.where(gx * gy >= 0, falling, rising)
    thin = torch.where(ay < ax * _TAN_22_5, across_x, torch.where(ay > ax * _TAN_67_5, across_y, diagonal))
    weak = thin & (magnitude > low)
    edges = (weak & (magnitude > high)).float()
    weak_f = weak.float()
    for _ in range(steps):
        edges = F.max_pool2d(edges, 3, stride=1, padding=1).mul_(weak_f)
    return edges.expand(-1, 3, -1, -1).to(images.dtype)


class DepthEstimator:
    """A transformers depth model on the device, giving depth condition pictures.

    Pictures are resized to the model's input size (`size`: height, width, from its
    preprocessor_config.json; 384 × 384 by default — DPT's ViT needs a square input), normalised
    with its mean and std, and the predicted depth is resized back and normalised per picture."""

    def __init__(self, model: torch.nn.Module, size: tuple[int, int], mean: tuple[float, ...],
                 std: tuple[float, ...]):
        self.model = model
        self.size = size
        self.mean = mean
        self.std = std

    def to(self, device: torch.device, dtype: torch.dtype) -> DepthEstimator:
        self.model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) RGB in [0, 1] → (B, 3, h, w) depth in [0, 1], near = 1."""
        height, width = images.shape[-2:]
        x = F.interpolate(images, size=self.size, mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        depth = self.model(pixel_values=(x - mean) / std).predicted_depth.float()  # (B, h', w')
        depth = F.interpolate(depth[:, None], size=(height, width), mode="bilinear", align_corners=False)
        low = depth.amin(dim=(2, 3), keepdim=True)
        high = depth.amax(dim=(2, 3), keepdim=True)
        depth = (depth - low) / (high - low).clamp_min(1e-6)
        return depth.expand(-1, 3, -1, -1).to(images.dtype)
