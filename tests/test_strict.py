"""Strict mode: CPU results refuse numpy the way CUDA results do."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import samgpu_shim
from samgpu_shim.gpu.strict import StrictConversionError, StrictTensor

from conftest import assert_equal_to_upstream, run_python, upstream
from strict_ops import OPS, outcome

POINTS = np.array([[40.0, 50.0], [90.0, 70.0]])
LABELS = np.array([1, 0])


@pytest.fixture()
def strict():
    samgpu_shim.configure(transfer_guard=None, strict=True)
    yield
    samgpu_shim.configure(strict=None)


@pytest.mark.parametrize("name,cuda,fn", OPS, ids=[o[0] for o in OPS])
def test_each_operation_behaves_as_on_cuda(predictor, strict, name, cuda, fn):
    results = predictor.predict(point_coords=POINTS, point_labels=LABELS)
    assert outcome(fn, results)[0] == cuda
    # and the predictor is still usable afterwards
    again = predictor.predict(point_coords=POINTS, point_labels=LABELS)
    assert isinstance(again[0], StrictTensor)


def test_hidden_failures_exist_without_strict(predictor):
    results = predictor.predict(point_coords=POINTS, point_labels=LABELS)
    hidden = [name for name, cuda, fn in OPS if cuda == "raises" and outcome(fn, results)[0] == "works"]
    assert {"np.asarray", "np.argmax", "ndarray[mask]", "mask * ndarray"} <= set(hidden)


def test_values_dtypes_shapes_unchanged(predictor, strict):
    expected = upstream(predictor, point_coords=POINTS, point_labels=LABELS)
    got = predictor.predict(point_coords=POINTS, point_labels=LABELS)
    assert all(isinstance(t, StrictTensor) for t in got)
    assert_equal_to_upstream(expected, got, torch.device("cpu"))
    # derived tensors stay strict; explicit exits give plain host tensors
    assert isinstance(got[0][0].float() * 2, StrictTensor)
    assert type(got[0].cpu()) is torch.Tensor
    assert type(got[0].to("cpu")) is torch.Tensor
    assert isinstance(got[0].to(torch.uint8), StrictTensor)


def test_message_names_call_site_and_fix(predictor, strict):
    masks, scores, _ = predictor.predict(point_coords=POINTS, point_labels=LABELS)
    with pytest.raises(StrictConversionError) as info:
        np.argmax(scores[None] * 2)
    text = str(info.value)
    assert "test_strict" in text and "test_message_names_call_site_and_fix" in text
    assert "samgpu_shim.to_numpy" in text and "as_numpy=True" in text
    assert isinstance(info.value, TypeError)  # what CUDA raises
    # tensor * ndarray: numpy computes it, converting the tensor (TypeError on CUDA)
    with pytest.raises(StrictConversionError):
        masks[0] * np.ones(masks.shape[-2:])


def test_numpy_mode_and_exits_untouched(predictor, strict):
    numpy_out = predictor.predict(point_coords=POINTS, point_labels=LABELS, as_numpy=True)
    assert all(type(a) is np.ndarray for a in numpy_out)
    gpu_out = predictor.predict(point_coords=POINTS, point_labels=LABELS)
    converted = samgpu_shim.to_numpy(gpu_out)
    for a, b in zip(numpy_out, converted):
        assert type(b) is np.ndarray and a.tobytes() == b.tobytes()
    json.dumps({"s": gpu_out[1]}, default=samgpu_shim.json_default)


def test_mask_input_round_trip(predictor, strict):
    masks, scores, logits = predictor.predict(point_coords=POINTS, point_labels=LABELS)
    best = logits[scores.argmax(dim=0, keepdim=True)]
    again = predictor.predict(point_coords=POINTS, point_labels=LABELS, mask_input=best, multimask_output=False)
    assert again[0].shape[0] == 1


def test_configure_validates_and_env_switch():
    with pytest.raises(TypeError, match="strict"):
        samgpu_shim.configure(strict="yes")
    proc = run_python(
        """
        import numpy as np
        import samgpu_shim
        from samgpu_shim.tools.models import build_sam, synthetic_image
        from segment_anything import SamPredictor
        p = SamPredictor(build_sam("tiny", seed=0)); p.set_image(synthetic_image(64, 64, seed=1))
        m, s, l = p.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]))
        try:
            np.argmax(s)
        except TypeError as exc:
            print("refused:", type(exc).__name__)
        """,
        env={"SAMGPU_STRICT": "1"},
    )
    assert "refused: TransferGuardError" in proc.stdout  # StrictConversionError is its alias
