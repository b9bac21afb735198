"""GPU suite: run on a CUDA machine with ``pytest -m gpu tests/gpu``.

Every test here is skipped cleanly without CUDA.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

import samgpu_shim
from samgpu_shim.syncs import count_cuda_syncs, forbid_syncs
from samgpu_shim.tools.models import build_sam, synthetic_image

from conftest import assert_equal_to_upstream, upstream
from prompts import PC, PL, PROMPT_MIXES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def gpu_predictor():
    p = SamPredictor(build_sam("tiny", device="cuda"))
    p.set_image(synthetic_image(1080, 1920, seed=1))
    torch.cuda.synchronize()
    return p


def _strict(fn):
    with forbid_syncs():
        return fn()


@pytest.mark.parametrize("mix", sorted(PROMPT_MIXES))
def test_no_sync_and_equal_to_upstream(gpu_predictor, mix):
    args, kwargs = PROMPT_MIXES[mix]
    gpu_predictor.predict(*args, **kwargs)  # warm (allocator, pinned pool)
    got = _strict(lambda: gpu_predictor.predict(*args, **kwargs))
    assert count_cuda_syncs(lambda: gpu_predictor.predict(*args, **kwargs))[0] == 0
    assert_equal_to_upstream(upstream(gpu_predictor, *args, **kwargs), got, gpu_predictor.device)


def test_scalar_tensor_index_syncs(gpu_predictor):
    # Documents the caller-side trap the CPU detector flags.
    masks, scores, logits = gpu_predictor.predict(PC, PL)
    assert count_cuda_syncs(lambda: logits[scores.argmax()])[0] >= 1
    assert count_cuda_syncs(lambda: logits[scores.argmax(dim=0, keepdim=True)])[0] == 0


def test_upstream_syncs_are_seen(gpu_predictor):
    # The detector must be able to fail on this machine; and the README's
    # figure for one point is exactly 11.
    upstream(gpu_predictor, PC[:1], PL[:1])
    n, _ = count_cuda_syncs(lambda: upstream(gpu_predictor, PC[:1], PL[:1]))
    assert n == 11


def test_kpi_path_adds_no_sync(gpu_predictor):
    """A handler formatting every event, device time on: still no host sync."""
    import logging

    class Formatting(logging.Handler):
        def emit(self, record):
            self.format(record)

    logger = logging.getLogger(samgpu_shim.KPI_LOGGER_NAME)
    handler = Formatting(level=logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    samgpu_shim.configure(kpi_device_time=True)
    try:
        gpu_predictor.predict(PC, PL)
        n, _ = count_cuda_syncs(lambda: [gpu_predictor.predict(PC, PL) for _ in range(5)])
        assert n == 0
    finally:
        samgpu_shim.configure(kpi_device_time=None)
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_device_tensor_prompts_and_feedback_loop(gpu_predictor):
    coords = torch.as_tensor(PC, device="cuda")
    labels = torch.as_tensor(PL, device="cuda")
    masks, scores, logits = gpu_predictor.predict(coords, labels)

    def refine():
        # argmax(keepdim=True) keeps the index on the device; logits[scores.argmax()]
        # would read it on the host (a sync in the caller's code, not the shim's).
        best = logits[scores.argmax(dim=0, keepdim=True)]
        return gpu_predictor.predict(coords, labels, mask_input=best, multimask_output=False)

    got = _strict(refine)
    exp_m, exp_s, exp_l = upstream(gpu_predictor, PC, PL)
    expected = upstream(gpu_predictor, PC, PL, mask_input=exp_l[exp_s.argmax()][None], multimask_output=False)
    assert_equal_to_upstream(expected, got, gpu_predictor.device)


def test_numpy_mode_unchanged_on_gpu(gpu_predictor):
    expected = upstream(gpu_predictor, PC, PL)
    got = gpu_predictor.predict(PC, PL, as_numpy=True)
    for e, g in zip(expected, got):
        assert isinstance(g, np.ndarray) and g.tobytes() == e.tobytes()


def test_consumer_on_another_stream(gpu_predictor):
    expected = upstream(gpu_predictor, PC, PL)
    side = torch.cuda.Stream()
    for _ in range(5):
        masks, scores, logits = gpu_predictor.predict(PC, PL)
        event = samgpu_shim.ready_event(masks, scores, logits)
        with torch.cuda.stream(side):
            event.wait(side)
            area = masks.sum(dim=(1, 2))
            logits.record_stream(side)
        side.synchronize()
        assert area.cpu().numpy().tolist() == expected[0].sum(axis=(1, 2)).tolist()


def test_consumer_in_another_thread(gpu_predictor):
    expected = upstream(gpu_predictor, PC, PL)
    masks, scores, logits = gpu_predictor.predict(PC, PL)
    event = samgpu_shim.ready_event(masks)
    seen = {}

    def consume():
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            event.wait(stream)
            seen["area"] = masks.sum(dim=(1, 2)).cpu().numpy().tolist()

    t = threading.Thread(target=consume)
    t.start()
    t.join()
    assert seen["area"] == expected[0].sum(axis=(1, 2)).tolist()


def test_vit_h_architecture():
    p = SamPredictor(build_sam("vit_h", device="cuda"))
    p.set_image(synthetic_image(1080, 1920, seed=3))
    args, kwargs = PROMPT_MIXES["everything"]
    p.predict(*args, **kwargs)
    got = _strict(lambda: p.predict(*args, **kwargs))
    assert_equal_to_upstream(upstream(p, *args, **kwargs), got, p.device)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices; this machine has fewer")
def test_predictor_on_second_device_while_current_is_first():
    torch.cuda.set_device(0)
    p = SamPredictor(build_sam("tiny", device="cuda:1"))
    p.set_image(synthetic_image(240, 320, seed=4))
    p.predict(PC, PL)
    got = _strict(lambda: p.predict(PC, PL))
    assert got[0].device == torch.device("cuda:1")
    assert_equal_to_upstream(upstream(p, PC, PL), got, torch.device("cuda:1"))


def test_cpu_predictor_on_a_cuda_machine_stays_on_cpu():
    p = SamPredictor(build_sam("tiny"))
    p.set_image(synthetic_image(60, 80))
    got = p.predict(PC, PL)
    assert got[0].device.type == "cpu"
    assert_equal_to_upstream(upstream(p, PC, PL), got, torch.device("cpu"))


def test_device_time_is_collected_without_syncs(gpu_predictor):
    samgpu_shim.reset_stats()
    samgpu_shim.configure(kpi_device_time=True)
    try:
        n, _ = count_cuda_syncs(lambda: [gpu_predictor.predict(PC, PL) for _ in range(5)])
        assert n == 0
        torch.cuda.synchronize()
        n, stats = count_cuda_syncs(samgpu_shim.stats)
        assert n == 0
    finally:
        samgpu_shim.configure(kpi_device_time=None)
    site = stats["call_sites"][0]
    assert site["device_ms"]["n"] == 5 and site["device_ms"]["p50"] > 0
    assert stats["by_device"] == {str(gpu_predictor.device): 5}
