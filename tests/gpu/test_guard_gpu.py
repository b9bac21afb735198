"""The transfer guard on real CUDA results: the table's CUDA column, each mode, no syncs.

Writes the observed table to $SAMGPU_GUARD_TABLE when set (docs/results).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from guard_cases import RUNNABLE, classify, outcome_equals_numpy, run
from segment_anything import SamPredictor
from test_transfer_guard import _assert_same_packet, legacy_postprocess

import samgpu_shim
from samgpu_shim import ops
from samgpu_shim.gpu.guard import GuardedTensor, TransferGuardError
from samgpu_shim.syncs import count_cuda_syncs
from samgpu_shim.tools.models import build_sam, synthetic_image
from samgpu_shim.tools.pipeline import packet_torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

POINTS = np.array([[40.0, 50.0], [90.0, 70.0]])
LABELS = np.array([1, 0])


@pytest.fixture(scope="module")
def cuda_predictor():
    p = SamPredictor(build_sam("tiny", seed=0, device="cuda"))
    p.set_image(synthetic_image(120, 160, seed=1))
    return p


def _predict(p, **kw):
    return p.predict(point_coords=POINTS, point_labels=LABELS, **kw)


def test_cuda_column_and_guard_for_every_row(cuda_predictor):
    reference = _predict(cuda_predictor, as_numpy=True)
    samgpu_shim.configure(transfer_guard="off")
    plain = _predict(cuda_predictor)
    assert plain[0].is_cuda and type(plain[0]) is torch.Tensor
    rows = []
    for op in RUNNABLE:
        row = {"operation": op.name, "declared_cuda": op.cuda, "cuda": classify(op, plain, reference),
               "guard": op.guard}
        samgpu_shim.configure(transfer_guard="allow")
        guarded = _predict(cuda_predictor)
        if op.guard == ops.COPIES:
            row["allow"] = outcome_equals_numpy(op, guarded, reference) or "equals numpy mode"
        else:
            row["allow"] = run(op, guarded)[0]
        samgpu_shim.configure(transfer_guard="disallow")
        got, value = run(op, _predict(cuda_predictor))
        row["disallow"] = type(value).__name__ if got == "raises" else "works"
        rows.append(row)
    path = os.environ.get("SAMGPU_GUARD_TABLE")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                       "numpy": np.__version__, "rows": rows}, f, indent=1)
    for row in rows:
        assert row["cuda"] == row["declared_cuda"], row
        if row["guard"] == ops.COPIES:
            assert row["allow"] == "equals numpy mode", row
            assert row["disallow"] in ("TransferGuardError", "TransferGuardAttributeError"), row
        else:
            assert not row["disallow"].startswith("TransferGuard"), row


def test_legacy_chain_on_cuda_equals_numpy_mode(cuda_predictor):
    reference = _predict(cuda_predictor, as_numpy=True)
    samgpu_shim.configure(transfer_guard="log")
    got = _predict(cuda_predictor)
    assert isinstance(got[0], GuardedTensor) and got[0].is_cuda
    _assert_same_packet(legacy_postprocess(*got), legacy_postprocess(*reference))
    samgpu_shim.configure(transfer_guard="disallow")
    with pytest.raises(TransferGuardError):
        legacy_postprocess(*_predict(cuda_predictor))


@pytest.mark.parametrize("how", ["log", "allow", "disallow"])
@pytest.mark.parametrize("graphs", [False, True])
def test_no_sync_where_nothing_converts(cuda_predictor, how, graphs):
    samgpu_shim.configure(transfer_guard=how, cuda_graphs=graphs)
    prompts = (torch.tensor(POINTS, device="cuda", dtype=torch.float32), torch.tensor(LABELS, device="cuda"))

    def frame():
        masks, scores, logits = cuda_predictor.predict(point_coords=prompts[0], point_labels=prompts[1])
        index = scores.argmax(dim=0, keepdim=True)
        best = masks.index_select(0, index)[0]
        area = best.sum(dtype=torch.float32)
        return area + logits.sigmoid().mean() + (best.float() * 255).amax()

    for _ in range(3):
        frame()  # warm: captures in graph mode
    torch.cuda.synchronize()
    syncs, out = count_cuda_syncs(frame)
    assert syncs == 0
    assert isinstance(out, GuardedTensor)


def test_graph_mode_results_are_guarded_and_equal(cuda_predictor):
    reference = _predict(cuda_predictor, as_numpy=True)
    samgpu_shim.configure(transfer_guard="log", cuda_graphs=True)
    for _ in range(3):
        got = _predict(cuda_predictor)
    assert all(isinstance(t, GuardedTensor) for t in got)
    for exp, out in zip(reference, got):
        assert np.array_equal(np.asarray(out), exp)
    assert packet_torch(got[0], got[1]) == packet_torch(*(torch.as_tensor(r, device="cuda") for r in reference[:2]))
