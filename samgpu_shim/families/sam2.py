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
  ``return_logits``), like the numpy path;
* in graph mode a whole call (every image of ``predict_batch``) is one
  captured graph that reads static copies of the feature pyramid.

SAM 3's interactive image predictor is a copy of this class
(:mod:`samgpu_shim.families.sam3` reuses everything here).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .._dispatch import resident
from ..gpu import graphs
from ..gpu.image import (
    PreparedTransforms,
    encoder_call,
    gpu_path_on,
    host_frame,
    placeholder,
    sam2_prepare,
    stand_in,
)
from ..gpu.prompts import PromptError, Prompts, check_shape, prompt_tensor
from . import Family, Target, Wrapper, params_check, signatures

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
    flags = (multimask_output, return_logits, normalize_coords)

    def run(staged: dict) -> Results:
        # Upstream's predict reads the last image set (img_idx=-1), batch or not.
        return _run(predictor, staged, 0, -1, *flags)

    return _dispatch(predictor, prompts, run, ("predict", *flags))


def _image_tensors(predictor: Any) -> List[torch.Tensor]:
    features = predictor._features
    return [features["image_embed"], *features["high_res_feats"]]


def _graph_key(predictor: Any, extra: tuple) -> tuple:
    transforms = predictor._transforms
    return extra + (
        tuple(tuple(hw) for hw in predictor._orig_hw),
        float(predictor.mask_threshold),
        float(getattr(transforms, "max_hole_area", 0.0)),
        float(getattr(transforms, "max_sprinkle_area", 0.0)),
        int(transforms.resolution),
        type(predictor)._predict,
    )


