"""One slower check on the real vit_b architecture (random weights)."""

from __future__ import annotations

import pytest
from segment_anything import SamPredictor

from samgpu_shim.syncs import SyncProneOps
from samgpu_shim.tools.models import build_sam, synthetic_image

from conftest import assert_equal_to_upstream, assert_same_arrays, upstream
from prompts import PROMPT_MIXES


@pytest.mark.slow
def test_vit_b_contract():
    sam = build_sam("vit_b", seed=0)
    assert sum(p.numel() for p in sam.parameters()) > 90_000_000
    p = SamPredictor(sam)
    p.set_image(synthetic_image(240, 320, seed=2))
    for mix in ("point_multimask", "everything", "return_logits"):
        args, kwargs = PROMPT_MIXES[mix]
        expected = upstream(p, *args, **kwargs)
        with SyncProneOps() as ops:
            got = p.predict(*args, **kwargs)
        assert ops.calls == []
        assert_equal_to_upstream(expected, got, p.device)
        for exp, out in zip(expected, p.predict(*args, **kwargs, as_numpy=True)):
            assert_same_arrays(exp, out)
