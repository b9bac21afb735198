"""The transfer guard: GPU-mode results that numpy code can still use, and that say where.

GPU mode hands back tensors where upstream handed back arrays, so a line
such as ``masks[best].astype(np.uint8)`` or ``np.where(mask)`` stops working
(on CUDA, numpy refuses device memory; ``.astype`` exists on no tensor). The
guard returns every GPU-mode result as a :class:`GuardedTensor`: the same
storage, device, dtype, shape and values, ``isinstance(x, torch.Tensor)``,
every tensor operation unchanged and its results guarded too. What changes
is what numpy-style code may do with it, by mode (``SAMGPU_TRANSFER_GUARD``):

* ``allow``: the implicit conversions numpy code makes (``__array__``, PIL's
  ``__array_interface__``, ``.astype``, ``.copy``, ``.tobytes``, ``.numpy``,
  numpy reductions, arithmetic with an ndarray) make a host copy and give
  what numpy mode would give; each copy is counted per call site;
* ``log``: the same, and the first copy at each site logs one warning naming
  the line, the operation and the predict call the value came from;
* ``disallow``: each of them raises :class:`TransferGuardError`, as CUDA
  does, on a CPU predictor too (``SAMGPU_STRICT=1`` is this mode);
* ``off``: results are plain tensors (the guard is not installed at all).

Explicit exits stay open in every mode: ``.cpu()``, ``.to("cpu")``,
``.item()``, ``.tolist()``, ``int()``/``float()``, ``samgpu_shim.to_numpy``
and ``json_default``. samgpu_shim/ops.py lists which operations the guard
intercepts and which only the audit can see (OpenCV, ``json.dumps``, torch
semantics that differ from numpy's).
"""

from __future__ import annotations

import contextlib
import contextvars
import linecache
import logging
import operator
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from .. import _config

MODES = _config.GUARD_MODES
_logger = logging.getLogger("samgpu_shim.guard")

FIX = (
    "convert once at your boundary with samgpu_shim.to_numpy(x), call predict(..., as_numpy=True) "
    "for code that needs numpy, or use the torch equivalent"
)


class TransferGuardError(TypeError):
    """An implicit copy of a GPU-mode result to the host, refused (``disallow``).

    A ``TypeError``, as CUDA's own refusal is.
    """


class TransferGuardAttributeError(TransferGuardError, AttributeError):
    """The refusal of a numpy method that no tensor has (``.astype``, ``.copy``, ``.tobytes``).

    Also an ``AttributeError``, which is what such a call raises on a plain
    CUDA tensor, so an application's ``except AttributeError`` still sees it.
    """


# -- the mode in force -------------------------------------------------------

_scope: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("samgpu_transfer_guard", default=None)


def mode() -> str:
    """The guard mode in force here: a :func:`transfer_guard` scope, else the settings."""
    scoped = _scope.get()
    return scoped if scoped is not None else _config.transfer_guard()


@contextlib.contextmanager
def transfer_guard(value: str) -> Iterator[None]:
    """Set the guard mode for a scope (this thread or task): ``with transfer_guard("disallow"):``.

    The mode decides what conversions inside the scope do, and whether predict
    calls inside it return guarded tensors (``off``: plain ones).
    """
    if not isinstance(value, str) or value.strip().lower() not in MODES:
        raise ValueError(f"transfer_guard() takes one of {', '.join(MODES)}, got {value!r}")
    token = _scope.set(value.strip().lower())
    try:
        yield
    finally:
        _scope.reset(token)


# -- counting implicit copies per site ----------------------------------------

# Frames of these packages are not "the caller": the conversion happened on
# behalf of the line that called into them.
_LIBRARIES = frozenset({"samgpu_shim", "numpy", "torch", "PIL", "matplotlib", "scipy", "skimage", "imageio",
                        "contextlib", "functools", "pandas", "tifffile"})
MAX_SITES = 200

_lock = threading.Lock()
_sites: Dict[Tuple[str, int], Dict[str, Any]] = {}
_total = 0
_dropped = 0  # copies at sites past MAX_SITES (counted in the total, not per site)
listeners: List[Callable[[Dict[str, Any], bool], None]] = []  # (site record, first time) -> None


