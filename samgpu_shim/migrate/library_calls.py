"""Calls the scan cannot read: library functions, methods of results, and
functions of modules that were not scanned. Every finding here is a row of
:mod:`samgpu_shim.ops` (or says the value leaves the scanned code)."""

from __future__ import annotations

import ast
from typing import List, Tuple

from . import kinds as K
from .entry_points import SAM_PACKAGES
from .expressions import Expressions, Value
from .kinds import CLEAN, Elements, Keys, Kind, Positions
from .names import Taint, dotted_name, words
from .operations import (
    ARRAY_STORE_MAKERS,
    BOOL_METHODS,
    HARMLESS_LIBRARIES,
    JSON_MODULES,
    KEEPS_DTYPE,
    LEAVES_DEVICE,
    NUMPY_HELPER_WORDS,
    NUMPY_KEEPS_TENSOR,
    NUMPY_NOT_CALLS,
    NUMPY_PLAIN,
    NUMPY_PRODUCERS,
    NUMPY_RETURNING,
    NUMPY_SCALARS,
    PASS_THROUGH_CALLS,
    PATH_FUNCTIONS,
    SCALAR_METHODS,
    STDLIB,
    TENSOR_LIBRARIES,
    TO_NUMPY,
    TORCH_HELPER_WORDS,
    UNSCANNED,
    call_row,
    effect,
    numpy_row,
    row,
)
from .operations import ops as table

Args = List[Tuple[ast.AST, Taint, Kind]]


