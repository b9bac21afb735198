"""Expressions: the taint and kind of each, and the sinks among them
(indexing, attributes, operators)."""

from __future__ import annotations

import ast
from typing import Optional, Tuple

from . import kinds as K
from .kinds import CLEAN, Elements, Keys, Kind, Positions
from .names import Taint, dotted_name, stand_in, tensor_guard, words
from .operations import METADATA, effect, operator_row, row
from .scope import BaseScope

Value = Tuple[Taint, Kind]


def _constant_key(node: ast.AST) -> Optional[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
        return repr(node.value)
    return None


class Expressions(BaseScope):
    """The value of each expression; the sinks that are not calls."""

    def eval(self, node: Optional[ast.AST], report: bool = True) -> Value:
        """The taint and kind of an expression; with ``report``, its sinks are reported."""
        if node is None:
            return CLEAN, None
        if report or self.silent:
            return self._eval(node)
        self.silent = True
        try:
            return self._eval(node)
        finally:
            self.silent = False

    def _eval_clearing(self, node: ast.AST, name: Optional[str]) -> Value:
        """The value of ``node`` with ``name`` known to hold no result there."""
        if name is None or name not in self.env:
            return self._eval(node)
        saved = self.env[name]
        self.env[name] = CLEAN
        try:
            return self._eval(node)
        finally:
            self.env[name] = saved

    def _call(self, node: ast.Call) -> Value:  # calls.py
        raise NotImplementedError

    def _run_project(self, node: ast.Call, target: object) -> Value:  # calls.py
        raise NotImplementedError

    def _eval(self, node: ast.AST) -> Value:
        if isinstance(node, ast.Name):
            taint, kind = self.mutated(node.id, self.lookup(node.id), self.kind_of(node.id))
            if kind is None and not taint and "predictor" in words(node.id):
                # ``self.p = predictor``: the attribute is a predictor too
                kind = K.PREDICTOR
            return taint, kind
        if isinstance(node, ast.Constant):
            return CLEAN, None
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            return self._attribute(node)
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.UnaryOp):
            t, k = self._eval(node.operand)
            if isinstance(node.op, ast.USub) and k == K.MASK and t:
                self.report(node, "1 - mask", effect(row("1 - mask")), row("1 - mask").why, row("1 - mask").fix, t)
                return CLEAN, None
            if isinstance(node.op, ast.Not):
                return CLEAN, None
            return t, k if k in (K.NUMPY, K.TORCH, K.MASK, K.SCALAR, K.NPSCALAR) else None
        if isinstance(node, ast.BoolOp):
            taint = CLEAN
            for v in node.values:
                taint |= self._eval(v)[0]
            return taint, None
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.IfExp):
            self._eval(node.test)
            guarded = tensor_guard(node.test)
            cleared = None
            if guarded:  # on the other arm the name holds no tensor
                cleared = node.orelse if guarded[1] else node.body
            bt, bk = self._eval_clearing(node.body, guarded[0] if cleared is node.body else None)
            ot, ok = self._eval_clearing(node.orelse, guarded[0] if cleared is node.orelse else None)
            if guarded:
                # ``x.cpu().numpy() if torch.is_tensor(x) else x``
                name, tensor_arm_is_body = guarded
                other = node.orelse if tensor_arm_is_body else node.body
                if dotted_name(other) == name:
                    return (bt, bk) if tensor_arm_is_body else (ot, ok)
            return bt | ot, K.join(bk, ok)
        if isinstance(node, ast.Tuple) and not any(isinstance(e, ast.Starred) for e in node.elts):
            parts = [self._eval(elt) for elt in node.elts]
            return frozenset().union(*(t for t, _ in parts)), Positions.of(parts)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            taint, kind = CLEAN, K.EMPTY
            for elt in node.elts:
                t, k = self._eval(elt)
                taint |= t
                kind = K.join(kind, K.element(k) if isinstance(elt, ast.Starred) else k)
            return taint, Elements((kind,))
        if isinstance(node, ast.Dict):
            return self._dict(node)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self._comprehension(node)
        if isinstance(node, ast.Starred):
            return self._eval(node.value)
        if isinstance(node, ast.NamedExpr):
            t, k = self._eval(node.value)
            self.bind(node.target, t, k)
            return t, k
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            t, k = self._eval(node.value) if node.value is not None else (CLEAN, None)
            self.generator = True
            self.yielded |= t
            self.yielded_kind = K.join(self.yielded_kind, K.element(k) if isinstance(node, ast.YieldFrom) else k)
            return CLEAN, None  # what send() passes in
        if isinstance(node, ast.Await):
            return self._eval(node.value)
        if isinstance(node, ast.JoinedStr):
            for v in node.values:
                self._eval(v)
            return CLEAN, None
        if isinstance(node, ast.FormattedValue):
            self._eval(node.value)
            return CLEAN, None
        if isinstance(node, ast.Slice):
            for part in (node.lower, node.upper, node.step):
                if part is not None:
                    self._eval(part)
            return CLEAN, None
        return CLEAN, None

    def _dict(self, node: ast.Dict) -> Value:
        taint = CLEAN
        entries = []
        keyed = True
        for k, v in zip(node.keys, node.values):
            if k is not None:
                self._eval(k)
            vt, vk = self._eval(v)
            taint |= vt
            key = _constant_key(k) if k is not None else None
            if vt and isinstance(k, ast.Constant) and isinstance(k.value, str):
                self.note_result_key(k.value)
            if key is None:
                keyed = False
            else:
                entries.append((key, vt, vk))
        return taint, Keys.of(entries) if keyed else None

    def _comprehension(self, node: ast.AST) -> Value:
        saved = self.snapshot()
        for gen in node.generators:  # type: ignore[attr-defined]
            it, ik = self._eval(gen.iter)
            self.bind_iteration(gen.target, gen.iter, it, ik)
            for cond in gen.ifs:
                self._eval(cond)
        if isinstance(node, ast.DictComp):
            self._eval(node.key)
            taint, kind = self._eval(node.value)
            kind = None
        else:
            taint, kind = self._eval(node.elt)  # type: ignore[attr-defined]
            kind = Elements((kind,))
        self.restore(saved)
        return taint, kind

    def bind_iteration(self, target: ast.AST, iterable: ast.AST, taint: Taint, kind: Kind) -> None:  # statements.py
        raise NotImplementedError

    def _attribute(self, node: ast.Attribute) -> Value:
        base = node.value
        cls = self.self_class(base)
        if cls is not None:
            is_self = isinstance(base, ast.Name) and self.kind_of(base.id) == K.SELF
            getter = self.p.method(cls, node.attr)
            if getter is not None and _is_property(getter.node):
                # self.current_mask: the property's getter runs, on this self
                call = stand_in(node, "getter", lambda: (node, [], []))
                return self._run_project(call, (getter, True, None, is_self))
            if not is_self and node.attr not in cls.attrs and node.attr not in cls.attr_kinds:
                # a field no method writes (a dataclass's): what it was built with
                if node.attr in cls.fields and not any(f.name == "__init__" for f in cls.methods.values()):
                    t, k = cls.fields[node.attr]
                    return t, None if k == K.EMPTY else k
                return self._eval(base)[0], None
            return self.self_attr(cls, node.attr, is_self)
        name = ".".join(reversed(_parts(node))) if _parts(node) else None
        if name and name in self.env:
            return self.env[name], self.kinds.get(name)
        held = self.module_state(node)
        if held is not None and held in self.p.keyed:  # st.session_state.masks, filled by another function
            return self.p.keyed[held]
        if name and "." in name and self.func is not None and name in self.m.globals:
            kind = self.m.global_kinds.get(name)
            return self.m.globals[name], None if kind == K.MIXED else kind
        t, k = self._eval(base)
        if not t:
            if k == K.NUMPY and node.attr in ("T", "flat", "real", "imag"):
                return CLEAN, K.NUMPY
            if K.prefixed(k, "patched") or k == K.PREDICTOR:
                # model.inst_interactive_predictor, predictor.model: named by their words
                return CLEAN, K.PREDICTOR if "predictor" in words(node.attr) else None
            return CLEAN, None
        if node.attr in METADATA:
            return CLEAN, None
        if node.attr in ("size", "flat") and (K.is_tensor(k) or k is None or isinstance(k, Positions)):
            op = row(".size" if node.attr == "size" else ".flat")
            self.report(node, op.name, effect(op), op.why, op.fix, t)
            return CLEAN, None
        if node.attr in ("T", "mT", "data", "real"):
            return t, k if K.is_tensor(k) else K.TORCH
        return t, None

    def _subscript(self, node: ast.Subscript) -> Value:
        base, key = node.value, node.slice
        cls = self.self_class(base)
        if cls is not None and isinstance(node.ctx, ast.Load):
            getter = self.p.method(cls, "__getitem__")
            if getter is not None:  # self[i]: the class's __getitem__ runs
                is_self = isinstance(base, ast.Name) and self.kind_of(base.id) == K.SELF
                call = stand_in(node, "item", lambda: (
                    ast.Attribute(value=base, attr="__getitem__", ctx=ast.Load()), [key], []))
                return self._run_project(call, (getter, True, None, is_self))
        bt, bk = self._eval(base)
        kt, kk = self._eval(key)
        self._index_check(node, bt, bk, kt, kk)
        constant = _constant_key(key)
        shared = self.state_key(base, key)
        if shared is not None and shared in self.p.keyed and not (isinstance(bk, Keys) and bk.get(constant)):
            # the key's own values (the dict's other keys may hold results)
            return self.p.keyed[shared]
        if isinstance(bk, Positions):
            if isinstance(key, ast.Constant) and isinstance(key.value, int) and -len(bk) <= key.value < len(bk):
                return bk[key.value]
            if isinstance(key, ast.Slice) and key.step is None and all(
                p is None or isinstance(p, ast.Constant) and isinstance(p.value, int) for p in (key.lower, key.upper)
            ):
                lo = key.lower.value if key.lower is not None else None  # type: ignore[union-attr]
                hi = key.upper.value if key.upper is not None else None  # type: ignore[union-attr]
                part = bk[lo:hi]
                return frozenset().union(*(t for t, _ in part)) if part else CLEAN, Positions(part)
            return bt, K.element(bk)
        if isinstance(bk, Keys):
            if constant is not None:
                found = bk.get(constant)
                return found if found is not None else (CLEAN, None)
            return bk.any()
        if isinstance(bk, Elements):
            return bt, bk if isinstance(key, ast.Slice) else bk.kind
        if bt and isinstance(key, ast.Constant) and isinstance(key.value, str) and (bk is None or K.is_tensor(bk)) \
                and key.value not in self.p.result_keys:
            # No tensor takes a string index, and no result was stored under this
            # key anywhere: the value read here is another producer's (a mask
            # generator's dicts, a record), so this path holds no result.
            return CLEAN, None
        if bt and _negative_step(key) and K.is_tensor(bk):
            op = row("t[::-1]")
            self.report(node, op.name, effect(op), op.why, op.fix, bt)
            return CLEAN, K.NUMPY
        if bt:
            if bk == K.MASK and not kt:
                return bt, K.MASK
            return bt, bk if K.is_tensor(bk) else None
        return CLEAN, K.NUMPY if bk == K.NUMPY else None

    def _index_check(self, node: ast.AST, bt: Taint, bk: Kind, kt: Taint, kk: Kind) -> None:
        """``array[mask]``: numpy converts the index, which CUDA refuses. A 0-d
        index (argmax, item) is read through __index__, which CUDA allows (a
        sync): lists, dicts and arrays all take it."""
        if not kt or bt or kk == K.SCALAR or not (bk is None or bk == K.NUMPY):
            return
        op = row("ndarray[mask]")
        self.report(node, op.name, effect(op), op.why, op.fix, kt)

    def _binop(self, node: ast.BinOp) -> Value:
        lt, lk = self._eval(node.left)
        rt, rk = self._eval(node.right)
        return self.arithmetic(node, node.op, lt, lk, rt, rk, node.left, node.right)

    def arithmetic(self, node: ast.AST, op: ast.AST, lt: Taint, lk: Kind, rt: Taint, rk: Kind,
                   left: Optional[ast.AST] = None, right: Optional[ast.AST] = None, in_place: bool = False) -> Value:
        """``left op right`` where either side may be a result (a row of the table
        when they meet an ndarray, a numpy scalar, or a boolean mask under ``-``)."""
        joined = _concatenated(op, lt, lk, rt, rk)
        if joined is not None:  # tracks + finished: a list of both lists' elements
            return joined
        if isinstance(op, ast.Sub) and ((lk == K.MASK and lt) or (rk == K.MASK and rt)):
            found = row("1 - mask")
            self.report(node, found.name, effect(found), found.why, found.fix, lt | rt)
            return CLEAN, None
        if lt and not rt and rk == K.NUMPY:
            found = operator_row(op, reflected=False)
            if found is not None:
                self.report(node, found.name, effect(found), found.why, found.fix, lt)
                return CLEAN, K.NUMPY
        if rt and not lt and lk == K.NUMPY:
            found = operator_row(op, reflected=True, in_place=in_place)
            if found is not None:
                self.report(node, found.name, effect(found), found.why, found.fix, rt)
                return CLEAN, K.NUMPY
        if rt and not lt and lk == K.NPSCALAR:
            # ``np.float64(x) / t``: works, a tensor (float32 where numpy gives
            # float64); not a finding here, the tensor is followed on
            return rt, K.TORCH
        if lt or rt:
            if isinstance(op, (ast.BitAnd, ast.BitOr, ast.BitXor)) and K.MASK in (lk, rk) and (
                lk in (K.MASK, None) and rk in (K.MASK, None)
            ):
                return lt | rt, K.MASK
            return lt | rt, K.TORCH
        if lk == K.NUMPY or rk == K.NUMPY:
            return CLEAN, K.NUMPY
        return CLEAN, None

    def _compare(self, node: ast.Compare) -> Value:
        taint, kind = self._eval(node.left)
        left_t, left_k = taint, kind
        for op, c in zip(node.ops, node.comparators):
            ct, ck = self._eval(c)
            if isinstance(op, (ast.In, ast.NotIn, ast.Is, ast.IsNot)):
                left_t, left_k = ct, ck
                continue
            if (left_t and not ct and ck == K.NUMPY) or (ct and not left_t and left_k == K.NUMPY):
                self.arithmetic(node, op, left_t, left_k, ct, ck)
            taint |= ct
            left_t, left_k = ct, ck
        if any(isinstance(op, (ast.In, ast.NotIn, ast.Is, ast.IsNot)) for op in node.ops):
            return CLEAN, None
        if not taint and kind == K.NUMPY:
            return CLEAN, K.NUMPY  # cv2.imread(p) > 127: a boolean array
        return taint, K.MASK if taint else None


