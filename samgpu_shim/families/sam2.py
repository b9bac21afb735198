"""SAM 2's image predictor (``sam2.sam2_image_predictor``) on the GPU-resident path.

Upstream ``SAM2ImagePredictor.predict`` moves every prompt to the device
with a blocking copy of its own, builds the box corner labels from a Python
list (one more copy), then copies the three results back to numpy. Its
prompt encoder and mask decoder need no host wait. Here:

* the prompts of a call (of every image, for ``predict_batch``) are staged
  in one packed, pinned, non-blocking upload, box corner labels included;
* upstream's own coordinate transforms and ``_predict`` then run on the
  device, with the box corners put in front of the points exactly as
  upstream's ``_predict`` does, so the model sees the same tensors;
* the results are upstream's, stopped just before ``.cpu().numpy()``:
  ``squeeze(0).float()``, so masks are float32 0/1 (or float32 logits with
  ``return_logits``), like the numpy path.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch

from .._dispatch import resident
from ..gpu.prompts import PromptError, Prompts, check_shape, prompt_tensor
from . import Family, Target, params_check, signatures

_NOT_SET = "An image must be set with .set_image(...) before mask prediction."
_NOT_SET_BATCH = "An image must be set with .set_image_batch(...) before mask prediction."
_NOT_BATCH = "This function should only be used when in batched mode"

Results = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _Names:
    """Argument names for errors: ``point_coords`` or ``point_coords_batch[2]``."""

    def __init__(self, index: Optional[int]) -> None:
        self.index = index

    def __call__(self, base: str) -> str:
        return base if self.index is None else f"{base}_batch[{self.index}]"


def _stage(
    predictor: Any,
    prompts: Prompts,
    image: int,
    name: _Names,
    point_coords: Any,
    point_labels: Any,
    box: Any,
    mask_input: Any,
) -> None:
    """Check one image's prompts and stage them under keys ``(image, kind)``.

    Everything here is host work: a bad prompt raises before the device sees
    anything, and the predictor is left as it was.
    """
    batch = None
    if point_coords is not None:
        if point_labels is None:
            raise PromptError(
                f"{name('point_labels')} must be supplied if {name('point_coords')} is supplied."
            )
        coords = prompt_tensor(name("point_coords"), point_coords, torch.float)
        check_shape(
            name("point_coords"),
            coords.shape,
            coords.dim() in (2, 3) and coords.shape[-1] == 2,
            "(N, 2) or (B, N, 2)",
        )
        labels = prompt_tensor(name("point_labels"), point_labels, torch.int)
        check_shape(
            name("point_labels"),
            labels.shape,
            tuple(labels.shape) == tuple(coords.shape[:-1]),
            f"{tuple(coords.shape[:-1])} to match {name('point_coords')}",
        )
        batch = 1 if coords.dim() == 2 else coords.shape[0]
        prompts.put((image, "coords"), coords, name("point_coords"))
        prompts.put((image, "labels"), labels, name("point_labels"))
    if box is not None:
        boxes = prompt_tensor(name("box"), box, torch.float)
        count = boxes.numel() // 4
        check_shape(
            name("box"),
            boxes.shape,
            boxes.dim() in (1, 2) and boxes.shape[-1] == 4 and count > 0,
            "(4,) or (B, 4)",
        )
        if batch is not None and count != batch:
            raise PromptError(
                f"{name('box')} holds {count} boxes but {name('point_coords')} a batch of {batch}: "
                "points and boxes of one call must describe the same objects"
            )
        prompts.put((image, "box"), boxes, name("box"))
        # Upstream's labels of the two corners, top-left 2 and bottom-right 3.
        corner_labels = torch.tensor([[2, 3]], dtype=torch.int).repeat(count, 1)
        prompts.put((image, "corner_labels"), corner_labels, name("box"))
    if mask_input is not None:
        mask = prompt_tensor(name("mask_input"), mask_input, torch.float)
        size = tuple(predictor.model.sam_prompt_encoder.mask_input_size)
        check_shape(
            name("mask_input"),
            mask.shape,
            mask.dim() in (3, 4) and tuple(mask.shape[-3:]) == (1, *size),
            f"{(1, *size)} or (B, 1, {size[0]}, {size[1]})",
        )
        prompts.put((image, "mask"), mask, name("mask_input"))


def _run(
    predictor: Any,
    staged: dict,
    image: int,
    img_idx: int,
    multimask_output: bool,
    return_logits: bool,
    normalize_coords: bool,
) -> Results:
    """Upstream's prompt transforms and ``_predict`` for one image, on the device."""
    transforms = predictor._transforms
    orig_hw = predictor._orig_hw[img_idx]
    coords = labels = None
    if (image, "coords") in staged:
        coords = transforms.transform_coords(
            staged[(image, "coords")], normalize=normalize_coords, orig_hw=orig_hw
        )
        labels = staged[(image, "labels")]
        if coords.dim() == 2:
            coords, labels = coords[None, ...], labels[None, ...]
    if (image, "box") in staged:
        corners = transforms.transform_boxes(
            staged[(image, "box")], normalize=normalize_coords, orig_hw=orig_hw
        ).reshape(-1, 2, 2)
        corner_labels = staged[(image, "corner_labels")]
        # Upstream's _predict puts the corners in front of the points and hands
        # both to the prompt encoder as points; doing it here with labels that
        # came in the upload spares its host-built label tensor.
        if coords is None:
            coords, labels = corners, corner_labels
        else:
            coords = torch.cat([corners, coords], dim=1)
            labels = torch.cat([corner_labels, labels], dim=1)
    mask = staged.get((image, "mask"))
    if mask is not None and mask.dim() == 3:
        mask = mask[None, :, :, :]
    masks, iou_predictions, low_res_masks = predictor._predict(
        coords, labels, None, mask, multimask_output, return_logits=return_logits, img_idx=img_idx
    )
    return (
        masks.squeeze(0).float().detach(),
        iou_predictions.squeeze(0).float().detach(),
        low_res_masks.squeeze(0).float().detach(),
    )


