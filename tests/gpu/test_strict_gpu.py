"""Strict mode proven against CUDA: every operation of strict_ops behaves on
real CUDA results as declared, and as strict mode makes it behave on a CPU.

Writes the table of outcomes to $SAMGPU_STRICT_TABLE when set (docs/results).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

import samgpu_shim
from samgpu_shim.tools.models import build_sam, synthetic_image

from strict_ops import OPS, outcome

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

POINTS = np.array([[40.0, 50.0], [90.0, 70.0]])
LABELS = np.array([1, 0])


def _results(device):
    p = SamPredictor(build_sam("tiny", seed=0, device=device))
    p.set_image(synthetic_image(120, 160, seed=1))
    return p.predict(point_coords=POINTS, point_labels=LABELS)


def test_strict_cpu_matches_cuda_for_every_operation():
    samgpu_shim.configure(transfer_guard="off")  # plain tensors: what CUDA itself does
    cuda = _results("cuda")
    assert cuda[0].is_cuda
    samgpu_shim.configure(transfer_guard=None, strict=True)
    try:
        strict = _results("cpu")
    finally:
        samgpu_shim.configure(strict=None)
    samgpu_shim.configure(transfer_guard="off")
    plain = _results("cpu")
    rows = []
    for name, declared, fn in OPS:
        on_cuda = outcome(fn, cuda)
        # the guard acts where the conversion happens: strict (disallow) in force then
        samgpu_shim.configure(transfer_guard="disallow")
        on_strict = outcome(fn, strict)
        samgpu_shim.configure(transfer_guard="off")
        on_cpu = outcome(fn, plain)
        rows.append({"operation": name, "declared": declared, "cuda": on_cuda, "strict_cpu": on_strict,
                     "plain_cpu": on_cpu})
    path = os.environ.get("SAMGPU_STRICT_TABLE")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                       "numpy": np.__version__, "rows": rows}, f, indent=1)
    for row in rows:
        assert row["cuda"][0] == row["declared"], row
        assert row["strict_cpu"][0] == row["cuda"][0], row
        if row["cuda"][0] == "raises":
            # the same class of error, so an application's except clause sees it too
            strict_cls = row["strict_cpu"][1]
            assert row["cuda"][1] == strict_cls or (
                row["cuda"][1] == "TypeError" and strict_cls in ("StrictConversionError", "TransferGuardError")
            ) or (
                row["cuda"][1] == "AttributeError" and strict_cls == "TransferGuardAttributeError"
            ), row
