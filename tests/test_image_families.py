"""The image half in every family, on the CPU: tensor frames take the
family's own preprocessing (on the frame's device), rollback hands them to
upstream, bad frames are named, encoder settings are CUDA-only."""

from __future__ import annotations

import importlib
import importlib.util
import warnings

import numpy as np
import pytest
import torch

import samgpu_shim
from samgpu_shim.gpu.image import ImageError, vit_attention_fused
from samgpu_shim.tools.models import synthetic_image

import family_models
from prompts import PC, PL

# name -> (package, "module:Class", builder, image tensors, a frame size that needs no resize or None)
FAMILIES = {
    "segment-anything-hq": ("segment_anything_hq", "segment_anything_hq:SamPredictor", "tiny_sam_hq",
                            lambda p: [p.features, *p.interm_features], (768, 1024)),
    "mobile-sam": ("mobile_sam", "mobile_sam:SamPredictor", "mobile_sam_vit_t", lambda p: [p.features], (768, 1024)),
    "efficientvit-sam": ("efficientsam", "efficientsam.models.efficientvit.sam:EfficientViTSamPredictor",
                         "efficientvit_sam_l0", lambda p: [p.features], (384, 512)),
    "sam2": ("sam2", "sam2.sam2_image_predictor:SAM2ImagePredictor", "tiny_sam2",
             lambda p: [p._features["image_embed"], *p._features["high_res_feats"]], None),
    "sam3": ("sam3", "sam3.model.sam1_task_predictor:SAM3InteractiveImagePredictor", "sam3_predictor",
             lambda p: [p._features["image_embed"], *p._features["high_res_feats"]], None),
}


def _class(path):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    package, path, builder, tensors, exact = FAMILIES[request.param]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    warnings.filterwarnings("ignore", category=UserWarning)
    model = getattr(family_models, builder)()
    predictor = model if builder == "sam3_predictor" else _class(path)(model)
    return request.param, predictor, tensors, exact


def _upstream_set(predictor, frame):
    samgpu_shim.get_original(type(predictor), "set_image")(predictor, frame)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_tensor_frame_gives_upstreams_embedding(family):
    name, p, tensors, exact = family
    # SAM 2 and SAM 3 preprocess in float with their own torchvision modules:
    # on the CPU the very same operations, at any size. SAM 1's copies and
    # EfficientViT-SAM resize to uint8 (PIL on the host): equal where the frame
    # needs no resize.
    frame = synthetic_image(*(exact or (120, 160)), seed=3)
    _upstream_set(p, frame)
    expected = [t.clone() for t in tensors(p)]
    p.set_image(torch.from_numpy(frame))
    assert _same(expected, tensors(p))
    masks = p.predict(PC, PL)[0]
    _upstream_set(p, frame)
    assert torch.equal(masks, p.predict(PC, PL)[0])


def test_resized_tensor_frame_is_close(family):
    name, p, tensors, exact = family
    frame = synthetic_image(130, 170, seed=5)
    _upstream_set(p, frame)
    expected = [t.clone() for t in tensors(p)]
    p.set_image(torch.from_numpy(frame))
    for e, g in zip(expected, tensors(p)):
        assert e.shape == g.shape and e.dtype == g.dtype
        scale = float(e.abs().max()) or 1.0
        assert float((e - g).abs().max()) / scale < 0.1


def test_rolled_back_tensor_frame_takes_upstreams_path(family):
    name, p, tensors, exact = family
    frame = synthetic_image(130, 170, seed=6)
    _upstream_set(p, frame)
    expected = [t.clone() for t in tensors(p)]
    samgpu_shim.configure(as_numpy=True)
    try:
        p.set_image(torch.from_numpy(frame))
    finally:
        samgpu_shim.configure(as_numpy=None)
    assert _same(expected, tensors(p))


