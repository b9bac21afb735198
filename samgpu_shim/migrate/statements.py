"""Statements: assignments, branches, loops; ``Scope`` is the whole analyser."""

from __future__ import annotations

import ast
from typing import Sequence

from .calls import Calls
from .index import FuncInfo
from .names import CLEAN, Positions, Taint, tensor_guard
from .operations import ANY, CUDA, TO_NUMPY


class Scope(Calls):
    """The analyser of one body: state, expressions, calls and statements."""

    # -- statements --------------------------------------------------------
    def run(self, body: Sequence[ast.stmt]) -> None:
        for stmt in body:
            try:
                self.stmt(stmt)
            except Exception as exc:  # one odd statement must not cost the whole project's audit
                cell, line = self.m.where(stmt.lineno)
                where = f"{self.m.path}:{line}" if cell is None else f"{self.m.path}:cell {cell}:{line}"
                self.p.skipped.setdefault(where, f"{type(exc).__name__}: {exc}")

    def stmt(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(node.value, ast.Call):
                    node.value._samgpu_unpack = target  # type: ignore[attr-defined]
            t, k = self.eval(node.value)
            for target in node.targets:
                self._eval_target_parts(target, t)
                self.bind(target, t, k, node.value)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                t, k = self.eval(node.value)
                self.bind(node.target, t, k, node.value)
        elif isinstance(node, ast.AugAssign):
            t, k = self.eval(node.value)
            cur_t, cur_k = self.eval(node.target, report=False)
            if cur_k == "numpy" and t and not cur_t:
                self.report(node, "ndarray op= tensor", ANY,
                              "numpy's in-place operator does not accept a tensor",
                              "torch.as_tensor(array, device=tensor.device), or " + TO_NUMPY, t)
            elif cur_t and k == "numpy" and not t:
                self.report(node, "tensor op= ndarray", CUDA,
                              "an in-place operation with a numpy array moves the array to the CPU; a CUDA tensor "
                              "then meets a CPU one", "torch.as_tensor(array, device=tensor.device)", cur_t)
            if t:
                self.bind(node.target, cur_t | t, cur_k)
        elif isinstance(node, ast.Expr):
            self.eval(node.value)
        elif isinstance(node, ast.Return):
            t, k = self.eval(node.value)
            first = not self.returned_any
            self.returned_any = True
            self.returned |= t
            if k == "predictor":
                self.returned_kind = k
            elif isinstance(k, Positions):
                # every return a tuple of the same length: keep the positions
                if first:
                    self.returned_kind = k
                elif isinstance(self.returned_kind, Positions) and len(self.returned_kind) == len(k):
                    self.returned_kind = Positions(a | b for a, b in zip(self.returned_kind, k))
                elif self.returned_kind != "predictor":
                    self.returned_kind = None
            elif self.returned_kind != "predictor":
                self.returned_kind = None
        elif isinstance(node, (ast.If, ast.While)):
            self.eval(node.test)
            before = self.snapshot()
            if isinstance(node, ast.While):
                for _ in range(2):
                    self.run(node.body)
                    self.merge(before, self.snapshot())
                self.run(node.orelse)
                return
            self.run(node.body)
            after_body = self.snapshot()
            self.restore(before)
            self.run(node.orelse)
            after_else = self.snapshot()
            # ``if isinstance(x, torch.Tensor): x = x.cpu().numpy()``: on the
            # other arm x was never a tensor, so only the converting arm counts
            guarded = tensor_guard(node.test)
            if guarded:
                name, tensor_arm_is_body = guarded
                tensor_arm = after_body if tensor_arm_is_body else after_else
                other_arm = after_else if tensor_arm_is_body else after_body
                if not tensor_arm[0].get(name, CLEAN):
                    other_arm[0][name] = CLEAN
            self.merge(after_body, after_else)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            it, _ = self.eval(node.iter)
            before = self.snapshot()
            for _ in range(2):
                self._bind_iteration(node.target, node.iter, it)
                self.run(node.body)
                self.merge(before, self.snapshot())
            self.run(node.orelse)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                t, k = self.eval(item.context_expr)
                if item.optional_vars is not None:
                    self.bind(item.optional_vars, t, k)
            self.run(node.body)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            before = self.snapshot()
            self.run(node.body)  # type: ignore[attr-defined]
            after = self.snapshot()
            states = [after]
            for handler in node.handlers:  # type: ignore[attr-defined]
                self.merge(before, after)
                self.run(handler.body)
                states.append(self.snapshot())
            self.merge(*states)
            self.run(node.orelse)  # type: ignore[attr-defined]
            self.run(node.finalbody)  # type: ignore[attr-defined]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if self.func is not None:
                self.local_funcs[node.name] = FuncInfo(node, self.m, None)
        elif isinstance(node, ast.ClassDef):
            return
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.env.pop(target.id, None)
        elif type(node).__name__ == "Match":
            self.eval(node.subject)  # type: ignore[attr-defined]
            before = self.snapshot()
            states = [before]
            for case in node.cases:  # type: ignore[attr-defined]
                self.restore(before)
                self.run(case.body)
                states.append(self.snapshot())
            self.merge(*states)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.expr):
                    self.eval(child)

    def _eval_target_parts(self, target: ast.AST, value: Taint = CLEAN) -> None:
        """Sinks inside an assignment target: ``image[mask] = color``, ``array[i] = mask``."""
        if isinstance(target, ast.Subscript):
            bt, bk = self.eval(target.value)
            kt, kk = self.eval(target.slice)
            self._index_check(target, bt, bk, kt, kk)
            if value and not bt and bk == "numpy":
                self.report(target, "ndarray[tensor]=", CUDA,
                            "assigning a tensor into a numpy array converts it with numpy",
                            "assign samgpu_shim.to_numpy(x), or build the array as a tensor on the device", value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._eval_target_parts(elt)

    def _bind_iteration(self, target: ast.AST, iterable: ast.AST, taint: Taint) -> None:
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name):
            name = iterable.func.id
            if name == "enumerate" and isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == 2:
                self.bind(target.elts[0], CLEAN, None)
                item_t = self.eval(iterable.args[0], report=False)[0] if iterable.args else CLEAN
                self._bind_iteration(target.elts[1], iterable.args[0] if iterable.args else iterable, item_t)
                return
            if name == "zip" and isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == len(
                iterable.args
            ):
                for elt, arg in zip(target.elts, iterable.args):
                    self._bind_iteration(elt, arg, self.eval(arg, report=False)[0])
                return
            if name == "range":
                self.bind(target, CLEAN, None)
                return
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute) and \
                iterable.func.attr == "items" and isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == 2:
            self.bind(target.elts[0], CLEAN, None)
            self.bind(target.elts[1], taint, None)
            return
        self.bind(target, taint, None)


