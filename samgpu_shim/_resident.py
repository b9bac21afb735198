"""The GPU-resident prediction path for SAM 1 style predictors.

It reproduces upstream ``SamPredictor.predict`` step for step (same prompt
transforms, same ``predict_torch`` call) but never forces the host to wait:

* numpy prompts are transformed on the host exactly as upstream does, packed
  into one pinned buffer and uploaded with a single non-blocking copy;
* tensor prompts are transformed on their own device (in float64, like
  upstream's numpy arithmetic) and used where they already are;
* inside the call, ``PromptEncoder._embed_points`` runs a formulation without
  boolean-mask indexing (see :func:`embed_points_sync_free`);
* the outputs stay on the predictor's device.
"""

from __future__ import annotations

import contextvars
from typing import Any, List, Optional, Tuple

import numpy as np
import torch

from . import _graphs

# True while a GPU-mode predict runs in this thread/context. The patched
# ``_embed_points`` takes the sync-free branch only then, so every other caller
# (numpy mode, rollback, direct ``predict_torch`` users) runs upstream's code.
SYNC_FREE = contextvars.ContextVar("samgpu_shim_sync_free", default=False)


class PromptError(ValueError, AssertionError):
    """A prompt argument has the wrong shape or is missing.

    It is a ``ValueError`` that names the argument; it also derives from
    ``AssertionError`` because upstream reports the same mistakes with
    ``assert``, so existing ``except AssertionError`` blocks keep working.
    """


_IMAGE_NOT_SET = "An image must be set with .set_image(...) before mask prediction."


class _Upload:
    """Host tensors bound for one device, sent in a single copy.

    Pageable host-to-device copies make the host wait for the stream, so on
    CUDA the pieces are packed into one pinned buffer and copied with
    ``non_blocking=True`` on the current stream of the target device. The
    pinned block comes from PyTorch's caching host allocator, which records an
    event on that stream at the copy and will not hand the block out again
    until the event has completed; dropping our reference right after the
    launch is therefore safe, and nothing here writes to the buffer after it.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pinned = device.type == "cuda"
        self._parts: List[torch.Tensor] = []

    def add(self, host: torch.Tensor) -> int:
        self._parts.append(host.contiguous())
        return len(self._parts) - 1

    def send(self) -> List[torch.Tensor]:
        parts = self._parts
        if not parts:
            return []
        if not self.pinned:
            return [p.to(self.device) for p in parts]
        sizes = [p.numel() * p.element_size() for p in parts]
        # Every part is 4 bytes wide (float32, int32), so each offset stays
        # aligned for the typed views taken on the device.
        staging = torch.empty(sum(sizes), dtype=torch.uint8, pin_memory=True)
        offset = 0
        for part, size in zip(parts, sizes):
            staging[offset : offset + size].view(part.dtype).copy_(part.reshape(-1))
            offset += size
        on_device = staging.to(self.device, non_blocking=True)
        out = []
        offset = 0
        for part, size in zip(parts, sizes):
            out.append(on_device[offset : offset + size].view(part.dtype).view(part.shape))
            offset += size
        return out


def _scale_coords_torch(coords: torch.Tensor, predictor: Any) -> torch.Tensor:
    """Upstream's ``apply_coords`` for a tensor, bit for bit.

    Upstream multiplies in float64 (numpy) and casts to float32; doing the
    same arithmetic in torch float64 gives the same float32 result. MPS has no
    float64, so there it is float32 arithmetic (may differ in the last bit).
    """
    old_h, old_w = predictor.original_size
    new_h, new_w = predictor.transform.get_preprocess_shape(
        old_h, old_w, predictor.transform.target_length
    )
    wide = torch.float32 if coords.device.type == "mps" else torch.float64
    out = coords.detach().to(dtype=wide, copy=True)
    out[..., 0] = out[..., 0] * (new_w / old_w)
    out[..., 1] = out[..., 1] * (new_h / old_h)
    return out.to(torch.float32)


def _check_shape(name: str, shape: Tuple[int, ...], ok: bool, expected: str) -> None:
    if not ok:
        raise PromptError(f"{name} must have shape {expected}, got {tuple(shape)}")


def _as_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise PromptError(f"{name} could not be read as an array: {exc}") from exc


class _Prompts:
    """Collects the four prompt tensors, some uploaded, some already on device."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.device = torch.device(predictor.device)
        self.upload = _Upload(self.device)
        self.ready: dict = {}
        self.pending: dict = {}

    def put(self, key: str, tensor: torch.Tensor) -> None:
        if tensor.device == self.device:
            self.ready[key] = tensor
        elif tensor.device.type == "cpu":
            self.pending[key] = self.upload.add(tensor)
        else:  # another accelerator: a device-to-device copy, no host wait
            self.ready[key] = tensor.to(self.device, non_blocking=True)

    def finish(self) -> dict:
        sent = self.upload.send()
        out = dict(self.ready)
        for key, index in self.pending.items():
            out[key] = sent[index]
        return out


def _points_tensor(predictor: Any, value: Any) -> torch.Tensor:
    """Point coordinates scaled to the model's input frame, float32."""
    if isinstance(value, torch.Tensor):
        return _scale_coords_torch(value, predictor)
    array = _as_array("point_coords", value)
    scaled = predictor.transform.apply_coords(array, predictor.original_size)
    return torch.as_tensor(scaled, dtype=torch.float)


