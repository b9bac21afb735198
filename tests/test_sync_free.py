"""CPU guards for the zero-sync promise (the GPU suite proves it on CUDA)."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.prompt_encoder import PromptEncoder

import samgpu_shim
from samgpu_shim.gpu.sync_free import embed_points_sync_free
from samgpu_shim.syncs import SyncProneOps

from conftest import upstream
from prompts import PC, PL, PROMPT_MIXES


@pytest.mark.parametrize("mix", sorted(PROMPT_MIXES))
def test_gpu_mode_calls_no_sync_prone_op(predictor, mix):
    args, kwargs = PROMPT_MIXES[mix]
    with SyncProneOps() as ops:
        predictor.predict(*args, **kwargs)
    assert ops.calls == []


def test_detector_sees_upstreams_syncs(predictor):
    # The detector must be able to fail: upstream's 6 mask reads/writes in
    # _embed_points and its 3 device-to-host copies.
    with SyncProneOps() as ops:
        upstream(predictor, PC, PL)
    assert ops.calls.count("__getitem__[bool]") == 3
    assert ops.calls.count("__setitem__[bool]=tensor") == 3
    assert ops.calls.count("cpu") == 3


def test_tensor_feedback_loop_calls_no_sync_prone_op(predictor):
    masks, scores, logits = predictor.predict(PC, PL)
    with SyncProneOps() as ops:
        best = logits[scores.argmax(dim=0, keepdim=True)]  # (1, 256, 256), stays on the device
        predictor.predict(torch.as_tensor(PC), torch.as_tensor(PL), mask_input=best)
    assert ops.calls == []


def test_detector_flags_scalar_tensor_index(predictor):
    # ``logits[scores.argmax()]`` reads the index on the host: a sync on CUDA
    # (seen on an H100), so the CPU guard must flag it too.
    masks, scores, logits = predictor.predict(PC, PL)
    with SyncProneOps() as ops:
        logits[scores.argmax()][None]
    assert ops.calls == ["__getitem__[0-d tensor]"]


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_sync_free_embed_points_is_bit_identical(tiny_sam, pad, seed):
    encoder = tiny_sam.prompt_encoder
    original = samgpu_shim.get_original(PromptEncoder, "_embed_points")
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(3, 7, 2, generator=gen) * 1024
    # Labels outside {-1, 0, 1} (2, 3) must be left alone, as upstream does.
    labels = torch.randint(-1, 4, (3, 7), generator=gen).to(torch.int)
    expected = original(encoder, points, labels, pad)
    got = embed_points_sync_free(encoder, points, labels, pad)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))  # bits, signed zeros too


def test_numpy_mode_runs_upstreams_embed_points(predictor, monkeypatch):
    import samgpu_shim.families.sam1 as sam1

    calls = []
    real = sam1.embed_points_sync_free
    monkeypatch.setattr(sam1, "embed_points_sync_free", lambda *a, **k: calls.append(1) or real(*a, **k))
    # The wrapper resolved the function when it was built; rebuild it.
    samgpu_shim.unpatch()
    samgpu_shim.patch()
    predictor.predict(PC, PL, as_numpy=True)
    assert calls == []
    predictor.predict(PC, PL)
    assert calls == [1]
    samgpu_shim.unpatch()
    monkeypatch.undo()
    samgpu_shim.patch()
