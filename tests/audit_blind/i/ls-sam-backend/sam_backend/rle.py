"""Conversions from binary masks to the formats Label Studio expects."""
from typing import List, Sequence, Tuple

import cv2
import numpy as np


def _to_bits(value: int, width: int) -> str:
    return format(int(value), f"0{width}b")


def encode_rle(values: np.ndarray, wordsize: int = 8, rle_sizes: Sequence[int] = (3, 4, 8, 16)) -> List[int]:
    """Encode a flat uint8 array with Label Studio's brush RLE (same layout as
    label_studio_converter.brush.encode_rle, but runs are found with numpy)."""
    values = np.asarray(values, dtype=np.uint8).ravel()
    header = _to_bits(len(values), 32) + _to_bits(wordsize - 1, 5)
    header += "".join(_to_bits(s - 1, 4) for s in rle_sizes)

    change = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(values)]]))

    chunks = [header]
    max_run = 2 ** rle_sizes[-1]
    for start, length in zip(starts, lengths):
        value = values[start]
        while length > 0:
            run = min(length, max_run)
            if run == 1:
                chunks.append("0" + _to_bits(0, 4) + _to_bits(value, wordsize))
            else:
                idx = next(i for i, s in enumerate(rle_sizes) if run - 1 < 2 ** s)
                chunks.append("1" + _to_bits(idx, 2) + _to_bits(run - 1, rle_sizes[idx]) + _to_bits(value, wordsize))
            length -= run

    bits = "".join(chunks)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


def mask_to_ls_rle(mask) -> List[int]:
    """(H, W) boolean mask -> RLE of the RGBA brush image (alpha carries the mask)."""
    alpha = np.asarray(mask, dtype=np.uint8) * 255  # expect: np.asarray
    rgba = np.repeat(alpha.ravel(), 4)
    return encode_rle(rgba)


def mask_to_polygon_points(mask, width: int, height: int, epsilon: float = 1.5) -> List[List[float]]:
    """Largest external contour of the mask, as percentages of the image size."""
    m = mask.astype(np.uint8)  # expect: astype
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    contour = max(contours, key=cv2.contourArea)
    contour = cv2.approxPolyDP(contour, epsilon, True).reshape(-1, 2)
    return [[float(x) * 100.0 / width, float(y) * 100.0 / height] for x, y in contour]


def mask_bbox_percent(mask, width: int, height: int) -> Tuple[float, float, float, float]:
    ys, xs = np.where(mask)  # expect: np.where
    x0, x1 = xs.min(), xs.max()
    y0, y1 = ys.min(), ys.max()
    return (
        x0 * 100.0 / width,
        y0 * 100.0 / height,
        (x1 - x0 + 1) * 100.0 / width,
        (y1 - y0 + 1) * 100.0 / height,
    )