def _concatenated(op: ast.AST, lt: Taint, lk: Kind, rt: Taint, rk: Kind) -> Optional[Value]:
    """``a + b`` of two lists or tuples (one side known to be one, the other
    one or unknown and clean): their elements, or both tuples' places."""
    if not isinstance(op, ast.Add):
        return None
    sides = ((lt, lk), (rt, rk))
    if not any(isinstance(k, (Elements, Positions)) for _, k in sides):
        return None
    if any(not isinstance(k, (Elements, Positions)) and (t or k not in (None, K.EMPTY)) for t, k in sides):
        return None
    if isinstance(lk, Positions) and isinstance(rk, Positions):
        return lt | rt, Positions.of([*lk, *rk])
    element: Kind = K.EMPTY
    for _, k in sides:
        if isinstance(k, Elements):
            element = K.join(element, k[0])
        elif isinstance(k, Positions):
            for _, place in k:
                element = K.join(element, place)
    return lt | rt, Elements((element,))


def _is_property(func: ast.AST) -> bool:
    return any((isinstance(d, ast.Name) and d.id in ("property", "cached_property"))
               or (isinstance(d, ast.Attribute) and d.attr == "cached_property")
               for d in getattr(func, "decorator_list", ()))


def _negative_step(key: ast.AST) -> bool:
    """``[::-1]``, ``[::-2]``: a slice with a negative constant step."""
    parts = key.elts if isinstance(key, ast.Tuple) else [key]
    for part in parts:
        step = part.step if isinstance(part, ast.Slice) else None
        if isinstance(step, ast.UnaryOp) and isinstance(step.op, ast.USub) and isinstance(step.operand, ast.Constant):
            return True
        if isinstance(step, ast.Constant) and isinstance(step.value, int) and step.value < 0:
            return True
    return False


def _parts(node: ast.AST) -> list:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts
    return []
