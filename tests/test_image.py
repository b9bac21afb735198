"""The image half: tensor frames, device resize, sync-free relative positions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from segment_anything.modeling import image_encoder
from torchvision.transforms.functional import resize, to_pil_image

import samgpu_shim
from samgpu_shim.gpu.image import ImageError, get_rel_pos_sync_free, set_image_tensor
from samgpu_shim.tools.models import synthetic_image

from conftest import assert_equal_to_upstream, upstream
from prompts import PC, PL


def _original(name):
    return samgpu_shim.get_original(SamPredictor, name)


@pytest.mark.parametrize("q_size, k_size, length", [(14, 14, 27), (64, 64, 127), (64, 64, 27), (14, 64, 127)])
def test_get_rel_pos_bit_identical(q_size, k_size, length):
    original = samgpu_shim.get_original(image_encoder, "get_rel_pos")
    rel_pos = torch.randn(length, 8, generator=torch.Generator().manual_seed(length))
    expected = original(q_size, k_size, rel_pos)
    got = get_rel_pos_sync_free(q_size, k_size, rel_pos)
    assert torch.equal(got, expected)


def test_get_rel_pos_is_wrapped_and_restored():
    wrapped = image_encoder.__dict__["get_rel_pos"]
    assert hasattr(wrapped, "__wrapped__")
    samgpu_shim.unpatch()
    try:
        assert not hasattr(image_encoder.__dict__["get_rel_pos"], "__wrapped__")
    finally:
        samgpu_shim.patch()


def _torch_resized(predictor, image):
    h, w = image.shape[:2]
    target = predictor.transform.get_preprocess_shape(h, w, predictor.transform.target_length)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8), target


def test_tensor_frame_equals_upstream_encoder_on_the_same_input(tiny_sam):
    image = synthetic_image(300, 400, seed=3)
    shim = SamPredictor(tiny_sam)
    shim.set_image(torch.from_numpy(image))
    ref = SamPredictor(tiny_sam)
    resized, _ = _torch_resized(ref, image)
    _original("set_torch_image")(ref, resized, image.shape[:2])
    assert torch.equal(shim.features, ref.features)
    assert shim.original_size == ref.original_size and shim.input_size == ref.input_size
    assert_equal_to_upstream(upstream(ref, PC, PL), shim.predict(PC, PL), shim.device)


@pytest.mark.parametrize("hw", [(120, 160), (300, 400), (1080, 1920), (777, 333)])
def test_device_resize_against_pil(predictor, hw):
    image = synthetic_image(*hw, seed=hw[0])
    resized, target = _torch_resized(predictor, image)
    pil = np.array(resize(to_pil_image(image), target))
    diff = np.abs(resized[0].permute(1, 2, 0).numpy().astype(int) - pil.astype(int))
    print(f"{hw}: max {diff.max()}, mean {diff.mean():.3f}, pixels differing {100 * (diff > 0).mean():.1f}%")
    assert diff.max() <= 1  # documented: at most one grey level apart


def test_numpy_frame_is_upstreams_path(tiny_sam):
    image = synthetic_image(200, 150, seed=4)
    shim = SamPredictor(tiny_sam)
    shim.set_image(image)
    ref = SamPredictor(tiny_sam)
    _original("set_image")(ref, image)
    assert torch.equal(shim.features, ref.features)


def test_bgr_tensor_frame(tiny_sam):
    image = synthetic_image(90, 120, seed=5)
    rgb = SamPredictor(tiny_sam)
    rgb.set_image(torch.from_numpy(image))
    bgr = SamPredictor(tiny_sam)
    bgr.set_image(torch.from_numpy(np.ascontiguousarray(image[..., ::-1])), "BGR")
    assert torch.equal(rgb.features, bgr.features)


BAD_FRAMES = {
    "float": (torch.zeros(20, 30, 3), "uint8"),
    "gray": (torch.zeros(20, 30, dtype=torch.uint8), "shape"),
    "rgba": (torch.zeros(20, 30, 4, dtype=torch.uint8), "shape"),
    "chw": (torch.zeros(3, 20, 30, dtype=torch.uint8), "shape"),
    "empty": (torch.zeros(0, 30, 3, dtype=torch.uint8), "empty"),
    "meta": (torch.empty(20, 30, 3, dtype=torch.uint8, device="meta"), "meta"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_frames_are_named_and_keep_the_previous_image(predictor, case):
    frame, message = BAD_FRAMES[case]
    before = predictor.predict(PC, PL)
    with pytest.raises(ImageError, match=message):
        predictor.set_image(frame)
    after = predictor.predict(PC, PL)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_bad_image_format(predictor):
    with pytest.raises(ImageError, match="image_format"):
        set_image_tensor(predictor, torch.zeros(8, 8, 3, dtype=torch.uint8), "RGBA")


def test_rollback_hands_set_image_to_upstream(tiny_sam, monkeypatch):
    import samgpu_shim.families.sam1 as image_mod  # where the wrapper looks it up

    calls = []
    monkeypatch.setattr(image_mod, "set_image_tensor", lambda *a, **k: calls.append(1))
    samgpu_shim.unpatch()
    samgpu_shim.patch()  # rebuild wrappers around the spy
    try:
        samgpu_shim.configure(as_numpy=True)
        p = SamPredictor(tiny_sam)
        frame = synthetic_image(20, 30, seed=4)
        # Rolled back, a tensor frame is handed to upstream as the array it
        # expects: code written for tensor frames runs unchanged, upstream's way.
        p.set_image(torch.from_numpy(frame))
        from_tensor = p.features.clone()
        _original("set_image")(p, frame)
        assert calls == [] and torch.equal(from_tensor, p.features)
        samgpu_shim.configure(as_numpy=None)
        p.set_image(torch.zeros(20, 30, 3, dtype=torch.uint8))
        assert calls == [1]
    finally:
        samgpu_shim.configure(as_numpy=None)
        samgpu_shim.unpatch()
        monkeypatch.undo()
        samgpu_shim.patch()


def test_encoder_precision_config():
    with pytest.raises(ValueError):
        samgpu_shim.configure(encoder_precision="fp8")
    samgpu_shim.configure(encoder_precision="bf16")
    from samgpu_shim import _config

    assert _config.encoder_precision() == "bf16"
    samgpu_shim.configure(encoder_precision=None)
    assert _config.encoder_precision() == "fp32"


def test_precision_is_ignored_on_cpu(tiny_sam):
    image = synthetic_image(60, 80, seed=6)
    a = SamPredictor(tiny_sam)
    a.set_image(image)
    samgpu_shim.configure(encoder_precision="bf16")
    try:
        b = SamPredictor(tiny_sam)
        b.set_image(image)
    finally:
        samgpu_shim.configure(encoder_precision=None)
    assert torch.equal(a.features, b.features)