def predict_resident(
    predictor: Any,
    point_coords: Optional[Any] = None,
    point_labels: Optional[Any] = None,
    box: Optional[Any] = None,
    mask_input: Optional[Any] = None,
    multimask_output: bool = True,
    return_logits: bool = False,
    normalize_coords: bool = True,
) -> Results:
    """``SAM2ImagePredictor.predict`` returning float32 tensors on the model's device."""
    if not predictor._is_image_set:
        raise RuntimeError(_NOT_SET)
    prompts = Prompts(torch.device(predictor.device))
    _stage(predictor, prompts, 0, _Names(None), point_coords, point_labels, box, mask_input)
    staged = prompts.resolve()
    # Upstream's predict reads the last image set (img_idx=-1), batch or not.
    return _run(predictor, staged, 0, -1, multimask_output, return_logits, normalize_coords)


def _entry(name: str, values: Optional[Sequence[Any]], image: int, count: int) -> Any:
    if values is None:
        return None
    try:
        size = len(values)
    except TypeError:
        raise PromptError(f"{name} must be a list with one entry per image, got {type(values).__name__}") from None
    if size < count:
        raise PromptError(f"{name} has {size} entries but {count} images are set; give one per image")
    return values[image]


def predict_batch_resident(
    predictor: Any,
    point_coords_batch: Optional[Sequence[Any]] = None,
    point_labels_batch: Optional[Sequence[Any]] = None,
    box_batch: Optional[Sequence[Any]] = None,
    mask_input_batch: Optional[Sequence[Any]] = None,
    multimask_output: bool = True,
    return_logits: bool = False,
    normalize_coords: bool = True,
) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
    """``SAM2ImagePredictor.predict_batch``: lists of tensors, one upload for all images."""
    if not predictor._is_batch:
        raise AssertionError(_NOT_BATCH)  # upstream's own check and message
    if not predictor._is_image_set:
        raise RuntimeError(_NOT_SET_BATCH)
    count = len(predictor._features["image_embed"])
    prompts = Prompts(torch.device(predictor.device))
    for image in range(count):
        _stage(
            predictor,
            prompts,
            image,
            _Names(image),
            _entry("point_coords_batch", point_coords_batch, image, count),
            _entry("point_labels_batch", point_labels_batch, image, count),
            _entry("box_batch", box_batch, image, count),
            _entry("mask_input_batch", mask_input_batch, image, count),
        )
    staged = prompts.resolve()
    all_masks: List[torch.Tensor] = []
    all_ious: List[torch.Tensor] = []
    all_low: List[torch.Tensor] = []
    for image in range(count):
        masks, ious, low = _run(predictor, staged, image, image, multimask_output, return_logits, normalize_coords)
        all_masks.append(masks)
        all_ious.append(ious)
        all_low.append(low)
    return all_masks, all_ious, all_low


def _check(expected: Tuple[str, ...]) -> Callable[[Any], Optional[str]]:
    """The public method's parameters, and the private ``_predict`` the GPU path calls."""
    public = params_check(expected)
    private = params_check(signatures.SAM2_PRIVATE_PREDICT)

    def check(original: Any) -> Optional[str]:
        reason = public(original)
        if reason is None:
            cls = getattr(sys.modules.get("sam2.sam2_image_predictor"), "SAM2ImagePredictor", None)
            reason = private(getattr(cls, "_predict", None))
            if reason is not None:
                reason = f"SAM2ImagePredictor._predict: {reason}"
        return reason

    return check


def targets(family: Family) -> Tuple[Target, ...]:
    # The package's own prompt encoder already embeds points without host waits.
    return tuple(
        Target(
            module=family.hook_module,
            attribute=f"SAM2ImagePredictor.{method}",
            make_wrapper=resident(family.name, gpu_predict),
            check=_check(params),
            adds_as_numpy=True,
        )
        for method, gpu_predict, params in (
            ("predict", predict_resident, signatures.SAM2_PREDICT),
            ("predict_batch", predict_batch_resident, signatures.SAM2_PREDICT_BATCH),
        )
    )
