"""Configuration from one table.

Every setting is one :class:`Setting` row: its environment variable, how the
variable is parsed, its default, whether :func:`configure` may override it at
run time, and its documentation. The rows drive reading the environment
(once, when the patch is installed), :func:`configure`, the getters the hot
path calls, ``samgpu-shim doctor`` and the table in docs/configuration.rst.
Adding a setting is adding a row (and reading it where it matters).

Precedence for the output mode of one call: the ``as_numpy=`` keyword, then a
``SAMGPU_AS_NUMPY_MODULES`` rule for the calling module, then
:func:`configure`, then ``SAMGPU_AS_NUMPY``, then the built-in default (GPU).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

_logger = logging.getLogger("samgpu_shim")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
PRECISIONS = ("fp32", "tf32", "bf16")
ENCODERS = ("default", "fast", "fast-compile")
GUARD_MODES = ("off", "allow", "log", "disallow")
# The default guard mode, chosen by measurement on a GPU (docs/migration.rst,
# "The default and its cost").
DEFAULT_GUARD = "log"
DEFAULT_GRAPH_CACHE_SIZE = 8


# -- parsers of raw environment values (name, raw) -> value ------------------


def _flag(name: str, raw: Optional[str]) -> bool:
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    _logger.warning("%s=%r is not one of 1/true/yes/on or 0/false/no/off; treating it as true", name, raw)
    return True


def _path(name: str, raw: Optional[str]) -> Optional[str]:
    return raw or None


def _modules(name: str, raw: Optional[str]) -> Tuple[str, ...]:
    if not raw:
        return ()
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _sample_every(rate: float) -> int:
    if not 0 < rate <= 1:
        raise ValueError(f"a KPI sampling rate must be in (0, 1], got {rate!r}")
    return max(1, round(1 / rate))


def _sample(name: str, raw: Optional[str]) -> int:
    if raw is None or not raw.strip():
        return 1
    try:
        return _sample_every(float(raw))
    except ValueError:
        _logger.warning("%s=%r is not a number in (0, 1]; emitting every call", name, raw)
        return 1


METRIC_BACKENDS = ("otel", "prometheus")


def _metrics(name: str, raw: Optional[str]) -> Tuple[str, ...]:
    names = _modules(name, raw)
    unknown = [n for n in names if n not in METRIC_BACKENDS]
    if unknown:
        _logger.warning("%s=%r: unknown backend(s) %s ignored; known: %s", name, raw, ", ".join(unknown),
                        ", ".join(METRIC_BACKENDS))
    return tuple(n for n in names if n in METRIC_BACKENDS)


def _choice(values: Tuple[str, ...], fallback: str) -> Callable[[str, Optional[str]], str]:
    """A parser for one of ``values`` (case-insensitive); anything else warns and keeps ``fallback``."""

    def parse(name: str, raw: Optional[str]) -> str:
        if raw is None or not raw.strip():
            return fallback
        value = raw.strip().lower()
        if value not in values:
            _logger.warning("%s=%r is not one of %s; keeping %s", name, raw, "/".join(values), fallback)
            return fallback
        return value

    return parse


_precision = _choice(PRECISIONS, "fp32")
_encoder = _choice(ENCODERS, "default")
_guard = _choice(GUARD_MODES, DEFAULT_GUARD)


# -- validators of configure() values (key, value) -> stored value -----------


def _bool_arg(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"configure({key}=...) must be a bool or None, got {type(value).__name__}")
    return value


def _modules_arg(key: str, value: Any) -> Tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"configure({key}=...) takes a list of module patterns, not a string")
    return tuple(value)


def _sample_arg(key: str, value: Any) -> int:
    return _sample_every(float(value))


def _precision_arg(key: str, value: Any) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"configure({key}=...) must be one of {PRECISIONS} or None, got {value!r}")
    return value


def _encoder_arg(key: str, value: Any) -> str:
    if value not in ENCODERS:
        raise ValueError(f"configure({key}=...) must be one of {ENCODERS} or None, got {value!r}")
    return value


def _guard_arg(key: str, value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in GUARD_MODES:
        raise ValueError(f"configure({key}=...) must be one of {', '.join(GUARD_MODES)}, got {value!r}")
    return value.strip().lower()


def _metrics_arg(key: str, value: Any) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    names = tuple(value)
    unknown = [n for n in names if n not in METRIC_BACKENDS]
    if unknown:
        raise ValueError(f"configure({key}=...): unknown backend(s) {unknown}; choose from {METRIC_BACKENDS}")
    return names


def _path_arg(key: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"configure({key}=...) must be a path or None, got {type(value).__name__}")
    return os.fspath(value)


def _cache_size_arg(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"configure({key}=...) must be an int >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class Setting:
    """One setting: where it comes from, what it means."""

    key: str  # the configure() keyword and getter name
    env: Optional[str]  # its environment variable (None: run time only)
    parse: Optional[Callable[[str, Optional[str]], Any]]
    default: Any
    values: str  # what it accepts, for people
    doc: str
    # configure(key=...) check and conversion; None: environment only
    runtime: Optional[Callable[[str, Any], Any]] = None
    # configure(key=None) goes back to the environment; False: None is refused
    none_resets: bool = True


FLAG = "1/true/yes/on or 0/false/no/off (any case)"

SETTINGS: Tuple[Setting, ...] = (
    Setting(
        "as_numpy", "SAMGPU_AS_NUMPY", _flag, False, FLAG,
        "Rollback switch: numpy becomes the default output. Any other value logs a warning and rolls "
        "back to numpy, since whoever set it meant to roll back.",
        _bool_arg,
    ),
    Setting(
        "disabled", "SAMGPU_DISABLE", _flag, False, FLAG,
        "Kill switch: import samgpu_shim installs no patch at all, so predict is upstream's and rejects "
        "as_numpy= (an unrecognised value also counts as set). Prefer SAMGPU_AS_NUMPY=1 for a rollback.",
    ),
    Setting(
        "kpi_file", "SAMGPU_KPI_FILE", _path, None, "a path",
        "Also write every KPI event to this file, one JSON object per line, for applications without "
        "their own logging configuration. An unwritable path is a logged warning.",
    ),
    Setting(
        "cuda_graphs", "SAMGPU_CUDA_GRAPHS", _flag, False, FLAG,
        "Graph mode (opt-in): on CUDA, capture the prompt-to-mask work once per prompt signature as a "
        "CUDA graph and replay it; where it cannot, the eager GPU path runs and one warning gives the cause.",
        _bool_arg,
    ),
    Setting(
        "as_numpy_modules", "SAMGPU_AS_NUMPY_MODULES", _modules, (), "comma-separated module names or globs",
        "Rollback by caller: calls made from these modules default to numpy (app.orchestrator,legacy.*); "
        "a plain name covers its submodules.",
        _modules_arg,
    ),
    Setting(
        "kpi_sample", "SAMGPU_KPI_SAMPLE", _sample, 1, "a number in (0, 1]",
        "Emit a KPI event for that fraction of calls (0.1: every tenth); counters still see every call. "
        "Stored as 'every Nth call'. An invalid value logs a warning and keeps 1.",
        _sample_arg,
    ),
    Setting(
        "kpi_device_time", "SAMGPU_KPI_DEVICE_TIME", _flag, False, FLAG,
        "Time GPU-mode calls on the device with CUDA events, collected later without waiting "
        "(device_ms in stats(), sam_predict_device_time events).",
        _bool_arg,
    ),
    Setting(
        "encoder_precision", "SAMGPU_ENCODER_PRECISION", _precision, "fp32", "fp32, tf32 or bf16",
        "Image encoder precision on CUDA (opt-in; off in rollback). An unknown value logs a warning and "
        "keeps fp32.",
        _precision_arg,
    ),
    Setting(
        "encoder", "SAMGPU_ENCODER", _encoder, "default", "default, fast or fast-compile",
        "Image encoder path on CUDA (opt-in; off in rollback): fast runs it in bfloat16 with fused attention "
        "(scaled_dot_product_attention, relative-position bias included); fast-compile also compiles the "
        "encoder with torch.compile (warm-up on the first frame of each size: about 50 s for vit_h on an "
        "H100, run 27). Overrides SAMGPU_ENCODER_PRECISION. An unknown value logs a warning and keeps the "
        "default.",
        _encoder_arg,
    ),
    Setting(
        "strict", "SAMGPU_STRICT", _flag, False, FLAG,
        "Strict mode, an alias of SAMGPU_TRANSFER_GUARD=disallow kept for existing CI set-ups: GPU-mode "
        "results refuse every implicit conversion to numpy the way CUDA tensors do, on a CPU device too, "
        "naming the predict call and the fix. Used only where the transfer guard is not set.",
        _bool_arg,
    ),
    Setting(
        "transfer_guard", "SAMGPU_TRANSFER_GUARD", _guard, DEFAULT_GUARD, "off, allow, log or disallow",
        "What numpy-style code may do with GPU-mode results. allow: implicit conversions (np.asarray, "
        ".astype, PIL, ndarray[mask], arithmetic with an ndarray...) make a host copy equal to numpy "
        "mode's value, counted per line in stats(); log: the same, and one warning per line naming it and "
        "the predict call; disallow: they raise as on CUDA, on a CPU predictor too (for CI); off: plain "
        "tensors. Explicit exits (.cpu(), .item(), .tolist(), to_numpy) are open in every mode. Set, it "
        "wins over SAMGPU_STRICT. An unknown value logs a warning and keeps the default.",
        _guard_arg,
    ),
    Setting(
        "metrics", "SAMGPU_METRICS", _metrics, (), "comma list of otel, prometheus",
        "Record every call as metrics too: otel (the OpenTelemetry API's global MeterProvider) and/or "
        "prometheus (prometheus_client's default registry). A backend whose package is missing is one "
        "warning. See docs/kpi.rst (Dashboards).",
        _metrics_arg,
    ),
    Setting(
        "compile_dir", "SAMGPU_COMPILE_DIR", _path, None, "a directory",
        "Ahead-of-time encoders for fast-compile: with a directory, SAMGPU_ENCODER=fast-compile runs the image "
        "encoder from an AOTInductor package kept there, one per model (weights included), input size, GPU, CUDA, "
        "torch and shim version. A missing package is built on first use (minutes; or beforehand with "
        "examples/igt/demo.py --build-only); one whose manifest does not match is rebuilt, never used. Unset: "
        "fast-compile compiles in the process (torch.compile).",
        _path_arg,
    ),
    Setting(
        "graph_cache_size", None, None, DEFAULT_GRAPH_CACHE_SIZE, "an int >= 1",
        "Captured graphs kept per predictor in graph mode (least recently used out).",
        _cache_size_arg, none_resets=False,
    ),
)
BY_KEY: Dict[str, Setting] = {s.key: s for s in SETTINGS}

ENV_AS_NUMPY = "SAMGPU_AS_NUMPY"
"""Rollback switch (see the settings table)."""
ENV_DISABLE = "SAMGPU_DISABLE"
"""Kill switch: no patch at all."""
ENV_KPI_FILE = "SAMGPU_KPI_FILE"
"""JSON-lines file that also receives every KPI event."""
ENV_CUDA_GRAPHS = "SAMGPU_CUDA_GRAPHS"
"""Graph mode (opt-in)."""
ENV_AS_NUMPY_MODULES = "SAMGPU_AS_NUMPY_MODULES"
"""Rollback by calling module."""
ENV_KPI_SAMPLE = "SAMGPU_KPI_SAMPLE"
"""Fraction of calls that emit a KPI event."""
ENV_KPI_DEVICE_TIME = "SAMGPU_KPI_DEVICE_TIME"
"""Device timing of GPU-mode calls."""
ENV_ENCODER_PRECISION = "SAMGPU_ENCODER_PRECISION"
"""Image encoder precision on CUDA."""
ENV_ENCODER = "SAMGPU_ENCODER"
"""Image encoder path on CUDA: default, fast, fast-compile."""
ENV_STRICT = "SAMGPU_STRICT"
"""Strict mode for CPU test runs."""
ENV_METRICS = "SAMGPU_METRICS"
"""Metrics backends: otel, prometheus."""
ENV_TRANSFER_GUARD = "SAMGPU_TRANSFER_GUARD"
"""Transfer guard mode: off, allow, log, disallow."""
ENV_COMPILE_DIR = "SAMGPU_COMPILE_DIR"
"""Directory of fast-compile's ahead-of-time encoder packages."""
assert {s.env for s in SETTINGS if s.env} == {
    ENV_AS_NUMPY, ENV_DISABLE, ENV_KPI_FILE, ENV_CUDA_GRAPHS, ENV_AS_NUMPY_MODULES, ENV_KPI_SAMPLE,
    ENV_KPI_DEVICE_TIME, ENV_ENCODER_PRECISION, ENV_ENCODER, ENV_STRICT, ENV_METRICS, ENV_TRANSFER_GUARD,
    ENV_COMPILE_DIR,
}


