"""Out of device memory for real, on CUDA: ``pytest -m gpu tests/gpu/test_faults_gpu.py``.

The memory is capped with ``torch.cuda.set_per_process_memory_fraction`` at
what the process holds (``tests/faults.py:memory_cap``), so that the next
allocation that needs a new segment fails in PyTorch's caching allocator
with a genuine ``torch.OutOfMemoryError``; 4K frames make sure the step
under test needs one (their float copies are ~100 MB). Each test checks
that the caller gets the error, that the predictor (or loop, or replica)
works again once the cap is lifted, with the same results as before, and
that the memory it holds afterwards is what it held before (no graph pool,
no cached buffer, no frame of the failed call left behind). Skipped without
CUDA.
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest
import torch
from faults import memory_cap, settle, take_cached

from prompts import PC, PL

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ROOT = Path(__file__).resolve().parents[2]
UHD = (2160, 3840)


@pytest.fixture(scope="module")
def device():
    return torch.device("cuda")


@pytest.fixture()
def predictor(device):
    from segment_anything import SamPredictor

    from samgpu_shim.tools.models import build_sam

    yield SamPredictor(build_sam("tiny", device=device))
    settle(device)


@pytest.fixture()
def frame(device):
    from samgpu_shim.tools.models import synthetic_image

    return torch.from_numpy(synthetic_image(*UHD, seed=1)).to(device)


@pytest.fixture()
def graphs():
    import samgpu_shim

    samgpu_shim.configure(cuda_graphs=True)
    yield samgpu_shim
    samgpu_shim.configure(cuda_graphs=None, graph_cache_size=8)
    samgpu_shim.clear_graphs()


def _same(a, b):
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _held(device):
    settle(device)
    return torch.cuda.memory_allocated(device)


def _has_oom(exc):
    while exc is not None:
        if isinstance(exc, torch.OutOfMemoryError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def test_out_of_memory_in_set_image(device, predictor, frame):
    predictor.set_image(frame)
    reference = tuple(t.clone() for t in predictor.predict(PC, PL))
    held = _held(device)
    for _ in range(3):  # a leak would grow with each round
        with memory_cap(device):
            with pytest.raises(torch.OutOfMemoryError):
                predictor.set_image(frame)  # the device resize's float copy (~100 MB) first
        assert _held(device) == held
        predictor.set_image(frame)
        _same(reference, predictor.predict(PC, PL))
        assert _held(device) == held


def test_out_of_memory_in_predict(device, predictor, frame):
    predictor.set_image(frame)
    reference = tuple(t.clone() for t in predictor.predict(PC, PL))
    held = _held(device)
    for _ in range(3):
        with memory_cap(device):
            with pytest.raises(torch.OutOfMemoryError):
                predictor.predict(PC, PL)  # masks at 2160x3840: a new segment
        assert _held(device) == held
        _same(reference, predictor.predict(PC, PL))  # same image, no set_image again
        assert _held(device) == held


def test_out_of_memory_in_graph_capture(device, predictor, frame, graphs):
    shim = graphs
    predictor.set_image(frame)
    shim.configure(cuda_graphs=False)
    reference = tuple(t.clone() for t in predictor.predict(PC, PL))
    shim.configure(cuda_graphs=True)
    # Another signature first (one point): graph mode's static copies of the
    # image features exist, so that what fails below is the capture itself.
    predictor.predict(PC[:1], PL[:1])
    held = _held(device)
    before = shim.graph_stats()
    with memory_cap(device):
        # A new signature: the capture (its warm-up on a side stream, then the
        # capture into a private pool) needs new segments; so does the eager
        # path it falls back to. The caller gets the error.
        with pytest.raises(torch.OutOfMemoryError):
            predictor.predict(PC, PL)
    after = shim.graph_stats()
    assert after["captures"] == before["captures"] and after["fallbacks"] == before["fallbacks"] + 1
    assert after["cached_graphs"] == before["cached_graphs"] and after["graph_bytes"] == before["graph_bytes"]
    assert _held(device) == held  # the failed capture's pool is gone
    # Memory free again: the signature whose capture failed stays on the eager
    # path (logged once) and gives the same values ...
    _same(reference, predictor.predict(PC, PL))
    assert shim.graph_stats()["captures"] == before["captures"]
    # ... until the graphs are cleared: then it is captured again.
    shim.clear_graphs()
    _same(reference, predictor.predict(PC, PL))
    _same(reference, predictor.predict(PC, PL))
    assert shim.graph_stats()["captures"] == before["captures"] + 1


def test_out_of_memory_around_a_replay(device, predictor, frame, graphs):
    shim = graphs
    predictor.set_image(frame)
    reference = tuple(t.clone() for t in predictor.predict(PC, PL))  # captured here
    captures = shim.graph_stats()["captures"]
    held = _held(device)
    with memory_cap(device):
        # The replay itself allocates nothing; the caller's copies of its
        # outputs (masks at 2160x3840, 25 MB) do. The allocator may serve that
        # copy from free space it kept in a split segment (on the H200, run 36,
        # it did, and nothing ran out): that space is taken first, so that the
        # copy needs a new segment.
        taken = take_cached(device, reference[0].numel() * reference[0].element_size())
        with pytest.raises(torch.OutOfMemoryError):
            predictor.predict(PC, PL)
        del taken
    assert _held(device) == held
    _same(reference, predictor.predict(PC, PL))
    stats = shim.graph_stats()
    assert stats["captures"] == captures and stats["cached_graphs"] >= 1  # the same graph, replayed


def test_out_of_memory_in_the_fast_encoders_compile(device):
    # vit_b, whose encoder needs far more than its input's preprocessing: with
    # 64 MB of headroom the 1024x1024 frame is normalised and padded (~25 MB),
    # then the compiled encoder's first call (compile, autotuning, run) runs out.
    from segment_anything import SamPredictor

    import samgpu_shim
    from samgpu_shim.tools.models import build_sam, synthetic_image

    pytest.importorskip("triton", reason="torch.compile needs triton on CUDA")
    predictor = SamPredictor(build_sam("vit_b", device=device))
    square = torch.from_numpy(synthetic_image(1024, 1024, seed=3)).to(device)  # no resize
    samgpu_shim.configure(encoder="fast")
    try:
        predictor.set_image(square)
        fast = predictor.features.float().clone()
        samgpu_shim.configure(encoder="fast-compile")
        held = _held(device)
        with memory_cap(device, headroom_bytes=64 * 2**20):
            with pytest.raises(Exception) as failure:
                predictor.set_image(square)
        # Out of memory, possibly wrapped by the compiler with the cause kept.
        assert _has_oom(failure.value), repr(failure.value)
        where = sorted({str(f.path).split("/torch/")[-1].split("/")[0] for f in failure.traceback
                        if "/torch/" in str(f.path)})
        print(f"\nout of memory under fast-compile: {type(failure.value).__name__}, through torch/{where}")
        del failure
        assert _held(device) <= held  # nothing of the failed call kept
        predictor.set_image(square)  # compiled (again, if the first attempt did not finish) and run
        error = (predictor.features.float() - fast).norm() / fast.norm()
        assert error < 0.05, f"compiled encoder differs from the fast one by {error:.3f}"
        # The compiler may keep a few constants of its own; a leaked activation would be far more.
        assert _held(device) <= held + 4 * 2**20
    finally:
        samgpu_shim.configure(encoder=None)
        torch._dynamo.reset()


# -- the loop and the replica ---------------------------------------------------------


def test_the_igt_loop_counts_out_of_memory_frames_and_goes_on(device, predictor):
    pytest.importorskip("pyigtl", reason="pyigtl is not installed")
    sys.path.insert(0, str(ROOT / "examples" / "igt"))
    from orchestrator import Orchestrator
    from source import FrameServer

    server = FrameServer(fps=30, frames=12, size=(1080, 1920), lockstep=True, lockstep_timeout=5.0)
    loop = Orchestrator(predictor, port=server.port, seed_point=(960.0, 540.0)).start()
    try:
        assert server.wait_connected(10)
        server.stream(0, 4)
        held = _held(device)
        with memory_cap(device):
            server.stream(4, 2)  # 1080x1920 frames: their float copies need new segments
        server.stream(6, 6)
        server.wait_answers(timeout=5)
    finally:
        loop.stop()
        server.close()
    c = loop.counters
    assert c.error_ids == [4, 5] and c.errors_by_type == {"OutOfMemoryError": 2}
    assert set(server.record.answered()) == set(range(12)) - {4, 5}
    assert _held(device) == held


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])  # JPEG: decoded on the GPU (nvjpeg); PNG: by PIL on the host
def test_a_replica_answers_503_for_out_of_memory_and_keeps_serving(device, predictor, fmt):
    sys.path.insert(0, str(ROOT / "examples" / "serve"))
    import base64
    import json

    import segment
    from PIL import Image

    from samgpu_shim import KPI_LOGGER_NAME
    from samgpu_shim.tools.models import synthetic_image

    buffer = io.BytesIO()
    Image.fromarray(synthetic_image(*UHD, seed=2)).save(buffer, fmt)
    body = json.dumps({"image": base64.b64encode(buffer.getvalue()).decode(), "point_coords": [[1900, 1000]],
                       "point_labels": [1]}).encode()
    kpi = logging.getLogger(KPI_LOGGER_NAME)
    level = kpi.level
    replica = segment.Replica(predictor, device, "gpu0")
    try:
        item = replica.parse(body)
        first = replica.run([item])[0]
        assert "error" not in first, first
        held = _held(device)
        after = []
        for _ in range(5):  # a request's leak grows with each round
            with memory_cap(device):
                failed = replica.run([item])[0]
            assert failed["status"] == 503 and failed["retry"] and "out of device memory" in failed["error"], failed
            replica.check_health()  # out of memory is not a reason to be replaced
            again = replica.run([item])[0]
            assert {k: again[k] for k in ("score", "area_px", "bbox_xyxy", "mask_rle")} == \
                {k: first[k] for k in ("score", "area_px", "bbox_xyxy", "mask_rle")}
            after.append(_held(device))
        # Nothing of a failed request is kept (pytest keeps each log record: run
        # 36 found the frame and its float copy held through the exception in
        # one). A one-time allocation far smaller than the 25 MB frame may
        # appear with the first failure; after it nothing may grow.
        mb = [round((a - held) / 2**20, 2) for a in after]
        assert after[0] - held <= 4 * 2**20 and len(set(after)) == 1, f"MB more than before, per round: {mb}"
    finally:
        kpi.removeHandler(replica.events)
        kpi.setLevel(level)


def test_memory_cap_is_lifted_after_its_block(device):
    # The cap must not outlive its block, or every later test would fail.
    with memory_cap(device):
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(512 * 2**20, dtype=torch.uint8, device=device)
    big = torch.empty(512 * 2**20, dtype=torch.uint8, device=device)  # raises if the cap stayed
    del big
