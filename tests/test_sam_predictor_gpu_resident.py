"""The shim's contract against real upstream segment_anything."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

import samgpu_shim
from samgpu_shim.gpu.prompts import PromptError

from conftest import assert_equal_to_upstream, assert_same_arrays, upstream
from prompts import BOX, PC, PL, PROMPT_MIXES


@pytest.mark.parametrize("mix", sorted(PROMPT_MIXES))
def test_gpu_mode_equals_upstream(predictor, mix):
    args, kwargs = PROMPT_MIXES[mix]
    expected = upstream(predictor, *args, **kwargs)
    got = predictor.predict(*args, **kwargs)
    assert_equal_to_upstream(expected, got, predictor.device)


@pytest.mark.parametrize("mix", sorted(PROMPT_MIXES))
def test_numpy_mode_is_upstream_byte_for_byte(predictor, mix):
    args, kwargs = PROMPT_MIXES[mix]
    expected = upstream(predictor, *args, **kwargs)
    got = predictor.predict(*args, **kwargs, as_numpy=True)
    assert isinstance(got, tuple) and len(got) == 3
    for exp, out in zip(expected, got):
        assert_same_arrays(exp, out)


def test_output_shapes_and_dtypes(predictor):
    masks, scores, low = predictor.predict(PC[:1], PL[:1])
    assert masks.dtype == torch.bool and masks.shape == (3, 120, 160)
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    assert low.dtype == torch.float32 and low.shape == (3, 256, 256)
    logits, _, _ = predictor.predict(PC[:1], PL[:1], multimask_output=False, return_logits=True)
    assert logits.dtype == torch.float32 and logits.shape == (1, 120, 160)


def test_masks_are_not_trivial(predictor):
    # Guards the equality tests against a model whose masks are all one value.
    masks, _, _ = upstream(predictor, PC, PL)
    assert 0 < masks.mean() < 1


def test_tensor_prompts_equal_numpy_prompts(predictor):
    expected = upstream(predictor, PC, PL, BOX)
    got = predictor.predict(
        torch.as_tensor(PC), torch.as_tensor(PL), torch.as_tensor(BOX, dtype=torch.float32)
    )
    assert_equal_to_upstream(expected, got, predictor.device)


def test_feedback_loop_stays_in_tensors(predictor):
    masks, scores, logits = predictor.predict(PC[:1], PL[:1])
    refined = predictor.predict(PC, PL, mask_input=logits[scores.argmax()][None], multimask_output=False)
    exp_masks, exp_scores, exp_logits = upstream(predictor, PC[:1], PL[:1])
    expected = upstream(
        predictor, PC, PL, mask_input=exp_logits[exp_scores.argmax()][None], multimask_output=False
    )
    assert_equal_to_upstream(expected, refined, predictor.device)


def test_subclass_calling_super(tiny_sam, image):
    class Tracked(SamPredictor):
        def predict(self, *args, **kwargs):
            self.calls = getattr(self, "calls", 0) + 1
            return super().predict(*args, **kwargs)

    p = Tracked(tiny_sam)
    p.set_image(image)
    got = p.predict(PC, PL)
    assert p.calls == 1
    assert_equal_to_upstream(upstream(p, PC, PL), got, p.device)
    assert isinstance(p.predict(PC, PL, as_numpy=True)[0], np.ndarray)


def test_unbound_class_call(predictor):
    got = SamPredictor.predict(predictor, PC, PL, as_numpy=False)
    assert_equal_to_upstream(upstream(predictor, PC, PL), got, predictor.device)


def test_signature_shows_as_numpy():
    sig = inspect.signature(SamPredictor.predict)
    names = list(sig.parameters)
    assert names == [
        "self",
        "point_coords",
        "point_labels",
        "box",
        "mask_input",
        "multimask_output",
        "return_logits",
        "as_numpy",
    ]
    param = sig.parameters["as_numpy"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is None
    assert sig.parameters["multimask_output"].default is True
    assert SamPredictor.predict.__name__ == "predict"
    assert "Predict masks" in SamPredictor.predict.__doc__


def test_as_numpy_is_keyword_only(predictor):
    with pytest.raises(TypeError):
        predictor.predict(PC, PL, None, None, True, False, True)


@pytest.mark.parametrize("bad", [1, 0, "yes", np.bool_(True), [True]])
def test_as_numpy_must_be_bool(predictor, bad):
    with pytest.raises(TypeError, match="as_numpy must be True, False or None"):
        predictor.predict(PC, PL, as_numpy=bad)
    assert isinstance(predictor.predict(PC, PL)[0], torch.Tensor)


def test_configure_changes_default_and_keyword_wins(predictor):
    samgpu_shim.configure(as_numpy=True)
    assert isinstance(predictor.predict(PC, PL)[0], np.ndarray)
    assert isinstance(predictor.predict(PC, PL, as_numpy=False)[0], torch.Tensor)
    samgpu_shim.configure(as_numpy=None)
    assert isinstance(predictor.predict(PC, PL)[0], torch.Tensor)
    with pytest.raises(TypeError):
        samgpu_shim.configure(as_numpy="1")


def test_no_image_set(tiny_sam):
    p = SamPredictor(tiny_sam)
    for as_numpy in (False, True):
        with pytest.raises(RuntimeError, match="An image must be set"):
            p.predict(PC, PL, as_numpy=as_numpy)


def test_after_reset_image(predictor):
    predictor.reset_image()
    with pytest.raises(RuntimeError, match="An image must be set"):
        predictor.predict(PC, PL)


BAD_PROMPTS = {
    "labels_missing": (dict(point_coords=PC), "point_labels must be supplied"),
    "coords_1d": (dict(point_coords=np.array([1.0, 2.0]), point_labels=np.array([1])), "point_coords must have shape"),
    "coords_3_columns": (dict(point_coords=np.ones((2, 3)), point_labels=PL), "point_coords must have shape"),
    "labels_count": (dict(point_coords=PC, point_labels=np.array([1, 1, 0])), "point_labels must have shape"),
    "labels_2d": (dict(point_coords=PC, point_labels=PL[None]), "point_labels must have shape"),
    "box_5_values": (dict(box=np.arange(5)), "box must have shape"),
    "two_boxes": (dict(box=np.ones((2, 4))), "box must have shape"),
    "mask_wrong_size": (dict(mask_input=np.zeros((1, 64, 64), np.float32)), "mask_input must have shape"),
    "mask_2d": (dict(mask_input=np.zeros((256, 256), np.float32)), "mask_input must have shape"),
    "ragged_coords": (dict(point_coords=[[1, 2], [3]], point_labels=[1, 1]), "point_coords"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROMPTS))
def test_bad_prompt_names_the_argument_and_predictor_survives(predictor, case):
    kwargs, message = BAD_PROMPTS[case]
    with pytest.raises(PromptError, match=message) as info:
        predictor.predict(**kwargs)
    # Catchable the way upstream's asserts were, and as a ValueError.
    assert isinstance(info.value, AssertionError) and isinstance(info.value, ValueError)
    assert_equal_to_upstream(upstream(predictor, PC, PL), predictor.predict(PC, PL), predictor.device)


def test_numpy_mode_keeps_upstream_errors(predictor):
    with pytest.raises(AssertionError, match="point_labels must be supplied"):
        predictor.predict(point_coords=PC, as_numpy=True)


def test_unknown_keyword_is_a_type_error(predictor):
    with pytest.raises(TypeError):
        predictor.predict(PC, PL, multimask=True)


def test_against_a_process_without_the_shim(predictor, tmp_path):
    """Reference outputs from an interpreter where nothing is patched at all."""
    from conftest import IMAGE_HW, run_python

    out = tmp_path / "ref.npz"
    run_python(
        f"""
