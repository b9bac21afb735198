"""EfficientViT-SAM (PyPI ``efficientsam``).

Its own predictor class, which is its own transform (tensor prompts scale to
its ``input_size``, see :func:`samgpu_shim.gpu.prompts.scale_coords_torch`),
over a copy of SAM 1's prompt encoder and decoder. Its ``set_image`` runs the
model's own transform (resize the longest side to the encoder's size, to
tensor, normalise, pad) on the host; a tensor frame gets the same steps on
the device (:func:`samgpu_shim.gpu.image.efficientvit_prepare`).
"""

from __future__ import annotations

from typing import Any, Tuple

import torch

from ..gpu.image import efficientvit_prepare, encoder_call, gpu_path_on, host_frame, placeholder, stand_in
from . import Family, Target, Wrapper, params_check, signatures
from .sam1 import copy_targets, predict_resident

PREDICTOR_MODULE = "efficientsam.models.efficientvit.sam"


def _set_image(original: Any) -> Wrapper:
    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        image = args[0] if args else kwargs.get("image")
        image_format = args[1] if len(args) > 1 else kwargs.get("image_format", "RGB")
        if isinstance(image, torch.Tensor) and not gpu_path_on():
            return wrapped(host_frame(image), image_format)
        device = torch.device(instance.device)
        with encoder_call(device, instance.model, ("image_encoder",)) as mode:
            if isinstance(image, torch.Tensor):
                prepared = efficientvit_prepare(instance, image, image_format)
                with stand_in(instance.model, "transform", lambda _image: prepared):
                    # channels are already in the model's order
                    wrapped(placeholder(int(image.shape[0]), int(image.shape[1])), instance.model.image_format)
            else:
                wrapped(*args, **kwargs)
        features = instance.features
        if mode != "fp32" and features is not None and features.dtype != torch.float32:
            instance.features = features.float()
        return None

    return wrapper


def targets(family: Family) -> Tuple[Target, ...]:
    return copy_targets(
        family,
        "efficientsam",
        signatures.SAM1_PREDICT,
        predict_resident,
        predictor=("models.efficientvit.sam", "EfficientViTSamPredictor"),
        encoder_module="segment_anything.modeling.prompt_encoder",
    ) + (
        Target(PREDICTOR_MODULE, "EfficientViTSamPredictor.set_image", _set_image,
               params_check(signatures.SAM1_SET_IMAGE)),
    )
