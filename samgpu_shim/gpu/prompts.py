"""Prompts on their way to the device: checks, transforms, one packed upload.

Numpy prompts are transformed on the host exactly as upstream does, packed
into one pinned buffer and uploaded with a single non-blocking copy; tensor
prompts are transformed on their own device (in float64, like upstream's
numpy arithmetic) and used where they already are. Every family's GPU path
stages its prompts here.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np
import torch


class PromptError(ValueError, AssertionError):
    """A prompt argument has the wrong shape or is missing.

    It is a ``ValueError`` that names the argument; it also derives from
    ``AssertionError`` because upstream reports the same mistakes with
    ``assert``, so existing ``except AssertionError`` blocks keep working.
    """


IMAGE_NOT_SET = "An image must be set with .set_image(...) before mask prediction."


def scale_coords_torch(coords: torch.Tensor, predictor: Any) -> torch.Tensor:
    """Upstream's ``apply_coords`` for a tensor, bit for bit.

    Upstream multiplies in float64 (numpy) and casts to float32; doing the
    same arithmetic in torch float64 gives the same float32 result. MPS has no
    float64, so there it is float32 arithmetic (may differ in the last bit).
    """
    old_h, old_w = predictor.original_size
    transform = predictor.transform
    if hasattr(transform, "get_preprocess_shape"):
        new_h, new_w = transform.get_preprocess_shape(old_h, old_w, transform.target_length)
    else:  # EfficientViT-SAM's predictor is its own transform and scales to input_size
        new_h, new_w = predictor.input_size
    wide = torch.float32 if coords.device.type == "mps" else torch.float64
    out = coords.detach().to(dtype=wide, copy=True)
    out[..., 0] = out[..., 0] * (new_w / old_w)
    out[..., 1] = out[..., 1] * (new_h / old_h)
    return out.to(torch.float32)


def check_shape(name: str, shape: Tuple[int, ...], ok: bool, expected: str) -> None:
    if not ok:
        raise PromptError(f"{name} must have shape {expected}, got {tuple(shape)}")


def as_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise PromptError(f"{name} could not be read as an array: {exc}") from exc


def prompt_tensor(name: str, value: Any, dtype: torch.dtype) -> torch.Tensor:
    """A prompt as a tensor of ``dtype``: tensors stay on their device, the rest is read as an array."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(dtype)
    return torch.as_tensor(as_array(name, value), dtype=dtype)


KEYS = ("coords", "labels", "box", "mask")
_ARG_NAMES = {"coords": "point_coords", "labels": "point_labels", "box": "box", "mask": "mask_input"}


class Prompts:
    """The prompt tensors of one call, bound for the predictor's device.

    Tensors already on the device are kept as they are (``ready``). Host
    tensors are packed into one byte buffer (``packed``), so that one copy
    moves them all. Pageable host-to-device copies make the host wait for the
    stream, so on CUDA that buffer is pinned and the copy is non-blocking, on
    the current stream of the target device. The pinned block comes from
    PyTorch's caching host allocator, which records an event on that stream at
    the copy and will not hand the block out again until the event has
    completed; dropping our reference right after the launch is therefore
    safe, and nothing writes to the buffer after it.
    """

    __slots__ = ("device", "ready", "layout", "_host", "nbytes")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ready: dict = {}
        # key -> (byte offset, byte size, dtype, shape) inside the packed buffer
        self.layout: dict = {}
        self._host: List[np.ndarray] = []
        self.nbytes = 0

    def put(self, key: Any, tensor: torch.Tensor, name: Optional[str] = None) -> None:
        """Stage one prompt; ``name`` is the argument named in errors (default: from ``key``)."""
        if tensor.device.type == "meta":
            raise PromptError(f"{name or _ARG_NAMES[key]} is on the meta device (it holds no data)")
        if tensor.device == self.device:
            self.ready[key] = tensor
        elif tensor.device.type == "cpu":
            # Every prompt dtype is 4 bytes wide (float32, int32), so offsets
            # stay aligned for the typed views taken on the device.
            array = tensor.contiguous().numpy()
            self.layout[key] = (self.nbytes, array.nbytes, tensor.dtype, tuple(tensor.shape))
            self._host.append(array.reshape(-1).view(np.uint8))
            self.nbytes += array.nbytes
        else:  # another accelerator: a device-to-device copy, no host wait
            self.ready[key] = tensor.to(self.device, non_blocking=True)

    def signature(self) -> tuple:
        """Keys, shapes, dtypes and placement of the staged prompts.

        Host prompts are listed in packing order (their byte layout), prompts
        already on the device after them: two calls with the same signature
        fill the same buffers the same way.
        """
        host = tuple((key, shape, dtype, "host") for key, (_, _, dtype, shape) in self.layout.items())
        ready = tuple((key, tuple(t.shape), t.dtype, "device") for key, t in self.ready.items())
        return host + ready

    def packed(self) -> Optional[torch.Tensor]:
        """The host prompts as one byte tensor (pinned on CUDA), or None."""
        if not self._host:
            return None
        host = torch.from_numpy(np.concatenate(self._host))
        return host.pin_memory() if self.device.type == "cuda" else host

    def views(self, buffer: torch.Tensor) -> dict:
        """Typed views of a packed device buffer, one per host prompt."""
        return {
            key: buffer[offset : offset + size].view(dtype).view(shape)
            for key, (offset, size, dtype, shape) in self.layout.items()
        }

    def resolve(self) -> dict:
        """Every staged prompt on the device: one non-blocking upload for the host ones."""
        out = dict(self.ready)
        host = self.packed()
        if host is not None:
            out.update(self.views(host.to(self.device, non_blocking=True)))
        return out

    def on_device(self) -> dict:
        """All four SAM 1 prompts on the device (absent ones as None)."""
        out = dict.fromkeys(KEYS)
        out.update(self.resolve())
        return out


def points_tensor(predictor: Any, value: Any) -> torch.Tensor:
    """Point coordinates scaled to the model's input frame, float32."""
    if isinstance(value, torch.Tensor):
        return scale_coords_torch(value, predictor)
    array = as_array("point_coords", value)
    scaled = predictor.transform.apply_coords(array, predictor.original_size)
    return torch.as_tensor(scaled, dtype=torch.float)


def box_tensor(predictor: Any, value: Any) -> torch.Tensor:
    """One XYXY box scaled to the model's input frame, float32, shape (1, 4)."""
    array = value if isinstance(value, torch.Tensor) else as_array("box", value)
    check_shape("box", array.shape, array.ndim <= 2 and numel(array) == 4, "(4,) or (1, 4)")
    if isinstance(array, torch.Tensor):
        return scale_coords_torch(array.reshape(-1, 2, 2), predictor).reshape(-1, 4)
    scaled = predictor.transform.apply_boxes(array, predictor.original_size)
    return torch.as_tensor(scaled, dtype=torch.float)


def numel(array: Any) -> int:
    return int(np.prod(array.shape))


def batched(tensors: dict) -> tuple:
    """Upstream's batch dimension on each prompt, in predict_torch's order."""
    coords, labels, box, mask = (tensors[k] for k in KEYS)
    if coords is not None:
        coords, labels = coords[None, :, :], labels[None, :]
    if box is not None:
        box = box[None, :]
    if mask is not None:
        mask = mask[None, :, :, :]
    return coords, labels, box, mask
