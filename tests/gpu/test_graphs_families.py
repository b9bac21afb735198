"""Graph mode for every family on CUDA: bit-identical to the eager GPU path
and to upstream, no host sync per replay, no recapture after ``set_image``.

``pytest -m gpu tests/gpu/test_graphs_families.py``. SAM 3's import turns
TF32 on for the whole process, so run SAM 3 in its own process when timing
(``-k sam3`` / ``-k "not sam3"``); equality holds either way, since both
sides of each comparison run under the same setting.
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
import torch

import samgpu_shim
from samgpu_shim.syncs import count_cuda_syncs
from samgpu_shim.tools.models import synthetic_image

from conftest import assert_equal_to_upstream
from prompts import BOX, PC, PL, PROMPT_MIXES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# name -> (package, "module:Class", builder in family_models or tools.models, predictor maker or None)
FAMILIES = {
    "segment-anything": ("segment_anything", "segment_anything:SamPredictor", "tools:build_sam"),
    "sam-hq": ("segment_anything_hq", "segment_anything_hq:SamPredictor", "tiny_sam_hq"),
    "mobile-sam": ("mobile_sam", "mobile_sam:SamPredictor", "mobile_sam_vit_t"),
    "mobilesam-lite": ("mobilesam_lite", "mobilesam_lite.mobile_sam:SamPredictor", "mobilesam_lite_vit_t"),
    "efficientvit-sam": (
        "efficientsam",
        "efficientsam.models.efficientvit.sam:EfficientViTSamPredictor",
        "efficientvit_sam_l0",
    ),
    "sam2": ("sam2", "sam2.sam2_image_predictor:SAM2ImagePredictor", "tiny_sam2"),
    "sam3": ("sam3", "sam3.model.sam1_task_predictor:SAM3InteractiveImagePredictor", "tiny_sam3"),
}
SAM2_STYLE = ("sam2", "sam3")


def _class(path):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _predictor(name):
    package, path, builder = FAMILIES[name]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    import family_models

    if builder == "tools:build_sam":
        from samgpu_shim.tools.models import build_sam

        model = build_sam("tiny", device="cuda")
    else:
        model = getattr(family_models, builder)().cuda()
    if name == "sam3":
        return family_models.sam3_predictor(model)
    return _class(path)(model)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    p = _predictor(request.param)
    p.set_image(synthetic_image(1080, 1920, seed=1))
    return request.param, p


@pytest.fixture(scope="module", autouse=True)
def _tf32_untouched():
    """Importing sam3 turns TF32 on for the whole process: put the flags back,
    so that the tests of later modules see PyTorch's defaults."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.fixture()
def graphs():
    samgpu_shim.configure(cuda_graphs=True)
    yield
    samgpu_shim.configure(cuda_graphs=None, graph_cache_size=8)
    samgpu_shim.clear_graphs()


def _eager(predictor, method="predict", **kwargs):
    samgpu_shim.configure(cuda_graphs=False)
    try:
        return getattr(predictor, method)(**kwargs)
    finally:
        samgpu_shim.configure(cuda_graphs=True)


def _same(a, b):
    for x, y in zip(a, b):
        if isinstance(x, list):
            _same(x, y)
        else:
            assert torch.equal(x, y) and x.dtype == y.dtype and x.device == y.device


def _kwargs(name, mix):
    args, kwargs = PROMPT_MIXES[mix]
    if args:
        pytest.skip("positional form covered by the contract tests")
    return kwargs


@pytest.mark.parametrize("mix", sorted(PROMPT_MIXES))
def test_graph_equals_eager_and_upstream_without_sync(family, graphs, mix):
    name, p = family
    kwargs = _kwargs(name, mix)
    before = samgpu_shim.graph_stats()["captures"]
    first = p.predict(**kwargs)  # captures
    assert samgpu_shim.graph_stats()["captures"] == before + 1
    syncs, second = count_cuda_syncs(lambda: p.predict(**kwargs))
    assert syncs == 0, f"{name} {mix}: {syncs} host syncs on a replay"
    expected = _eager(p, **kwargs)
    _same(expected, first)
    _same(expected, second)
    cls = type(p)
    upstream = samgpu_shim.get_original(cls, "predict")(p, **kwargs)
    assert_equal_to_upstream(upstream, second, p.device)


