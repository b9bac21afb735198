"""Running the rows of samgpu_shim/ops.py on real results, and comparing outcomes.

Shared by the CPU tests (tests/test_transfer_guard.py) and the GPU suite
(tests/gpu/test_guard_gpu.py), so that the CUDA column is checked with the
same code as the CPU one.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from samgpu_shim.ops import OPS, Op

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # pragma: no cover - the test extra has it
    plt = None
try:
    from scipy import ndimage
except ImportError:  # pragma: no cover
    ndimage = None
from PIL import Image

# Rows whose sample needs a package the suite does not install.
RUNNABLE = [op for op in OPS if op.sample and not op.sample.startswith("cv2")
            and not (op.sample.startswith("ndimage") and ndimage is None)
            and not (op.sample.startswith("plt") and plt is None)]


def namespace(results: Tuple[Any, Any, Any]) -> Dict[str, Any]:
    m, s, lg = results
    h, w = m.shape[-2:]
    return {"np": np, "json": json, "torch": torch, "Image": Image, "plt": plt, "ndimage": ndimage,
            "m": m, "s": s, "lg": lg, "img": np.zeros((h, w)), "img3": np.zeros((2, h, w)),
            "path": os.path.join(tempfile.mkdtemp(), "x.npy")}


def run(op: Op, results: Tuple[Any, Any, Any]) -> Tuple[str, Any]:
    """("raises", exception) or ("works", (value, img, img3)): the mutated arrays count too."""
    ns = namespace(results)
    try:
        value = eval(op.sample, ns)  # noqa: S307 - our own table's samples
    except Exception as exc:  # the outcome is what is compared
        return "raises", exc
    finally:
        if plt is not None:
            plt.close("all")
    return "works", (value, ns["img"], ns["img3"])


def _host(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, (tuple, list)):
        return tuple(_host(v) for v in x)
    return x


def same(a: Any, b: Any, exact_types: bool = True) -> bool:
    """Equal values; with ``exact_types`` the same Python/numpy types and dtypes as well."""
    if not exact_types:
        a, b = _host(a), _host(b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if exact_types and type(a) is not type(b):
            return False
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, np.generic) or isinstance(b, np.generic):
        if exact_types and type(a) is not type(b):
            return False
        return np.asarray(a).dtype == np.asarray(b).dtype and bool(np.asarray(a) == np.asarray(b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y, exact_types) for x, y in zip(a, b))
    if isinstance(a, Image.Image) and isinstance(b, Image.Image):
        return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()
    if plt is not None and hasattr(a, "get_array") and hasattr(b, "get_array"):
        return same(np.asarray(a.get_array()), np.asarray(b.get_array()), exact_types=False)
    if exact_types and type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    return a == b


def classify(op: Op, plain: Tuple[Any, Any, Any], reference: Tuple[Any, Any, Any]) -> str:
    """What ``op`` does on tensor results, against the numpy results: works, raises or differs."""
    got, value = run(op, plain)
    if got == "raises":
        return "raises"
    if op.numpy != "works":
        return "works"  # tensor-only code (.cpu(), .numpy()): nothing of numpy's to compare with
    want, expected = run(op, reference)
    assert want == "works", f"{op.name}: the sample fails on numpy results: {expected!r}"
    return "works" if same(value, expected, exact_types=False) else "differs"


def outcome_equals_numpy(op: Op, guarded: Tuple[Any, Any, Any], reference: Tuple[Any, Any, Any]) -> Optional[str]:
    """None when the guarded outcome is exactly numpy mode's (types included), else why not."""
    got, value = run(op, guarded)
    want, expected = run(op, reference)
    if op.numpy != "works":
        # tensor-only code (.numpy()): what it gives on numpy mode's values held as CPU tensors
        want, expected = run(op, tuple(torch.from_numpy(np.ascontiguousarray(r)) for r in reference))
    if got != want:
        return f"{got} ({value!r}) where numpy mode {want}"
    if not same(value, expected):
        return f"{value!r} != numpy mode's {expected!r}"
    return None
