"""What gets patched: one :class:`Family` per package that ships a predictor.

A family names the module whose import triggers the patch and the attributes
to wrap there. Wrappers are built lazily, after the family's own import, so
that ``import samgpu_shim`` imports neither torch nor any SAM package.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from . import _config, _kpi

Wrapper = Callable[[Any, Any, tuple, dict], Any]


@dataclass(frozen=True)
class Target:
    """One attribute to wrap: ``module`` then the dotted ``attribute`` path."""

    module: str
    attribute: str
    make_wrapper: Callable[[Any], Wrapper]
    # Returns why ``original`` is not what we support, or None when it is.
    check: Callable[[Any], Optional[str]]
    # Whether the wrapper adds ``as_numpy`` to the visible signature.
    adds_as_numpy: bool = False


@dataclass(frozen=True)
class Family:
    name: str
    distribution: str
    hook_module: str
    targets: Tuple[Target, ...]


SAM1_PREDICT_PARAMS = (
    "self",
    "point_coords",
    "point_labels",
    "box",
    "mask_input",
    "multimask_output",
    "return_logits",
)
SAM1_EMBED_POINTS_PARAMS = ("self", "points", "labels", "pad")


def _params_check(expected: Tuple[str, ...]) -> Callable[[Any], Optional[str]]:
    def check(original: Any) -> Optional[str]:
        if not callable(original):
            return f"expected a function, found {type(original).__name__}"
        try:
            found = tuple(inspect.signature(original).parameters)
        except (TypeError, ValueError) as exc:
            return f"cannot read its signature: {exc}"
        if found != expected:
            return f"its parameters are {found}, expected {expected}"
        return None

    return check


def predict_wrapper(family: str, resident: Callable[..., Any]) -> Wrapper:
    """The wrapper around a predictor's ``predict``: dispatch, count, KPI."""
    from . import _stats

    resolve = _config.resolve_as_numpy
    strict = _config.strict
    emit = _kpi.emit_predict
    clock = time.perf_counter
    site_of = _stats.call_site
    record = _stats.record
    device_timer = _stats.device_timer

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        site = site_of()
        as_numpy, source = resolve(kwargs.pop("as_numpy", None), site[0])
        timer = device_timer(instance, as_numpy)
        started = clock()
        if as_numpy:
            out = wrapped(*args, **kwargs)
        else:
            out = resident(instance, *args, **kwargs)
            if strict():
                from ._strict import make_strict

                out = make_strict(out, site)
        host_ms = (clock() - started) * 1e3
        if timer is not None:
            timer.stop(site)
        record(site, as_numpy, out, host_ms)
        emit(instance, out, as_numpy, source, host_ms, family, site)
        return out

    return wrapper


def resident_predict(family: str, function: str, module: str = "_resident") -> Callable[[Any], Wrapper]:
    """``make_wrapper`` for a ``predict``: ``predict_wrapper`` over ``samgpu_shim.<module>.<function>``.

    The GPU path's module (which imports torch) is imported only when the
    family's own import fires the hook.
    """

    def make(original: Any) -> Wrapper:
        resident = getattr(importlib.import_module(f".{module}", __package__), function)
        return predict_wrapper(family, resident)

    return make


def _inside_gpu_calls(replacement_name: str) -> Callable[[Any], Wrapper]:
    """A wrapper that runs ``_resident.<replacement_name>`` inside GPU-mode calls only.

    Everywhere else (numpy mode, rollback, callers of the model itself) the
    wrapped function runs unchanged.
    """

    def make(original: Any) -> Wrapper:
        from . import _resident

        flag = _resident.SYNC_FREE.get
        replacement = getattr(_resident, replacement_name)

        def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
            if flag():
                return replacement(instance, *args, **kwargs)
            return wrapped(*args, **kwargs)

        return wrapper

    return make


_sam1_embed_points = _inside_gpu_calls("embed_points_sync_free")


SAM1_SET_IMAGE_PARAMS = ("self", "image", "image_format")
SAM1_SET_TORCH_IMAGE_PARAMS = ("self", "transformed_image", "original_image_size")
SAM1_GET_REL_POS_PARAMS = ("q_size", "k_size", "rel_pos")


def _sam1_set_image(original: Any) -> Wrapper:
    import torch

    from ._image import gpu_path_on, set_image_tensor

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        image = args[0] if args else kwargs.get("image")
        if isinstance(image, torch.Tensor) and gpu_path_on():
            return set_image_tensor(instance, *args, **kwargs)
        return wrapped(*args, **kwargs)  # numpy frames: upstream's exact path

    return wrapper


