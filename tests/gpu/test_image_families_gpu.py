"""The image half in every family on CUDA: a CUDA frame to masks with no host
sync, the device preprocessing against upstream's host preprocessing, and the
encoder opt-ins against fp32. ``pytest -m gpu tests/gpu/test_image_families_gpu.py``."""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
import torch

import samgpu_shim
from samgpu_shim.syncs import forbid_syncs
from samgpu_shim.tools.models import synthetic_image

from prompts import PC, PL

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FAMILIES = {
    "segment-anything": ("segment_anything", "segment_anything:SamPredictor", "vit_b"),
    "sam-hq": ("segment_anything_hq", "segment_anything_hq:SamPredictor", "tiny_sam_hq"),
    "mobile-sam": ("mobile_sam", "mobile_sam:SamPredictor", "mobile_sam_vit_t"),
    "efficientvit-sam": ("efficientsam", "efficientsam.models.efficientvit.sam:EfficientViTSamPredictor",
                         "efficientvit_sam_l0"),
    "sam2": ("sam2", "sam2.sam2_image_predictor:SAM2ImagePredictor", "hiera_t"),
    "sam3": ("sam3", "sam3.model.sam1_task_predictor:SAM3InteractiveImagePredictor", "tiny_sam3"),
}


@pytest.fixture(scope="module", autouse=True)
def _tf32_untouched():
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    package, path, builder = FAMILIES[request.param]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    from samgpu_shim.tools import models

    import family_models

    if builder == "vit_b":
        model = models.build_sam("vit_b", device="cuda")
    elif builder == "hiera_t":
        model = models.build_sam2("hiera_t", device="cuda")
    else:
        model = getattr(family_models, builder)().cuda()
    if request.param == "sam3":
        return request.param, family_models.sam3_predictor(model)
    module, _, name = path.partition(":")
    return request.param, getattr(importlib.import_module(module), name)(model)


def _iou(a, b):
    a, b = a > 0, b > 0
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def test_cuda_frame_to_masks_without_a_host_sync(family):
    name, p = family
    frame = torch.from_numpy(synthetic_image(1080, 1920, seed=1)).cuda()
    p.set_image(frame)
    p.predict(PC, PL)  # warm-up
    torch.cuda.synchronize()
    with forbid_syncs():
        p.set_image(frame)
        masks, scores, _ = p.predict(PC, PL)
    assert masks.is_cuda


def test_device_preprocessing_against_upstreams(family):
    name, p = family
    host = synthetic_image(1080, 1920, seed=2)
    samgpu_shim.get_original(type(p), "set_image")(p, host)
    ref = samgpu_shim.get_original(type(p), "predict")(p, PC, PL)[0]
    p.set_image(torch.from_numpy(host).cuda())
    got = p.predict(PC, PL, as_numpy=True)[0]
    iou = np.mean([_iou(a, b) for a, b in zip(got, ref)])
    print(f"{name}: mask IoU, CUDA frame vs upstream's numpy frame: {iou:.4f}")
    assert iou > 0.9


@pytest.mark.parametrize("setting", [dict(encoder_precision="bf16"), dict(encoder="fast")])
def test_encoder_opt_ins_against_fp32(family, setting):
    name, p = family
    frame = torch.from_numpy(synthetic_image(1080, 1920, seed=3)).cuda()
    p.set_image(frame)
    ref = p.predict(PC, PL, as_numpy=True)[0]
    samgpu_shim.configure(**setting)
    try:
        p.set_image(frame)
        masks = p.predict(PC, PL, as_numpy=True)[0]
        torch.cuda.synchronize()
        with forbid_syncs():
            p.set_image(frame)
            p.predict(PC, PL)
    finally:
        samgpu_shim.configure(encoder_precision=None, encoder=None)
    iou = np.mean([_iou(a, b) for a, b in zip(masks, ref)])
    print(f"{name} {setting}: mask IoU vs fp32 {iou:.4f}")
    assert iou > 0.9