class LibraryCalls(Expressions):
    """Calls into libraries and methods of results."""

    def library_call(self, node: ast.Call, qualified: str, args: Args, arg_taint: Taint) -> Value:
        shown = dotted_name(node.func) or qualified
        top = qualified.split(".")[0]
        short = qualified.rsplit(".", 1)[-1]
        if qualified in PATH_FUNCTIONS or qualified.startswith("os.path."):
            # what is handed over here is a path, whatever else the name may hold;
            # a library's file object (h5py.File) is followed on
            return CLEAN, K.external(qualified) if short[:1].isupper() and top not in STDLIB else None
        if qualified in PASS_THROUGH_CALLS:
            return (args[0][1], args[0][2]) if args else (CLEAN, None)
        if top == "numpy":
            return self._numpy_call(node, short, shown, arg_taint)
        if top == "samgpu_shim":  # to_numpy converts; the rest takes no result
            return CLEAN, K.NUMPY if short == "to_numpy" else None
        if top == "torch":
            if short in SCALAR_METHODS and len(node.args) == 1 and not node.keywords:
                return arg_taint, K.SCALAR if arg_taint else K.TORCH
            if short == "from_numpy" and arg_taint:
                self._apply(node, call_row(qualified), f"{shown}()", arg_taint)
                return CLEAN, K.TORCH
            return arg_taint, K.TORCH
        if top in JSON_MODULES and short in ("dumps", "dump") and any(kw.arg in ("default", "cls")
                                                                      for kw in node.keywords):
            if arg_taint and self._numpy_only_encoder(node):
                self._apply(node, call_row(qualified, shown), f"{shown}()", arg_taint)
            return CLEAN, None  # the caller serialises tensors itself
        if qualified in NUMPY_RETURNING and not arg_taint:
            return CLEAN, K.NUMPY
        if qualified in ARRAY_STORE_MAKERS and not arg_taint:
            return CLEAN, K.external(ARRAY_STORE_MAKERS[qualified])
        op = call_row(qualified, shown)
        if op is not None:
            if arg_taint:
                self._apply(node, op, f"{shown}()", arg_taint)
                return CLEAN, K.NUMPY if top in NUMPY_PRODUCERS else None
            if effect(op) is None and op.kind == "call" and top in SAM_PACKAGES:
                return arg_taint, K.TORCH
            return CLEAN, K.NUMPY if top in NUMPY_PRODUCERS else None
        if top in TENSOR_LIBRARIES or top in SAM_PACKAGES:
            return arg_taint, K.TORCH if arg_taint else None
        if top == "copy":
            return arg_taint, args[0][2] if args else None
        if qualified == "collections.deque":
            return arg_taint, Elements((K.element(args[0][2]) if args else K.EMPTY,))
        if top in STDLIB or top in HARMLESS_LIBRARIES or top in NUMPY_PRODUCERS:
            return CLEAN, K.OTHER if short[:1].isupper() else None
        if arg_taint:
            self.unscanned_call(node, qualified, arg_taint)
        if short[:1].isupper():
            return CLEAN, K.external(qualified)
        return CLEAN, None

    def _numpy_only_encoder(self, node: ast.Call) -> bool:
        """``json.dump(x, fh, cls=NumpyEncoder)`` whose scanned ``default`` knows
        numpy's types and nothing else: a tensor falls through to the base
        class, which raises. Duck typing (hasattr, .tolist() on anything) or a
        word of torch in it: the encoder may handle tensors, not reported."""
        for kw in node.keywords:
            if kw.arg not in ("cls", "default") or not isinstance(kw.value, (ast.Name, ast.Attribute)):
                continue
            name = dotted_name(kw.value)
            if not name or "." in name:
                continue
            if kw.arg == "cls":
                cls = self.p.cls(self.m, name)
                func = self.p.method(cls, "default") if cls is not None else None
            else:
                func = self.p.function(self.m, name)
            if func is None:
                return False
            text = ast.unparse(func.node)
            if any(w in text for w in ("torch", "Tensor", "hasattr", "getattr", "__array__", "samgpu_shim", "try:")):
                return False
            return "isinstance" in text and ("np." in text or "numpy" in text)
        return False

    def _numpy_call(self, node: ast.Call, short: str, shown: str, arg_taint: Taint) -> Value:
        if short in NUMPY_NOT_CALLS or short in NUMPY_PLAIN:
            return CLEAN, None
        if short in NUMPY_KEEPS_TENSOR:
            return arg_taint, K.TORCH if arg_taint else K.NUMPY
        if arg_taint:
            op = numpy_row(short)
            if op.breaks_on_cuda:
                self._apply(node, op, f"{shown}()", arg_taint)
        if short in NUMPY_SCALARS:
            return CLEAN, K.NPSCALAR
        return CLEAN, K.NUMPY

    def _apply(self, node: ast.AST, op: object, operation: str, taint: Taint) -> None:
        if op is not None:
            self.report(node, operation, effect(op), op.why, op.fix, taint)  # type: ignore[attr-defined]

    def unscanned_call(self, node: ast.Call, qualified: str, taint: Taint) -> None:
        """A result handed to a function of a module the scan did not read: said at the call."""
        module, _, name = qualified.rpartition(".")
        if words(name) & TORCH_HELPER_WORDS or not module:
            return
        head = module
        while "." in head and head.rsplit(".", 1)[1][:1].isupper():
            head = head.rsplit(".", 1)[0]  # a method: module.Class.method
        shown = dotted_name(node.func) or name
        self.report(node, f"{shown}()", UNSCANNED, f"reaches {name}() in {module}, a module not scanned",
                    f"scan {head} too (add its folder to the paths), or pass {TO_NUMPY}", taint)
        if not self.silent:
            self.p.note_unscanned(head, self.m, node, taint)

    def numpy_helper(self, node: ast.Call, name: str, arg_taint: Taint) -> bool:
        """A helper the scan cannot resolve (a star import, a name from another
        notebook), named for numpy images or arrays, given a result."""
        if not arg_taint or not name:
            return False
        found = words(name)
        if not found & NUMPY_HELPER_WORDS or found & TORCH_HELPER_WORDS:
            return False
        self.report(node, f"{dotted_name(node.func) or name}()", UNSCANNED,
                    "a helper the scan cannot find, named for numpy images or arrays, is given a tensor "
                    "(scan its source too for a precise answer)", "pass " + TO_NUMPY, arg_taint)
        return True

    def tensor_method(self, node: ast.Call, attr: str, recv_t: Taint, recv_k: Kind) -> Value:
        """A method called on a result."""
        keywords = {kw.arg for kw in node.keywords}
        if isinstance(recv_k, (Elements, Keys, Positions)):
            value = self.container_read(attr, node, recv_t, recv_k)
            if value is not None:
                return value  # type: ignore[return-value]
        found = table.lookup("method", attr)
        if attr in ("astype", "copy", "tobytes", "tostring", "fill", "numpy") and found is not None:
            self._apply(node, found, f".{attr}()", recv_t)
            # A line that raises is where the value leaves for numpy (its
            # fix converts there): what follows is numpy code, not reported.
            return CLEAN, K.NUMPY
        if attr == "nonzero" and "as_tuple" not in keywords:
            self._apply(node, row(".nonzero()"), ".nonzero()", recv_t)
            return recv_t, K.TORCH
        if attr == "transpose" and len(node.args) > 2:
            self._apply(node, row(".transpose(1, 2, 0)"), ".transpose()", recv_t)
            return CLEAN, None
        if attr in ("max", "min") and (node.args or keywords & {"axis", "dim"}):
            self._apply(node, row(".max(axis=)"), f".{attr}(axis=)", recv_t)
            return recv_t, K.TORCH
        if attr == "round" and node.args:
            self._apply(node, row(".round(n)"), ".round(n)", recv_t)
            return CLEAN, K.NUMPY
        if attr == "repeat" and "axis" in keywords:
            self._apply(node, row(".repeat(axis=)"), ".repeat(axis=)", recv_t)
            return CLEAN, None
        if attr == "mean" and recv_k == K.MASK:
            self._apply(node, row(".mean() of a mask"), ".mean()", recv_t)
            return CLEAN, None
        if attr == "to" and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "cpu":
            return CLEAN, K.TORCH
        if attr in LEAVES_DEVICE:
            return CLEAN, None
        if recv_k is None:
            value = self.container_read(attr, node, recv_t, recv_k)
            if value is not None:
                return value  # type: ignore[return-value]
        if attr in SCALAR_METHODS and not node.args and not node.keywords:
            return recv_t, K.SCALAR
        if attr in BOOL_METHODS:
            return recv_t, K.MASK
        if attr in KEEPS_DTYPE and K.is_tensor(recv_k) and not (attr == "to" and len(node.args) > 0):
            return recv_t, recv_k
        return recv_t, K.TORCH

    def container_read(self, attr: str, node: ast.Call, taint: Taint, kind: Kind) -> object:
        """``d.get("k")``, ``history.pop()``, ``d.values()``...: the part read, or None."""
        if attr == "get" and isinstance(kind, Keys):
            key = node.args[0] if node.args else None
            if isinstance(key, ast.Constant) and isinstance(key.value, (str, int)):
                found = kind.get(repr(key.value))
                return found if found is not None else (CLEAN, None)
            return kind.any()
        if attr in ("pop", "popleft", "popitem") and isinstance(kind, (Elements, Positions)):
            return taint, K.element(kind)
        if attr == "values" and isinstance(kind, Keys):
            t, k = kind.any()
            return t, Elements((k,))
        if attr == "items" and isinstance(kind, Keys):
            t, k = kind.any()
            return t, Elements((Positions.of([(CLEAN, None), (t, k)]),))
        if attr == "copy" and isinstance(kind, (Elements, Keys, Positions)):
            return taint, kind
        if attr in ("get", "pop", "values", "items", "keys", "copy", "popleft"):
            return taint, None
        return None
