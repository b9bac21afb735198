"""Shared fixtures: real SAM models with random weights, upstream references."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any, Dict

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

import samgpu_shim
from samgpu_shim.tools.models import build_sam, synthetic_image

IMAGE_HW = (120, 160)

# Under pytest-xdist each worker is a process of its own: one intra-op thread
# each, or the workers' thread pools fight over the cores (seen here: a
# 10,000-call test ran 7x slower with two workers of two threads each).
_XDIST = "PYTEST_XDIST_WORKER" in os.environ
if _XDIST:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sam():
    return build_sam("tiny", seed=0)


@pytest.fixture(scope="session")
def image():
    return synthetic_image(*IMAGE_HW, seed=1)


@pytest.fixture()
def predictor(tiny_sam, image):
    p = SamPredictor(tiny_sam)
    p.set_image(image)
    return p


@pytest.fixture(autouse=True)
def _clean_config():
    """Every test starts patched, with no runtime override."""
    if not samgpu_shim.is_patched():
        samgpu_shim.patch()
    samgpu_shim.configure(as_numpy=None, cuda_graphs=None, graph_cache_size=8, strict=None, transfer_guard="off")
    yield
    samgpu_shim.configure(as_numpy=None, cuda_graphs=None, graph_cache_size=8, strict=None, transfer_guard="off")
    if not samgpu_shim.is_patched():
        samgpu_shim.patch()


def upstream(predictor: Any, *args: Any, **kwargs: Any):
    """Call upstream's own ``predict`` function, bypassing the wrapper."""
    original = samgpu_shim.get_original(SamPredictor, "predict")
    return original(predictor, *args, **kwargs)


def run_python(code: str, env: Dict[str, str] | None = None, check: bool = True):
    """Run ``code`` in a fresh interpreter (import-time behaviour)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SAMGPU_")}
    if _XDIST:
        full_env.setdefault("OMP_NUM_THREADS", "1")
    env = dict(env or {})
    if "SAMGPU_TRANSFER_GUARD" not in env and "SAMGPU_STRICT" not in env:
        # tests written for plain tensors; the guard's own tests set it
        env["SAMGPU_TRANSFER_GUARD"] = "off"
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_same_arrays(expected: np.ndarray, got: np.ndarray) -> None:
    """Identical type, dtype, shape, bytes and flags."""
    assert type(got) is type(expected)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    assert got.strides == expected.strides
    assert got.flags["C_CONTIGUOUS"] == expected.flags["C_CONTIGUOUS"]
    assert got.flags["WRITEABLE"] == expected.flags["WRITEABLE"]
    assert got.flags["OWNDATA"] == expected.flags["OWNDATA"]
    assert got.tobytes() == expected.tobytes()


def assert_equal_to_upstream(expected: tuple, got: tuple, device: torch.device) -> None:
    """GPU-mode outputs: tensors on ``device``, no grad, same values as numpy."""
    assert len(got) == 3
    for exp, out in zip(expected, got):
        assert isinstance(out, torch.Tensor)
        assert out.device == device
        assert not out.requires_grad and out.grad_fn is None
        back = out.cpu().numpy()
        assert back.dtype == exp.dtype
        assert back.shape == exp.shape
        assert back.tobytes() == exp.tobytes()
