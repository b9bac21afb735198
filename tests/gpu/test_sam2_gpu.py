"""SAM 2 on CUDA: host syncs per call, upstream's values, predict_batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import samgpu_shim
from samgpu_shim.syncs import count_cuda_syncs, forbid_syncs
from samgpu_shim.tools.models import build_sam2, synthetic_image

from conftest import assert_equal_to_upstream
from prompts import BOX, PC, PL, PROMPT_MIXES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
pytest.importorskip("sam2", reason="sam2 is not installed")

from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

MIXES = ["point_multimask", "points_single_mask", "box_1d", "points_and_box", "mask_alone", "everything",
         "return_logits", "no_prompt"]


@pytest.fixture(scope="module", params=["tiny", "hiera_t"])
def predictor(request):
    p = SAM2ImagePredictor(build_sam2(request.param, device="cuda"))
    p.set_image(synthetic_image(1080, 1920, seed=1))
    return request.param, p


@pytest.mark.parametrize("mix", MIXES)
def test_sam2_sync_free_and_equal(predictor, mix):
    name, p = predictor
    args, kwargs = PROMPT_MIXES[mix]
    p.predict(*args, **kwargs)  # warm-up
    with forbid_syncs():
        got = p.predict(*args, **kwargs)
    original = samgpu_shim.get_original(SAM2ImagePredictor, "predict")
    upstream_syncs, expected = count_cuda_syncs(lambda: original(p, *args, **kwargs))
    shim_syncs, _ = count_cuda_syncs(lambda: p.predict(*args, **kwargs))
    print(f"sam2 {name} {mix}: upstream {upstream_syncs} syncs, shim {shim_syncs}")
    assert shim_syncs == 0 and upstream_syncs > 0
    assert_equal_to_upstream(expected, got, p.device)


def test_sam2_device_tensor_prompts(predictor):
    name, p = predictor
    kwargs = dict(point_coords=PC, point_labels=PL, box=BOX)
    expected = samgpu_shim.get_original(SAM2ImagePredictor, "predict")(p, **kwargs)
    on_gpu = {k: torch.as_tensor(v, device="cuda") for k, v in kwargs.items()}
    p.predict(**on_gpu)
    with forbid_syncs():
        got = p.predict(**on_gpu)
    assert_equal_to_upstream(expected, got, p.device)


def test_sam2_predict_batch_sync_free():
    p = SAM2ImagePredictor(build_sam2("tiny", device="cuda"))
    p.set_image_batch([synthetic_image(1080, 1920, seed=1), synthetic_image(480, 640, seed=2)])
    kwargs = dict(
        point_coords_batch=[PC, np.array([[20.0, 30.0]])],
        point_labels_batch=[PL, np.array([1])],
        box_batch=[BOX, BOX],
    )
    p.predict_batch(**kwargs)
    with forbid_syncs():
        got = p.predict_batch(**kwargs)
    original = samgpu_shim.get_original(SAM2ImagePredictor, "predict_batch")
    upstream_syncs, expected = count_cuda_syncs(lambda: original(p, **kwargs))
    shim_syncs, _ = count_cuda_syncs(lambda: p.predict_batch(**kwargs))
    print(f"sam2 predict_batch (2 images): upstream {upstream_syncs} syncs, shim {shim_syncs}")
    assert shim_syncs == 0
    for image in range(2):
        assert_equal_to_upstream(
            tuple(part[image] for part in expected), tuple(part[image] for part in got), p.device
        )


def test_sam2_bfloat16_autocast_as_in_its_readme(predictor):
    name, p = predictor
    kwargs = dict(point_coords=PC, point_labels=PL, box=BOX)
    original = samgpu_shim.get_original(SAM2ImagePredictor, "predict")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        expected = original(p, **kwargs)
        p.predict(**kwargs)
        with forbid_syncs():
            got = p.predict(**kwargs)
    assert all(t.dtype == torch.float32 for t in got)
    assert_equal_to_upstream(expected, got, p.device)
