"""What the shim withstands: bad input, long runs, threads, faults, copies.

The published table is docs/reliability.rst; each row names its test here.
"""

from __future__ import annotations

import copy
import logging
import pickle
import threading
import time

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

import samgpu_shim
from samgpu_shim import _telemetry as _kpi
from samgpu_shim.families import Target, sam1
from samgpu_shim.gpu.prompts import PromptError
from samgpu_shim.tools.models import build_sam, synthetic_image

from conftest import assert_equal_to_upstream, run_python, upstream
from prompts import BOX, PC, PL

M = np.zeros((1, 256, 256), np.float32)

# name -> (kwargs, expectation). Expectations:
#   "prompt_error": GPU mode raises PromptError naming the argument (upstream
#                   raises something less clear, or an assert);
#   "same_error":   GPU mode raises the very exception type upstream raises;
#   "accepted":     upstream accepts it silently; GPU mode gives upstream's values;
#   "lenient":      upstream fails on a detail GPU mode does not need (documented).
BAD_INPUT = {
    "labels_missing": (dict(point_coords=PC), "prompt_error"),
    "coords_1d": (dict(point_coords=np.array([1.0, 2.0]), point_labels=np.array([1])), "prompt_error"),
    "coords_three_columns": (dict(point_coords=np.ones((2, 3)), point_labels=PL), "prompt_error"),
    "coords_3d": (dict(point_coords=PC[None], point_labels=PL), "prompt_error"),
    "labels_too_many": (dict(point_coords=PC, point_labels=np.array([1, 1, 0])), "prompt_error"),
    "labels_2d": (dict(point_coords=PC, point_labels=PL[None]), "prompt_error"),
    "empty_points": (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)), "accepted"),
    "nan_coords": (dict(point_coords=np.array([[np.nan, 5.0]]), point_labels=np.array([1])), "accepted"),
    "inf_coords": (dict(point_coords=np.array([[np.inf, 5.0]]), point_labels=np.array([1])), "accepted"),
    "coords_far_outside": (dict(point_coords=np.array([[1e6, -1e6]]), point_labels=np.array([1])), "accepted"),
    "string_coords": (dict(point_coords=np.array([["a", "b"]]), point_labels=np.array([1])), "same_error"),
    "object_coords_none": (
        dict(point_coords=np.array([[None, 1]], dtype=object), point_labels=np.array([1])),
        "accepted",  # upstream's astype(float) turns None into NaN
    ),
    "float16_coords": (dict(point_coords=PC.astype(np.float16), point_labels=PL), "accepted"),
    "string_labels": (dict(point_coords=PC, point_labels=np.array(["a", "b"])), "same_error"),
    "float_labels": (dict(point_coords=PC, point_labels=np.array([1.0, 0.0])), "accepted"),
    "labels_outside_set": (dict(point_coords=PC, point_labels=np.array([5, -7])), "accepted"),
    "box_reversed": (dict(box=np.array([90, 100, 10, 12])), "accepted"),
    "box_five_values": (dict(box=np.arange(5)), "prompt_error"),
    "two_boxes": (dict(box=np.stack([BOX, BOX])), "prompt_error"),
    "box_nan": (dict(box=np.array([np.nan, 1, 2, 3])), "accepted"),
    "mask_wrong_size": (dict(mask_input=np.zeros((1, 64, 64), np.float32)), "prompt_error"),
    "mask_2d": (dict(mask_input=M[0]), "prompt_error"),
    "mask_two_channels": (dict(mask_input=np.zeros((2, 256, 256), np.float32)), "prompt_error"),
    "mask_float16": (dict(mask_input=M.astype(np.float16)), "accepted"),
    "mask_bool": (dict(mask_input=M > 0), "accepted"),
    "coords_as_list": (dict(point_coords=[[50.0, 60.0]], point_labels=[1]), "lenient"),
    "box_as_list": (dict(box=[10, 12, 90, 100]), "lenient"),
    "ragged_coords": (dict(point_coords=[[1, 2], [3]], point_labels=[1, 1]), "prompt_error"),
    "multimask_truthy_string": (dict(point_coords=PC, point_labels=PL, multimask_output="yes"), "accepted"),
}


def _outcome(fn):
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - the type is what we compare
        return "raised", exc


