"""Conversions at the application's final boundary (result packets, JSON)."""

from __future__ import annotations

import sys
from typing import Any


def _torch() -> Any:
    # torch is only needed when a tensor is actually seen; if it was never
    # imported, no tensor can exist, so there is nothing to convert.
    return sys.modules.get("torch")


def _tensor_to_numpy(t: Any) -> Any:
    torch = _torch()
    t = t.detach()
    if t.dtype is torch.bfloat16:
        # numpy has no bfloat16; float32 holds every bfloat16 value exactly.
        t = t.float()
    return t.cpu().numpy()


def _tensor_to_host(t: Any) -> Any:
    # A 0-d tensor (a score, an area) becomes a Python number: what a result
    # packet and json.dumps expect. Anything else becomes an ndarray.
    if t.dim() == 0:
        return t.item()
    return _tensor_to_numpy(t)


def to_numpy(obj: Any) -> Any:
    """Convert every ``torch.Tensor`` inside ``obj`` to a numpy array.

    A 0-d tensor becomes a Python number (``int``, ``float`` or ``bool``, as
    ``Tensor.item()`` gives), so that a packet of statistics serialises with
    plain :func:`json.dumps`; tensors of one or more dimensions become arrays.
    Tuples (named tuples too), lists and dicts are rebuilt with the same type;
    anything else is returned unchanged. This is where a GPU result pays its
    one device-to-host copy: call it on the final result packet, not per step.
    """
    torch = _torch()
    if torch is not None and isinstance(obj, torch.Tensor):
        return _tensor_to_host(obj)
    if isinstance(obj, dict):
        # copy() keeps the subclass and its state (defaultdict's factory, say).
        out = obj.copy()
        for key, value in obj.items():
            out[key] = to_numpy(value)
        return out
    if isinstance(obj, tuple):
        items = [to_numpy(v) for v in obj]
        if hasattr(obj, "_fields"):  # named tuple
            return type(obj)(*items)
        return type(obj)(items)
    if isinstance(obj, list):
        return type(obj)(to_numpy(v) for v in obj)
    return obj


def json_default(obj: Any) -> Any:
    """``default=`` hook for :func:`json.dumps` that handles tensors and numpy.

    ``json.dumps(packet, default=samgpu_shim.json_default)`` serialises
    ``torch.Tensor`` (any device), ``numpy.ndarray`` and numpy scalars as
    plain JSON numbers and lists.
    """
    torch = _torch()
    if torch is not None and isinstance(obj, torch.Tensor):
        return _tensor_to_numpy(obj).tolist()
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, np.generic):
            return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
