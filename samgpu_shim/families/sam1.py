"""segment-anything (SAM 1): ``SamPredictor`` on the GPU-resident path.

``predict`` reproduces upstream step for step (same prompt transforms, same
``predict_torch`` call) without forcing the host to wait: prompts go up in
one packed non-blocking copy (:mod:`samgpu_shim.gpu.prompts`), the prompt
encoder's ``_embed_points`` runs its sync-free twin inside the call
(:mod:`samgpu_shim.gpu.sync_free`), graph mode replays the work when on
(:mod:`samgpu_shim.gpu.graphs`), and the outputs stay on the device.
``set_image`` takes CUDA frames and the encoder precision opt-in
(:mod:`samgpu_shim.gpu.image`). The packages that ship a copy of SAM 1's
predictor (SAM-HQ, MobileSAM, EfficientViT-SAM) reuse :func:`copy_targets`.
"""

from __future__ import annotations

import sys
from typing import Any, List, Optional, Tuple

import torch

from .._dispatch import UPSTREAM_CALL, inside_gpu_calls, resident
from ..gpu import graphs
from ..gpu.image import (
    FAST_ATTENTION,
    encoder_call,
    encoder_mode,
    get_rel_pos_sync_free,
    gpu_path_on,
    host_frame,
    set_image_tensor,
    vit_attention_fused,
)
from ..gpu.prompts import (
    IMAGE_NOT_SET,
    KEYS,
    PromptError,
    Prompts,
    batched,
    box_tensor,
    check_shape,
    points_tensor,
    prompt_tensor,
)
from ..gpu.sync_free import SYNC_FREE, embed_points_sync_free
from . import Family, Target, Wrapper, params_check, signatures


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
        raise RuntimeError(IMAGE_NOT_SET)

    prompts = Prompts(torch.device(predictor.device))
    if point_coords is not None:
        if point_labels is None:
            raise PromptError("point_labels must be supplied if point_coords is supplied.")
        coords = points_tensor(predictor, point_coords)
        check_shape("point_coords", coords.shape, coords.dim() == 2 and coords.shape[-1] == 2, "(N, 2)")
        labels = prompt_tensor("point_labels", point_labels, torch.int)
        check_shape(
            "point_labels",
            labels.shape,
            labels.dim() == 1 and labels.shape[0] == coords.shape[0],
            f"({coords.shape[0]},) to match point_coords",
        )
        prompts.put("coords", coords)
        prompts.put("labels", labels)
    if box is not None:
        prompts.put("box", box_tensor(predictor, box))
    if mask_input is not None:
        mask_t = prompt_tensor("mask_input", mask_input, torch.float)
        size = tuple(predictor.model.prompt_encoder.mask_input_size)
        check_shape(
            "mask_input", mask_t.shape, tuple(mask_t.shape) == (1, *size), str((1, *size))
        )
        prompts.put("mask", mask_t)

    torch_kwargs = _torch_kwargs or {}
    token = SYNC_FREE.set(True)
    try:
        if _allow_graphs and graphs.usable(prompts.device):
            work = _graph_work(predictor, prompts, multimask_output, return_logits, torch_kwargs)
            replayed = graphs.replay(predictor, work)
            if replayed is not None:
                return replayed
        tensors = prompts.on_device()
        masks, iou_predictions, low_res_masks = predictor.predict_torch(
            *batched(tensors),
            multimask_output,
            return_logits=return_logits,
            **torch_kwargs,
        )
    finally:
        SYNC_FREE.reset(token)
    return masks[0].detach(), iou_predictions[0].detach(), low_res_masks[0].detach()


_TORCH_ARGS = signatures.SAM1_PREDICT_TORCH[1:]