def _dispatch(
    predictor: Any, prompts: Prompts, run: Callable[[dict], Any], extra: tuple, images: Optional[int] = None
) -> Any:
    """Graph mode when on (the whole call as one graph), else the eager path.

    ``images`` is None for ``predict`` (three tensors) and the image count for
    ``predict_batch`` (three lists of that many tensors).
    """
    if graphs.usable(prompts.device):

        def work(inputs: dict, image: List[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
            # _predict reads predictor._features: point it at the static copies
            # while the work runs (capture and warm-up only).
            live = predictor._features
            predictor._features = {"image_embed": image[0], "high_res_feats": list(image[1:])}
            try:
                return tuple(_flatten(run(inputs)))
            finally:
                predictor._features = live

        key = _graph_key(predictor, extra)
        replayed = graphs.replay(
            predictor, graphs.Work(prompts=prompts, features=_image_tensors(predictor), run=work, key=key)
        )
        if replayed is not None:
            return _unflatten(replayed, images)
    return run(prompts.resolve())


def _flatten(results: Any) -> List[torch.Tensor]:
    if isinstance(results[0], list):  # predict_batch: three lists, one entry per image
        return [t for group in results for t in group]
    return list(results)


def _unflatten(flat: Tuple[torch.Tensor, ...], count: Optional[int]) -> Any:
    if count is None:
        return flat
    return tuple(list(flat[i * count : (i + 1) * count]) for i in range(3))


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
    flags = (multimask_output, return_logits, normalize_coords)

    def run(staged: dict) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        all_masks: List[torch.Tensor] = []
        all_ious: List[torch.Tensor] = []
        all_low: List[torch.Tensor] = []
        for image in range(count):
            masks, ious, low = _run(predictor, staged, image, image, *flags)
            all_masks.append(masks)
            all_ious.append(ious)
            all_low.append(low)
        return all_masks, all_ious, all_low

    return _dispatch(predictor, prompts, run, ("predict_batch", count, *flags), images=count)


def _check(module: str, cls: str, expected: Tuple[str, ...]) -> Callable[[Any], Optional[str]]:
    """The public method's parameters, and the private ``_predict`` the GPU path calls."""
    public = params_check(expected)
    private = params_check(signatures.SAM2_PRIVATE_PREDICT)

    def check(original: Any) -> Optional[str]:
        reason = public(original)
        if reason is None:
            found = getattr(sys.modules.get(module), cls, None)
            reason = private(getattr(found, "_predict", None))
            if reason is not None:
                reason = f"{cls}._predict: {reason}"
        return reason

    return check


def predictor_targets(family: Family, cls: str) -> Tuple[Target, ...]:
    """``predict`` and ``predict_batch`` of a SAM 2-style image predictor class."""
    # The package's own prompt encoder already embeds points without host waits.
    return tuple(
        Target(
            module=family.hook_module,
            attribute=f"{cls}.{method}",
            make_wrapper=resident(family.name, gpu_predict),
            check=_check(family.hook_module, cls, params),
            adds_as_numpy=True,
        )
        for method, gpu_predict, params in (
            ("predict", predict_resident, signatures.SAM2_PREDICT),
            ("predict_batch", predict_batch_resident, signatures.SAM2_PREDICT_BATCH),
        )
    )


def targets(family: Family) -> Tuple[Target, ...]:
    return predictor_targets(family, "SAM2ImagePredictor") + image_targets(family, "SAM2ImagePredictor")


# -- the image half -------------------------------------------------------------


def _float_features(predictor: Any) -> None:
    """Reduced-precision encoder outputs back to float32 for the decoder."""
    features = predictor._features
    if features is None:
        return
    embed, high = features["image_embed"], features["high_res_feats"]
    if embed.dtype != torch.float32 or any(t.dtype != torch.float32 for t in high):
        predictor._features = {"image_embed": embed.float(), "high_res_feats": [t.float() for t in high]}


def _encoder_path(predictor: Any) -> Tuple[str, ...]:
    """Where the compiled encoder stands in: SAM 2's ``image_encoder``, SAM 3's ViT trunk."""
    model = predictor.model
    if hasattr(model, "image_encoder"):
        return ("image_encoder",)
    return ("backbone", "vision_backbone", "trunk")


def _host_frames(frames: Sequence[Any]) -> List[Any]:
    return [host_frame(f) for f in frames]


def _set_image(original: Any) -> Wrapper:
    """``set_image``: tensor frames preprocessed on the device; encoder opt-ins."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        image = args[0] if args else kwargs.get("image")
        if isinstance(image, torch.Tensor) and not gpu_path_on():
            return wrapped(*_host_frames([image]))  # rolled back: upstream's path, as an array
        device = torch.device(instance.device)
        with encoder_call(device, instance.model, _encoder_path(instance)) as mode:
            if isinstance(image, torch.Tensor):
                prepared = sam2_prepare(instance, image)
                with stand_in(instance, "_transforms", PreparedTransforms(instance._transforms, prepared)):
                    wrapped(placeholder(int(image.shape[0]), int(image.shape[1])))
            else:
                wrapped(*args, **kwargs)
        if mode != "fp32":
            _float_features(instance)
        return None

    return wrapper


def _set_image_batch(original: Any) -> Wrapper:
    """``set_image_batch``: a list with tensor frames is prepared on the device."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        frames = args[0] if args else kwargs.get("image_list")
        tensors = isinstance(frames, list) and any(isinstance(f, torch.Tensor) for f in frames)
        if tensors and not gpu_path_on():
            return wrapped(_host_frames(frames))
        device = torch.device(instance.device)
        with encoder_call(device, instance.model, _encoder_path(instance)) as mode:
            if tensors:
                ready = [
                    f if isinstance(f, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(f)) for f in frames
                ]
                prepared = torch.stack([sam2_prepare(instance, f) for f in ready])
                stand = PreparedTransforms(instance._transforms, prepared)
                with stand_in(instance, "_transforms", stand):
                    wrapped([placeholder(int(f.shape[0]), int(f.shape[1])) for f in ready])
            else:
                wrapped(*args, **kwargs)
        if mode != "fp32":
            _float_features(instance)
        return None

    return wrapper


def image_targets(family: Family, cls: str) -> Tuple[Target, ...]:
    return (
        Target(family.hook_module, f"{cls}.set_image", _set_image, params_check(signatures.SAM2_SET_IMAGE)),
        Target(family.hook_module, f"{cls}.set_image_batch", _set_image_batch,
               params_check(signatures.SAM2_SET_IMAGE_BATCH)),
    )