def _caller() -> Tuple[str, int, str]:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "") or ""
        if name.partition(".")[0] not in _LIBRARIES:
            return frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name
        frame = frame.f_back
    return "?", 0, "?"


def _record(operation: str, origin: Optional[str], how: str) -> None:
    global _total, _dropped
    filename, line, function = _caller()
    key = (filename, line)
    with _lock:
        _total += 1
        entry = _sites.get(key)
        first = entry is None
        if first:
            if len(_sites) >= MAX_SITES:
                _dropped += 1
                return
            entry = _sites[key] = {
                "site": f"{filename}:{line}",
                "function": function,
                "operation": operation,
                "origin": origin,
                "count": 0,
            }
        entry["count"] += 1
        snapshot = dict(entry)
    if first and how == "log":
        code = linecache.getline(filename, line).strip()
        _logger.warning(
            "implicit host copy of a GPU result at %s:%d%s: %s on a result of the predict call at %s. "
            "Each such copy waits for the GPU; counted in samgpu_shim.stats()['implicit_copies']. Fix: %s "
            "(shown once per line)",
            filename, line, f" ({code})" if code else "", operation, origin or "(unknown)", FIX,
        )
    for listener in listeners:
        try:
            listener(snapshot, first)
        except Exception:  # telemetry must never break the caller's conversion
            _logger.debug("an implicit-copy listener raised", exc_info=True)


def stats() -> Dict[str, Any]:
    """Implicit copies so far: the total and one row per site, most frequent first."""
    with _lock:
        rows = [dict(e) for e in _sites.values()]
        total, dropped = _total, _dropped
    rows.sort(key=lambda r: -r["count"])
    return {"total": total, "sites": rows, "sites_not_kept": dropped}


def total() -> int:
    """Implicit copies counted since start (or the last reset)."""
    return _total


def reset() -> None:
    global _total, _dropped
    with _lock:
        _sites.clear()
        _total = 0
        _dropped = 0


# -- the conversions -----------------------------------------------------------


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(torch.Tensor)


def _where(t: Any) -> str:
    site = getattr(t, "_samgpu_site", None)
    return f" (a result of the predict call at {site})" if site else ""


def _refuse(t: Any, operation: str, error: type = TransferGuardError) -> TransferGuardError:
    device = t.device
    filename, line, _ = _caller()
    code = linecache.getline(filename, line).strip()
    at = f" at {filename}:{line}" + (f" ({code})" if code else "")
    return error(
        f"samgpu_shim transfer guard (disallow): {operation}{at} on a GPU-mode result{_where(t)} would copy it to "
        f"the host implicitly; on {'CUDA' if device.type == 'cuda' else device.type} it is refused as CUDA "
        f"refuses it (\"can't convert cuda:0 device type tensor to numpy\"). Fix: {FIX}."
    )


def host(t: Any, operation: str, error: type = TransferGuardError) -> np.ndarray:
    """The numpy value of a guarded tensor, counted (or refused) as one implicit copy."""
    how = mode()
    if how == "disallow":
        raise _refuse(t, operation, error)
    if how != "off":
        _record(operation, getattr(t, "_samgpu_site", None), how)
    with torch._C.DisableTorchFunctionSubclass():
        plain = torch.Tensor.detach(t)
        if plain.dtype is torch.bfloat16:
            plain = plain.float()  # numpy has no bfloat16; float32 holds it exactly
        return torch.Tensor.numpy(torch.Tensor.cpu(plain))


def _operator(name: str, op: Callable[[Any, Any], Any], reflected: bool) -> Callable[[Any, Any], Any]:
    """A tensor operator that computes what numpy mode computes when the other side is an ndarray.

    With an ndarray of one or more dimensions on the other side, torch makes
    it a CPU tensor (on CUDA: a device mismatch) or gives up (``ndarray *
    tensor``); numpy mode computes an ndarray. Anything else is torch's own.
    """
    tensor_method = getattr(torch.Tensor, name)

    def method(self: Any, other: Any) -> Any:
        if isinstance(other, np.ndarray) and other.ndim > 0:
            mine = host(self, "arithmetic with an ndarray")
            return op(other, mine) if reflected else op(mine, other)
        return tensor_method(self, other)

    method.__name__ = name
    return method


