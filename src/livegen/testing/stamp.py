"""The delay stamp: a millisecond clock value drawn into a frame as a row of black/white cells.

Spec v1, shared with web/js/stamp.js: 16 px cells in one row starting at (16, 16); cell 0 white,
cell 1 black (references), cells 2..25 the 24-bit value MSB first, cells 26..33 check bits
`b0 ^ b1 ^ b2 ^ 0xA5` MSB first (b0..b2: the value's bytes, big-endian). White is 1. A reader
takes the mean luma of each cell's central 8×8 px and thresholds midway between the references.
It survives lossy codecs and luma-preserving effects; others may destroy it (read → None).
"""

from __future__ import annotations

import numpy as np

CELL = 16
ORIGIN = (16, 16)  # x, y
DATA_BITS = 24
CHECK_BITS = 8
CELLS = 2 + DATA_BITS + CHECK_BITS
MODULO = 1 << DATA_BITS
MIN_CONTRAST = 48
WIDTH = ORIGIN[0] + CELLS * CELL
HEIGHT = ORIGIN[1] + CELL


def _check(value: int) -> int:
    return ((value >> 16) & 0xFF) ^ ((value >> 8) & 0xFF) ^ (value & 0xFF) ^ 0xA5


def _bits(value: int, count: int) -> list[int]:
    return [(value >> (count - 1 - i)) & 1 for i in range(count)]


def write_stamp(rgb: np.ndarray, value_ms: int) -> None:
    """Draw `value_ms mod 2^24` into an (H, W, 3) uint8 RGB frame, in place."""
    value = value_ms % MODULO
    cells = [1, 0, *_bits(value, DATA_BITS), *_bits(_check(value), CHECK_BITS)]
    x0, y0 = ORIGIN
    for index, bit in enumerate(cells):
        x = x0 + index * CELL
        rgb[y0 : y0 + CELL, x : x + CELL] = 255 if bit else 0


def read_stamp(rgb: np.ndarray) -> int | None:
    """The stamped value of an (H, W, 3) RGB frame, or None when there is no valid stamp."""
    if rgb.shape[0] < HEIGHT or rgb.shape[1] < WIDTH:
        return None
    x0, y0 = ORIGIN
    q = CELL // 4
    strip = rgb[y0 + q : y0 + CELL - q, x0 : x0 + CELLS * CELL].astype(np.float32)
    luma = strip @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    means = [luma[:, i * CELL + q : (i + 1) * CELL - q].mean() for i in range(CELLS)]
    white, black = means[0], means[1]
    if white - black < MIN_CONTRAST:
        return None
    threshold = (white + black) / 2
    bits = [int(m > threshold) for m in means[2:]]
    value = int("".join(map(str, bits[:DATA_BITS])), 2)
    check = int("".join(map(str, bits[DATA_BITS:])), 2)
    return value if check == _check(value) else None


def elapsed_ms(stamped: int, now_ms: int) -> int:
    """Milliseconds from a stamped value to `now_ms`, across the 2^24 wrap."""
    return (now_ms - stamped) % MODULO
