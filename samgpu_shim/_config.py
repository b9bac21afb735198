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

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Settings:
        env = os.environ if environ is None else environ
        raw = env.get(ENV_AS_NUMPY)
        return cls(
            as_numpy=_parse_flag(ENV_AS_NUMPY, raw),
            disabled=_parse_flag(ENV_DISABLE, env.get(ENV_DISABLE)),
            kpi_file=env.get(ENV_KPI_FILE) or None,
            as_numpy_set=bool(raw and raw.strip()),
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


def configure(*, as_numpy: bool | None | _Unset = UNSET) -> None:
    """Change the default output mode at run time.

    ``as_numpy=True`` makes numpy the default, ``False`` makes GPU tensors the
    default, ``None`` drops the override so that the environment applies
    again. An explicit ``as_numpy=`` keyword on a call still wins.
    """
    global _runtime_as_numpy
    if as_numpy is UNSET:
        return
    if as_numpy is not None and not isinstance(as_numpy, bool):
        raise TypeError(f"configure(as_numpy=...) must be a bool or None, got {type(as_numpy).__name__}")
    with _lock:
        _runtime_as_numpy = as_numpy


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