def test_at_least_25_bad_input_cases():
    assert len(BAD_INPUT) >= 25


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input(predictor, case):
    kwargs, expectation = BAD_INPUT[case]
    up_kind, up = _outcome(lambda: upstream(predictor, **kwargs))
    np_kind, np_out = _outcome(lambda: predictor.predict(**kwargs, as_numpy=True))
    gpu_kind, gpu = _outcome(lambda: predictor.predict(**kwargs))

    # Numpy mode is upstream, whatever upstream does.
    assert np_kind == up_kind
    if up_kind == "raised":
        assert type(np_out) is type(up) and str(np_out) == str(up)
    else:
        assert all(a.tobytes() == b.tobytes() for a, b in zip(up, np_out))

    if expectation == "prompt_error":
        assert gpu_kind == "raised" and isinstance(gpu, PromptError)
        assert any(name in str(gpu) for name in ("point_coords", "point_labels", "box", "mask_input"))
    elif expectation == "same_error":
        assert up_kind == "raised" and gpu_kind == "raised" and type(gpu) is type(up)
    elif expectation == "accepted":
        assert up_kind == "ok" and gpu_kind == "ok"
        assert_equal_to_upstream(up, gpu, predictor.device)
    else:  # lenient: upstream stumbles on the container type only
        assert up_kind == "raised" and gpu_kind == "ok"
        as_arrays = {k: np.asarray(v) for k, v in kwargs.items()}
        assert_equal_to_upstream(upstream(predictor, **as_arrays), gpu, predictor.device)

    # The predictor is still fine.
    assert_equal_to_upstream(upstream(predictor, PC, PL), predictor.predict(PC, PL), predictor.device)