class Settings(dict):
    """The environment as read once: key -> value, plus which keys were set."""

    def __init__(self, values: Dict[str, Any], set_keys: Iterable[str]) -> None:
        super().__init__(values)
        self.set_keys = frozenset(set_keys)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Settings:
        env = os.environ if environ is None else environ
        values: Dict[str, Any] = {}
        set_keys = []
        for s in SETTINGS:
            raw = env.get(s.env) if s.env else None
            values[s.key] = s.parse(s.env, raw) if (s.parse and s.env) else s.default
            if raw is not None and raw.strip():
                set_keys.append(s.key)
        return cls(values, set_keys)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()

_lock = threading.Lock()
# Read on the hot path without the lock: each name is rebound to a new,
# never-mutated dict, so a reader sees either the old or the new one whole.
_env: Settings = Settings({s.key: s.default for s in SETTINGS}, ())
_runtime: Dict[str, Any] = {}
# module name -> whether a rollback pattern matches it; rebuilt when rules change
_module_cache: Dict[str, bool] = {}
# key -> callables run with the new value after configure() changes it
listeners: Dict[str, List[Callable[[Any], None]]] = {}


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


def configure(**changes: Any) -> None:
    """Change settings at run time; settings left out are not touched.

    Each keyword is a setting of the table (docs/configuration.rst):
    ``as_numpy``, ``cuda_graphs``, ``as_numpy_modules``, ``kpi_sample``,
    ``kpi_device_time``, ``encoder_precision``, ``encoder``, ``strict``,
    ``transfer_guard``, ``metrics``, ``compile_dir``, ``graph_cache_size``. ``None`` drops the override so that the
    environment applies again. An explicit ``as_numpy=`` keyword on a call still wins over
    ``configure(as_numpy=...)``. Every value is checked before any is applied.
    """
    global _runtime
    staged: Dict[str, Any] = {}
    for key, value in changes.items():
        setting = BY_KEY.get(key)
        if setting is None or setting.runtime is None:
            allowed = ", ".join(s.key for s in SETTINGS if s.runtime is not None)
            raise TypeError(f"configure() got an unknown setting {key!r}; it takes {allowed}")
        if value is UNSET:
            continue
        if value is None:
            if not setting.none_resets:
                setting.runtime(key, value)  # raises with the setting's own message
            staged[key] = None
        else:
            staged[key] = setting.runtime(key, value)
    with _lock:
        runtime = dict(_runtime)
        for key, value in staged.items():
            if value is None:
                runtime.pop(key, None)
            else:
                runtime[key] = value
        _runtime = runtime
        if "as_numpy_modules" in staged:
            _module_cache.clear()
    for key in staged:
        for listener in listeners.get(key, ()):
            listener(get(key))


def get(key: str) -> Any:
    """A setting's value in force: run-time override, else the environment."""
    runtime = _runtime
    if key in runtime:
        return runtime[key]
    return _env[key]


def source(key: str) -> str:
    """Where a setting's value comes from: ``runtime``, ``env`` or ``default``."""
    if key in _runtime:
        return "runtime"
    if key in _env.set_keys:
        return "env"
    return "default"


def describe() -> List[Dict[str, str]]:
    """Every setting with its value in force and where it comes from (doctor)."""
    rows = []
    for s in SETTINGS:
        raw = os.environ.get(s.env) if s.env else None
        rows.append(
            {
                "setting": s.key,
                "env": s.env or "(configure() only)",
                "raw": "(unset)" if raw is None else repr(raw),
                "value": repr(get(s.key)),
                "source": source(s.key),
            }
        )
    return rows


# -- getters the hot path calls ---------------------------------------------


def graph_cache_size() -> int:
    """The bound on captured graphs kept per predictor."""
    return get("graph_cache_size")


def cuda_graphs_enabled() -> bool:
    """Whether graph mode is on."""
    return get("cuda_graphs")


def default_as_numpy() -> Tuple[bool, str]:
    """The default output mode and where it comes from: runtime, env or default."""
    runtime = _runtime
    if "as_numpy" in runtime:
        return runtime["as_numpy"], "runtime"
    env = _env
    if "as_numpy" in env.set_keys:
        return env["as_numpy"], "env"
    return BY_KEY["as_numpy"].default, "default"


def rollback_modules() -> Tuple[str, ...]:
    return get("as_numpy_modules")


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
    return get("kpi_sample")


def encoder_precision() -> str:
    return get("encoder_precision")


def encoder() -> str:
    return get("encoder")


def kpi_device_time() -> bool:
    return get("kpi_device_time")


def strict() -> bool:
    """Whether strict mode is on (the guard's ``disallow``; see :func:`transfer_guard`)."""
    return transfer_guard() == "disallow"


def transfer_guard() -> str:
    """The transfer guard mode in force.

    ``configure(transfer_guard=...)``, then ``configure(strict=True)``, then
    ``SAMGPU_TRANSFER_GUARD``, then ``SAMGPU_STRICT=1``, then the default.
    """
    runtime = _runtime
    if "transfer_guard" in runtime:
        return runtime["transfer_guard"]
    if runtime.get("strict"):
        return "disallow"
    env = _env
    if "transfer_guard" in env.set_keys:
        return env["transfer_guard"]
    if env["strict"] and "strict" not in runtime:
        return "disallow"
    return env["transfer_guard"]


def resolve_as_numpy(value: object, module: Optional[str] = None) -> Tuple[bool, str]:
    """Resolve one call's ``as_numpy`` against module rules and the default.

    Precedence: the keyword, then a rollback rule for the calling module, then
    :func:`configure`, then ``SAMGPU_AS_NUMPY``, then tensors.
    """
    if value is None:
        if module is not None and rollback_modules() and module_rolled_back(module):
            return True, "module"
        return default_as_numpy()
    if value is True or value is False:
        return value, "keyword"  # type: ignore[return-value]
    raise TypeError(
        f"as_numpy must be True, False or None (for the configured default), "
        f"got {type(value).__name__} {value!r}"
    )


def settings_table_rst() -> str:
    """The environment variables as a reStructuredText list-table (docs)."""
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 22 22 12 44",
        "",
        "   * - variable",
        "     - values",
        "     - default",
        "     - meaning",
    ]
    for s in SETTINGS:
        if not s.env:
            continue
        default = "unset" if s.default in (None, (), False) else repr(s.default)
        if s.key == "kpi_sample":
            default = "1 (every call)"
        lines += [
            f"   * - ``{s.env}``",
            f"     - {s.values}",
            f"     - {default}",
            f"     - {s.doc}" + (f" ``configure({s.key}=...)`` overrides it." if s.runtime else ""),
        ]
    return "\n".join(lines) + "\n"
