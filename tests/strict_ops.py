"""Operations client code applies to predict's results, with what CUDA does.

Shared by the CPU strict-mode tests (``SAMGPU_STRICT=1`` on a CPU predictor)
and the GPU suite (real CUDA results): the proof that strict mode on a CPU
behaves as CUDA does. Each entry: name, what CUDA does ("raises" or "works"),
and a function of (masks, scores, logits).
"""

from __future__ import annotations

import json
from typing import Any, Callable, List, Tuple

import numpy as np
import torch

import samgpu_shim


def _ops() -> List[Tuple[str, str, Callable[[Any, Any, Any], Any]]]:
    ops: List[Tuple[str, str, Callable[[Any, Any, Any], Any]]] = [
        # implicit conversions: work on CPU tensors, raise on CUDA
        ("np.asarray", "raises", lambda m, s, lg: np.asarray(m)),
        ("np.array", "raises", lambda m, s, lg: np.array(m)),
        ("np.array(list of results)", "raises", lambda m, s, lg: np.array([m[0], m[0]])),
        ("np.stack", "raises", lambda m, s, lg: np.stack([m[0], m[0]])),
        ("np.concatenate", "raises", lambda m, s, lg: np.concatenate([lg[0], lg[0]])),
        ("np.argmax", "raises", lambda m, s, lg: np.argmax(s)),
        ("np.where", "raises", lambda m, s, lg: np.where(m[0])),
        ("np.count_nonzero", "raises", lambda m, s, lg: np.count_nonzero(m)),
        ("np.uint8", "raises", lambda m, s, lg: np.uint8(m)),
        ("ndarray[mask]", "raises", lambda m, s, lg: np.zeros(m.shape[-2:])[m[0]]),
        ("ndarray[mask] = v", "raises", lambda m, s, lg: np.zeros(m.shape[-2:]).__setitem__(m[0], 1.0)),
        ("ndarray[i] = mask", "raises", lambda m, s, lg: np.zeros((2, *m.shape[-2:])).__setitem__(0, m[0])),
        ("mask * ndarray", "raises", lambda m, s, lg: m[0] * np.ones(m.shape[-2:])),
        (".numpy()", "raises", lambda m, s, lg: m.numpy()),
        (".detach().numpy()", "raises", lambda m, s, lg: lg.detach().numpy()),
        # raise on any tensor
        (".astype", "raises", lambda m, s, lg: m.astype(np.uint8)),
        ("json.dumps", "raises", lambda m, s, lg: json.dumps({"score": s[0]})),
        ("torch.from_numpy", "raises", lambda m, s, lg: torch.from_numpy(m)),
        # work on CUDA too
        (".cpu().numpy()", "works", lambda m, s, lg: m.cpu().numpy()),
        (".to('cpu').numpy()", "works", lambda m, s, lg: m.to("cpu").numpy()),
        (".tolist()", "works", lambda m, s, lg: s.tolist()),
        ("float(score)", "works", lambda m, s, lg: float(s[0])),
        ("np.float64(score)", "works", lambda m, s, lg: np.float64(s[0]).round(3)),
        (".item()", "works", lambda m, s, lg: s[0].item()),
        ("list[argmax]", "works", lambda m, s, lg: ["a", "b", "c", "d"][s.argmax()]),
        ("ndarray[argmax]", "works", lambda m, s, lg: np.arange(4)[s.argmax()]),
        ("np.squeeze", "works", lambda m, s, lg: np.squeeze(m)),
        ("np.shape", "works", lambda m, s, lg: np.shape(m)),
        ("mask * numpy scalar", "works", lambda m, s, lg: lg[0] * np.float32(2.0)),
        ("tensor arithmetic", "works", lambda m, s, lg: (m[0].float() * 255).sum() + lg[0].sum()),
        (".to(torch.uint8)", "works", lambda m, s, lg: m.to(torch.uint8) * 255),
        ("nonzero(as_tuple=True)", "works", lambda m, s, lg: m[0].nonzero(as_tuple=True)),
        ("to_numpy", "works", lambda m, s, lg: samgpu_shim.to_numpy((m, s, lg))),
        ("json_default", "works", lambda m, s, lg: json.dumps({"s": s}, default=samgpu_shim.json_default)),
    ]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        def imshow(m: Any, s: Any, lg: Any) -> Any:
            fig = plt.figure()
            try:
                return fig.gca().imshow(lg[0])
            finally:
                plt.close(fig)

        ops.append(("plt imshow", "raises", imshow))
    except ImportError:
        pass
    return ops


OPS = _ops()


def outcome(fn: Callable[[Any, Any, Any], Any], results: Tuple[Any, Any, Any]) -> Tuple[str, str]:
    """("works", "") or ("raises", the exception's class name)."""
    try:
        fn(*results)
    except Exception as exc:  # the outcome is what is compared
        return "raises", type(exc).__name__
    return "works", ""