def _predict_torch(original: Any) -> Wrapper:
    """``predict_torch``, upstream's batched call (prompts already on the
    device, e.g. one point per structure): in GPU mode its prompt encoder runs
    sync-free, and in graph mode the call replays a graph captured for its
    batch shape. Inside the shim's own ``predict`` and rolled back it is
    upstream's, untouched."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if SYNC_FREE.get() or UPSTREAM_CALL.get() or not gpu_path_on() or _from_upstream_predict():
            return wrapped(*args, **kwargs)
        token = SYNC_FREE.set(True)
        try:
            bound = dict(zip(_TORCH_ARGS, args), **kwargs)
            if graphs.usable(torch.device(instance.device)) and set(bound) <= set(_TORCH_ARGS):
                replayed = _replay_predict_torch(instance, wrapped, bound)
                if replayed is not None:
                    return replayed
            return wrapped(*args, **kwargs)
        finally:
            SYNC_FREE.reset(token)

    return wrapper


def _from_upstream_predict() -> bool:
    """Whether upstream's own ``predict`` (called through ``get_original``, say) is the caller."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_globals.get("__name__") or "").partition(".")[0] == "wrapt":
        frame = frame.f_back
    return frame is not None and frame.f_code.co_name == "predict" and not (
        frame.f_globals.get("__name__") or "").startswith("samgpu_shim")