def _box_tensor(predictor: Any, value: Any) -> torch.Tensor:
    """One XYXY box scaled to the model's input frame, float32, shape (1, 4)."""
    array = value if isinstance(value, torch.Tensor) else _as_array("box", value)
    _check_shape("box", array.shape, array.ndim <= 2 and _numel(array) == 4, "(4,) or (1, 4)")
    if isinstance(array, torch.Tensor):
        return _scale_coords_torch(array.reshape(-1, 2, 2), predictor).reshape(-1, 4)
    scaled = predictor.transform.apply_boxes(array, predictor.original_size)
    return torch.as_tensor(scaled, dtype=torch.float)


def _numel(array: Any) -> int:
    return int(np.prod(array.shape))


def predict_resident(
    predictor: Any,
    point_coords: Optional[Any] = None,
    point_labels: Optional[Any] = None,
    box: Optional[Any] = None,
    mask_input: Optional[Any] = None,
    multimask_output: bool = True,
    return_logits: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``SamPredictor.predict`` that returns tensors on ``predictor.device``.

    Same parameters, checks and values as upstream; nothing in it waits for
    the GPU. Shapes are checked before anything runs, so a bad prompt leaves
    the predictor exactly as it was.
    """
    if not predictor.is_image_set:
        raise RuntimeError(_IMAGE_NOT_SET)

    prompts = _Prompts(predictor)
    if point_coords is not None:
        if point_labels is None:
            raise PromptError("point_labels must be supplied if point_coords is supplied.")
        coords = _points_tensor(predictor, point_coords)
        _check_shape("point_coords", coords.shape, coords.dim() == 2 and coords.shape[-1] == 2, "(N, 2)")
        if isinstance(point_labels, torch.Tensor):
            labels = point_labels.detach().to(torch.int)
        else:
            labels = torch.as_tensor(_as_array("point_labels", point_labels), dtype=torch.int)
        _check_shape(
            "point_labels",
            labels.shape,
            labels.dim() == 1 and labels.shape[0] == coords.shape[0],
            f"({coords.shape[0]},) to match point_coords",
        )
        prompts.put("coords", coords)
        prompts.put("labels", labels)
    if box is not None:
        prompts.put("box", _box_tensor(predictor, box))
    if mask_input is not None:
        if isinstance(mask_input, torch.Tensor):
            mask_t = mask_input.detach().to(torch.float)
        else:
            mask_t = torch.as_tensor(_as_array("mask_input", mask_input), dtype=torch.float)
        size = tuple(predictor.model.prompt_encoder.mask_input_size)
        _check_shape(
            "mask_input", mask_t.shape, tuple(mask_t.shape) == (1, *size), str((1, *size))
        )
        prompts.put("mask", mask_t)

    tensors = prompts.finish()
    coords_t = tensors.get("coords")
    labels_t = tensors.get("labels")
    box_t = tensors.get("box")
    mask_input_t = tensors.get("mask")
    if coords_t is not None:
        coords_t, labels_t = coords_t[None, :, :], labels_t[None, :]
    if box_t is not None:
        box_t = box_t[None, :]
    if mask_input_t is not None:
        mask_input_t = mask_input_t[None, :, :, :]

    token = SYNC_FREE.set(True)
    try:
        if _graphs.usable(prompts.device):
            inputs = {"coords": coords_t, "labels": labels_t, "box": box_t, "mask": mask_input_t}
            replayed = _graphs.predict(predictor, inputs, multimask_output, return_logits)
            if replayed is not None:
                return replayed
        masks, iou_predictions, low_res_masks = predictor.predict_torch(
            coords_t,
            labels_t,
            box_t,
            mask_input_t,
            multimask_output,
            return_logits=return_logits,
        )
    finally:
        SYNC_FREE.reset(token)
    return masks[0].detach(), iou_predictions[0].detach(), low_res_masks[0].detach()


def embed_points_sync_free(
    encoder: Any, points: torch.Tensor, labels: torch.Tensor, pad: bool
) -> torch.Tensor:
    """``PromptEncoder._embed_points`` without boolean-mask indexing.

    Upstream writes ``emb[labels == k] += w``: each boolean-mask read and
    write calls ``nonzero``, which waits for the GPU (six waits per call).
    ``torch.where`` picks per element instead and performs the very same
    float additions, so the result is bit-identical (``0.0 + w`` for padding
    points, ``emb + w`` for labelled ones, untouched for other labels).
    """
    points = points + 0.5  # to the centre of the pixel, as upstream
    if pad:
        padding_point = torch.zeros((points.shape[0], 1, 2), device=points.device)
        padding_label = -torch.ones((labels.shape[0], 1), device=labels.device)
        points = torch.cat([points, padding_point], dim=1)
        labels = torch.cat([labels, padding_label], dim=1)
    emb = encoder.pe_layer.forward_with_coords(points, encoder.input_image_size)
    label = labels.unsqueeze(-1)
    emb = torch.where(label == -1, encoder.not_a_point_embed.weight + 0.0, emb)
    emb = torch.where(label == 0, emb + encoder.point_embeddings[0].weight, emb)
    emb = torch.where(label == 1, emb + encoder.point_embeddings[1].weight, emb)
    return emb
