"""``to_numpy`` and ``json_default`` at the final result packet."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch

import samgpu_shim


def test_to_numpy_nested_keeps_container_types():
    Point = collections.namedtuple("Point", "x y")
    packet = {
        "masks": torch.ones(2, 3, dtype=torch.bool),
        "pair": (torch.tensor([1.5]), [torch.tensor(2), "label"]),
        "point": Point(torch.tensor(1.0), 3),
        "dd": collections.defaultdict(list, a=torch.zeros(1)),
        "arr": np.arange(3),
    }
    out = samgpu_shim.to_numpy(packet)
    assert isinstance(out["masks"], np.ndarray) and out["masks"].dtype == np.bool_
    assert isinstance(out["pair"], tuple) and isinstance(out["pair"][1], list)
    assert out["pair"][1][1] == "label"
    assert isinstance(out["point"], Point) and out["point"].x == 1.0 and type(out["point"].x) is float
    assert isinstance(out["dd"], collections.defaultdict) and out["dd"].default_factory is list
    assert out["arr"] is packet["arr"]
    assert isinstance(packet["masks"], torch.Tensor)  # input untouched


def test_to_numpy_detaches_and_handles_bfloat16():
    t = torch.ones(2, requires_grad=True) * 2
    assert samgpu_shim.to_numpy(t).tolist() == [2.0, 2.0]
    b = samgpu_shim.to_numpy(torch.tensor([1.5], dtype=torch.bfloat16))
    assert b.dtype == np.float32 and b.tolist() == [1.5]


def test_json_default():
    packet = {
        "score": torch.tensor(0.5),
        "bbox": torch.tensor([1, 2, 3, 4]),
        "np": np.array([[1, 2]]),
        "np_scalar": np.float32(0.25),
        "flag": np.bool_(True),
    }
    text = json.dumps(packet, default=samgpu_shim.json_default)
    assert json.loads(text) == {"score": 0.5, "bbox": [1, 2, 3, 4], "np": [[1, 2]], "np_scalar": 0.25, "flag": True}


def test_json_default_rejects_other_objects():
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        json.dumps(object(), default=samgpu_shim.json_default)


def test_the_error_it_fixes(predictor):
    masks, scores, _ = predictor.predict(np.array([[10, 10]]), np.array([1]))
    with pytest.raises(TypeError, match="not JSON serializable"):
        json.dumps({"scores": scores})
    assert len(json.loads(json.dumps({"scores": scores}, default=samgpu_shim.json_default))["scores"]) == 3


def test_pickling(predictor):
    import pickle

    from segment_anything import SamPredictor

    copy = pickle.loads(pickle.dumps(predictor))
    assert type(copy) is SamPredictor
    got = copy.predict(np.array([[10, 10]]), np.array([1]))
    assert torch.equal(got[0], predictor.predict(np.array([[10, 10]]), np.array([1]))[0])
    with pytest.raises(NotImplementedError):
        pickle.dumps(SamPredictor.predict)  # a wrapt proxy: documented limitation


def test_zero_dim_tensors_become_python_numbers():
    packet = samgpu_shim.to_numpy(
        {"score": torch.tensor(0.5), "area": torch.tensor(12), "hit": torch.tensor(True), "box": torch.arange(4)}
    )
    assert type(packet["score"]) is float and packet["score"] == 0.5
    assert type(packet["area"]) is int and type(packet["hit"]) is bool
    assert isinstance(packet["box"], np.ndarray) and packet["box"].shape == (4,)
    assert json.loads(json.dumps({k: v for k, v in packet.items() if k != "box"})) == {
        "score": 0.5, "area": 12, "hit": True
    }
    # bfloat16 scalars too
    assert samgpu_shim.to_numpy(torch.tensor(1.5, dtype=torch.bfloat16)) == 1.5
