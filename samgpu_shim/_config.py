"""Configuration: environment variables (read once) and runtime overrides.

Precedence for the output mode of one call: the ``as_numpy=`` keyword, then
:func:`configure`, then ``SAMGPU_AS_NUMPY``, then the built-in default (GPU).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

_logger = logging.getLogger("samgpu_shim")

ENV_AS_NUMPY = "SAMGPU_AS_NUMPY"
"""Rollback switch. ``1/true/yes/on`` (any case) makes numpy outputs the default;
unset, empty or ``0/false/no/off`` keep GPU tensors. Any other value logs a
warning and rolls back to numpy, since whoever set it meant to roll back."""

ENV_DISABLE = "SAMGPU_DISABLE"
"""Kill switch. A true value (same spellings as ``SAMGPU_AS_NUMPY``; an
unrecognised value also counts as true) makes ``import samgpu_shim`` install
no patch at all, so ``predict`` is upstream's and rejects ``as_numpy=``."""

ENV_KPI_FILE = "SAMGPU_KPI_FILE"
"""Path of a file that receives every KPI event as one JSON object per line,
for applications that have no logging configuration of their own."""

ENV_CUDA_GRAPHS = "SAMGPU_CUDA_GRAPHS"
"""Graph mode (opt-in). A true value (same spellings as ``SAMGPU_AS_NUMPY``)
makes GPU-mode calls on CUDA capture the prompt-to-mask work once per prompt
signature as a CUDA graph and replay it. Off by default."""

DEFAULT_GRAPH_CACHE_SIZE = 8

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

# The built-in default: GPU tensors.
DEFAULT_AS_NUMPY = False


def _parse_flag(name: str, raw: Optional[str]) -> bool:
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    _logger.warning(
        "%s=%r is not one of 1/true/yes/on or 0/false/no/off; treating it as true",
        name,
        raw,
    )
    return True


@dataclass(frozen=True)
class Settings:
    """The environment as read when the patch was installed."""

    as_numpy: bool = DEFAULT_AS_NUMPY
    disabled: bool = False
    kpi_file: Optional[str] = None
    as_numpy_set: bool = False
    cuda_graphs: bool = False

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Settings:
        env = os.environ if environ is None else environ
        raw = env.get(ENV_AS_NUMPY)
        return cls(
            as_numpy=_parse_flag(ENV_AS_NUMPY, raw),
            disabled=_parse_flag(ENV_DISABLE, env.get(ENV_DISABLE)),
            kpi_file=env.get(ENV_KPI_FILE) or None,
            as_numpy_set=bool(raw and raw.strip()),
            cuda_graphs=_parse_flag(ENV_CUDA_GRAPHS, env.get(ENV_CUDA_GRAPHS)),
        )


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()

_lock = threading.Lock()
# Read on the hot path without the lock: a single attribute read is atomic and
# both values are immutable, so a reader sees either the old or the new one.
_env: Settings = Settings()
_runtime_as_numpy: Optional[bool] = None
_runtime_cuda_graphs: Optional[bool] = None
_graph_cache_size: int = DEFAULT_GRAPH_CACHE_SIZE


def load_env(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Read the environment once and make it the base of every later call."""
    global _env
    settings = Settings.from_env(environ)
    with _lock:
        _env = settings
    return settings


def env_settings() -> Settings:
    """The settings read by the last :func:`load_env`."""
    return _env


def configure(
    *,
    as_numpy: bool | None | _Unset = UNSET,
    cuda_graphs: bool | None | _Unset = UNSET,
    graph_cache_size: int | _Unset = UNSET,
) -> None:
    """Change defaults at run time; arguments left out are not touched.

    ``as_numpy=True`` makes numpy the default, ``False`` makes GPU tensors the
    default, ``None`` drops the override so that the environment applies
    again. An explicit ``as_numpy=`` keyword on a call still wins.
    ``cuda_graphs`` turns graph mode on or off the same way (``None``: back to
    ``SAMGPU_CUDA_GRAPHS``). ``graph_cache_size`` bounds the captured graphs
    kept per predictor (least recently used out; default 8).
    """
    global _runtime_as_numpy, _runtime_cuda_graphs, _graph_cache_size
    for name, value in (("as_numpy", as_numpy), ("cuda_graphs", cuda_graphs)):
        if value is not UNSET and value is not None and not isinstance(value, bool):
            raise TypeError(f"configure({name}=...) must be a bool or None, got {type(value).__name__}")
    if graph_cache_size is not UNSET:
        if isinstance(graph_cache_size, bool) or not isinstance(graph_cache_size, int) or graph_cache_size < 1:
            raise ValueError(f"configure(graph_cache_size=...) must be an int >= 1, got {graph_cache_size!r}")
    with _lock:
        if as_numpy is not UNSET:
            _runtime_as_numpy = as_numpy  # type: ignore[assignment]
        if cuda_graphs is not UNSET:
            _runtime_cuda_graphs = cuda_graphs  # type: ignore[assignment]
        if graph_cache_size is not UNSET:
            _graph_cache_size = graph_cache_size  # type: ignore[assignment]


def graph_cache_size() -> int:
    """The bound on captured graphs kept per predictor."""
    return _graph_cache_size


def cuda_graphs_enabled() -> bool:
    """Whether graph mode is on: runtime override, else the environment."""
    runtime = _runtime_cuda_graphs
    return _env.cuda_graphs if runtime is None else runtime


def default_as_numpy() -> Tuple[bool, str]:
    """The default output mode and where it comes from: runtime, env or default."""
    runtime = _runtime_as_numpy
    if runtime is not None:
        return runtime, "runtime"
    env = _env
    if env.as_numpy_set:
        return env.as_numpy, "env"
    return DEFAULT_AS_NUMPY, "default"


def resolve_as_numpy(value: object) -> Tuple[bool, str]:
    """Resolve one call's ``as_numpy`` keyword against the configured default."""
    if value is None:
        return default_as_numpy()
    if value is True or value is False:
        return value, "keyword"  # type: ignore[return-value]
    raise TypeError(
        f"as_numpy must be True, False or None (for the configured default), "
        f"got {type(value).__name__} {value!r}"
    )
