"""SAM 3 beyond the shared contract: the paths of ``Sam3Image`` that reach the
patched predictor, call-site attribution through them, and upstream defaults."""

from __future__ import annotations

import logging
import types
import warnings

import numpy as np
import pytest
import torch

import samgpu_shim

pytest.importorskip("sam3", reason="sam3 is not installed")

from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor  # noqa: E402
from sam3.model.sam3_image import Sam3Image  # noqa: E402

from samgpu_shim.tools.models import synthetic_image  # noqa: E402

import family_models  # noqa: E402

POINTS = np.array([[40.0, 30.0], [100.0, 70.0]])
LABELS = np.array([1, 0])


@pytest.fixture(scope="module")
def predictor():
    return family_models.sam3_predictor()


def _inference_state(predictor, images):
    """What ``Sam3Image.set_image`` leaves for ``predict_inst``: the backbone's
    output for the batch, and the original sizes."""
    transforms = predictor._transforms
    batch = torch.stack([transforms(image) for image in images]).to(predictor.device)
    with torch.no_grad():
        backbone_out = predictor.model.forward_image(batch)
    heights = [image.shape[0] for image in images]
    widths = [image.shape[1] for image in images]
    return {
        "backbone_out": {"sam2_backbone_out": backbone_out},
        "original_height": heights[0],
        "original_width": widths[0],
        "original_heights": heights,
        "original_widths": widths,
    }


def _same(tensors, arrays):
    assert len(tensors) == len(arrays)
    for t, a in zip(tensors, arrays):
        assert isinstance(t, torch.Tensor)
        got = t.cpu().numpy()
        assert got.dtype == a.dtype and got.shape == a.shape
        assert np.array_equal(got, a)


def test_predict_inst_reaches_the_gpu_path(predictor):
    model = types.SimpleNamespace(inst_interactive_predictor=predictor)
    state = _inference_state(predictor, [synthetic_image(120, 160, seed=3)])
    got = Sam3Image.predict_inst(model, state, point_coords=POINTS, point_labels=LABELS)
    ref = Sam3Image.predict_inst(model, state, point_coords=POINTS, point_labels=LABELS, as_numpy=True)
    _same(got, ref)
    # Upstream clears the features after the call, in both modes.
    assert predictor._features is None and not predictor._is_image_set


def test_predict_inst_batch_reaches_the_gpu_path(predictor):
    model = types.SimpleNamespace(inst_interactive_predictor=predictor)
    images = [synthetic_image(120, 160, seed=4), synthetic_image(120, 160, seed=5)]
    state = _inference_state(predictor, images)
    prompts = dict(point_coords_batch=[POINTS, POINTS[:1]], point_labels_batch=[LABELS, LABELS[:1]])
    got = Sam3Image.predict_inst_batch(model, state, **prompts)
    ref = Sam3Image.predict_inst_batch(model, state, **prompts, as_numpy=True)
    for tensors, arrays in zip(got, ref):
        _same(tensors, arrays)


def test_call_site_is_the_application_through_predict_inst(predictor, caplog):
    model = types.SimpleNamespace(inst_interactive_predictor=predictor)
    state = _inference_state(predictor, [synthetic_image(120, 160, seed=3)])
    with caplog.at_level(logging.INFO, logger=samgpu_shim.KPI_LOGGER_NAME):
        Sam3Image.predict_inst(model, state, point_coords=POINTS, point_labels=LABELS)
    events = [r.samgpu_kpi for r in caplog.records if hasattr(r, "samgpu_kpi")]
    assert events and events[-1]["family"] == "sam3"
    # the line of this test module, not sam3.model.sam3_image's
    assert events[-1]["module"] == __name__


def test_module_rule_applies_to_predict_inst_callers(predictor):
    model = types.SimpleNamespace(inst_interactive_predictor=predictor)
    state = _inference_state(predictor, [synthetic_image(120, 160, seed=3)])
    samgpu_shim.configure(as_numpy_modules=[__name__])
    try:
        out = Sam3Image.predict_inst(model, state, point_coords=POINTS, point_labels=LABELS)
    finally:
        samgpu_shim.configure(as_numpy_modules=None)
    assert all(isinstance(x, np.ndarray) for x in out)


def test_upstream_default_hole_filling_same_in_both_modes():
    # The predictor as sam3 builds it (max_hole_area=256): whatever the
    # post-processing does on this machine, both modes do it alike.
    p = SAM3InteractiveImagePredictor(family_models.tiny_sam3())
    grid = p.model.image_size // 14
    p._bb_feat_sizes = [(4 * grid, 4 * grid), (2 * grid, 2 * grid), (grid, grid)]
    p.set_image(synthetic_image(120, 160, seed=9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no scikit-image: upstream skips hole filling
        got = p.predict(POINTS, LABELS)
        ref = p.predict(POINTS, LABELS, as_numpy=True)
    _same(got, ref)
