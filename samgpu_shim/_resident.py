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


def _scale_coords_torch(coords: torch.Tensor, predictor: Any) -> torch.Tensor:
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


def prompt_tensor(name: str, value: Any, dtype: torch.dtype) -> torch.Tensor:
    """A prompt as a tensor of ``dtype``: tensors stay on their device, the rest is read as an array."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(dtype)
    return torch.as_tensor(_as_array(name, value), dtype=dtype)


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
        """Shapes and dtypes of the four prompts (None where absent)."""
        out = []
        for key in KEYS:
            if key in self.ready:
                t = self.ready[key]
                out.append((key, tuple(t.shape), t.dtype))
            elif key in self.layout:
                _, _, dtype, shape = self.layout[key]
                out.append((key, shape, dtype))
        return tuple(out)

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
    *,
    _torch_kwargs: Optional[dict] = None,
    _allow_graphs: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``SamPredictor.predict`` that returns tensors on ``predictor.device``.

    Same parameters, checks and values as upstream; nothing in it waits for
    the GPU. Shapes are checked before anything runs, so a bad prompt leaves
    the predictor exactly as it was.
    """
    if not predictor.is_image_set:
        raise RuntimeError(_IMAGE_NOT_SET)

    prompts = Prompts(torch.device(predictor.device))
    if point_coords is not None:
        if point_labels is None:
            raise PromptError("point_labels must be supplied if point_coords is supplied.")
        coords = _points_tensor(predictor, point_coords)
        _check_shape("point_coords", coords.shape, coords.dim() == 2 and coords.shape[-1] == 2, "(N, 2)")
        labels = prompt_tensor("point_labels", point_labels, torch.int)
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
        mask_t = prompt_tensor("mask_input", mask_input, torch.float)
        size = tuple(predictor.model.prompt_encoder.mask_input_size)
        _check_shape(
            "mask_input", mask_t.shape, tuple(mask_t.shape) == (1, *size), str((1, *size))
        )
        prompts.put("mask", mask_t)

    token = SYNC_FREE.set(True)
    try:
        if _allow_graphs and _graphs.usable(prompts.device):
            replayed = _graphs.predict(predictor, prompts, multimask_output, return_logits)
            if replayed is not None:
                return replayed
        tensors = prompts.on_device()
        masks, iou_predictions, low_res_masks = predictor.predict_torch(
            *batched(tensors),
            multimask_output,
            return_logits=return_logits,
            **(_torch_kwargs or {}),
        )
    finally:
        SYNC_FREE.reset(token)
    return masks[0].detach(), iou_predictions[0].detach(), low_res_masks[0].detach()


def predict_resident_hq(
    predictor: Any,
    point_coords: Optional[Any] = None,
    point_labels: Optional[Any] = None,
    box: Optional[Any] = None,
    mask_input: Optional[Any] = None,
    multimask_output: bool = True,
    return_logits: bool = False,
    hq_token_only: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM-HQ's ``predict`` (one more parameter, ``hq_token_only``), GPU-resident.

    Graph mode is not used: SAM-HQ's ``predict_torch`` also reads
    ``self.interm_features``, which ``set_image`` replaces, so a captured graph
    would read stale memory. The call takes the eager sync-free path.
    """
    return predict_resident(
        predictor,
        point_coords,
        point_labels,
        box,
        mask_input,
        multimask_output,
        return_logits,
        _torch_kwargs={"hq_token_only": hq_token_only},
        _allow_graphs=False,
    )


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


def hq_decoder_forward_sync_free(
    decoder: Any,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    multimask_output: bool,
    hq_token_only: bool,
    interm_embeddings: Any,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """SAM-HQ's ``MaskDecoderHQ.forward`` with its row index made on the device.

    SAM-HQ picks the best of the multimask outputs with a row index built by
    ``torch.arange`` on the CPU; indexing a CUDA tensor with it uploads the
    index and makes the host wait. The same gather with the index created on
    the masks' device reads the very same elements, so results are identical.
    """
    vit_features = interm_embeddings[0].permute(0, 3, 1, 2)  # the early ViT block's features
    hq_features = decoder.embedding_encoder(image_embeddings) + decoder.compress_vit_feat(vit_features)
    masks, iou_pred = decoder.predict_masks(
        image_embeddings=image_embeddings,
        image_pe=image_pe,
        sparse_prompt_embeddings=sparse_prompt_embeddings,
        dense_prompt_embeddings=dense_prompt_embeddings,
        hq_features=hq_features,
    )
    hq_token = decoder.num_mask_tokens - 1  # the last token is SAM-HQ's own
    if multimask_output:
        iou_pred, best = torch.max(iou_pred[:, 1:hq_token], dim=1)
        iou_pred = iou_pred.unsqueeze(1)
        rows = torch.arange(masks.size(0), device=masks.device)
        masks_sam = masks[:, 1:hq_token][rows, best].unsqueeze(1)
    else:
        iou_pred = iou_pred[:, 0:1]
        masks_sam = masks[:, 0:1]
    masks_hq = masks[:, hq_token : hq_token + 1]
    return (masks_hq if hq_token_only else masks_sam + masks_hq), iou_pred