def test_new_image_without_recapture(family, graphs):
    name, p = family
    kwargs = dict(point_coords=PC, point_labels=PL)
    p.predict(**kwargs)
    captures = samgpu_shim.graph_stats()["captures"]
    p.set_image(synthetic_image(1080, 1920, seed=2))
    got = p.predict(**kwargs)
    assert samgpu_shim.graph_stats()["captures"] == captures
    _same(_eager(p, **kwargs), got)
    p.set_image(synthetic_image(1080, 1920, seed=1))


def test_returned_tensors_are_the_callers(family, graphs):
    name, p = family
    a = p.predict(point_coords=PC[:1], point_labels=PL[:1])
    kept = [t.clone() for t in a]
    p.predict(point_coords=PC[1:] + 7, point_labels=PL[:1])
    _same(kept, a)


def test_host_and_device_prompts_do_not_share_a_graph(family, graphs):
    name, p = family
    host = dict(point_coords=PC, point_labels=PL)
    device = {k: torch.as_tensor(v, device="cuda") for k, v in host.items()}
    _same(_eager(p, **host), p.predict(**host))
    _same(_eager(p, **host), p.predict(**device))
    _same(_eager(p, **host), p.predict(**host))


MULTI = {
    "points_b3": dict(point_coords=np.stack([PC, PC + 20, PC + 40]), point_labels=np.stack([PL, PL, PL])),
    "boxes_b2": dict(box=np.stack([BOX, BOX + 30]), multimask_output=False),
    "points_and_boxes_b2": dict(
        point_coords=np.stack([PC[:1], PC[1:]]), point_labels=np.array([[1], [1]]), box=np.stack([BOX, BOX + 5])
    ),
}


@pytest.mark.parametrize("mix", sorted(MULTI))
def test_multi_object_prompts(family, graphs, mix):
    name, p = family
    if name not in SAM2_STYLE:
        pytest.skip("(B, N, 2) prompts are SAM 2's API")
    kwargs = MULTI[mix]
    first = p.predict(**kwargs)
    syncs, second = count_cuda_syncs(lambda: p.predict(**kwargs))
    assert syncs == 0
    _same(_eager(p, **kwargs), second)
    _same(first, second)
    upstream = samgpu_shim.get_original(type(p), "predict")(p, **kwargs)
    assert_equal_to_upstream(upstream, second, p.device)


def test_predict_batch(graphs):
    for name in SAM2_STYLE:
        if importlib.util.find_spec(FAMILIES[name][0]) is None:
            continue
        p = _predictor(name)
        p.set_image_batch([synthetic_image(1080, 1920, seed=1), synthetic_image(480, 640, seed=2)])
        kwargs = dict(
            point_coords_batch=[PC, np.array([[20.0, 30.0]])],
            point_labels_batch=[PL, np.array([1])],
            box_batch=[BOX, BOX],
        )
        first = p.predict_batch(**kwargs)
        syncs, second = count_cuda_syncs(lambda p=p, kwargs=kwargs: p.predict_batch(**kwargs))
        assert syncs == 0
        _same(_eager(p, "predict_batch", **kwargs), second)
        _same(first, second)
        upstream = samgpu_shim.get_original(type(p), "predict_batch")(p, **kwargs)
        for image in range(2):
            assert_equal_to_upstream(
                tuple(part[image] for part in upstream), tuple(part[image] for part in second), p.device
            )
        # A new batch of the same sizes: no recapture.
        captures = samgpu_shim.graph_stats()["captures"]
        p.set_image_batch([synthetic_image(1080, 1920, seed=3), synthetic_image(480, 640, seed=4)])
        _same(_eager(p, "predict_batch", **kwargs), p.predict_batch(**kwargs))
        assert samgpu_shim.graph_stats()["captures"] == captures
