"""The benchmark's two frame pipelines produce the same packet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from samgpu_shim.syncs import SyncProneOps
from samgpu_shim.tools.pipeline import packet_numpy, packet_torch

from conftest import upstream
from prompts import PC, PL


def _same(a: str, b: str) -> None:
    pa, pb = json.loads(a), json.loads(b)
    for key in ("mask_index", "area_px", "bbox_xyxy"):
        assert pa[key] == pb[key]
    assert pa["score"] == pytest.approx(pb["score"], abs=1e-6)
    if pa["centroid_xy"] is None:
        assert pb["centroid_xy"] is None
    else:
        assert pa["centroid_xy"] == pytest.approx(pb["centroid_xy"], abs=1e-3)


def test_packets_agree_on_sam_output(predictor):
    _same(packet_numpy(*upstream(predictor, PC, PL)[:2]), packet_torch(*predictor.predict(PC, PL)[:2]))


@pytest.mark.parametrize("seed", range(4))
def test_packets_agree_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((3, 37, 53)) > rng.uniform(0.3, 0.99)
    scores = rng.random(3).astype(np.float32)
    _same(packet_numpy(masks, scores), packet_torch(torch.as_tensor(masks), torch.as_tensor(scores)))


def test_empty_mask():
    masks = np.zeros((3, 8, 9), bool)
    scores = np.array([0.1, 0.5, 0.2], np.float32)
    _same(packet_numpy(masks, scores), packet_torch(torch.as_tensor(masks), torch.as_tensor(scores)))
    assert json.loads(packet_numpy(masks, scores))["bbox_xyxy"] is None


def test_torch_packet_has_one_host_copy():
    masks = torch.rand(3, 20, 30) > 0.5
    with SyncProneOps() as ops:
        packet_torch(masks, torch.rand(3))
    assert ops.calls == ["tolist"]  # one copy to the host, read at once