def _sam1_set_torch_image(original: Any) -> Wrapper:
    import torch

    from ._image import encoder_precision, gpu_path_on

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        device = instance.device
        if device.type != "cuda" or _config.encoder_precision() == "fp32" or not gpu_path_on():
            return wrapped(*args, **kwargs)
        with encoder_precision(device):
            wrapped(*args, **kwargs)
        if instance.features is not None and instance.features.dtype != torch.float32:
            # The decoder runs in float32 outside autocast: hand it float32.
            instance.features = instance.features.float()
        return None

    return wrapper


def _sam1_get_rel_pos(original: Any) -> Wrapper:
    from ._image import get_rel_pos_sync_free, gpu_path_on

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        rel_pos = args[2] if len(args) > 2 else kwargs.get("rel_pos")
        if getattr(rel_pos, "is_cuda", False) and gpu_path_on():
            return get_rel_pos_sync_free(*args, **kwargs)
        return wrapped(*args, **kwargs)

    return wrapper


SAM1 = Family(
    name="segment-anything",
    distribution="segment-anything",
    hook_module="segment_anything",
    targets=(
        Target(
            module="segment_anything.predictor",
            attribute="SamPredictor.predict",
            make_wrapper=resident_predict("segment-anything", "predict_resident"),
            check=_params_check(SAM1_PREDICT_PARAMS),
            adds_as_numpy=True,
        ),
        Target(
            module="segment_anything.modeling.prompt_encoder",
            attribute="PromptEncoder._embed_points",
            make_wrapper=_sam1_embed_points,
            check=_params_check(SAM1_EMBED_POINTS_PARAMS),
        ),
        Target(
            module="segment_anything.predictor",
            attribute="SamPredictor.set_image",
            make_wrapper=_sam1_set_image,
            check=_params_check(SAM1_SET_IMAGE_PARAMS),
        ),
        Target(
            module="segment_anything.predictor",
            attribute="SamPredictor.set_torch_image",
            make_wrapper=_sam1_set_torch_image,
            check=_params_check(SAM1_SET_TORCH_IMAGE_PARAMS),
        ),
        Target(
            module="segment_anything.modeling.image_encoder",
            attribute="get_rel_pos",
            make_wrapper=_sam1_get_rel_pos,
            check=_params_check(SAM1_GET_REL_POS_PARAMS),
        ),
    ),
)

def _sam1_copy(
    name: str,
    distribution: str,
    package: str,
    predict_params: Tuple[str, ...],
    resident_name: str,
    predictor: Tuple[str, str] = ("predictor", "SamPredictor"),
    encoder_module: str = "modeling.prompt_encoder",
    hook_module: Optional[str] = None,
    extra: Tuple[Target, ...] = (),
) -> Family:
    """A package that ships its own copy of SAM 1's predictor and prompt encoder.

    ``predictor`` is (module under ``package``, class) and ``encoder_module``
    the prompt encoder's module under ``package``; the defaults are SAM 1's
    layout. ``hook_module`` is the import that triggers the patch (the
    predictor's module when the package does not import it itself).
    """

    predictor_module, predictor_class = predictor
    return Family(
        name=name,
        distribution=distribution,
        hook_module=hook_module or package,
        targets=(
            Target(
                module=f"{package}.{predictor_module}",
                attribute=f"{predictor_class}.predict",
                make_wrapper=resident_predict(name, resident_name),
                check=_params_check(predict_params),
                adds_as_numpy=True,
            ),
            Target(
                module=f"{package}.{encoder_module}",
                attribute="PromptEncoder._embed_points",
                make_wrapper=_sam1_embed_points,
                check=_params_check(SAM1_EMBED_POINTS_PARAMS),
            ),
            *extra,
        ),
    )


