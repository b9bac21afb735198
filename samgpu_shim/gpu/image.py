"""The GPU-resident image half: tensor frames, device resize, sync-free encoder.

* ``set_image`` also takes a ``torch.Tensor`` frame (H x W x 3, uint8, on any
  device). It is resized on the predictor's device with antialiased bilinear
  interpolation, rounded back to uint8, and handed to upstream's
  ``set_torch_image``. A numpy frame keeps upstream's exact path (PIL resize).
* ``get_rel_pos`` of the image encoder indexes its relative-position table
  with an index tensor built on the CPU; on a CUDA table that index is copied
  to the device with a blocking copy, twice per attention block (64 host
  syncs for vit_h). The index is the same for every call with the same
  sizes, so it is built once, exactly as upstream builds it, and cached on the
  device: the gather is then sync-free and bit-identical.
* An opt-in reduced precision for the encoder (``SAMGPU_ENCODER_PRECISION``).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Dict, Iterator, Tuple

import torch
import torch.nn.functional as F

from .. import _config

_index_lock = threading.Lock()
_index_cache: Dict[Tuple[int, int, torch.device], torch.Tensor] = {}


def _relative_index(q_size: int, k_size: int) -> torch.Tensor:
    # Upstream's arithmetic, on the CPU, unchanged: same indices by construction.
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return relative_coords.long()


def relative_index_on(device: torch.device, q_size: int, k_size: int) -> torch.Tensor:
    """The relative-position index for these sizes, cached on ``device``."""
    key = (q_size, k_size, device)
    index = _index_cache.get(key)
    if index is None:
        host = _relative_index(q_size, k_size)
        # A pinned, non-blocking upload: even the first call does not wait.
        on_device = host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
        with _index_lock:
            index = _index_cache.setdefault(key, on_device)
    return index


def get_rel_pos_sync_free(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Upstream ``get_rel_pos`` with its index already on ``rel_pos``'s device."""
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos_resized = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
            size=max_rel_dist,
            mode="linear",
        )
        rel_pos_resized = rel_pos_resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        rel_pos_resized = rel_pos
    return rel_pos_resized[relative_index_on(rel_pos.device, q_size, k_size)]


def gpu_path_on() -> bool:
    """The image half follows the predict default: off when rolled back to numpy."""
    return not _config.default_as_numpy()[0]


class ImageError(ValueError, AssertionError):
    """A frame given to ``set_image`` has the wrong shape, dtype or format."""


def set_image_tensor(predictor: Any, image: torch.Tensor, image_format: str = "RGB") -> None:
    """``set_image`` for a tensor frame: resize on the device, then upstream's encoder."""
    if image_format not in ("RGB", "BGR"):
        raise ImageError(f"image_format must be in ['RGB', 'BGR'], is {image_format}.")
    if image.device.type == "meta":
        raise ImageError("image is on the meta device (it holds no data)")
    if image.dim() != 3 or image.shape[-1] != 3:
        raise ImageError(f"image must have shape (H, W, 3), got {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        raise ImageError(f"image must be uint8 with values in [0, 255], got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image must not be empty, got {tuple(image.shape)}")
    device = predictor.device
    if image.device != device:
        if image.device.type == "cpu" and device.type == "cuda":
            image = image.pin_memory()
        image = image.to(device, non_blocking=True)
    if image_format != predictor.model.image_format:
        image = image.flip(-1)
    height, width = int(image.shape[0]), int(image.shape[1])
    target = predictor.transform.get_preprocess_shape(height, width, predictor.transform.target_length)
    chw = image.permute(2, 0, 1)[None].to(torch.float32)
    resized = F.interpolate(chw, size=target, mode="bilinear", align_corners=False, antialias=True)
    # PIL hands upstream a uint8 image: round and clamp the same way.
    resized = resized.round_().clamp_(0, 255).to(torch.uint8).contiguous()
    predictor.set_torch_image(resized, (height, width))


@contextlib.contextmanager
def encoder_precision(device: torch.device) -> Iterator[str]:
    """Apply ``SAMGPU_ENCODER_PRECISION`` around the image encoder (CUDA only)."""
    mode = _config.encoder_precision()
    if device.type != "cuda" or mode == "fp32":
        yield "fp32"
        return
    if mode == "bf16":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield mode
        return
    # TF32 has no context manager of its own; the flags are process-wide, so
    # they are set for the encoder call and put back (documented caveat).
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield mode
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn
