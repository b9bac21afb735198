"""Configuration: environment variables (read once) and runtime overrides.

Precedence for the output mode of one call: the ``as_numpy=`` keyword, then
:func:`configure`, then ``SAMGPU_AS_NUMPY``, then the built-in default (GPU).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional, Tuple

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

ENV_AS_NUMPY_MODULES = "SAMGPU_AS_NUMPY_MODULES"
"""Rollback by caller: a comma-separated list of module names or glob patterns
(``app.orchestrator,legacy.*``). Calls made from a matching module get numpy
by default; a plain name also covers its submodules. Empty or unset: none."""

ENV_KPI_SAMPLE = "SAMGPU_KPI_SAMPLE"
"""Fraction of calls that emit a KPI event, in (0, 1]; ``0.1`` emits every
tenth call. Unset: every call. An invalid value logs a warning and keeps 1.
Counters in ``samgpu_shim.stats()`` always see every call."""

ENV_KPI_DEVICE_TIME = "SAMGPU_KPI_DEVICE_TIME"
"""Flag. In GPU mode on CUDA, time each call on the device with CUDA events
and report it later, once the events have completed, without any sync:
``device_ms`` in ``stats()`` and a ``sam_predict_device_time`` KPI event."""

ENV_ENCODER_PRECISION = "SAMGPU_ENCODER_PRECISION"
"""Image encoder precision on CUDA: ``fp32`` (default, upstream's), ``tf32``
or ``bf16`` (autocast; the embedding is cast back to float32). Off in
rollback. An unknown value logs a warning and keeps fp32."""

ENV_STRICT = "SAMGPU_STRICT"
"""Strict mode, for CPU test runs (flag). GPU-mode results on a CPU device
refuse every implicit conversion to numpy (``np.asarray``, ``np.argmax``,
``plt.imshow``, ``ndarray[tensor]``, ``tensor * ndarray``...) the way CUDA
tensors do, so a CPU CI run fails where production on a GPU would."""

PRECISIONS = ("fp32", "tf32", "bf16")

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


def _parse_modules(raw: Optional[str]) -> Tuple[str, ...]:
    if not raw:
        return ()
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _sample_every(rate: float) -> int:
    if not 0 < rate <= 1:
        raise ValueError(f"a KPI sampling rate must be in (0, 1], got {rate!r}")
    return max(1, round(1 / rate))


def _parse_sample(raw: Optional[str]) -> int:
    if raw is None or not raw.strip():
        return 1
    try:
        return _sample_every(float(raw))
    except ValueError:
        _logger.warning("%s=%r is not a number in (0, 1]; emitting every call", ENV_KPI_SAMPLE, raw)
        return 1


def _parse_precision(raw: Optional[str]) -> str:
    if raw is None or not raw.strip():
        return "fp32"
    value = raw.strip().lower()
    if value not in PRECISIONS:
        _logger.warning("%s=%r is not one of %s; keeping fp32", ENV_ENCODER_PRECISION, raw, "/".join(PRECISIONS))
        return "fp32"
    return value


@dataclass(frozen=True)
class Settings:
    """The environment as read when the patch was installed."""

    as_numpy: bool = DEFAULT_AS_NUMPY
    disabled: bool = False
    kpi_file: Optional[str] = None
    as_numpy_set: bool = False
    cuda_graphs: bool = False
    as_numpy_modules: Tuple[str, ...] = ()
    kpi_sample_every: int = 1
    kpi_device_time: bool = False
    encoder_precision: str = "fp32"
    strict: bool = False

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
            as_numpy_modules=_parse_modules(env.get(ENV_AS_NUMPY_MODULES)),
            kpi_sample_every=_parse_sample(env.get(ENV_KPI_SAMPLE)),
            kpi_device_time=_parse_flag(ENV_KPI_DEVICE_TIME, env.get(ENV_KPI_DEVICE_TIME)),
            encoder_precision=_parse_precision(env.get(ENV_ENCODER_PRECISION)),
            strict=_parse_flag(ENV_STRICT, env.get(ENV_STRICT)),
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
_runtime_modules: Optional[Tuple[str, ...]] = None
_runtime_sample_every: Optional[int] = None
_runtime_device_time: Optional[bool] = None
_runtime_precision: Optional[str] = None
_runtime_strict: Optional[bool] = None
# module name -> whether a rollback pattern matches it; rebuilt when rules change
_module_cache: Dict[str, bool] = {}
_graph_cache_size: int = DEFAULT_GRAPH_CACHE_SIZE


def load_env(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Read the environment once and make it the base of every later call."""
    global _env
    settings = Settings.from_env(environ)
    with _lock:
        _env = settings
        _module_cache.clear()
    return settings


def env_settings() -> Settings:
    """The settings read by the last :func:`load_env`."""
    return _env


def configure(
    *,
    as_numpy: bool | None | _Unset = UNSET,
    cuda_graphs: bool | None | _Unset = UNSET,
    graph_cache_size: int | _Unset = UNSET,
    as_numpy_modules: Iterable[str] | None | _Unset = UNSET,
    kpi_sample: float | None | _Unset = UNSET,
    kpi_device_time: bool | None | _Unset = UNSET,
    encoder_precision: str | None | _Unset = UNSET,
    strict: bool | None | _Unset = UNSET,
) -> None:
    """Change defaults at run time; arguments left out are not touched.

    ``as_numpy=True`` makes numpy the default, ``False`` makes GPU tensors the
    default, ``None`` drops the override so that the environment applies
    again. An explicit ``as_numpy=`` keyword on a call still wins.
    ``cuda_graphs`` turns graph mode on or off the same way (``None``: back to
    ``SAMGPU_CUDA_GRAPHS``). ``graph_cache_size`` bounds the captured graphs
    kept per predictor (least recently used out; default 8).
    ``as_numpy_modules`` replaces ``SAMGPU_AS_NUMPY_MODULES`` (module names or
    glob patterns whose calls default to numpy), ``kpi_sample`` the KPI
    sampling rate in (0, 1] and ``kpi_device_time`` the device timing switch;
    ``encoder_precision`` (``"fp32"``, ``"tf32"``, ``"bf16"``) replaces
    ``SAMGPU_ENCODER_PRECISION``; ``strict`` turns strict mode on or off
    (``SAMGPU_STRICT``). ``None`` gives each back to the environment.
    """
    global _runtime_as_numpy, _runtime_cuda_graphs, _graph_cache_size
    global _runtime_modules, _runtime_sample_every, _runtime_device_time, _runtime_precision, _runtime_strict
    if encoder_precision is not UNSET and encoder_precision is not None and encoder_precision not in PRECISIONS:
        raise ValueError(
            f"configure(encoder_precision=...) must be one of {PRECISIONS} or None, got {encoder_precision!r}"
        )
    for name, value in (
        ("as_numpy", as_numpy),
        ("cuda_graphs", cuda_graphs),
        ("kpi_device_time", kpi_device_time),
        ("strict", strict),
    ):
        if value is not UNSET and value is not None and not isinstance(value, bool):
            raise TypeError(f"configure({name}=...) must be a bool or None, got {type(value).__name__}")
    if graph_cache_size is not UNSET:
        if isinstance(graph_cache_size, bool) or not isinstance(graph_cache_size, int) or graph_cache_size < 1:
            raise ValueError(f"configure(graph_cache_size=...) must be an int >= 1, got {graph_cache_size!r}")
    modules = UNSET
    if as_numpy_modules is not UNSET:
        if isinstance(as_numpy_modules, str):
            raise TypeError("configure(as_numpy_modules=...) takes a list of module patterns, not a string")
        modules = None if as_numpy_modules is None else tuple(as_numpy_modules)
    every = UNSET
    if kpi_sample is not UNSET:
        every = None if kpi_sample is None else _sample_every(float(kpi_sample))
    with _lock:
        if modules is not UNSET:
            _runtime_modules = modules  # type: ignore[assignment]
            _module_cache.clear()
        if every is not UNSET:
            _runtime_sample_every = every  # type: ignore[assignment]
        if kpi_device_time is not UNSET:
            _runtime_device_time = kpi_device_time  # type: ignore[assignment]
        if encoder_precision is not UNSET:
            _runtime_precision = encoder_precision  # type: ignore[assignment]
        if strict is not UNSET:
            _runtime_strict = strict  # type: ignore[assignment]
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


def rollback_modules() -> Tuple[str, ...]:
    runtime = _runtime_modules
    return _env.as_numpy_modules if runtime is None else runtime


def module_rolled_back(module: str) -> bool:
    """Whether calls from ``module`` default to numpy (cached per module)."""
    hit = _module_cache.get(module)
    if hit is None:
        hit = any(
            module == p or module.startswith(p + ".") or fnmatch.fnmatchcase(module, p) for p in rollback_modules()
        )
        _module_cache[module] = hit
    return hit


def kpi_sample_every() -> int:
    runtime = _runtime_sample_every
    return _env.kpi_sample_every if runtime is None else runtime


def encoder_precision() -> str:
    runtime = _runtime_precision
    return _env.encoder_precision if runtime is None else runtime


def strict() -> bool:
    """Whether strict mode is on: runtime override, else the environment."""
    runtime = _runtime_strict
    return _env.strict if runtime is None else runtime


def kpi_device_time() -> bool:
    runtime = _runtime_device_time
    return _env.kpi_device_time if runtime is None else runtime


def resolve_as_numpy(value: object, module: Optional[str] = None) -> Tuple[bool, str]:
    """Resolve one call's ``as_numpy`` against module rules and the default.

    Precedence: the keyword, then a rollback rule for the calling module, then
    :func:`configure`, then ``SAMGPU_AS_NUMPY``, then tensors.
    """
    if value is None:
        if module is not None and (_runtime_modules or _env.as_numpy_modules) and module_rolled_back(module):
            return True, "module"
        return default_as_numpy()
    if value is True or value is False:
        return value, "keyword"  # type: ignore[return-value]
    raise TypeError(
        f"as_numpy must be True, False or None (for the configured default), "
        f"got {type(value).__name__} {value!r}"
    )
