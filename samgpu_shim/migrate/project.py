"""The whole project under analysis: lookups across files, summaries of
functions per calling context, and what the analysis found."""

from __future__ import annotations

import ast
from typing import Any, Dict, FrozenSet, List, Optional, Set, Tuple

from . import kinds as K
from .entry_points import REGISTRY, SAM_PACKAGES
from .index import ClassInfo, FuncInfo, ModuleInfo, annotation_names
from .kinds import CLEAN, Elements, Kind
from .names import Taint, dotted_name
from .operations import CONTAINER_ADDERS, known_library
from .report import Finding, SourceCall
from .statements import Scope

# A function analysed in more calling contexts than this is analysed once
# more with what the contexts share (their taints), not their kinds.
MAX_CONTEXTS = 16


class Summary:
    """What a function does in one calling context: its return value."""

    def __init__(self) -> None:
        self.ret: Taint = CLEAN
        self.ret_kind: Kind = None
        # parameters the body filled in place (out["best"] = s, acc.append(m)),
        # never rebound: slot -> (what was added, the container's kind after)
        self.filled: Dict[int, Tuple[Taint, Kind]] = {}


class Project:
    """Lookups across the scanned files, and the analysis's results."""

    def __init__(self, modules: List[ModuleInfo]) -> None:
        self.modules = modules
        self.sources: List[SourceCall] = []
        self.source_ids: Dict[SourceCall, int] = {}
        self.findings: Dict[Tuple[str, int, str], Finding] = {}
        self.finding_taint: Dict[Tuple[str, int, str], Set[int]] = {}
        self.summaries: Dict[Any, Summary] = {}
        self.contexts: Dict[int, int] = {}
        self.in_progress: Set[Any] = set()
        self.changed = False
        self.rounds = 0
        # statements the analysis could not follow: "path:line" -> why
        self.skipped: Dict[str, str] = {}
        # queues and pipes by name: what one thread puts, another gets
        self.channels: Dict[str, Tuple[Taint, Kind]] = {}
        # state dicts handed from callback to callback (Gradio's gr.State, a
        # session dict): ``state["mask"] = masks[0]`` in one function is read
        # as ``state["mask"]`` in another, matched by parameter name and key
        # string keys a result was ever stored under ({"mask": masks[0]}, d["mask"] = m):
        # a string index with another key reads some other producer's dict
        self.result_keys: Set[str] = set()
        # module globals that functions fill in place (a notebook's ``state.update(...)``
        # in a callback, read by later cells): (module path, name) -> (taint, kind)
        self.mutated: Dict[Tuple[str, str], Tuple[Taint, Kind]] = {}
        self.keyed: Dict[str, Tuple[Taint, Kind]] = {}
        # the receiver of each predict call: (path, line, col) -> how it is known
        self.receivers: Dict[Tuple[str, int, int], Set[str]] = {}
        # modules not scanned that results reach: module -> {(path, line): taint}
        self.unscanned_calls: Dict[str, Dict[Tuple[str, int], Taint]] = {}
        # in-house SAM copies patched by name: samgpu_shim.patch("pkg.mod:Class")
        self.forks: Dict[str, str] = {}
        self.by_name: Dict[str, ModuleInfo] = {}
        self.by_class: Dict[str, ClassInfo] = {}
        self._subclasses: Dict[int, List[ClassInfo]] = {}
        self._by_base_name: Optional[Dict[str, List[ClassInfo]]] = None
        self.by_method: Dict[str, List[FuncInfo]] = {}
        for m in modules:
            self.by_name.setdefault(m.name, m)
            for name, c in m.classes.items():
                self.by_class.setdefault(name, c)
                for method_name, f in c.methods.items():
                    self.by_method.setdefault(method_name, []).append(f)
        self._find_forks()

    def _find_forks(self) -> None:
        for m in self.modules:
            if "samgpu_shim" not in m.source or "patch" not in m.source:
                continue
            for node in ast.walk(m.tree):
                if isinstance(node, ast.Call) and m.qualify(dotted_name(node.func)) == "samgpu_shim.patch":
                    for arg in node.args:
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and ":" in arg.value:
                            module, _, cls = arg.value.partition(":")
                            self.forks[f"{module}.{cls}"] = f"{module}.{cls}"

    # -- lookups -----------------------------------------------------------
    def patched_methods(self, patched: str) -> FrozenSet[str]:
        """The source methods of a patched class (a fork patched by name: predict)."""
        return frozenset({"predict"}) if patched in self.forks else REGISTRY.methods_of(patched)

    def source_id(self, path: str, node: ast.Call) -> int:
        key = SourceCall(path, node.lineno, node.col_offset)
        sid = self.source_ids.get(key)
        if sid is None:
            sid = len(self.sources)
            self.sources.append(key)
            self.source_ids[key] = sid
        return sid

    def note_receiver(self, path: str, node: ast.Call, how: str) -> None:
        self.receivers.setdefault((path, node.lineno, node.col_offset), set()).add(how)

    def note_unscanned(self, module: str, where: ModuleInfo, node: ast.AST, taint: Taint) -> None:
        key = (where.path, node.lineno)  # type: ignore[attr-defined]
        calls = self.unscanned_calls.setdefault(module, {})
        calls[key] = calls.get(key, CLEAN) | taint

    def module_named(self, dotted: str) -> Optional[ModuleInfo]:
        """The scanned module Python would import as ``dotted``: same name, or the
        scan root cut either end (``app.utils`` scanned from inside ``app/``)."""
        if not dotted:
            return None
        found = self.by_name.get(dotted)
        if found is not None:
            return found
        best: Optional[ModuleInfo] = None
        for m in self.modules:
            if dotted.endswith("." + m.name) or m.name.endswith("." + dotted):
                if best is None or len(m.name) > len(best.name):
                    best = m
        return best

    def scanned(self, qualified: str) -> bool:
        """Whether a qualified name lives in the scanned code."""
        parts = qualified.split(".")
        return any(self.module_named(".".join(parts[:i])) is not None for i in range(len(parts) - 1, 0, -1))

    def unscanned(self) -> Dict[str, List[str]]:
        """Modules not scanned that results reach: module -> ["file:line", ...]."""
        out: Dict[str, List[str]] = {}
        for module, calls in sorted(self.unscanned_calls.items()):
            if not any(t for t in calls.values()):
                continue
            rows = []
            for path, line in sorted(calls):
                cell, number = next(m for m in self.modules if m.path == path).where(line)
                rows.append(f"{path}:{number}" if cell is None else f"{path}:cell {cell}:{number}")
            out[module] = rows
        return out

    def share(self, table: Dict[Any, Tuple[Taint, Kind]], key: Any, taint: Taint, kind: Kind) -> None:
        """Join a value into one of the tables bodies share (channels, state dicts,
        filled globals, dataclass fields); a table that grew asks for another round."""
        had_t, had_k = table.get(key, (CLEAN, K.EMPTY))
        now_k = K.join(had_k, kind)
        if taint - had_t or now_k != had_k:
            table[key] = (had_t | taint, now_k)
            self.changed = True

    def _defined(self, module: ModuleInfo, name: str, table: str, depth: int = 0) -> Any:
        """``name`` as defined in ``module`` or imported into it from a scanned module
        (through a package's re-exports too: ``from evalkit import mask_iou``)."""
        own = getattr(module, table)
        if name in own:
            return own[name]
        target = module.aliases.get(name)
        if target and "." in target:
            mod_name, attr = target.rsplit(".", 1)
            other = self.module_named(mod_name)
            if other is not None and other is not module:
                found = getattr(other, table).get(attr)
                if found is None and depth < 4:
                    found = self._defined(other, attr, table, depth + 1)
                return found
        return None

    def function(self, module: ModuleInfo, name: str) -> Optional[FuncInfo]:
        return self._defined(module, name, "functions")

    def cls(self, module: ModuleInfo, name: str) -> Optional[ClassInfo]:
        return self._defined(module, name, "classes")

    def class_by_name(self, name: str) -> Optional[ClassInfo]:
        return self.by_class.get(name)

    def base_classes(self, cls: ClassInfo) -> List[Tuple[str, Optional[ClassInfo]]]:
        """(qualified name, scanned class or None) of each base."""
        out = []
        for node in cls.base_nodes:
            name = dotted_name(node) or ""
            scanned = self.cls(cls.module, name) if "." not in name else None
            out.append((cls.module.qualify(name) or name, scanned if scanned is not cls else None))
        return out

    def subclasses(self, cls: ClassInfo) -> List[ClassInfo]:
        """The scanned classes derived from ``cls``, at any depth."""
        found = self._subclasses.get(id(cls))
        if found is not None:
            return found
        if self._by_base_name is None:
            # classes by the last name of each base, as written: the candidates to resolve
            self._by_base_name = {}
            for c in {id(c): c for c in self.by_class.values()}.values():
                for node in c.base_nodes:
                    name = (dotted_name(node) or "").rsplit(".", 1)[-1]
                    if name:
                        self._by_base_name.setdefault(name, []).append(c)
        found = []
        todo, seen = [cls], {id(cls)}
        while todo:
            parent = todo.pop()
            for child in self._by_base_name.get(parent.name, ()):
                if id(child) not in seen and any(p is parent for _, p in self.base_classes(child)):
                    seen.add(id(child))
                    found.append(child)
                    todo.append(child)
        self._subclasses[id(cls)] = found
        return found

    def method(self, cls: ClassInfo, name: str, depth: int = 0) -> Optional[FuncInfo]:
        if name in cls.methods:
            return cls.methods[name]
        if depth < 5:
            for _, parent in self.base_classes(cls):
                if parent is not None:
                    found = self.method(parent, name, depth + 1)
                    if found is not None:
                        return found
        return None

    def unique_method(self, name: str) -> Optional[FuncInfo]:
        if name.startswith("__") or name in CONTAINER_ADDERS:
            return None
        found = self.by_method.get(name, [])
        return found[0] if len(found) == 1 else None

    def predictor_base(self, cls: ClassInfo, depth: int = 0) -> Optional[str]:
        """The patched class a scanned class derives from (``module.Class``), "name"
        when a base is only called ``...Predictor``, else None."""
        named = None
        for qualified, parent in self.base_classes(cls):
            patched = REGISTRY.patched_class(qualified) or self.forks.get(qualified)
            if patched:
                return patched
            if parent is not None and depth < 5:
                found = self.predictor_base(parent, depth + 1)
                if found and found != "name":
                    return found
                named = named or found
            elif qualified.endswith("Predictor"):
                named = "name"
        return named

    def is_module_class(self, cls: ClassInfo, depth: int = 0) -> bool:
        """Whether instances are ``torch.nn.Module`` s (called, they run ``forward``)."""
        for qualified, parent in self.base_classes(cls):
            top = qualified.split(".")[0]
            if qualified.endswith("Module") and top in ("torch", "lightning", "pytorch_lightning", "nn"):
                return True
            if parent is not None and depth < 5 and self.is_module_class(parent, depth + 1):
                return True
        return False

    def annotation_kind(self, module: ModuleInfo, node: Optional[ast.AST]) -> Kind:
        """What an annotation says of a value: a patched predictor, an ndarray, a tensor,
        a scanned class."""
        for name in annotation_names(node):
            if name == "None":
                continue
            qualified = module.qualify(name) or name
            patched = REGISTRY.patched_class(qualified) or self.forks.get(qualified)
            if patched:
                return K.patched(patched)
            short = qualified.rsplit(".", 1)[-1]
            if qualified.startswith("numpy.") and short in ("ndarray", "NDArray", "ArrayLike"):
                return K.NUMPY
            if qualified in ("torch.Tensor", "torch.BoolTensor"):
                return K.MASK if short == "BoolTensor" else K.TORCH
            scanned = self.cls(module, name) if "." not in name else None
            if scanned is not None:
                return f"class:{scanned.name}"
        return None

    def external_module(self, qualified: str) -> bool:
        """A module neither scanned nor known to the scan (a result sent there is reported)."""
        top = qualified.split(".")[0]
        return not self.scanned(qualified) and not known_library(top) and top not in SAM_PACKAGES

    # -- results -----------------------------------------------------------
    def report(self, module: ModuleInfo, node: ast.AST, operation: str, effect: str, why: str, fix: str,
               taint: Taint) -> None:
        concrete = {t for t in taint if t >= 0}
        if not concrete:
            return
        cell, line = module.where(node.lineno)  # type: ignore[attr-defined]
        key = (module.path, node.lineno, operation)  # type: ignore[attr-defined]
        if key not in self.findings:
            self.findings[key] = Finding(module.path, line, operation, why, fix, cell, effect)
            self.finding_taint[key] = set()
        self.finding_taint[key] |= concrete

    # -- summaries ---------------------------------------------------------
    def summary(self, func: FuncInfo, args: Tuple[Taint, ...], kinds: Tuple[Kind, ...] = (),
                context: Optional[Dict[str, Tuple[Taint, Kind]]] = None, silent: bool = False) -> Summary:
        """Analyse ``func`` with its parameters bound to ``args`` and ``kinds``, and
        ``self``'s attributes as the caller sees them (``context``), memoised."""
        frozen = frozenset((a, t, k) for a, (t, k) in (context or {}).items())
        key: Any = (id(func.node), args, kinds, frozen, silent)
        done = self.summaries.get(key)
        if done is not None:
            return done
        seen = self.contexts.get(id(func.node), 0)
        if seen >= MAX_CONTEXTS and (any(k not in (None, K.SELF) for k in kinds) or frozen):
            # too many contexts: the kinds are dropped, the taints kept
            return self.summary(func, args, tuple(K.SELF if k == K.SELF else None for k in kinds), None, silent)
        if key in self.in_progress:
            return Summary()  # recursion: what is known so far
        self.contexts[id(func.node)] = seen + 1
        self.in_progress.add(key)
        try:
            result = self._analyse(func, args, kinds, context, silent)
            self.summaries[key] = result
            return result
        finally:
            self.in_progress.discard(key)

    def _analyse(self, func: FuncInfo, args: Tuple[Taint, ...], kinds: Tuple[Kind, ...],
                 context: Optional[Dict[str, Tuple[Taint, Kind]]], silent: bool) -> Summary:
        scope = Scope(self, func.module, func.cls, func, context)
        scope.silent = silent
        names = list(func.params) + [a for a in (func.vararg, *func.kwonly, func.kwarg) if a]
        arrays = func.array_params()
        for i, name in enumerate(names):
            taint = args[i] if i < len(args) else CLEAN
            kind = kinds[i] if i < len(kinds) else None
            if kind is None and name in func.annotations:
                kind = self.annotation_kind(func.module, func.annotations[name])
            if kind is None and not taint and name in arrays:
                kind = K.NUMPY  # used as a host array in the body
            scope.env[name] = taint
            if kind is not None:
                scope.kinds[name] = kind
        if func.is_method and func.params:
            scope.kinds[func.params[0]] = K.SELF
        scope.run(func.node.body)  # type: ignore[attr-defined]
        result = Summary()
        rebound = func.rebound_names
        for i, name in enumerate(names):
            if name in rebound or (func.is_method and i == 0):
                continue
            added = scope.env.get(name, CLEAN) - (args[i] if i < len(args) else CLEAN)
            if added:
                result.filled[i] = (added, scope.kinds.get(name))
        result.ret = scope.returned
        result.ret_kind = None if scope.returned_kind == K.EMPTY else scope.returned_kind
        if scope.generator:  # calling it gives an iterator over what it yields
            result.ret = scope.yielded
            result.ret_kind = Elements((scope.yielded_kind,))
        if result.ret_kind is None and func.returns is not None:
            result.ret_kind = self.annotation_kind(func.module, func.returns)
        return result

    def call(self, func: FuncInfo, call: ast.Call, scope: Scope, bound_self: bool,
             context: Optional[Dict[str, Tuple[Taint, Kind]]] = None) -> Summary:
        """Bind a call's arguments to ``func``'s parameters and analyse it."""
        params = list(func.params)
        slots: List[Taint] = [CLEAN] * (len(params) + (1 if func.vararg else 0) + len(func.kwonly)
                                        + (1 if func.kwarg else 0))
        kinds: List[Kind] = [None] * len(slots)
        offset = 1 if (func.is_method and bound_self) else 0
        if offset and params:
            kinds[0] = K.SELF
        vararg_slot = len(params) if func.vararg else None
        kwarg_slot = len(slots) - 1 if func.kwarg else None
        given: Dict[int, ast.AST] = {}  # slot -> the caller's expression
        for i, arg in enumerate(call.args):
            t, k = scope.eval(arg)
            index = i + offset
            given[index] = arg
            if isinstance(arg, ast.Starred):
                for j in range(index, len(params)):
                    slots[j] = slots[j] | t
                if vararg_slot is not None:
                    slots[vararg_slot] |= t
                break
            if index < len(params):
                slots[index] = t
                kinds[index] = k
            elif vararg_slot is not None:
                slots[vararg_slot] |= t
        for kw in call.keywords:
            t, k = scope.eval(kw.value)
            if kw.arg is None:
                for j in range(offset, len(slots)):
                    slots[j] = slots[j] | t
            elif kw.arg in params:
                slots[params.index(kw.arg)] = t
                kinds[params.index(kw.arg)] = k
                given[params.index(kw.arg)] = kw.value
            elif kw.arg in func.kwonly:
                slot = len(params) + (1 if func.vararg else 0) + func.kwonly.index(kw.arg)
                slots[slot] = t
                kinds[slot] = k
            elif kwarg_slot is not None:
                slots[kwarg_slot] |= t
        result = self.summary(func, tuple(slots), tuple(kinds), context, silent=scope.silent)
        for index, (taint, kind) in result.filled.items():
            arg = given.get(index)
            if isinstance(arg, (ast.Name, ast.Attribute, ast.Subscript)):
                scope.bind_into(arg, taint, None, replace=kind)  # what the callee put in the caller's container
        return result
