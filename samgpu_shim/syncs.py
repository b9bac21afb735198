"""Count host synchronisations, on CUDA for real and on the CPU by proxy.

:func:`count_cuda_syncs` uses PyTorch's sync debug mode, which reports every
operation that makes the host wait for a CUDA stream. It is process-global
and does not see ``torch.cuda.synchronize()`` itself.

:class:`SyncProneOps` works on any device: a ``TorchFunctionMode`` that
records the operations that would make the host wait if their tensors lived
on a GPU (device-to-host copies, ``.item()``, ``.tolist()``, ``bool()`` and
friends, ``nonzero``, boolean-mask reads, boolean-mask writes of tensors,
indexing with a 0-d integer tensor such as ``x[scores.argmax()]``).
It lets CPU-only CI guard the property that the GPU suite proves.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator, List, Tuple

import torch
from torch.overrides import TorchFunctionMode

SYNC_WARNING = "called a synchronizing CUDA operation"

_SCALAR_READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "__complex__"}
_DATA_DEPENDENT = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "equal"}


def _is_bool_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in items)


def _is_scalar_tensor_index(index: Any) -> bool:
    # ``x[t]`` with a 0-d integer tensor reads ``t`` on the host, like ``int(t)``
    # (``x[scores.argmax()]``); a 1-element 1-d index stays on the device.
    items = index if isinstance(index, tuple) else (index,)
    return any(
        isinstance(i, torch.Tensor) and i.dim() == 0 and not i.is_floating_point() and i.dtype != torch.bool
        for i in items
    )


def _targets_host(args: tuple, kwargs: dict) -> bool:
    device = kwargs.get("device")
    for a in args[1:]:
        if isinstance(a, (str, torch.device)):
            device = a
    return device is not None and torch.device(device).type == "cpu"


class SyncProneOps(TorchFunctionMode):
    """Records the operations that would block the host on a CUDA device.

    ``with SyncProneOps() as ops: ...`` then read ``ops.calls`` (names).
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _SCALAR_READS or name in _DATA_DEPENDENT:
            self.calls.append(name)
        elif name == "cpu" or (name == "to" and _targets_host(args, kwargs)):
            self.calls.append(name)
        elif name == "repeat_interleave" and isinstance(kwargs.get("repeats", args[1:2] and args[1]), torch.Tensor):
            self.calls.append(name)
        elif name == "__getitem__" and len(args) > 1 and _is_bool_index(args[1]):
            self.calls.append("__getitem__[bool]")
        elif name in ("__getitem__", "__setitem__") and len(args) > 1 and _is_scalar_tensor_index(args[1]):
            self.calls.append(f"{name}[0-d tensor]")
        elif (
            name == "__setitem__"
            and len(args) > 2
            and _is_bool_index(args[1])
            and isinstance(args[2], torch.Tensor)
        ):
            self.calls.append("__setitem__[bool]=tensor")
        return func(*args, **kwargs)


def count_cuda_syncs(fn: Callable[[], Any]) -> Tuple[int, Any]:
    """Run ``fn()`` and return (number of host syncs it forced, its result).

    Needs CUDA. The sync debug mode is switched to ``"warn"`` for the call
    and put back afterwards.
    """
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum(SYNC_WARNING in str(w.message) for w in caught), result


@contextlib.contextmanager
def forbid_syncs() -> Iterator[None]:
    """Inside the block, any operation that syncs the host with CUDA raises.

    PyTorch's sync debug mode set to ``"error"`` and put back afterwards. It is
    process-wide: other threads' syncs raise too while the block runs.
    """
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)