def _replay_predict_torch(predictor: Any, wrapped: Any, bound: dict) -> Any:
    if not predictor.is_image_set:
        return None  # upstream raises its own error
    prompts = Prompts(torch.device(predictor.device))
    names = ("point_coords", "point_labels", "boxes", "mask_input")
    for name in names:
        value = bound.get(name)
        if value is not None:
            if not isinstance(value, torch.Tensor):
                return None
            prompts.put(name, value, name)
    multimask = bool(bound.get("multimask_output", True))
    return_logits = bool(bound.get("return_logits", False))

    def run(inputs: dict, image: List[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        live = predictor.features
        predictor.features = image[0]
        try:
            return tuple(wrapped(*(inputs.get(n) for n in names), multimask, return_logits=return_logits))
        finally:
            predictor.features = live

    key = ("predict_torch", multimask, return_logits, tuple(predictor.input_size), tuple(predictor.original_size),
           float(predictor.model.mask_threshold), getattr(wrapped, "__func__", wrapped))
    work = graphs.Work(prompts=prompts, features=[predictor.features], run=run, key=key)
    return graphs.replay(predictor, work)


def _image_tensors(predictor: Any) -> List[torch.Tensor]:
    """What ``predict_torch`` reads of the image: the embedding, and SAM-HQ's
    intermediate ViT features where the predictor keeps them."""
    tensors = [predictor.features]
    interm = getattr(predictor, "interm_features", None)
    if interm is not None:
        tensors.extend(interm)
    return tensors


def _graph_work(
    predictor: Any, prompts: Prompts, multimask_output: bool, return_logits: bool, torch_kwargs: dict
) -> graphs.Work:
    def run(inputs: dict, image: List[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        # predict_torch reads the predictor's attributes: point them at the
        # static copies while the work runs (capture and warm-up only).
        live = predictor.features, getattr(predictor, "interm_features", None)
        predictor.features = image[0]
        if len(image) > 1:
            predictor.interm_features = list(image[1:])
        try:
            staged = dict.fromkeys(KEYS)
            staged.update(inputs)
            masks, iou, low = predictor.predict_torch(
                *batched(staged), multimask_output, return_logits=return_logits, **torch_kwargs
            )
        finally:
            predictor.features = live[0]
            if len(image) > 1:
                predictor.interm_features = live[1]
        return masks[0], iou[0], low[0]

    key = (
        bool(multimask_output),
        bool(return_logits),
        tuple(sorted(torch_kwargs.items())),
        tuple(predictor.input_size),
        tuple(predictor.original_size),
        float(predictor.model.mask_threshold),
        type(predictor).predict_torch,
    )
    return graphs.Work(prompts=prompts, features=_image_tensors(predictor), run=run, key=key)


def _set_image(original: Any) -> Wrapper:
    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        image = args[0] if args else kwargs.get("image")
        if isinstance(image, torch.Tensor):
            if gpu_path_on():
                return set_image_tensor(instance, *args, **kwargs)
            # Rolled back: upstream's own path, given the array it expects, so
            # that code written for tensor frames keeps working unchanged.
            args, kwargs = _with_image(args, kwargs, host_frame(image))
        return wrapped(*args, **kwargs)  # numpy frames: upstream's exact path

    return wrapper


def _with_image(args: tuple, kwargs: dict, image: Any) -> Tuple[tuple, dict]:
    if args:
        return (image, *args[1:]), kwargs
    return args, {**kwargs, "image": image}


def _set_torch_image(original: Any) -> Wrapper:
    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        device = instance.device
        mode = encoder_mode(device)
        if mode == "fp32":
            return wrapped(*args, **kwargs)
        with encoder_call(device, instance.model, ("image_encoder",)):
            wrapped(*args, **kwargs)
        # The decoder runs in float32 outside autocast: hand it float32
        # (SAM-HQ's intermediate ViT features too).
        if instance.features is not None and instance.features.dtype != torch.float32:
            instance.features = instance.features.float()
        interm = getattr(instance, "interm_features", None)
        if interm is not None:
            instance.interm_features = [t.float() if t.dtype != torch.float32 else t for t in interm]
        return None

    return wrapper


def _get_rel_pos(original: Any) -> Wrapper:
    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        rel_pos = args[2] if len(args) > 2 else kwargs.get("rel_pos")
        if getattr(rel_pos, "is_cuda", False) and gpu_path_on():
            return get_rel_pos_sync_free(*args, **kwargs)
        return wrapped(*args, **kwargs)

    return wrapper


def _attention_forward(original: Any) -> Wrapper:
    flag = FAST_ATTENTION.get

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if flag():
            return vit_attention_fused(instance, *args, **kwargs)
        return wrapped(*args, **kwargs)

    return wrapper


def image_targets(package: str, predictor: Tuple[str, str] = ("predictor", "SamPredictor")) -> Tuple[Target, ...]:
    """The image half for a package with SAM 1's predictor and ViT encoder layout."""
    predictor_module, predictor_class = predictor
    module = f"{package}.{predictor_module}"
    encoder = f"{package}.modeling.image_encoder"
    return (
        Target(module, f"{predictor_class}.set_image", _set_image, params_check(signatures.SAM1_SET_IMAGE)),
        Target(module, f"{predictor_class}.set_torch_image", _set_torch_image,
               params_check(signatures.SAM1_SET_TORCH_IMAGE)),
        # A copy without SAM's ViT (TinyViT only) has neither: the rest still applies.
        Target(encoder, "get_rel_pos", _get_rel_pos, params_check(signatures.SAM1_GET_REL_POS), optional=True),
        Target(encoder, "Attention.forward", _attention_forward, params_check(signatures.SAM1_ATTENTION_FORWARD),
               optional=True),
    )


def copy_targets(
    family: Family,
    package: str,
    predict_params: Tuple[str, ...],
    gpu_predict: Any,
    predictor: Tuple[str, str] = ("predictor", "SamPredictor"),
    encoder_module: str = "modeling.prompt_encoder",
) -> Tuple[Target, ...]:
    """``predict`` and the prompt encoder of a package that copies SAM 1's predictor.

    ``predictor`` is (module under ``package``, class), ``encoder_module`` the
    prompt encoder's module under ``package``; the defaults are SAM 1's layout.
    """
    predictor_module, predictor_class = predictor
    return (
        Target(
            module=f"{package}.{predictor_module}",
            attribute=f"{predictor_class}.predict",
            make_wrapper=resident(family.name, gpu_predict),
            check=params_check(predict_params),
            adds_as_numpy=True,
        ),
        Target(
            module=f"{package}.{encoder_module}",
            attribute="PromptEncoder._embed_points",
            make_wrapper=inside_gpu_calls(embed_points_sync_free),
            check=params_check(signatures.SAM1_EMBED_POINTS),
        ),
    )


def targets(family: Family) -> Tuple[Target, ...]:
    # predict_torch only in segment-anything itself: the copies change its parameters.
    batched_call = Target("segment_anything.predictor", "SamPredictor.predict_torch", _predict_torch,
                          params_check(signatures.SAM1_PREDICT_TORCH))
    return (
        copy_targets(family, "segment_anything", signatures.SAM1_PREDICT, predict_resident)
        + (batched_call,)
        + image_targets("segment_anything")
    )
