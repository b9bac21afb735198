"""Expressions: the taint and kind of each, and the sinks among them."""

from __future__ import annotations

import ast
from typing import Optional, Tuple

from .names import CLEAN, Positions, Taint, dotted_name, tensor_guard, words
from .operations import ANY, CUDA, METADATA, SILENT, TO_NUMPY
from .scope import BaseScope


class Expressions(BaseScope):
    # -- expressions -------------------------------------------------------
    def eval(self, node: Optional[ast.AST], report: bool = True) -> Tuple[Taint, Optional[str]]:
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

    def _eval(self, node: ast.AST) -> Tuple[Taint, Optional[str]]:
        if isinstance(node, ast.Name):
            taint, kind = self.lookup(node.id), self.kind_of(node.id)
            if kind is None and not taint and "predictor" in words(node.id):
                # ``self.p = predictor``: the attribute is a predictor too
                kind = "predictor"
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
            lt, lk = self._eval(node.left)
            rt, rk = self._eval(node.right)
            if self._mixing(node, lt, lk, rt, rk):
                return CLEAN, "numpy"
            if lt or rt:
                return lt | rt, "torch"
            if lk == "numpy" or rk == "numpy":
                return CLEAN, "numpy"
            return CLEAN, None
        if isinstance(node, ast.UnaryOp):
            t, k = self._eval(node.operand)
            return t, k if k in ("numpy", "torch", "scalar") else None
        if isinstance(node, ast.BoolOp):
            taint = CLEAN
            for v in node.values:
                taint |= self._eval(v)[0]
            return taint, None
        if isinstance(node, ast.Compare):
            taint, kind = self._eval(node.left)
            self._dtype_compare(node)
            for c in node.comparators:
                taint |= self._eval(c)[0]
            if any(isinstance(op, (ast.In, ast.NotIn, ast.Is, ast.IsNot)) for op in node.ops):
                return CLEAN, None
            return taint, kind if taint else None
        if isinstance(node, ast.IfExp):
            self._eval(node.test)
            bt, bk = self._eval(node.body)
            ot, ok = self._eval(node.orelse)
            guarded = tensor_guard(node.test)
            if guarded:
                # ``x.cpu().numpy() if torch.is_tensor(x) else x``
                name, tensor_arm_is_body = guarded
                other = node.orelse if tensor_arm_is_body else node.body
                if isinstance(other, ast.Name) and other.id == name:
                    return (bt, bk) if tensor_arm_is_body else (ot, ok)
            return bt | ot, bk if bk == ok else None
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            taints = [self._eval(elt)[0] for elt in node.elts]
            taint = frozenset().union(*taints)
            if isinstance(node, ast.Tuple) and not any(isinstance(e, ast.Starred) for e in node.elts):
                return taint, Positions(taints)
            return taint, None
        if isinstance(node, ast.Dict):
            taint = CLEAN
            for k, v in zip(node.keys, node.values):
                if k is not None:
                    self._eval(k)
                taint |= self._eval(v)[0]
            return taint, None
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self._comprehension(node)
        if isinstance(node, ast.Starred):
            return self._eval(node.value)
        if isinstance(node, ast.NamedExpr):
            t, k = self._eval(node.value)
            self.bind(node.target, t, k)
            return t, k
        if isinstance(node, ast.Await):
            return self._eval(node.value)
        if isinstance(node, ast.JoinedStr):
            for v in node.values:
                self._eval(v)
            return CLEAN, None
        if isinstance(node, ast.FormattedValue):
            self._eval(node.value)
            return CLEAN, None
        if isinstance(node, ast.Lambda):
            return CLEAN, None
        if isinstance(node, ast.Slice):
            for part in (node.lower, node.upper, node.step):
                if part is not None:
                    self._eval(part)
            return CLEAN, None
        return CLEAN, None

    def _comprehension(self, node: ast.AST) -> Tuple[Taint, Optional[str]]:
        saved = self.snapshot()
        for gen in node.generators:  # type: ignore[attr-defined]
            it, _ = self._eval(gen.iter)
            self._bind_iteration(gen.target, gen.iter, it)
            for cond in gen.ifs:
                self._eval(cond)
        if isinstance(node, ast.DictComp):
            self._eval(node.key)
            taint = self._eval(node.value)[0]
        else:
            taint = self._eval(node.elt)[0]  # type: ignore[attr-defined]
        self.restore(saved)
        return taint, None

    def _attribute(self, node: ast.Attribute) -> Tuple[Taint, Optional[str]]:
        base = node.value
        cls = self._self_class(base)
        if cls is not None:
            key = f"self.{node.attr}"
            if key in self.env:
                return self.env[key], self.kinds.get(key) or cls.attr_kinds.get(node.attr)
            return cls.attrs.get(node.attr, CLEAN), cls.attr_kinds.get(node.attr)
        dotted = dotted_name(node)
        if dotted and dotted in self.env:
            return self.env[dotted], self.kinds.get(dotted)
        if dotted and "." in dotted and self.func is not None and dotted in self.m.globals:
            return self.m.globals[dotted], self.m.global_kinds.get(dotted)
        t, k = self._eval(base)
        if not t:
            if k == "numpy" and node.attr in ("T", "flat", "real", "imag"):
                return CLEAN, "numpy"
            return CLEAN, None
        if node.attr in METADATA:
            return CLEAN, None
        if node.attr == "size":
            self.report(node, ".size", SILENT,
                          "a tensor's .size is a method: comparing or dividing by it is wrong or raises",
                          "x.numel() (or x.size() for the shape)", t)
            return CLEAN, None
        if node.attr == "flat":
            self.report(node, ".flat", ANY, "tensors have no .flat (AttributeError)",
                          "x.flatten()", t)
            return CLEAN, None
        return t, "torch" if node.attr in ("T", "mT", "data", "real") else None

    def _subscript(self, node: ast.Subscript) -> Tuple[Taint, Optional[str]]:
        base = node.value
        key = node.slice
        bt, bk = self._eval(base)
        kt, kk = self._eval(key)
        self._index_check(node, bt, bk, kt, kk)
        if isinstance(bk, Positions) and isinstance(key, ast.Constant) and isinstance(key.value, int) and (
            -len(bk) <= key.value < len(bk)
        ):
            return bk[key.value], None
        if isinstance(base, ast.Name) and base.id in self.keyed and isinstance(key, ast.Constant):
            return self.env.get(f"{base.id}[{key.value!r}]", CLEAN), None
        if isinstance(base, ast.Name) and isinstance(key, ast.Constant) and f"{base.id}[{key.value!r}]" in self.env:
            return self.env[f"{base.id}[{key.value!r}]"], None
        if bt:
            return bt, "torch" if bk in ("torch", "scalar") else None
        return CLEAN, "numpy" if bk == "numpy" else None

    def _index_check(self, node: ast.AST, bt: Taint, bk: Optional[str], kt: Taint, kk: Optional[str]) -> None:
        """``array[tensor]``: numpy converts the index, which CUDA refuses."""
        # A 0-d index (argmax, item) is read through __index__, which CUDA
        # allows (a sync): lists, dicts and arrays all take it. A mask or an
        # index tensor is converted with numpy.
        if not kt or bt or bk in ("torch", "self", "predictor", "other") or kk == "scalar":
            return
        self.report(node, "ndarray[tensor]", CUDA,
                      "indexing a numpy array with a tensor converts the tensor with numpy",
                      "index with samgpu_shim.to_numpy(mask), or make the array a tensor on the same device", kt)

    def _mixing(self, node: ast.BinOp, lt: Taint, lk: Optional[str], rt: Taint, rk: Optional[str]) -> bool:
        if lt and rk == "numpy" and not rt:
            self.report(node, "tensor with ndarray", CUDA,
                          "arithmetic between a tensor and a numpy array moves the array to the CPU; "
                          "a CUDA tensor then meets a CPU one",
                          "torch.as_tensor(array, device=tensor.device), or " + TO_NUMPY, lt)
        elif rt and lk == "numpy" and not lt:
            self.report(node, "ndarray with tensor", ANY,
                          "numpy's operator does not accept a tensor on its right",
                          "torch.as_tensor(array, device=tensor.device), or " + TO_NUMPY, rt)
        else:
            return False
        return True

    def _dtype_compare(self, node: ast.Compare) -> None:
        left = node.left
        if isinstance(left, ast.Attribute) and left.attr == "dtype":
            t = self._eval(left.value)[0]
            if not t:
                return
            for c in node.comparators:
                lib = self._library(c)[0]
                if lib == "numpy" or (isinstance(c, ast.Name) and c.id in ("bool", "float", "int")) or (
                    isinstance(c, ast.Constant) and isinstance(c.value, str)
                ):
                    self.report(node, ".dtype comparison", SILENT,
                                  "a torch dtype never equals a numpy or Python type: the test is always False",
                                  "compare with torch.bool / torch.float32", t)

    def _library(self, func: ast.AST) -> Tuple[Optional[str], str]:
        dotted = dotted_name(func)
        if dotted is None:
            return None, ""
        head = dotted.split(".")[0]
        target = self.m.aliases.get(head)
        if target is None or head in self.env or (self.func is not None and head in self.kinds):
            return None, dotted
        full = target + dotted[len(head):]
        return target.split(".")[0], full