BAD = {
    "float": (torch.zeros(20, 30, 3), "uint8"),
    "gray": (torch.zeros(20, 30, dtype=torch.uint8), "shape"),
    "chw": (torch.zeros(3, 20, 30, dtype=torch.uint8), "shape"),
    "empty": (torch.zeros(0, 30, 3, dtype=torch.uint8), "empty"),
    "meta": (torch.empty(20, 30, 3, dtype=torch.uint8, device="meta"), "meta"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_frames_are_named_and_keep_the_previous_image(family, case):
    name, p, tensors, exact = family
    p.set_image(torch.from_numpy(synthetic_image(120, 160, seed=7)))
    before = [t.clone() for t in tensors(p)]
    frame, words = BAD[case]
    with pytest.raises(ImageError, match=words):
        p.set_image(frame)
    assert _same(before, tensors(p))
    assert isinstance(p.predict(PC, PL)[0], torch.Tensor)


def test_encoder_settings_are_cuda_only(family):
    name, p, tensors, exact = family
    frame = torch.from_numpy(synthetic_image(120, 160, seed=8))
    p.set_image(frame)
    reference = [t.clone() for t in tensors(p)]
    for setting in (dict(encoder_precision="bf16"), dict(encoder="fast"), dict(encoder="fast-compile")):
        samgpu_shim.configure(**setting)
        try:
            p.set_image(frame)
        finally:
            samgpu_shim.configure(encoder_precision=None, encoder=None)
        assert _same(reference, tensors(p)), setting


def test_set_image_batch_with_tensor_frames(family):
    name, p, tensors, exact = family
    if name not in ("sam2", "sam3"):
        pytest.skip("set_image_batch is SAM 2's and SAM 3's")
    frames = [synthetic_image(120, 160, seed=2), synthetic_image(60, 80, seed=3)]
    samgpu_shim.get_original(type(p), "set_image_batch")(p, frames)
    expected = [t.clone() for t in tensors(p)]
    p.set_image_batch([torch.from_numpy(frames[0]), frames[1]])  # a tensor and an array together
    assert _same(expected, tensors(p)) and p._orig_hw == [(120, 160), (60, 80)]
    got = p.predict_batch([PC, PC[:1]], [PL, PL[:1]])
    ref = samgpu_shim.get_original(type(p), "predict_batch")(p, [PC, PC[:1]], [PL, PL[:1]])
    for g, r in zip(got[0], ref[0]):
        assert np.array_equal(g.numpy(), r)


def test_encoder_setting_is_checked():
    with pytest.raises(ValueError, match="encoder"):
        samgpu_shim.configure(encoder="turbo")


@pytest.mark.parametrize("rel_pos", [True, False])
@pytest.mark.parametrize("grid", [(14, 14), (6, 9)])
def test_fused_attention_matches_upstream_in_fp32(rel_pos, grid):
    """The relative-position bias folded into the attention (and the
    FlexAttention version with a score_mod) give upstream's attention."""
    import warnings

    from segment_anything.modeling.image_encoder import Attention

    from samgpu_shim.gpu.image import vit_attention_flex

    torch.manual_seed(0)
    attention = Attention(64, num_heads=4, use_rel_pos=rel_pos, rel_pos_zero_init=False, input_size=grid).eval()
    if rel_pos:
        torch.nn.init.normal_(attention.rel_pos_h, std=0.5)
        torch.nn.init.normal_(attention.rel_pos_w, std=0.5)
    x = torch.randn(2, *grid, 64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FlexAttention's note that eager mode is unfused
        expected = samgpu_shim.get_original(Attention, "forward")(attention, x)
        got = vit_attention_fused(attention, x)
        flex = vit_attention_flex(attention, x)
    assert torch.allclose(expected, got, atol=1e-5, rtol=1e-4), float((expected - got).abs().max())
    assert torch.allclose(expected, flex, atol=1e-5, rtol=1e-4), float((expected - flex).abs().max())
    if rel_pos:  # the bias matters here: without it the result is far off, so the check can fail
        plain = torch.nn.functional.scaled_dot_product_attention
        q = attention.qkv(x).reshape(2, grid[0] * grid[1], 3, 4, -1).permute(2, 0, 3, 1, 4)
        no_bias = attention.proj(plain(q[0], q[1], q[2]).permute(0, 2, 1, 3).reshape(2, *grid, 64))
        assert not torch.allclose(expected, no_bias, atol=1e-3)
