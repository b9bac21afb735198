"""Statements: assignments, branches, loops; :class:`Scope` is the whole analyser
of one body (state, expressions, calls, statements)."""

from __future__ import annotations

import ast
from typing import Optional, Sequence

from . import kinds as K
from .calls import Calls
from .index import FuncInfo
from .kinds import CLEAN, Kind, Positions
from .names import Taint, dotted_name, tensor_guard, words
from .operations import ARRAY_STORES, effect, row


class Scope(Calls):
    """The analyser of one body."""

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
            value = node.value
            if isinstance(value, ast.Call) and value.args and (dotted_name(value.func) or "").split(".")[-1] == \
                    "partial" and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.partials[node.targets[0].id] = value  # its calls are calls of value.args[0]
            elif len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.partials.pop(node.targets[0].id, None)
            t, k = self.eval(node.value)
            for target in node.targets:
                self._target_sinks(target, t, k, node.value)
                self.bind(target, t, k, node.value)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                t, k = self.eval(node.value)
                if k is None and not t:
                    k = self.p.annotation_kind(self.m, node.annotation)
                self._target_sinks(node.target, t, k)
                self.bind(node.target, t, k, node.value)
            elif isinstance(node.target, ast.Attribute):
                # ``self.predictor: SamPredictor`` declared in the class body or __init__
                k = self.p.annotation_kind(self.m, node.annotation)
                if k is not None:
                    self.bind(node.target, CLEAN, k)
        elif isinstance(node, ast.AugAssign):
            self._augmented(node)
        elif isinstance(node, ast.Expr):
            self.eval(node.value)
        elif isinstance(node, ast.Return):
            t, k = self.eval(node.value)
            self.returned |= t
            self.returned_kind = K.join(self.returned_kind, k)
        elif isinstance(node, (ast.If, ast.While)):
            self._branch(node)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            it, ik = self.eval(node.iter)
            before = self.snapshot()
            for _ in range(2):
                self.bind_iteration(node.target, node.iter, it, ik)
                self.run(node.body)
                self.merge(before, self.snapshot())
            self.run(node.orelse)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                t, k = self.eval(item.context_expr)
                if isinstance(k, K.Elements) and isinstance(item.context_expr, ast.Call):
                    k = K.element(k)  # a generator in ``with``: a @contextmanager's one yield
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
                    self.kinds.pop(target.id, None)
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

    def _augmented(self, node: ast.AugAssign) -> None:
        t, k = self.eval(node.value)
        cur_t, cur_k = self.eval(node.target, report=False)
        if isinstance(node.target, ast.Subscript):
            self._target_sinks(node.target, t, k)
        new_t, new_k = self.arithmetic(node, node.op, cur_t, cur_k, t, k, in_place=True)
        if new_t or cur_t:
            self.bind(node.target, cur_t | new_t, cur_k if new_k is None else new_k)

    def _branch(self, node: ast.AST) -> None:
        self.eval(node.test)  # type: ignore[attr-defined]
        before = self.snapshot()
        if isinstance(node, ast.While):
            for _ in range(2):
                self.run(node.body)
                self.merge(before, self.snapshot())
            self.run(node.orelse)
            return
        guarded = tensor_guard(node.test)  # type: ignore[attr-defined]
        if guarded and not guarded[1]:
            self._numpy_arm(guarded[0])
        self.run(node.body)  # type: ignore[attr-defined]
        after_body = self.snapshot()
        self.restore(before)
        if guarded and guarded[1]:
            self._numpy_arm(guarded[0])
        self.run(node.orelse)  # type: ignore[attr-defined]
        after_else = self.snapshot()
        # ``if isinstance(x, torch.Tensor): x = x.cpu().numpy()``: on the
        # other arm x was never a tensor, so only the converting arm counts
        if guarded:
            name, tensor_arm_is_body = guarded
            tensor_arm = after_body if tensor_arm_is_body else after_else
            other_arm = after_else if tensor_arm_is_body else after_body
            if not tensor_arm[0].get(name, CLEAN):
                other_arm[0][name] = CLEAN
        # an arm that ends in return or raise does not reach what follows the if
        arms = [state for state, branch in ((after_body, node.body), (after_else, node.orelse))  # type: ignore
                if not _leaves(branch)]
        self.merge(*(arms or [after_body, after_else]))

    def _numpy_arm(self, name: str) -> None:
        """The arm of ``isinstance(masks, np.ndarray)`` where ``masks`` is not a
        tensor: the predict call it came from returned numpy (rolled back), so
        nothing from that call is a tensor there, ``scores`` and ``logits`` too."""
        came_from = self.lookup(name)
        if came_from:
            self.env = {k: t - came_from for k, t in self.env.items()}
            self.kinds[name] = K.NUMPY

    def _target_sinks(self, target: ast.AST, value: Taint = CLEAN, kind: Kind = None,
                      written: Optional[ast.AST] = None) -> None:
        """Sinks inside an assignment target: ``image[mask] = color`` (the index is
        converted), ``volume[z] = mask`` (the value is)."""
        if isinstance(target, ast.Subscript):
            bt, bk = self.eval(target.value)
            kt, kk = self.eval(target.slice)
            if kt and not bt and kk != K.SCALAR and (bk is None or bk == K.NUMPY):
                op = row("ndarray[mask] = v")
                self.report(target, op.name, effect(op), op.why, op.fix, kt)
            elif value and (not bt and bk == K.NUMPY and kind != K.SCALAR and not _one_score(written)
                            # an on-disk array (its attribute may have been taken for a
                            # container before its kind was known)
                            or K.prefixed(bk, "external") in ARRAY_STORES):
                op = row("ndarray[i] = mask")
                self.report(target, op.name, effect(op), op.why, op.fix, value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            parts = kind if isinstance(kind, Positions) and len(kind) == len(target.elts) else None
            for i, elt in enumerate(target.elts):
                self._target_sinks(elt, parts[i][0] if parts else CLEAN, parts[i][1] if parts else None, written)

    def bind_iteration(self, target: ast.AST, iterable: ast.AST, taint: Taint, kind: Kind) -> None:
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name):
            name = iterable.func.id
            if name == "enumerate" and isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == 2:
                self.bind(target.elts[0], CLEAN, None)
                arg = iterable.args[0] if iterable.args else iterable
                item_t, item_k = self.eval(arg, report=False) if iterable.args else (CLEAN, None)
                self.bind_iteration(target.elts[1], arg, item_t, item_k)
                return
            if name == "zip" and isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == len(
                iterable.args
            ):
                for elt, arg in zip(target.elts, iterable.args):
                    self.bind_iteration(elt, arg, *self.eval(arg, report=False))
                return
            if name == "range":
                self.bind(target, CLEAN, None)
                return
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute) and \
                iterable.func.attr == "items" and isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == 2:
            self.bind(target.elts[0], CLEAN, None)
            value_kind = K.element(kind)
            if isinstance(value_kind, Positions) and len(value_kind) == 2:
                self.bind(target.elts[1], value_kind[1][0], value_kind[1][1])
            else:
                self.bind(target.elts[1], taint, None)
            return
        element = K.element(kind)
        if isinstance(element, Positions):
            self.bind(target, frozenset().union(*(t for t, _ in element)) if element else CLEAN, element)
        else:
            self.bind(target, taint, element)


def _leaves(body: Sequence[ast.stmt]) -> bool:
    """Whether a block always ends in ``return`` or ``raise``."""
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Raise))


_SCALAR_WORDS = {"score", "iou", "conf", "confidence", "prob", "probability", "area"}


def _one_score(value: Optional[ast.AST]) -> bool:
    """``arr[i] = result.score``, ``arr[i] = scores[k]``: one number, which numpy
    reads with ``__float__`` (works on CUDA, one sync), not an array."""
    if value is None:
        return False
    if isinstance(value, ast.Subscript) and not isinstance(value.slice, (ast.Slice, ast.Tuple)):
        base = value.value
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        return bool({w.rstrip("s") for w in words(name)} & _SCALAR_WORDS)
    name = value.attr if isinstance(value, ast.Attribute) else getattr(value, "id", "")
    return bool(words(name) & _SCALAR_WORDS)