import numpy as np, sys
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
import samgpu_shim  # SAMGPU_DISABLE=1: installs nothing
from samgpu_shim.tools.models import build_sam, synthetic_image
from segment_anything import SamPredictor
from prompts import PROMPT_MIXES
assert not hasattr(SamPredictor.__dict__["predict"], "__wrapped__")
p = SamPredictor(build_sam("tiny", seed=0)); p.set_image(synthetic_image({IMAGE_HW[0]}, {IMAGE_HW[1]}, seed=1))
ref = {{}}
for name, (args, kwargs) in PROMPT_MIXES.items():
    for i, a in enumerate(p.predict(*args, **kwargs)):
        ref[f"{{name}}-{{i}}"] = a
np.savez({str(out)!r}, **ref)
""",
        env={"SAMGPU_DISABLE": "1"},
    )
    ref = np.load(out)
    for name, (args, kwargs) in PROMPT_MIXES.items():
        expected = tuple(ref[f"{name}-{i}"] for i in range(3))
        assert_equal_to_upstream(expected, predictor.predict(*args, **kwargs), predictor.device)
        for exp, got in zip(expected, predictor.predict(*args, **kwargs, as_numpy=True)):
            assert got.tobytes() == exp.tobytes() and got.dtype == exp.dtype and got.shape == exp.shape


def test_graph_mode_without_cuda_falls_back_once(predictor, caplog):
    import logging

    from samgpu_shim.gpu import graphs as _graphs

    _graphs._warned.clear()
    samgpu_shim.configure(cuda_graphs=True)
    try:
        with caplog.at_level(logging.WARNING, logger="samgpu_shim"):
            got = predictor.predict(PC, PL)
            predictor.predict(PC, PL)
    finally:
        samgpu_shim.configure(cuda_graphs=None)
    assert_equal_to_upstream(upstream(predictor, PC, PL), got, predictor.device)
    assert [r.getMessage() for r in caplog.records if "CUDA graph" in r.getMessage()] == [
        "samgpu_shim: CUDA graph mode falls back to the eager GPU path: needs a CUDA device, predictor is on cpu"
    ]


def test_configure_validation():
    with pytest.raises(TypeError):
        samgpu_shim.configure(cuda_graphs="yes")
    with pytest.raises(ValueError):
        samgpu_shim.configure(graph_cache_size=0)
    stats = samgpu_shim.graph_stats()
    assert stats["enabled"] is False and stats["cache_size_per_predictor"] == 8