def test_meta_tensor_prompt_is_named(predictor):
    with pytest.raises(PromptError, match="point_coords is on the meta device"):
        predictor.predict(torch.empty(1, 2, device="meta"), torch.ones(1))


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_ten_thousand_calls_stay_flat():
    p = SamPredictor(build_sam("tiny", image_size=256))
    p.set_image(synthetic_image(48, 64, seed=3))
    logger = logging.getLogger("samgpu_shim.kpi")

    class Count(logging.Handler):
        n = 0

        def emit(self, record):
            record.getMessage()
            Count.n += 1

    handler = Count(level=logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    handlers_before = (len(logger.handlers), len(logging.getLogger("samgpu_shim").handlers))
    try:
        for _ in range(300):
            p.predict(PC, PL)
        rss_warm = _rss_kb()
        for i in range(10_000):
            out = p.predict(PC, PL, as_numpy=(i % 10 == 0))
        rss_end = _rss_kb()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert Count.n == 10_300
    assert handlers_before == (len(logger.handlers) + 1, len(logging.getLogger("samgpu_shim").handlers))
    growth_mb = (rss_end - rss_warm) / 1024
    print(f"RSS after warm-up {rss_warm / 1024:.1f} MB, after 10,000 calls {rss_end / 1024:.1f} MB")
    assert growth_mb < 32, f"resident memory grew by {growth_mb:.1f} MB over 10,000 calls"
    assert isinstance(out[0], torch.Tensor)


def test_threads_with_their_own_predictors(tiny_sam):
    images = [synthetic_image(60, 80, seed=s) for s in range(4)]
    expected = []
    for img in images:
        p = SamPredictor(tiny_sam)
        p.set_image(img)
        expected.append(upstream(p, PC, PL))
    results = [None] * 4
    errors = []

    def work(i):
        try:
            p = SamPredictor(tiny_sam)
            p.set_image(images[i])
            for _ in range(10):
                results[i] = p.predict(PC, PL)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for exp, got in zip(expected, results):
        assert_equal_to_upstream(exp, got, torch.device("cpu"))


def test_shared_predictor_behind_a_lock_and_per_call_mode_does_not_leak(predictor):
    lock = threading.Lock()
    expected = upstream(predictor, PC, PL)
    seen = {"numpy": [], "tensor": []}
    errors = []

    def caller(as_numpy):
        try:
            for _ in range(15):
                with lock:
                    out = predictor.predict(PC, PL, as_numpy=as_numpy) if as_numpy else predictor.predict(PC, PL)
                seen["numpy" if as_numpy else "tensor"].append(out)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(flag,)) for flag in (True, False, True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(isinstance(o[0], np.ndarray) for o in seen["numpy"])
    assert all(isinstance(o[0], torch.Tensor) for o in seen["tensor"])
    for out in seen["tensor"]:
        assert_equal_to_upstream(expected, out, predictor.device)


def test_configuration_changes_while_calls_run(predictor):
    stop = threading.Event()
    errors = []

    def flipper():
        while not stop.is_set():
            samgpu_shim.configure(as_numpy=True)
            samgpu_shim.configure(as_numpy=False)
            samgpu_shim.configure(as_numpy=None)
            time.sleep(0.0005)  # let the callers run between flips

    def caller():
        try:
            for _ in range(20):
                assert isinstance(predictor.predict(PC, PL, as_numpy=False)[0], torch.Tensor)
                assert isinstance(predictor.predict(PC, PL, as_numpy=True)[0], np.ndarray)
                out = predictor.predict(PC, PL)  # either type, never a failure
                assert isinstance(out[0], (np.ndarray, torch.Tensor))
        except Exception as exc:
            errors.append(exc)

    f = threading.Thread(target=flipper)
    callers = [threading.Thread(target=caller) for _ in range(2)]
    f.start()
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    stop.set()
    f.join()
    assert errors == []


def test_predict_torch_raising_mid_call(tiny_sam, image):
    class Flaky(SamPredictor):
        fail = True

        def predict_torch(self, *args, **kwargs):
            if self.fail:
                raise RuntimeError("decoder exploded")
            return super().predict_torch(*args, **kwargs)

    p = Flaky(tiny_sam)
    p.set_image(image)
    for as_numpy in (False, True):
        with pytest.raises(RuntimeError, match="decoder exploded"):
            p.predict(PC, PL, as_numpy=as_numpy)
    p.fail = False
    assert_equal_to_upstream(upstream(p, PC, PL), p.predict(PC, PL), p.device)
    from samgpu_shim.gpu.sync_free import SYNC_FREE

    assert SYNC_FREE.get() is False  # the flag did not stay set after the failure


def test_failure_while_wrapping_leaves_nothing_half_installed(monkeypatch, caplog):
    samgpu_shim.unpatch()
    original_predict = SamPredictor.__dict__["predict"]
    real_targets = sam1.targets

    def explode(original):
        raise RuntimeError("cannot build wrapper")

    def broken(family):
        predict_target, embed_target = real_targets(family)[:2]
        return (predict_target, Target(**{**embed_target.__dict__, "make_wrapper": explode}))

    monkeypatch.setattr(sam1, "targets", broken)
    try:
        with caplog.at_level(logging.WARNING, logger="samgpu_shim"):
            samgpu_shim.patch()
        assert SamPredictor.__dict__["predict"] is original_predict  # the first wrapper was rolled back
        assert samgpu_shim.is_patched("segment-anything") is False
        assert any("could not patch segment-anything" in r.getMessage() for r in caplog.records)
    finally:
        samgpu_shim.unpatch()
        monkeypatch.undo()
        samgpu_shim.patch()
    assert hasattr(SamPredictor.__dict__["predict"], "__wrapped__")


def test_old_wrapt_is_refused_with_a_warning():
    proc = run_python(
        """
import sys, types
fake = types.ModuleType("wrapt"); fake.__version__ = "1.10.11"
sys.modules["wrapt"] = fake
import samgpu_shim, segment_anything.predictor as sp
print(samgpu_shim.is_patched(), hasattr(sp.SamPredictor.__dict__["predict"], "__wrapped__"))
"""
    )
    assert proc.stdout.split() == ["False", "False"]
    assert "wrapt 1.10.11 is too old" in proc.stderr


def test_deepcopy_and_pickle_of_predictor_and_outputs(predictor):
    twin = copy.deepcopy(predictor)
    assert_equal_to_upstream(upstream(predictor, PC, PL), twin.predict(PC, PL), twin.device)
    outputs = predictor.predict(PC, PL)
    restored = pickle.loads(pickle.dumps(outputs))
    assert all(torch.equal(a, b) for a, b in zip(outputs, restored))
    assert all(torch.equal(a, b) for a, b in zip(outputs, copy.deepcopy(outputs)))


def test_kpi_events_stay_cheap_when_nobody_listens(predictor, monkeypatch):
    monkeypatch.setattr(_kpi, "time", None)  # would raise if anything were timed or stamped
    predictor.predict(PC, PL)