SAM_HQ_DECODER_PARAMS = (
    "self",
    "image_embeddings",
    "image_pe",
    "sparse_prompt_embeddings",
    "dense_prompt_embeddings",
    "multimask_output",
    "hq_token_only",
    "interm_embeddings",
)
SAM_HQ = _sam1_copy(
    "segment-anything-hq",
    "segment-anything-hq",
    "segment_anything_hq",
    SAM1_PREDICT_PARAMS + ("hq_token_only",),
    "predict_resident_hq",
    # Its decoder's multimask pick indexes with a CPU tensor: one sync, removed.
    extra=(
        Target(
            module="segment_anything_hq.modeling.mask_decoder_hq",
            attribute="MaskDecoderHQ.forward",
            make_wrapper=_inside_gpu_calls("hq_decoder_forward_sync_free"),
            check=_params_check(SAM_HQ_DECODER_PARAMS),
        ),
    ),
)
MOBILE_SAM = _sam1_copy("mobile-sam", "mobilesam-mirror", "mobile_sam", SAM1_PREDICT_PARAMS, "predict_resident")
# mobilesam-lite ships the same MobileSAM code under mobilesam_lite.mobile_sam.
# (Its mobilesamv2 subpackage does not import in 0.1.2: docs/families.rst.)
MOBILESAM_LITE = _sam1_copy(
    "mobilesam-lite", "mobilesam-lite", "mobilesam_lite.mobile_sam", SAM1_PREDICT_PARAMS, "predict_resident"
)
# EfficientViT-SAM (PyPI efficientsam): its own predictor class, which is its
# own transform, over a copy of SAM 1's prompt encoder and decoder.
EFFICIENTVIT_SAM = _sam1_copy(
    "efficientvit-sam",
    "efficientsam",
    "efficientsam",
    SAM1_PREDICT_PARAMS,
    "predict_resident",
    predictor=("models.efficientvit.sam", "EfficientViTSamPredictor"),
    encoder_module="segment_anything.modeling.prompt_encoder",
    hook_module="efficientsam.models.efficientvit.sam",
)


SAM2_MODULE = "sam2.sam2_image_predictor"
SAM2_PREDICT_PARAMS = SAM1_PREDICT_PARAMS + ("normalize_coords",)
SAM2_PREDICT_BATCH_PARAMS = (
    "self",
    "point_coords_batch",
    "point_labels_batch",
    "box_batch",
    "mask_input_batch",
    "multimask_output",
    "return_logits",
    "normalize_coords",
)
# The private method SAM 2's GPU path calls, checked before patching too.
SAM2_PRIVATE_PREDICT_PARAMS = (
    "self",
    "point_coords",
    "point_labels",
    "boxes",
    "mask_input",
    "multimask_output",
    "return_logits",
    "img_idx",
)


def _sam2_check(expected: Tuple[str, ...]) -> Callable[[Any], Optional[str]]:
    """The public method's parameters, and the private ``_predict`` the GPU path calls."""
    public = _params_check(expected)
    private = _params_check(SAM2_PRIVATE_PREDICT_PARAMS)

    def check(original: Any) -> Optional[str]:
        reason = public(original)
        if reason is None:
            cls = getattr(sys.modules.get(SAM2_MODULE), "SAM2ImagePredictor", None)
            reason = private(getattr(cls, "_predict", None))
            if reason is not None:
                reason = f"SAM2ImagePredictor._predict: {reason}"
        return reason

    return check


# SAM 2 (PyPI sam2): its image predictor's predict and predict_batch. The
# package's own prompt encoder already embeds points without host waits.
SAM2 = Family(
    name="sam2",
    distribution="sam2",
    hook_module=SAM2_MODULE,
    targets=tuple(
        Target(
            module=SAM2_MODULE,
            attribute=f"SAM2ImagePredictor.{method}",
            make_wrapper=resident_predict("sam2", resident, "_sam2"),
            check=_sam2_check(params),
            adds_as_numpy=True,
        )
        for method, resident, params in (
            ("predict", "predict_resident", SAM2_PREDICT_PARAMS),
            ("predict_batch", "predict_batch_resident", SAM2_PREDICT_BATCH_PARAMS),
        )
    ),
)


FAMILIES: Tuple[Family, ...] = (SAM1, SAM_HQ, MOBILE_SAM, MOBILESAM_LITE, EFFICIENTVIT_SAM, SAM2)


def fork_family(spec: str) -> Family:
    """A family for an in-house copy of the SAM 1 predictor: ``"pkg.mod:Class"``.

    Only ``predict`` is wrapped; the fork's prompt encoder is its own, so the
    sync-free point embedding is not installed for it.
    """
    module, sep, cls = spec.partition(":")
    if not sep or not module or not cls:
        raise ValueError(f"patch target must look like 'package.module:ClassName', got {spec!r}")
    return Family(
        name=spec,
        distribution=module.split(".")[0],
        hook_module=module,
        targets=(
            Target(
                module=module,
                attribute=f"{cls}.predict",
                make_wrapper=resident_predict(spec, "predict_resident"),
                check=_params_check(SAM1_PREDICT_PARAMS),
                adds_as_numpy=True,
            ),
        ),
    )
