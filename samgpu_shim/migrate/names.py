"""Small helpers over ``ast`` nodes and the analysis's value kinds."""

from __future__ import annotations

import ast
import re
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

# The taint of a value: the ids of the predict calls it may come from.
Taint = FrozenSet[int]
CLEAN: Taint = frozenset()


def words(name: str) -> Set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return {w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w}


def dotted_name(node: ast.AST) -> Optional[str]:
    parts: List[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def last_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def tensor_guard(test: ast.AST) -> Optional[Tuple[str, bool]]:
    """(name, whether the ``if`` arm is the tensor one) for a test that asks
    whether a variable (or ``self.attr``) is a tensor: ``isinstance(x, torch.Tensor)``,
    ``torch.is_tensor(x)``, ``hasattr(x, "cpu")``, ``not isinstance(x, np.ndarray)``."""
    negated = False
    while isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        negated = not negated
        test = test.operand
    if not (isinstance(test, ast.Call) and test.args):
        return None
    name = dotted_name(test.args[0])  # ``x`` or ``self.mask``
    if name is None:
        return None
    func = dotted_name(test.func) or ""
    if func == "isinstance" and len(test.args) == 2:
        kind = dotted_name(test.args[1]) or ""
        if kind.endswith("Tensor"):
            return name, not negated
        if kind.endswith("ndarray"):
            return name, negated
        return None
    if func.endswith("is_tensor"):
        return name, not negated
    if func == "hasattr" and len(test.args) == 2 and isinstance(test.args[1], ast.Constant) and \
            test.args[1].value in ("cpu", "detach", "numpy", "is_cuda", "device", "to"):
        return name, not negated
    return None


def target_names(target: ast.AST) -> List[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in target_names(elt)]
    if isinstance(target, ast.Starred):
        return target_names(target.value)
    return []


def as_numpy_kw(call: ast.Call) -> Optional[ast.keyword]:
    return next((kw for kw in call.keywords if kw.arg == "as_numpy"), None)


def stand_in(site: ast.AST, tag: Any, make: Callable[[], Tuple[ast.expr, Sequence[ast.expr], Sequence[ast.keyword]]]
             ) -> ast.Call:
    """The call that stands in for ``site`` (``obj.prop`` as its getter's call,
    ``run_in_threadpool(f, a)`` as ``f(a)``...): ``make()`` gives its function,
    arguments and keywords. One node per site and ``tag``, made once, at the
    site's position: what the analysis keeps per call node stays attached to it."""
    made: Dict[Any, ast.Call] = site.__dict__.setdefault("_samgpu_stand_ins", {})
    call = made.get(tag)
    if call is None:
        func, args, keywords = make()
        if not hasattr(func, "lineno"):
            ast.copy_location(func, site)
        call = ast.copy_location(ast.Call(func=func, args=list(args), keywords=list(keywords)), site)
        call.end_lineno, call.end_col_offset = site.end_lineno, site.end_col_offset  # type: ignore[attr-defined]
        made[tag] = call
    return call