_OPERATORS: Dict[str, Tuple[Callable[[Any, Any], Any], bool]] = {}
for _name, _op in (("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv), ("mod", operator.mod),
                   ("pow", operator.pow), ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
                   ("matmul", operator.matmul)):
    _OPERATORS[f"__{_name}__"] = (_op, False)
    _OPERATORS[f"__r{_name}__"] = (_op, True)
for _name, _op in (("eq", operator.eq), ("ne", operator.ne), ("lt", operator.lt), ("le", operator.le),
                   ("gt", operator.gt), ("ge", operator.ge)):
    _OPERATORS[f"__{_name}__"] = (_op, False)
_OPERATORS = {k: v for k, v in _OPERATORS.items() if hasattr(torch.Tensor, k)}

_NOWRAP = frozenset(torch.overrides.get_default_nowrap_functions())


_Disabled = torch._C.DisableTorchFunctionSubclass
_Tensor = torch.Tensor
_as_subclass = torch.Tensor.as_subclass


def _origin(args: tuple) -> Optional[str]:
    if args:
        site = getattr(args[0], "_samgpu_site", None)  # the common case: a method of a result
        if site is not None:
            return site
    for a in args:
        site = getattr(a, "_samgpu_site", None)
        if site is not None:
            return site
        if isinstance(a, (list, tuple)):
            for b in a:
                site = getattr(b, "_samgpu_site", None)
                if site is not None:
                    return site
    return None


def _wrap(out: Any, cls: type, site: Optional[str]) -> Any:
    if isinstance(out, torch.Tensor):
        if not isinstance(out, cls):
            out = out.as_subclass(cls)
        if site is not None:
            out._samgpu_site = site
        return out
    if isinstance(out, (tuple, list)) and not isinstance(out, torch.Size):
        return type(out)(_wrap(o, cls, site) for o in out)
    return out


def _numpy_reduction(name: str) -> Callable[..., Any]:
    """A reduction method that also serves numpy's ``np.sum(x)``-style calls.

    ``np.sum(t)`` calls ``t.sum(axis=None, out=None)``, which torch refuses
    (``out`` is no keyword of a tensor method): with ``out`` among the
    keywords the call is numpy's, and numpy computes it on the host copy.
    """
    tensor_method = getattr(torch.Tensor, name)
    numpy_function = getattr(np, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "out" in kwargs:
            return numpy_function(host(self, f"np.{name}()"), *args, **kwargs)
        return tensor_method(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = tensor_method.__doc__
    return method


def _names_cpu(args: tuple, kwargs: dict) -> bool:
    device = kwargs.get("device")
    for a in args:
        if isinstance(a, (str, torch.device)):
            device = a
        elif isinstance(a, torch.Tensor):
            device = a.device
    return device is not None and torch.device(device).type == "cpu"


class GuardedTensor(torch.Tensor):
    """A GPU-mode result: a tensor whose implicit conversions to numpy obey the transfer guard."""

    _samgpu_site: Optional[str] = None

    # -- numpy's protocols ---------------------------------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = host(self, "numpy conversion (__array__)")
        return a if dtype is None else a.astype(dtype, copy=False)

    def __array_wrap__(self, array: Any, context: Any = None, return_scalar: bool = False) -> Any:
        # numpy functions that converted a guarded tensor (np.argmax, ufuncs)
        # give numpy's own result, not a tensor rebuilt around it.
        return array[()] if return_scalar else array

    @property
    def __array_interface__(self) -> Dict[str, Any]:
        # Only PIL gets one: numpy would prefer it to __array__ and keep no
        # reference to the host copy it points into. PIL reads the shape and
        # type, and with strides present takes the bytes from tobytes().
        caller = sys._getframe(1).f_globals.get("__name__", "") or ""
        if caller.partition(".")[0] != "PIL":
            raise AttributeError("__array_interface__")
        if mode() == "disallow":
            raise _refuse(self, "PIL.Image.fromarray()")
        dtype = torch.empty((), dtype=self.dtype).numpy().dtype
        shape = tuple(self.shape)
        strides, step = [], dtype.itemsize
        for n in reversed(shape):
            strides.append(step)
            step *= n
        return {"version": 3, "shape": shape, "typestr": dtype.str, "strides": tuple(reversed(strides))}

    # -- numpy's methods, which a tensor lacks ---------------------------------
    def astype(self, dtype: Any, order: str = "K", casting: str = "unsafe", subok: bool = True,
               copy: bool = True) -> np.ndarray:
        """numpy's ``astype``: a host copy (see the transfer guard)."""
        a = host(self, ".astype()", TransferGuardAttributeError)
        return a.astype(dtype, order=order, casting=casting, subok=subok, copy=copy)

    def copy(self, order: str = "C") -> np.ndarray:
        """numpy's ``copy``: a host copy (see the transfer guard)."""
        return host(self, ".copy()", TransferGuardAttributeError).copy(order=order)

    def tobytes(self, order: str = "C") -> bytes:
        """numpy's ``tobytes``: a host copy (see the transfer guard)."""
        caller = sys._getframe(1).f_globals.get("__name__", "") or ""
        operation = "PIL.Image.fromarray()" if caller.partition(".")[0] == "PIL" else ".tobytes()"
        return host(self, operation, TransferGuardAttributeError).tobytes(order=order)

    def numpy(self, *, force: bool = False) -> np.ndarray:  # type: ignore[override]
        if self.device.type == "cpu" and mode() != "disallow":
            host(self, ".numpy()")  # counted; torch's own view shares the memory
            with torch._C.DisableTorchFunctionSubclass():
                return torch.Tensor.numpy(torch.Tensor.detach(self), force=force)
        return host(self, ".numpy()")

    def __round__(self, ndigits: Any = None) -> Any:
        """``round(x, n)``, which no tensor defines: numpy's answer, from a host copy."""
        a = host(self, "round()")
        value = a[()] if a.ndim == 0 else a
        return round(value) if ndigits is None else round(value, ndigits)

    sum = _numpy_reduction("sum")
    mean = _numpy_reduction("mean")
    max = _numpy_reduction("max")
    min = _numpy_reduction("min")
    any = _numpy_reduction("any")
    all = _numpy_reduction("all")
    prod = _numpy_reduction("prod")
    std = _numpy_reduction("std")
    var = _numpy_reduction("var")
    argmax = _numpy_reduction("argmax")
    argmin = _numpy_reduction("argmin")

    # -- explicit exits --------------------------------------------------------
    def cpu(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        with torch._C.DisableTorchFunctionSubclass():
            return _plain(torch.Tensor.cpu(self, *args, **kwargs))

    def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        with torch._C.DisableTorchFunctionSubclass():
            out = torch.Tensor.to(self, *args, **kwargs)
        if _names_cpu(args, kwargs):
            return _plain(out)  # an explicit move to the host
        return _wrap(out, type(self), self._samgpu_site)

    @classmethod
    def __torch_function__(cls, func: Any, types: tuple, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        # The hot path of every operation on a result: kept to a context
        # switch, the call and one re-wrap (docs/migration.rst gives its cost).
        with _Disabled():
            out = func(*args, **kwargs) if kwargs else func(*args)
        if type(out) is _Tensor:
            if func in _NOWRAP:
                return out
            out = _as_subclass(out, cls)
            site = _origin(args)
            if site is not None:
                out._samgpu_site = site
            return out
        if isinstance(out, (tuple, list)) and not isinstance(out, torch.Size):
            return _wrap(out, cls, _origin(args))
        return out


for _name, (_op, _reflect) in _OPERATORS.items():
    setattr(GuardedTensor, _name, _operator(_name, _op, _reflect))
GuardedTensor.__hash__ = torch.Tensor.__hash__  # defining __eq__ would drop it


def _listen() -> None:
    from .. import _telemetry

    if _telemetry.on_implicit_copy not in listeners:
        listeners.append(_telemetry.on_implicit_copy)


_listen()


def guard(out: Any, site: Optional[Tuple[str, str, int]] = None) -> Any:
    """Every tensor of a predict result as a :class:`GuardedTensor` (tuples and lists too)."""
    where = f"{site[0]}:{site[2]} in {site[1]}()" if site else None
    return _wrap(out, GuardedTensor, where)
