"""Patch lifecycle: install, remove and query the wrappers.

Patching is armed with a wrapt post-import hook per family, so it happens
whether the application imports the SAM package before or after the shim.
Every original is kept in one table and put back as the very same object.
A family is patched whole or not at all, and nothing here ever raises into
the application's own ``import``: problems are logged and upstream is left
untouched.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import _config, _metrics, _telemetry
from .families import FAMILIES, Family, Target, fork_family

try:
    import wrapt
except ImportError:  # reported by patch(); importing the shim must not fail
    wrapt = None  # type: ignore[assignment]

_logger = logging.getLogger("samgpu_shim")
_lock = threading.RLock()

MIN_WRAPT = (1, 14)


@dataclass
class _Applied:
    parent: Any
    attribute: str
    original: Any
    wrapper: Any
    created: bool  # the wrapper created the slot (the original was inherited)


@dataclass
class _FamilyState:
    family: Family
    status: str = "waiting for import"
    applied: List[_Applied] = field(default_factory=list)


# family name -> state, for every family that patch() armed and unpatch() did
# not disarm yet. Hooks cannot be unregistered from wrapt, so a hook that fires
# for a family missing from this table does nothing.
_armed: Dict[str, _FamilyState] = {}
_hooked: set = set()


def _wrapt_problem() -> Optional[str]:
    if wrapt is None:
        return "wrapt is not installed"
    version = tuple(int(p) for p in wrapt.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_WRAPT:
        return f"wrapt {wrapt.__version__} is too old (need >= {'.'.join(map(str, MIN_WRAPT))})"
    return None


def _signature_adapter(original: Any) -> Any:
    """A stand-in whose signature is upstream's plus keyword-only ``as_numpy``.

    wrapt reports the adapter's signature for the wrapper, so
    ``inspect.signature`` and IDEs show the new keyword.
    """
    sig = inspect.signature(original)
    params = list(sig.parameters.values())
    as_numpy = inspect.Parameter(
        "as_numpy", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Optional[bool]
    )
    at = len(params)
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        at -= 1
    params.insert(at, as_numpy)

    def adapter(*args: Any, **kwargs: Any) -> Any:  # never called
        raise NotImplementedError

    adapter.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return adapter


def _make_proxy(target: Target, original: Any) -> Any:
    wrapper = target.make_wrapper(original)
    if target.adds_as_numpy:
        adapter = _signature_adapter(original)
        decorator = wrapt.decorator(wrapper, adapter=wrapt.adapter_factory(lambda _: adapter))
        return decorator(original)
    return wrapt.FunctionWrapper(original, wrapper)


def _apply(state: _FamilyState) -> None:
    """Wrap every target of one family, or none of them."""
    family = state.family
    if state.applied:
        return
    resolved: List[Tuple[Target, Any, str, Any, bool]] = []
    try:
        targets = family.targets()
    except Exception as exc:  # the family module itself failed to import
        state.status = f"failed: {type(exc).__name__}: {exc}"
        _logger.warning("samgpu_shim: could not load %s's patch; left untouched", family.name, exc_info=True)
        return
    for target in targets:
        module = sys.modules.get(target.module)
        if module is None and target.optional:
            continue
        if module is None:
            state.status = f"unsupported: module {target.module} not found"
            _logger.warning("samgpu_shim: %s left untouched: %s", family.name, state.status)
            return
        try:
            parent, attribute, original = wrapt.resolve_path(module, target.attribute)
        except AttributeError as exc:
            if target.optional:
                continue
            state.status = f"unsupported: {target.module}.{target.attribute} not found ({exc})"
            _logger.warning("samgpu_shim: %s left untouched: %s", family.name, state.status)
            return
        if _is_ours(original):
            continue  # already wrapped by an earlier patch that was not undone
        reason = target.check(original)
        if reason is not None and target.optional:
            _logger.info("samgpu_shim: %s: optional %s.%s skipped: %s", family.name, target.module,
                         target.attribute, reason)
            continue
        if reason is not None:
            state.status = f"unsupported: {target.module}.{target.attribute}: {reason}"
            _logger.warning("samgpu_shim: %s left untouched: %s", family.name, state.status)
            return
        created = attribute not in vars(parent)
        resolved.append((target, parent, attribute, original, created))

    applied: List[_Applied] = []
    try:
        for target, parent, attribute, original, created in resolved:
            proxy = _make_proxy(target, original)
            proxy._self_samgpu_shim = True
            setattr(parent, attribute, proxy)
            applied.append(_Applied(parent, attribute, original, proxy, created))
    except Exception as exc:
        for record in reversed(applied):
            _restore(record)
        state.status = f"failed: {type(exc).__name__}: {exc}"
        _logger.warning("samgpu_shim: could not patch %s; left untouched", family.name, exc_info=True)
        return
    state.applied = applied
    state.status = "patched"


def _is_ours(obj: Any) -> bool:
    # ``_self_`` attributes live on the wrapt proxy itself, not on the function.
    return isinstance(obj, wrapt.FunctionWrapper) and getattr(obj, "_self_samgpu_shim", False) is True


def _restore(record: _Applied) -> None:
    current = record.parent.__dict__.get(record.attribute)
    if current is not record.wrapper:
        _logger.warning(
            "samgpu_shim: %s.%s was replaced by someone else after patching; not restored",
            getattr(record.parent, "__qualname__", record.parent),
            record.attribute,
        )
        return
    if record.created:
        delattr(record.parent, record.attribute)
    else:
        setattr(record.parent, record.attribute, record.original)


def _on_import(module: Any) -> None:
    """wrapt post-import hook: patch the armed families of this module."""
    try:
        with _lock:
            for state in list(_armed.values()):
                if state.family.hook_module == module.__name__:
                    _apply(state)
    except Exception:  # never break the application's import
        _logger.warning("samgpu_shim: patching after import of %s failed", module.__name__, exc_info=True)


def _families_for(targets: Tuple[str, ...]) -> Tuple[Family, ...]:
    if not targets:
        return FAMILIES
    return tuple(fork_family(spec) for spec in targets)


def patch(*targets: str) -> bool:
    """Arm the patch for every supported family (or for the given targets).

    ``targets`` are ``"package.module:ClassName"`` strings naming in-house
    copies of the SAM 1 predictor. Families already imported are patched now,
    the others as soon as they are imported. Returns True when at least one
    family is armed. Patching twice never wraps twice; it logs a warning.
    """
    families = _families_for(targets)
    problem = _wrapt_problem()
    if problem:
        _logger.warning("samgpu_shim: not patching: %s", problem)
        return False
    with _lock:
        settings = _config.load_env()
        if settings.disabled:
            _logger.warning("samgpu_shim: %s is set; not patching", _config.ENV_DISABLE)
            return False
        if not _armed:
            _telemetry.install_file_handler(settings.kpi_file)
            _metrics.apply(_config.get("metrics"))
            if _metrics.apply not in _config.listeners.setdefault("metrics", []):
                _config.listeners["metrics"].append(_metrics.apply)
        if not targets and not any(_findable(f.hook_module) for f in families):
            # Not a failure (docs builds, tools, an app that installs SAM
            # later): said at INFO, so that it shows only when asked for.
            _logger.info(
                "samgpu_shim: armed; none of the supported SAM packages (%s) is installed yet, "
                "the patch applies when one is imported",
                ", ".join(f.hook_module for f in families),
            )
        armed_any = False
        for family in families:
            if family.name in _armed:
                _logger.warning("samgpu_shim: %s is already patched; not wrapping twice", family.name)
                continue
            state = _FamilyState(family)
            _armed[family.name] = state
            armed_any = True
            if family.hook_module not in _hooked:
                _hooked.add(family.hook_module)
                # Runs at once when the module is already imported.
                wrapt.register_post_import_hook(_on_import, family.hook_module)
            elif family.hook_module in sys.modules:
                _apply(state)
        return armed_any


def unpatch(*targets: str) -> None:
    """Restore the original functions of every patched family (or the given ones)."""
    with _lock:
        names = [f.name for f in _families_for(targets)] if targets else list(_armed)
        if not any(name in _armed for name in names):
            _logger.warning("samgpu_shim: unpatch() called but nothing is patched")
            return
        for name in names:
            state = _armed.pop(name, None)
            if state is None:
                continue
            for record in reversed(state.applied):
                _restore(record)
        if not _armed:
            _telemetry.remove_file_handler()


def is_patched(target: Optional[str] = None) -> bool:
    """True while the patch is installed (for one family or target, if named).

    A family counts once its wrappers are in place; before its package is
    imported it counts as long as the import hook is armed for it.
    """
    with _lock:
        states = list(_armed.values()) if target is None else [_armed[target]] if target in _armed else []
        return any(s.status in ("patched", "waiting for import") for s in states)


def get_original(owner: Any, attribute: str) -> Any:
    """The unpatched object behind ``owner.attribute`` (itself when unpatched)."""
    with _lock:
        for state in _armed.values():
            for record in state.applied:
                if record.parent is owner and record.attribute == attribute:
                    return record.original
    return inspect.getattr_static(owner, attribute)


def status() -> List[Dict[str, str]]:
    """One row per known or armed family: family, distribution, module, installed, status, targets."""
    rows = []
    with _lock:
        names = {f.name: f for f in FAMILIES}
        names.update({name: state.family for name, state in _armed.items()})
        for name, family in names.items():
            state = _armed.get(name)
            installed = family.hook_module in sys.modules or _findable(family.hook_module)
            rows.append(
                {
                    "family": name,
                    "distribution": family.distribution,
                    "module": family.hook_module,
                    "installed": "yes" if installed else "no",
                    "status": state.status if state else "not patched",
                    "targets": _describe_targets(family),
                }
            )
    return rows


def _describe_targets(family: Family) -> str:
    # Only once the family's package is imported: loading the family module
    # imports torch, which status() must not do on its own.
    if family.hook_module not in sys.modules:
        return f"(listed once {family.hook_module} is imported)"
    try:
        return ", ".join(f"{t.module}.{t.attribute}" for t in family.targets())
    except Exception as exc:
        return f"(cannot be listed: {type(exc).__name__}: {exc})"


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False
