"""One function body (or a module's top level): what each name holds."""

from __future__ import annotations

import ast
from typing import Any, Dict, Optional, Set, Tuple

from .entry_points import PREDICT_METHODS, RECEIVER_WORDS, SAM_KEYWORDS
from .index import ClassInfo, FuncInfo, ModuleInfo
from .names import CLEAN, Positions, Taint, as_numpy_kw, class_kind, dotted_name, words


class BaseScope:
    # ``project`` is a project.Project (not imported: project.py builds scopes)
    def __init__(self, project: Any, module: ModuleInfo, cls: Optional[ClassInfo],
                 func: Optional[FuncInfo]) -> None:
        self.p = project
        self.m = module
        self.cls = cls
        self.func = func
        self.env: Dict[str, Taint] = {}
        self.kinds: Dict[str, str] = {}  # name -> numpy / torch / predictor / other / scalar / self / class:X
        self.keyed: Set[str] = set()  # containers whose constant keys are tracked one by one
        self.local_funcs: Dict[str, FuncInfo] = {}
        self.returned: Taint = CLEAN
        self.returned_kind: Optional[str] = None
        self.returned_any = False
        self.silent = False

    # -- state -------------------------------------------------------------
    def snapshot(self) -> Tuple[Dict[str, Taint], Dict[str, str], Set[str]]:
        return dict(self.env), dict(self.kinds), set(self.keyed)

    def restore(self, state: Tuple[Dict[str, Taint], Dict[str, str], Set[str]]) -> None:
        self.env, self.kinds, self.keyed = dict(state[0]), dict(state[1]), set(state[2])

    def merge(self, *states: Tuple[Dict[str, Taint], Dict[str, str], Set[str]]) -> None:
        env: Dict[str, Taint] = {}
        kinds: Dict[str, str] = {}
        keyed: Set[str] = set()
        for e, _, ky in states:
            for name, t in e.items():
                env[name] = env.get(name, CLEAN) | t
            keyed |= ky
        for name in set().union(*(k.keys() for _, k, _ in states)):
            values = {k.get(name) for _, k, _ in states}
            if len(values) == 1 and None not in values:
                kinds[name] = values.pop()  # type: ignore[assignment]
        self.env, self.kinds, self.keyed = env, kinds, keyed

    def report(self, node: ast.AST, operation: str, effect: str, why: str, fix: str, taint: Taint) -> None:
        if not self.silent:
            self.p.report(self.m, node, operation, effect, why, fix, taint)

    def lookup(self, name: str) -> Taint:
        if name in self.env:
            return self.env[name]
        if self.func is not None:
            return self.m.globals.get(name, CLEAN)
        return CLEAN

    def kind_of(self, name: str) -> Optional[str]:
        if name in self.kinds:
            return self.kinds[name]
        if name in self.env:
            return None
        if self.func is not None:
            return self.m.global_kinds.get(name)
        return None

    def _self_class(self, node: ast.AST) -> Optional[ClassInfo]:
        if isinstance(node, ast.Name):
            kind = self.kind_of(node.id)
            if kind == "self":
                return self.cls
            if class_kind(kind):
                return self.p.class_by_name(class_kind(kind))
        return None

    def bind(self, target: ast.AST, taint: Taint, kind: Optional[str], value: Optional[ast.AST] = None) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = taint
            if target.id in self.keyed:
                self.keyed.discard(target.id)
                for key in [k for k in self.env if k.startswith(target.id + "[")]:
                    del self.env[key]
            if kind:
                self.kinds[target.id] = kind
            else:
                self.kinds.pop(target.id, None)
            if isinstance(value, ast.Dict):
                self._bind_dict(target.id, value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            elts = target.elts
            if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(elts) and not any(
                isinstance(e, ast.Starred) for e in elts + value.elts
            ):
                for t_elt, v_elt in zip(elts, value.elts):
                    t, k = self.eval(v_elt, report=False)
                    self.bind(t_elt, t, k, v_elt)
                return
            if isinstance(kind, Positions) and len(kind) == len(elts) and not any(
                isinstance(e, ast.Starred) for e in elts
            ):
                for elt, t in zip(elts, kind):
                    self.bind(elt, t, None)
                return
            for elt in elts:
                self.bind(elt, taint, "scalar" if kind == "scalar" else None)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, taint, None)
        elif isinstance(target, ast.Attribute):
            base = target.value
            cls = self._self_class(base)
            if cls is not None:
                self.env[f"self.{target.attr}"] = taint
                if taint - cls.attrs.get(target.attr, CLEAN):
                    cls.attrs[target.attr] = cls.attrs.get(target.attr, CLEAN) | taint
                    self.p.changed = True
                known = cls.attr_kinds.get(target.attr)
                if kind and known != kind and known != "mixed":
                    # two methods that store different kinds: nothing is assumed
                    cls.attr_kinds[target.attr] = kind if known is None else "mixed"
                    self.p.changed = True
                if kind:
                    self.kinds[f"self.{target.attr}"] = kind
            else:
                dotted = dotted_name(target)
                if dotted:
                    self.env[dotted] = taint
                    if kind:
                        self.kinds[dotted] = kind
                root = base
                while isinstance(root, (ast.Attribute, ast.Subscript)):
                    root = root.value
                if isinstance(root, ast.Name) and taint:
                    # an object that holds a result: the object carries it too
                    self.env[root.id] = self.lookup(root.id) | taint
        elif isinstance(target, ast.Subscript):
            root = target.value
            key = target.slice
            if isinstance(root, ast.Name):
                if isinstance(key, ast.Constant) and isinstance(key.value, (str, int)):
                    self.env[f"{root.id}[{key.value!r}]"] = taint
                    if root.id not in self.env or not self.lookup(root.id):
                        self.keyed.add(root.id)
                self.env[root.id] = self.lookup(root.id) | taint
            elif taint:
                self.bind_into(root, taint)

    def _bind_dict(self, name: str, value: ast.Dict) -> None:
        if all(isinstance(k, ast.Constant) for k in value.keys):
            self.keyed.add(name)
            for k, v in zip(value.keys, value.values):
                self.env[f"{name}[{k.value!r}]"] = self.eval(v, report=False)[0]  # type: ignore[union-attr]

    # -- sources -----------------------------------------------------------
    def is_source(self, call: ast.Call, unpack: Optional[ast.AST] = None, receiver_kind: object = "?") -> bool:
        func = call.func
        if not (isinstance(func, ast.Attribute) and func.attr in PREDICT_METHODS):
            return False
        kw = as_numpy_kw(call)
        if kw is not None and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
            return False
        receiver = func.value
        kind = self.eval(receiver, report=False)[1] if receiver_kind == "?" else receiver_kind
        if kind == "predictor":
            return True
        if kind == "self":
            return self.cls is not None and self.p.is_predictor_class(self.cls)
        if kind in ("other", "numpy", "torch") or class_kind(kind):
            cls = self.p.class_by_name(class_kind(kind)) if class_kind(kind) else None
            return cls is not None and self.p.is_predictor_class(cls)
        if any(k.arg in SAM_KEYWORDS for k in call.keywords):
            return True
        name = ""
        if isinstance(receiver, ast.Name):
            name = receiver.id
        elif isinstance(receiver, ast.Attribute):
            name = receiver.attr
        elif isinstance(receiver, ast.Call):
            name = dotted_name(receiver.func) or ""
            name = name.split(".")[-1]
        if words(name) & RECEIVER_WORDS:
            return True
        # masks, scores, logits = model.predict(...): SAM's three results by name
        if isinstance(unpack, (ast.Tuple, ast.List)) and len(unpack.elts) == 3:
            first = unpack.elts[0]
            if isinstance(first, ast.Name) and "mask" in first.id.lower():
                return True
        return False

