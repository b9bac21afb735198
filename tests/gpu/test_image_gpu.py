"""The image half on CUDA: ``pytest -m gpu tests/gpu``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

import samgpu_shim
from samgpu_shim.gpu.image import ImageError
from samgpu_shim.syncs import count_cuda_syncs, forbid_syncs
from samgpu_shim.tools.models import build_sam, synthetic_image

from prompts import PC, PL

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def vit_b():
    return build_sam("vit_b", device="cuda")


def _strict(fn):
    with forbid_syncs():
        return fn()


def test_set_image_with_cuda_frame_does_not_sync(vit_b):
    p = SamPredictor(vit_b)
    frames = [torch.from_numpy(synthetic_image(1080, 1920, seed=s)).cuda() for s in range(2)]
    p.set_image(frames[0])  # warm: kernels, index cache
    torch.cuda.synchronize()
    _strict(lambda: p.set_image(frames[1]))
    assert count_cuda_syncs(lambda: p.set_image(frames[0]))[0] == 0
    # then a whole frame's prompt is sync-free too
    _strict(lambda: p.predict(PC, PL))


def test_upstream_set_image_syncs(vit_b):
    p = SamPredictor(vit_b)
    original = samgpu_shim.get_original(SamPredictor, "set_image")
    image = synthetic_image(480, 640, seed=2)
    original(p, image)
    samgpu_shim.configure(as_numpy=True)  # rollback: upstream's encoder path too
    try:
        n, _ = count_cuda_syncs(lambda: original(p, image))
    finally:
        samgpu_shim.configure(as_numpy=None)
    assert n >= 24  # 2 per attention block of vit_b's 12, plus the upload


def test_embedding_equals_upstream_on_the_same_resized_input(vit_b):
    image = synthetic_image(720, 1280, seed=3)
    shim = SamPredictor(vit_b)
    shim.set_image(torch.from_numpy(image).cuda())
    ref = SamPredictor(vit_b)
    h, w = image.shape[:2]
    target = ref.transform.get_preprocess_shape(h, w, 1024)
    x = torch.from_numpy(image).cuda().permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
    resized = x.round().clamp(0, 255).to(torch.uint8)
    samgpu_shim.configure(as_numpy=True)  # upstream's own encoder (CPU index tensors)
    try:
        samgpu_shim.get_original(SamPredictor, "set_torch_image")(ref, resized, (h, w))
    finally:
        samgpu_shim.configure(as_numpy=None)
    assert torch.equal(shim.features, ref.features)


def test_cpu_tensor_frame_and_bgr(vit_b):
    image = synthetic_image(240, 320, seed=4)
    a = SamPredictor(vit_b)
    a.set_image(torch.from_numpy(image).cuda())
    b = SamPredictor(vit_b)
    b.set_image(torch.from_numpy(np.ascontiguousarray(image[..., ::-1])), "BGR")  # CPU tensor, BGR
    assert torch.equal(a.features, b.features)


def test_bad_cuda_frames(vit_b):
    p = SamPredictor(vit_b)
    for frame, message in (
        (torch.zeros(20, 30, 3, device="cuda"), "uint8"),
        (torch.zeros(3, 20, 30, dtype=torch.uint8, device="cuda"), "shape"),
    ):
        with pytest.raises(ImageError, match=message):
            p.set_image(frame)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_encoder_precision_opt_in(vit_b, precision):
    image = torch.from_numpy(synthetic_image(480, 640, seed=5)).cuda()
    p = SamPredictor(vit_b)
    p.set_image(image)
    fp32 = p.features.clone()
    samgpu_shim.configure(encoder_precision=precision)
    try:
        p.set_image(image)
    finally:
        samgpu_shim.configure(encoder_precision=None)
    assert p.features.dtype == torch.float32
    diff = (p.features - fp32).abs().max().item()
    print(f"{precision}: embedding max abs diff vs fp32 {diff:.4g}")
    assert 0 < diff < 1.0
    assert torch.backends.cuda.matmul.allow_tf32 is False  # flags put back
    masks = p.predict(PC, PL)[0]
    assert masks.dtype == torch.bool
