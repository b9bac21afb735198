"""The request path of one replica, without Ray: request checks, frame
decoding, the result packet on the device and its RLE at the boundary.

``app.py`` serves it with Ray Serve; ``bench_replica.py`` times it alone on a
GPU. Nothing here imports Ray.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any, Dict, Tuple

import numpy as np

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_PIXELS = 4096 * 4096


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_request(body: bytes) -> Tuple[bytes, Dict[str, Any]]:
    """(encoded image, prompt keywords) of a request body; BadRequest names what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, f"request body is {len(body)} bytes, over the {MAX_BODY_BYTES} limit")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise BadRequest(400, f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict) or "image" not in payload:
        raise BadRequest(400, "body must be a JSON object with an 'image' field (base64 PNG or JPEG)")
    try:
        encoded = base64.b64decode(payload["image"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise BadRequest(400, f"'image' is not base64: {exc}") from None
    prompts: Dict[str, Any] = {}
    for key in ("point_coords", "point_labels", "box"):
        if payload.get(key) is not None:
            prompts[key] = payload[key]
    if "point_coords" not in prompts and "box" not in prompts:
        raise BadRequest(400, "give 'point_coords' (with 'point_labels') or 'box'")
    prompts["multimask_output"] = bool(payload.get("multimask_output", True))
    unknown = set(payload) - {"image", "point_coords", "point_labels", "box", "multimask_output"}
    if unknown:
        raise BadRequest(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    return encoded, prompts


def image_size(encoded: bytes) -> Tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(encoded)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadRequest(400, f"'image' is not a PNG or JPEG image: {exc}") from None
    if width * height > MAX_PIXELS:
        raise BadRequest(413, f"image is {width}x{height}, over the {MAX_PIXELS} pixel limit")
    return height, width


def decode_frame(encoded: bytes, device: Any) -> Any:
    """An ``(H, W, 3)`` uint8 tensor on ``device``: JPEGs decoded on the GPU where possible."""
    import torch
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    data = torch.frombuffer(bytearray(encoded), dtype=torch.uint8)
    try:
        if device.type == "cuda" and encoded[:2] == b"\xff\xd8":
            chw = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        else:
            chw = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise BadRequest(400, f"'image' could not be decoded: {exc}") from None
    return chw.permute(1, 2, 0)


# -- the result packet -----------------------------------------------------------


def packet_device(masks: Any, scores: Any) -> Tuple[Dict[str, Any], np.ndarray, Tuple[int, int]]:
    """Best mask's packet computed on the device, brought back in one copy."""
    import torch

    index = scores.argmax(dim=0, keepdim=True)
    best = masks.index_select(0, index)[0] > 0
    height, width = best.shape
    ys = torch.arange(height, device=best.device, dtype=torch.float64)
    xs = torch.arange(width, device=best.device, dtype=torch.float64)
    rows = best.sum(dim=1, dtype=torch.float64)
    cols = best.sum(dim=0, dtype=torch.float64)
    numbers = torch.stack([
        index[0].to(torch.float64), scores.index_select(0, index)[0].to(torch.float64), rows.sum(),
        torch.where(cols > 0, xs, float(width)).amin(), torch.where(rows > 0, ys, float(height)).amin(),
        torch.where(cols > 0, xs, -1.0).amax(), torch.where(rows > 0, ys, -1.0).amax(),
    ])
    # Column-major bits, 8 pixels a byte, as the RLE below wants them.
    flat = best.t().reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=flat.device)
    packed = (flat.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)
    payload = torch.cat([numbers.view(torch.uint8), packed]).cpu().numpy()  # the one copy
    return _packet(payload[:56].view(np.float64)), payload[56:], (height, width)


def packet_numpy(masks: np.ndarray, scores: np.ndarray) -> Tuple[Dict[str, Any], np.ndarray, Tuple[int, int]]:
    """The same packet from upstream's numpy results."""
    index = int(scores.argmax())
    best = masks[index] > 0
    height, width = best.shape
    rows, cols = best.sum(axis=1), best.sum(axis=0)
    ys, xs = np.arange(height), np.arange(width)
    numbers = np.array([
        index, np.float64(scores[index]), rows.sum(),
        np.where(cols > 0, xs, width).min(), np.where(rows > 0, ys, height).min(),
        np.where(cols > 0, xs, -1).max(), np.where(rows > 0, ys, -1).max(),
    ], dtype=np.float64)
    return _packet(numbers), np.packbits(best.T.reshape(-1)), (height, width)


def _packet(numbers: np.ndarray) -> Dict[str, Any]:
    index, score, area, x0, y0, x1, y1 = (float(v) for v in numbers)
    return {
        "mask_index": int(index),
        "score": score,
        "area_px": int(area),
        "bbox_xyxy": [int(x0), int(y0), int(x1), int(y1)] if area > 0 else None,
    }


def rle(packed: np.ndarray, size: Tuple[int, int]) -> Dict[str, Any]:
    """COCO uncompressed RLE (column-major, counts start with zeros) of a packed mask."""
    height, width = size
    bits = np.unpackbits(packed)[: height * width]
    changes = np.flatnonzero(np.diff(bits)) + 1
    edges = np.concatenate([[0], changes, [bits.size]])
    counts = np.diff(edges).tolist()
    if bits.size and bits[0] == 1:
        counts = [0] + counts
    return {"size": [height, width], "counts": counts}


def answer(masks: Any, scores: Any) -> Dict[str, Any]:
    """The response body's result part, whatever ``predict`` returned."""
    if isinstance(masks, np.ndarray):
        result, packed, size = packet_numpy(masks, scores)
        result["mode"] = "numpy"
    else:
        result, packed, size = packet_device(masks, scores)
        result["mode"] = "gpu"
    result["mask_rle"] = rle(packed, size)
    return result



def as_arrays(prompts: Dict[str, Any]) -> Dict[str, Any]:
    """JSON prompts as numpy arrays (float64 coordinates, int64 labels)."""
    out = dict(prompts)
    for key in ("point_coords", "point_labels", "box"):
        if key in out:
            try:
                out[key] = np.asarray(out[key], dtype=np.float64 if key != "point_labels" else np.int64)
            except (TypeError, ValueError) as exc:
                raise BadRequest(400, f"'{key}' is not an array of numbers: {exc}") from None
    return out


SAM2_MODELS = ("hiera_t", "hiera_s", "hiera_b+", "hiera_l")


def make_predictor(model: str, image_size: int, device: Any, seed: int = 0) -> Any:
    """segment-anything (tiny, vit_b/l/h) or SAM 2.1 (hiera_*), random weights."""
    from samgpu_shim.tools.models import build_sam, build_sam2

    if model in SAM2_MODELS:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return SAM2ImagePredictor(build_sam2(model, seed=seed, device=device))
    from segment_anything import SamPredictor

    return SamPredictor(build_sam(model, seed=seed, device=device, image_size=image_size))
