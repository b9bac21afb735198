"""Strict mode: CPU results that refuse numpy the way CUDA tensors do.

On a CPU predictor, GPU-mode results are CPU tensors, and numpy converts CPU
tensors without complaint (``np.asarray``, ``np.argmax``, ``plt.imshow``,
indexing an ndarray with a tensor, ``tensor * ndarray``). The same lines
raise once the predictor is on CUDA, so a test suite run on a CPU machine
validates nothing about them. With ``SAMGPU_STRICT=1`` (or
``configure(strict=True)``) GPU-mode results on a CPU device come back as
:class:`StrictTensor`: the same storage, values, dtype and shape, every tensor
operation as before (its results stay strict), but every implicit conversion
to numpy raises as it would on CUDA, with a message that names the predict
call the value came from and the fix.

Explicit exits stay open, as they are on CUDA: ``.cpu()``, ``.to("cpu")``,
``.item()``, ``.tolist()``, ``int()``/``float()``, and the shim's own
``to_numpy``/``json_default``.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

FIX = (
    "convert once at your boundary with samgpu_shim.to_numpy(x), call predict(..., as_numpy=True) "
    "for code that needs numpy, or use the torch equivalent"
)


class StrictConversionError(TypeError):
    """Implicit conversion of a GPU-mode result to numpy (CUDA raises TypeError here too)."""


def _where(t: Any) -> str:
    site = getattr(t, "_samgpu_site", None)
    if site:
        return f" (a result of the predict call at {site})"
    return ""


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(torch.Tensor)


def _is_cpu_target(args: tuple, kwargs: dict) -> bool:
    device = kwargs.get("device")
    for a in args:
        if isinstance(a, (str, torch.device)):
            device = a
        elif isinstance(a, torch.Tensor):
            device = a.device
    if device is None:
        return False
    return torch.device(device).type == "cpu"


class StrictTensor(torch.Tensor):
    """A CPU tensor that behaves like a CUDA one towards numpy (strict mode)."""

    _samgpu_site: Optional[str] = None

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        raise StrictConversionError(
            f"samgpu_shim strict mode: this tensor{_where(self)} was converted to numpy implicitly "
            "(np.asarray, np.argmax, np.where, plt.imshow, ndarray[tensor], tensor * ndarray, ...); "
            f"on CUDA this raises \"can't convert cuda:0 device type tensor to numpy\". Fix: {FIX}."
        )

    def numpy(self, *, force: bool = False) -> Any:  # type: ignore[override]
        raise StrictConversionError(
            f"samgpu_shim strict mode: .numpy() on a device result{_where(self)}; on CUDA this raises "
            f"TypeError. Fix: {FIX} (or .cpu().numpy())."
        )

    def cpu(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        # On CUDA, .cpu() makes a host copy that numpy accepts: so does this.
        with torch._C.DisableTorchFunctionSubclass():
            return _plain(torch.Tensor.cpu(self, *args, **kwargs))

    def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        with torch._C.DisableTorchFunctionSubclass():
            out = torch.Tensor.to(self, *args, **kwargs)
        if _is_cpu_target(args, kwargs):
            return _plain(out)
        return _strict(out, self._samgpu_site)

    @classmethod
    def __torch_function__(cls, func: Any, types: tuple, args: tuple = (), kwargs: Optional[dict] = None) -> Any:
        kwargs = kwargs or {}
        out = super().__torch_function__(func, types, args, kwargs)
        site = next((x._samgpu_site for x in args if isinstance(x, StrictTensor)), None)
        if site is not None:
            _set_site(out, site)
        return out


def _set_site(out: Any, site: str) -> None:
    if isinstance(out, StrictTensor):
        out._samgpu_site = site
    elif isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, StrictTensor):
                o._samgpu_site = site


def _strict(t: torch.Tensor, site: Optional[str]) -> torch.Tensor:
    if t.device.type != "cpu":
        return t  # CUDA (or any accelerator) already refuses numpy by itself
    s = t.as_subclass(StrictTensor)
    s._samgpu_site = site
    return s


def make_strict(out: Any, site: Optional[Tuple[str, str, int]] = None) -> Any:
    """Wrap every CPU tensor of a predict result (tuples and lists of them)."""
    where = f"{site[0]}:{site[2]} in {site[1]}()" if site else None
    if isinstance(out, torch.Tensor):
        return _strict(out, where)
    if isinstance(out, tuple):
        return tuple(make_strict(o, site) for o in out)
    if isinstance(out, list):
        return [make_strict(o, site) for o in out]
    return out
