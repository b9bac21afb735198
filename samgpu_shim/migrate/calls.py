"""Calls: into the scanned code, into libraries, methods of results."""

from __future__ import annotations

import ast
from typing import List, Optional, Tuple

from .entry_points import PREDICT_METHODS
from .expressions import Expressions
from .index import ClassInfo, FuncInfo
from .names import CLEAN, Positions, Taint, class_kind, dotted_name, last_name, words
from .operations import (
    ANY,
    CHANNEL_GET,
    CHANNEL_PUT,
    CONTAINER_ADDERS,
    CUDA,
    JSON_FUNCS,
    LEAVES_DEVICE,
    LIBRARIES,
    NUMPY_HELPER_WORDS,
    NUMPY_KEEPS_TENSOR,
    NUMPY_METADATA,
    NUMPY_NOT_CALLS,
    NUMPY_ONLY_METHODS,
    NUMPY_PRODUCERS,
    NUMPY_RAISE_ANY,
    NUMPY_SCALARS,
    NUMPY_SILENT,
    PASS_THROUGH_BUILTINS,
    PLOT_METHODS,
    SAM_TORCH_HELPERS,
    SCALAR_METHODS,
    SILENT,
    TO_NUMPY,
    TORCH_HELPER_WORDS,
)


class Calls(Expressions):
    # -- calls -------------------------------------------------------------
    def _call(self, node: ast.Call) -> Tuple[Taint, Optional[str]]:
        func = node.func
        # the receiver (or callee expression) first
        recv_t: Taint = CLEAN
        recv_k: Optional[str] = None
        if isinstance(func, ast.Attribute):
            recv_t, recv_k = self._eval(func.value)
        elif not isinstance(func, ast.Name):
            self._eval(func)
        library, dotted = self._library(func)
        project_func = self._project_callable(func, recv_t, recv_k)
        if project_func is not None:
            target, bound_self, cls = project_func
            if target is not None:
                summary = self.p.call(target, node, self, bound_self)
                if cls is not None:
                    return summary.ret, f"class:{cls.name}"
                return summary.ret, summary.ret_kind
            # a class without __init__: its constructor
            arg_t = self._args_taint(node)
            return arg_t, f"class:{cls.name}"  # type: ignore[union-attr]
        args = self._args(node)  # (node, taint, kind) of each argument
        arg_taint = CLEAN
        for _, t, _ in args:
            arg_taint |= t

        if self.is_source(node, getattr(node, "_samgpu_unpack", None), recv_k):
            return frozenset({self.p.source_id(self.m.path, node)}), "torch"

        if library is not None:
            if dotted.split(".")[-1].endswith("Predictor") or (
                dotted.endswith(".from_pretrained") and "Predictor" in dotted
            ):
                return CLEAN, "predictor"
            return self._library_call(node, library, dotted, args, arg_taint)

        if isinstance(func, ast.Attribute):
            attr = func.attr
            if recv_t:
                return self._tensor_method(node, attr, recv_t, recv_k)
            if attr in PLOT_METHODS and arg_taint:
                self.report(node, f".{attr}()", CUDA,
                              "plotting and viewer methods convert what they show with numpy",
                              "show samgpu_shim.to_numpy(x)", arg_taint)
                return CLEAN, None
            if attr in JSON_FUNCS and dotted_name(func.value) in ("json", "ujson", "orjson", "simplejson"):
                return self._json(node, arg_taint)
            if attr in CONTAINER_ADDERS and arg_taint:
                self.bind_into(func.value, arg_taint)
                if attr in CHANNEL_PUT:
                    self._channel_put(func.value, arg_taint, args[0][2] if len(args) == 1 else None)
                return CLEAN, None
            if attr in CHANNEL_GET:
                name = last_name(func.value)
                if name in self.p.channels:
                    return self.p.channels[name], self.p.channel_kinds.get(name)
            if attr == "__setitem__" and arg_taint:
                self.bind_into(func.value, arg_taint)
            if recv_k not in ("predictor", "torch") and self._numpy_helper(node, attr, arg_taint):
                return CLEAN, "numpy"
            if recv_k == "numpy":
                if attr in ("reshape", "copy", "astype", "transpose", "squeeze", "flatten", "ravel", "clip",
                            "view", "T", "max", "min", "sum"):
                    return CLEAN, "numpy"
            return CLEAN, None
        if isinstance(func, ast.Name):
            name = func.id
            if name in ("int", "float", "bool", "str", "len", "repr", "hash", "id", "type", "isinstance",
                        "print", "hasattr", "getattr", "callable", "range", "format", "complex", "divmod"):
                return CLEAN, None
            if name == "enumerate" or name == "zip":
                return arg_taint, None
            if name not in PASS_THROUGH_BUILTINS and self._numpy_helper(node, name, arg_taint):
                return CLEAN, "numpy"
            if name in PASS_THROUGH_BUILTINS:
                return arg_taint, "scalar" if name in ("max", "min", "sum") and arg_taint else None
            cls = self.p.cls(self.m, name)
            if name.endswith("Predictor") or (cls is not None and self.p.is_predictor_class(cls)):
                return CLEAN, "predictor"
            if name[:1].isupper():
                return CLEAN, "other"
        elif isinstance(func, ast.Attribute) and func.attr == "from_pretrained" and (
            (dotted_name(func.value) or "").endswith("Predictor")
        ):
            return CLEAN, "predictor"
        return CLEAN, None

    def _args(self, node: ast.Call) -> List[Tuple[ast.AST, Taint, Optional[str]]]:
        out = []
        for a in node.args:
            t, k = self._eval(a)
            out.append((a, t, k))
        for kw in node.keywords:
            t, k = self._eval(kw.value)
            out.append((kw.value, t, k))
        return out

    def _args_taint(self, node: ast.Call) -> Taint:
        taint = CLEAN
        for _, t, _ in self._args(node):
            taint |= t
        return taint

    def bind_into(self, container: ast.AST, taint: Taint) -> None:
        if isinstance(container, ast.Name):
            self.env[container.id] = self.lookup(container.id) | taint
            self.keyed.discard(container.id)
        elif isinstance(container, (ast.Attribute, ast.Subscript)):
            current = self.eval(container, report=False)
            self.bind(container, current[0] | taint, current[1])

    def _project_callable(self, func: ast.AST, base_t: Taint = CLEAN, base_k: object = None
                          ) -> Optional[Tuple[Optional[FuncInfo], bool, Optional[ClassInfo]]]:
        """(function, bound to self, class constructed) for calls into the scanned code."""
        if isinstance(func, ast.Name):
            if func.id in self.local_funcs:
                return self.local_funcs[func.id], False, None
            if func.id in self.env and self.kind_of(func.id) is None:
                return None
            kind = self.kind_of(func.id)
            if class_kind(kind):
                cls = self.p.class_by_name(class_kind(kind))
                call = self.p.method(cls, "__call__") if cls else None
                return (call, True, None) if call else None
            f = self.p.function(self.m, func.id)
            if f is not None:
                return f, False, None
            cls = self.p.cls(self.m, func.id)
            if cls is not None and not self.p.is_predictor_class(cls):
                return self.p.method(cls, "__init__"), True, cls
            return None
        if isinstance(func, ast.Attribute):
            base = func.value
            cls = self._self_class(base)
            if cls is None:
                kind = base_k
                if class_kind(kind):
                    cls = self.p.class_by_name(class_kind(kind))
                elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
                    owner = self._self_class(base.value)
                    if owner is not None:
                        k = owner.attr_kinds.get(base.attr)
                        if class_kind(k):
                            cls = self.p.class_by_name(class_kind(k))
            if cls is not None:
                m = self.p.method(cls, func.attr)
                if m is not None:
                    staticm = not m.is_method
                    return m, not staticm, None
                return None
            dotted = dotted_name(base)
            if dotted is not None and dotted in self.m.aliases:
                other = self.p.module_named(self.m.aliases[dotted])
                if other is not None:
                    if func.attr in other.functions:
                        return other.functions[func.attr], False, None
                    if func.attr in other.classes:
                        cls = other.classes[func.attr]
                        return self.p.method(cls, "__init__"), True, cls
                return None
            if func.attr in PREDICT_METHODS:
                return None
            if base_t or base_k in ("numpy", "torch", "predictor"):
                return None
            m = self.p.unique_method(func.attr)
            if m is not None and m.is_method:
                return m, True, None
        return None

    def _library_call(self, node: ast.Call, library: str, dotted: str,
                      args: List[Tuple[ast.AST, Taint, Optional[str]]], arg_taint: Taint
                      ) -> Tuple[Taint, Optional[str]]:
        short = dotted.split(".")[-1]
        shown = dotted_name(node.func) or dotted
        if library == "torch":
            if short in SCALAR_METHODS and len(node.args) == 1 and not node.keywords:
                return arg_taint, "scalar" if arg_taint else "torch"
            if short == "from_numpy" and arg_taint:
                self.report(node, f"{shown}()", ANY, "the result is already a tensor; from_numpy raises "
                              "TypeError", "use the tensor directly", arg_taint)
                return CLEAN, "torch"
            return arg_taint, "torch"
        if library == "json" and short in JSON_FUNCS:
            return self._json(node, arg_taint)
        if library in ("copy",):
            return arg_taint, None
        if library == "segment_anything" and short in SAM_TORCH_HELPERS:
            return arg_taint, "torch"
        if library in LIBRARIES:
            if library == "numpy":
                if short in NUMPY_NOT_CALLS:
                    return CLEAN, None
                if short in NUMPY_KEEPS_TENSOR:
                    return arg_taint, "torch" if arg_taint else "numpy"
                if short in NUMPY_METADATA:
                    return CLEAN, None
                if arg_taint and short in NUMPY_SILENT:
                    why, fix = NUMPY_SILENT[short]
                    self.report(node, f"{shown}()", SILENT, why, fix, arg_taint)
                    return CLEAN, "numpy"
                effect = ANY if short in NUMPY_RAISE_ANY else CUDA
                if arg_taint:
                    self.report(node, f"{shown}()", effect,
                                  "numpy converts its arguments to host arrays"
                                  + (" (this one calls the tensor's method with numpy's keywords)"
                                     if effect == ANY else ""),
                                  "the torch equivalent (torch.where, t.argmax(dim=0, keepdim=True), "
                                  "t.nonzero(as_tuple=True), t.sum()) or " + TO_NUMPY, arg_taint)
                if short in NUMPY_SCALARS:
                    return CLEAN, "npscalar"
                return CLEAN, "numpy"
            effect, why = LIBRARIES[library]
            if arg_taint:
                self.report(node, f"{shown}()", effect, why, "pass " + TO_NUMPY, arg_taint)
            return CLEAN, "numpy" if library in NUMPY_PRODUCERS else None
        if library not in ("torch", "torchvision", "kornia", "segment_anything", "sam2", "sam3", "samgpu_shim",
                           "logging", "typing", "functools", "itertools", "collections", "copy", "pickle",
                           "wandb", "tensorboard", "torchmetrics") and self._numpy_helper(node, short, arg_taint):
            return CLEAN, "numpy"
        if library in ("flask", "fastapi", "starlette") and short in ("jsonify", "JSONResponse") and arg_taint:
            self.report(node, f"{shown}()", ANY, "the JSON encoder cannot serialise tensors",
                          "json_default, or " + TO_NUMPY, arg_taint)
            return CLEAN, None
        if short[:1].isupper():
            return CLEAN, "other"
        return CLEAN, None

    def _channel_put(self, channel: ast.AST, taint: Taint, kind: object) -> None:
        name = last_name(channel)
        if not name:
            return
        known = self.p.channel_kinds.get(name, kind)
        if isinstance(kind, Positions) and isinstance(known, Positions) and len(kind) == len(known):
            merged: object = Positions(a | b for a, b in zip(kind, known))
        else:
            merged = None
        if taint - self.p.channels.get(name, CLEAN) or merged != self.p.channel_kinds.get(name):
            self.p.channels[name] = self.p.channels.get(name, CLEAN) | taint
            self.p.channel_kinds[name] = merged
            self.p.changed = True

    def _numpy_helper(self, node: ast.Call, name: str, arg_taint: Taint) -> bool:
        """A helper the scan cannot read, named for numpy images or arrays, given a result."""
        if not arg_taint or not name:
            return False
        found = words(name)
        if not found & NUMPY_HELPER_WORDS or found & TORCH_HELPER_WORDS:
            return False
        self.report(node, f"{dotted_name(node.func) or name}()", CUDA,
                    "a helper outside the scanned files, named for numpy images or arrays, is given a tensor "
                    "(scan its source too for a precise answer)", "pass " + TO_NUMPY, arg_taint)
        return True

    def _json(self, node: ast.Call, arg_taint: Taint) -> Tuple[Taint, Optional[str]]:
        if arg_taint and not any(kw.arg in ("default", "cls") for kw in node.keywords):
            self.report(node, f"{dotted_name(node.func)}()", ANY,
                          "json cannot serialise tensors (TypeError: Object of type Tensor is not JSON serializable)",
                          "json.dumps(packet, default=samgpu_shim.json_default)", arg_taint)
        return CLEAN, None

    def _tensor_method(self, node: ast.Call, attr: str, recv_t: Taint, recv_k: Optional[str]
                       ) -> Tuple[Taint, Optional[str]]:
        if attr in NUMPY_ONLY_METHODS:
            effect, why, fix = NUMPY_ONLY_METHODS[attr]
            self.report(node, f".{attr}()", effect, why, fix, recv_t)
            # A line that raises is where the value leaves for numpy (its
            # fix converts there): what follows is numpy code, not reported.
            return CLEAN, "numpy"
        if attr == "nonzero" and not any(kw.arg == "as_tuple" for kw in node.keywords):
            self.report(node, ".nonzero()", SILENT,
                          "torch .nonzero() returns one (N, ndim) tensor, not a tuple of index arrays: "
                          "'y, x = m.nonzero()' unpacks rows", "m.nonzero(as_tuple=True)", recv_t)
            return recv_t, "torch"
        if attr == "transpose" and len(node.args) > 2:
            self.report(node, ".transpose()", ANY,
                          "torch .transpose swaps two dimensions; numpy's axes order raises TypeError",
                          "x.permute(1, 2, 0)", recv_t)
            return CLEAN, None
        if attr in ("max", "min") and (node.args or any(kw.arg in ("axis", "dim") for kw in node.keywords)):
            self.report(node, f".{attr}(axis=)", SILENT,
                        f"torch .{attr} along an axis returns a (values, indices) pair, not an array",
                        "x.amax(dim=...) / x.amin(dim=...)", recv_t)
            return recv_t, "torch"
        if attr == "round" and node.args:
            self.report(node, ".round(n)", ANY, "torch .round takes the decimals as a keyword (TypeError)",
                        "x.round(decimals=n)", recv_t)
            return CLEAN, "numpy"
        if attr == "repeat" and any(kw.arg == "axis" for kw in node.keywords):
            self.report(node, ".repeat(axis=)", ANY,
                          "torch .repeat tiles and takes no axis= (TypeError)",
                          "x.repeat_interleave(n, dim=...)", recv_t)
            return CLEAN, None
        if attr in ("to",) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and first.value == "cpu":
                return CLEAN, "torch"
        if attr in LEAVES_DEVICE:
            return CLEAN, None
        if attr in CONTAINER_ADDERS:
            return CLEAN, None
        if attr in ("get", "pop", "values", "items", "keys", "copy"):
            return recv_t, None
        return recv_t, "scalar" if attr in SCALAR_METHODS and not node.args and not node.keywords else "torch"

