"""SAM 2 (PyPI ``sam2``) behind the same import: predict and predict_batch.

Runs where ``sam2`` is installed (tox factor ``sam2``), skipped otherwise. The
model is SAM 2.1 built by the package's own builder and configs with random
weights; references come from SAM 2's own, unpatched functions, in this
process and in a fresh interpreter where nothing is patched.
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import pytest
import torch

import samgpu_shim
from samgpu_shim.gpu.prompts import PromptError
from samgpu_shim.syncs import SyncProneOps
from samgpu_shim.tools.models import synthetic_image

from conftest import assert_equal_to_upstream, assert_same_arrays, run_python
from prompts import BOX, PC, PL, PROMPT_MIXES

pytest.importorskip("sam2", reason="sam2 is not installed (tox factor sam2)")

from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

HERE = pathlib.Path(__file__).parent
# Every SAM 1 prompt mix is a valid SAM 2 call too (pixel coordinates, normalised by default).
MIXES = sorted(PROMPT_MIXES)
BATCH_IMAGES = (synthetic_image(120, 160, seed=7), synthetic_image(90, 70, seed=8))


@pytest.fixture(scope="module")
def sam2_model():
    import family_models

    return family_models.tiny_sam2()


@pytest.fixture(scope="module")
def predictor(sam2_model):
    p = SAM2ImagePredictor(sam2_model)
    p.set_image(synthetic_image(120, 160, seed=7))
    return p


@pytest.fixture(scope="module")
def batch_predictor(sam2_model):
    p = SAM2ImagePredictor(sam2_model)
    p.set_image_batch(list(BATCH_IMAGES))
    return p


def upstream(method, predictor, *args, **kwargs):
    return samgpu_shim.get_original(SAM2ImagePredictor, method)(predictor, *args, **kwargs)


def test_normalize_coords_false(predictor):
    coords = PC / np.array([160.0, 120.0])  # already in [0, 1]
    box = BOX / np.array([160.0, 120.0, 160.0, 120.0])
    kwargs = dict(point_coords=coords, point_labels=PL, box=box, normalize_coords=False)
    assert_equal_to_upstream(upstream("predict", predictor, **kwargs), predictor.predict(**kwargs), predictor.device)
    # positional, as the 7th argument
    args = (coords, PL, box, None, True, False, False)
    assert_equal_to_upstream(upstream("predict", predictor, *args), predictor.predict(*args), predictor.device)


def test_several_objects_in_one_call(predictor):
    # SAM 2 accepts a batch of objects: B boxes and B point sets.
    boxes = np.array([[10, 12, 90, 100], [40, 20, 150, 110]])
    coords = np.array([[[50.0, 60.0]], [[100.0, 30.0]]])
    labels = np.array([[1], [1]])
    for kwargs in (dict(box=boxes), dict(box=boxes, point_coords=coords, point_labels=labels, multimask_output=False)):
        expected = upstream("predict", predictor, **kwargs)
        got = predictor.predict(**kwargs)
        assert got[0].shape[0] == 2
        assert_equal_to_upstream(expected, got, predictor.device)


def test_tensor_prompts(predictor):
    _, kwargs = PROMPT_MIXES["everything"]
    expected = upstream("predict", predictor, **kwargs)
    as_tensors = {k: torch.as_tensor(v) for k, v in kwargs.items()}
    assert_equal_to_upstream(expected, predictor.predict(**as_tensors), predictor.device)
    before = {k: v.clone() for k, v in as_tensors.items()}
    predictor.predict(**as_tensors)
    assert all(torch.equal(before[k], as_tensors[k]) for k in before)  # inputs untouched


def test_inside_inference_mode_and_autocast(predictor):
    # SAM 2's own README runs the predictor this way (bfloat16 autocast).
    _, kwargs = PROMPT_MIXES["points_and_box"]
    with torch.inference_mode(), torch.autocast(predictor.device.type, dtype=torch.bfloat16):
        expected = upstream("predict", predictor, **kwargs)
        got = predictor.predict(**kwargs)
    assert all(t.dtype == torch.float32 for t in got)
    assert_equal_to_upstream(expected, got, predictor.device)


def test_predict_batch_equals_upstream(batch_predictor):
    kwargs = dict(
        point_coords_batch=[PC, np.array([[20.0, 30.0]])],
        point_labels_batch=[PL, np.array([1])],
        box_batch=[BOX, None],
        multimask_output=True,
    )
    expected = upstream("predict_batch", batch_predictor, **kwargs)
    with SyncProneOps() as ops:
        got = batch_predictor.predict_batch(**kwargs)
    assert ops.calls == []
    assert all(isinstance(part, list) and len(part) == 2 for part in got)
    for image in range(2):
        assert_equal_to_upstream(
            tuple(part[image] for part in expected), tuple(part[image] for part in got), batch_predictor.device
        )
    numpy_out = batch_predictor.predict_batch(**kwargs, as_numpy=True)
    for exp_part, out_part in zip(expected, numpy_out):
        for exp, out in zip(exp_part, out_part):
            assert_same_arrays(exp, out)


def test_predict_batch_box_only_and_masks(batch_predictor):
    rng = np.random.default_rng(2)
    masks = [rng.normal(0, 4, size=(1, 256, 256)).astype(np.float32) for _ in range(2)]
    kwargs = dict(box_batch=[BOX, np.array([5, 5, 60, 80])], mask_input_batch=masks, multimask_output=False)
    expected = upstream("predict_batch", batch_predictor, **kwargs)
    got = batch_predictor.predict_batch(**kwargs)
    for image in range(2):
        assert_equal_to_upstream(
            tuple(part[image] for part in expected), tuple(part[image] for part in got), batch_predictor.device
        )


def test_predict_after_set_image_batch_reads_the_last_image(batch_predictor):
    kwargs = dict(point_coords=PC[:1], point_labels=PL[:1])
    expected = upstream("predict", batch_predictor, **kwargs)
    assert_equal_to_upstream(expected, batch_predictor.predict(**kwargs), batch_predictor.device)


BAD_PROMPTS = {
    "labels missing": (dict(point_coords=PC), "point_labels"),
    "coords 1-d": (dict(point_coords=np.array([1.0, 2.0]), point_labels=np.array([1])), "point_coords"),
    "coords 3 columns": (dict(point_coords=np.zeros((2, 3)), point_labels=PL), "point_coords"),
    "labels count": (dict(point_coords=PC, point_labels=np.array([1, 0, 1])), "point_labels"),
    "ragged coords": (dict(point_coords=[[1.0, 2.0], [3.0]], point_labels=PL), "point_coords"),
    "box of 3": (dict(box=np.array([1, 2, 3])), "box"),
    "boxes vs points": (
        dict(box=np.array([[1, 2, 30, 40], [5, 6, 50, 60]]), point_coords=PC, point_labels=PL),
        "box",
    ),
    "mask 64x64": (dict(mask_input=np.zeros((1, 64, 64), np.float32)), "mask_input"),
    "mask 2-d": (dict(mask_input=np.zeros((256, 256), np.float32)), "mask_input"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROMPTS))
def test_bad_prompts_name_the_argument_and_leave_the_predictor_usable(predictor, case):
    kwargs, argument = BAD_PROMPTS[case]
    with pytest.raises(PromptError, match=argument):
        predictor.predict(**kwargs)
    _, good = PROMPT_MIXES["point_multimask"]
    assert_equal_to_upstream(upstream("predict", predictor, **good), predictor.predict(**good), predictor.device)


def test_state_errors_match_upstream(sam2_model, predictor, batch_predictor):
    fresh = SAM2ImagePredictor(sam2_model)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(point_coords=PC, point_labels=PL)
    with pytest.raises(AssertionError, match="batched mode"):
        predictor.predict_batch(point_coords_batch=[PC], point_labels_batch=[PL])
    with pytest.raises(PromptError, match=r"point_coords_batch has 1 entries but 2 images"):
        batch_predictor.predict_batch(point_coords_batch=[PC], point_labels_batch=[PL, PL])
    with pytest.raises(PromptError, match=r"point_labels_batch\[1\]"):
        batch_predictor.predict_batch(point_coords_batch=[PC, PC], point_labels_batch=[PL, PL[:1]])


def test_kpi_event_names_the_family(predictor, batch_predictor):
    logger = logging.getLogger("samgpu_shim.kpi")
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(json.loads(record.getMessage()))

    handler = Collect(level=logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        predictor.predict(point_coords=PC, point_labels=PL)
        batch_predictor.predict_batch(box_batch=[BOX, BOX], as_numpy=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    single, batch = records
    assert single["family"] == batch["family"] == "sam2"
    assert single["predictor"] == "SAM2ImagePredictor"
    assert single["as_numpy"] == 0 and single["mask_device"] == str(predictor.device)
    assert batch["as_numpy"] == 1 and batch["mask_device"] == "cpu"


def test_status_and_unpatch_restore_both_methods():
    row = next(r for r in samgpu_shim.status() if r["family"] == "sam2")
    assert row["installed"] == "yes" and row["status"] == "patched"
    originals = {m: samgpu_shim.get_original(SAM2ImagePredictor, m) for m in ("predict", "predict_batch")}
    samgpu_shim.unpatch()
    try:
        for method, original in originals.items():
            assert SAM2ImagePredictor.__dict__[method] is original
    finally:
        samgpu_shim.patch()
    assert samgpu_shim.is_patched("sam2")


# A fresh interpreter with a SAM 2 predictor on the same tiny model.
_CHILD = f"""
import sys; sys.path.insert(0, {str(HERE)!r})
import numpy as np
{{prelude}}
from sam2.sam2_image_predictor import SAM2ImagePredictor
import family_models
from samgpu_shim.tools.models import synthetic_image
p = SAM2ImagePredictor(family_models.tiny_sam2())
p.set_image(synthetic_image(120, 160, seed=7))
out = p.predict(np.array([[50.0, 60.0], [100.0, 30.0]]), np.array([1, 0]), box=np.array([10, 12, 90, 100]))
print(type(out[0]).__name__)
{{save}}
"""


def test_against_an_unpatched_interpreter(predictor, tmp_path):
    path = tmp_path / "upstream.npz"
    # The child's helpers import samgpu_shim (its model builder), so the kill
    # switch keeps it from patching anything there.
    code = _CHILD.format(prelude="", save=f"np.savez({str(path)!r}, *out)")
    assert run_python(code, env={"SAMGPU_DISABLE": "1"}).stdout.split()[-1] == "ndarray"
    saved = np.load(path)
    expected = tuple(saved[f"arr_{i}"] for i in range(3))
    got = predictor.predict(PC, PL, box=BOX)
    assert_equal_to_upstream(expected, got, predictor.device)


@pytest.mark.parametrize(
    "prelude, env, kind",
    [
        ("import samgpu_shim", {}, "Tensor"),
        ("import samgpu_shim", {"SAMGPU_AS_NUMPY": "1"}, "ndarray"),
        # SAM 2 imported first, the shim afterwards: still patched.
        ("import sam2.sam2_image_predictor\nimport samgpu_shim", {}, "Tensor"),
    ],
)
def test_import_order_and_rollback(prelude, env, kind):
    assert run_python(_CHILD.format(prelude=prelude, save=""), env=env).stdout.split()[-1] == kind
