"""Calls: which code a call runs (the scanned code, a source, a library),
and what it does to containers and channels."""

from __future__ import annotations

import ast
from typing import List, Optional, Tuple

from . import kinds as K
from .entry_points import PREDICT_METHODS, REGISTRY
from .expressions import Value
from .index import ClassInfo, FuncInfo
from .kinds import CLEAN, Elements, Keys, Kind, Positions
from .library_calls import Args, LibraryCalls
from .names import Taint, as_numpy_kw, dotted_name, last_name, stand_in, words
from .operations import (
    CHANNEL_GET,
    CHANNEL_PUT,
    CONTAINER_ADDERS,
    MODULE_RETURNS_SELF,
    PASS_THROUGH_BUILTINS,
    PLAIN_BUILTINS,
    PLOT_METHODS,
    call_row,
    effect,
    numpy_row,
    row,
)

# Library functions that call their first argument with the rest and give its
# result back (a thread pool's await): followed as the call itself.
CALL_THROUGH = frozenset({"fastapi.concurrency.run_in_threadpool", "starlette.concurrency.run_in_threadpool",
                          "asyncio.to_thread", "anyio.to_thread.run_sync"})


def _through(node: ast.Call) -> ast.Call:
    """``run_in_threadpool(f, a, k=v)`` (and ``pool.submit``) as ``f(a, k=v)``."""
    return stand_in(node, "through", lambda: (node.args[0], node.args[1:], node.keywords))


# (function to run, bound to its instance, class constructed, self context passed)
Target = Tuple[Optional[FuncInfo], bool, Optional[ClassInfo], bool]


class Calls(LibraryCalls):
    """What a call does."""

    def _call(self, node: ast.Call) -> Value:
        func = node.func
        recv_t: Taint = CLEAN
        recv_k: Kind = None
        if isinstance(func, ast.Attribute):
            recv_t, recv_k = self._eval(func.value)
        elif not isinstance(func, ast.Name):
            self._eval(func)
        qualified = self.qualify(func)
        if qualified and qualified.split(".")[0] == "samgpu_shim":  # the shim's own API, even when scanned
            return self.library_call(node, qualified, self._args(node), CLEAN)
        if qualified in CALL_THROUGH and node.args and not isinstance(node.args[0], ast.Starred):
            return self._call(_through(node))
        if isinstance(func, ast.Attribute) and func.attr == "run_in_executor" and len(node.args) >= 2 and not any(
                isinstance(a, ast.Starred) for a in node.args[:2]):
            # await loop.run_in_executor(None, f, a): f(a), in a thread
            return self._call(stand_in(node, "executor", lambda: (node.args[1], node.args[2:], [])))
        if isinstance(func, ast.Call) and self.qualify(func.func) == "functools.partial" and func.args and not \
                isinstance(func.args[0], ast.Starred):
            # functools.partial(f, a, k=1)(x): f(a, x, k=1)
            return self._call(stand_in(node, ("partial", id(func)), lambda: (
                func.args[0], [*func.args[1:], *node.args], [*func.keywords, *node.keywords])))
        if isinstance(func, ast.Name) and func.id in self.partials:
            # ask(x=1) for ask = functools.partial(f, a, k=2): f(a, k=2, x=1)
            partial = self.partials[func.id]
            return self._call(stand_in(node, ("partial", id(partial)), lambda: (
                partial.args[0], [*partial.args[1:], *node.args], [*partial.keywords, *node.keywords])))
        if isinstance(func, ast.Subscript) and isinstance(func.value, ast.Name):
            table = self._function_table(func.value.id)
            if table:  # ENCODERS[fmt](mask): each function of the table may run
                taint, kind = CLEAN, K.EMPTY
                for name in table:
                    t, k = self._call(stand_in(node, ("table", name), lambda name=name: (
                        ast.Name(id=name, ctx=ast.Load()), node.args, node.keywords)))
                    taint, kind = taint | t, K.join(kind, k)
                return taint, None if kind == K.EMPTY else kind
        target = self._project_callable(func, recv_t, recv_k)
        if target is not None:
            taint, kind = self._run_project(node, target)
            for override in self._overrides(func, target):
                # self.propose(...) in a base class runs a subclass's propose too
                t, k = self._run_project(node, override)
                taint, kind = taint | t, K.join(kind, k)
            return taint, kind
        args = self._args(node)
        arg_taint = frozenset().union(*(t for _, t, _ in args)) if args else CLEAN
        attr = func.attr if isinstance(func, ast.Attribute) else ""
        if attr in PREDICT_METHODS:
            if self.is_source(node, getattr(node, "_samgpu_unpack", None), recv_k):
                sid = self.p.source_id(self.m.path, node)
                receiver = self.receiver(node, recv_k)
                self.p.note_receiver(self.m.path, node, receiver)
                for kw, (_, _, kind) in zip(node.keywords, args[len(node.args):]):
                    if kw.arg is None and not (isinstance(kind, Keys) and kind.get("'as_numpy'") is None):
                        # **kwargs that may hold as_numpy already: --fix leaves the call alone
                        self.p.note_receiver(self.m.path, node, f"forwards:{ast.unparse(kw.value)}")
                return self.source_kind(node, sid, receiver)
            if as_numpy_kw(node) is not None:
                # pinned already (by hand or by --fix): what --fix checks after editing
                self.p.note_receiver(self.m.path, node, self.receiver(node, recv_k))
        if qualified:
            made = self._constructed(qualified)
            if made is not None:
                return made
            if not self.p.scanned(qualified):
                return self.library_call(node, qualified, args, arg_taint)
        if isinstance(func, ast.Attribute):
            return self._method(node, func, recv_t, recv_k, args, arg_taint)
        if isinstance(func, ast.Name):
            return self._name_call(node, func.id, args, arg_taint)
        return CLEAN, None

    def _function_table(self, name: str) -> list:
        """The functions of a module-level dict literal of names (a dispatch
        table), when each names a function of this module; else []."""
        if self.local(name) and name not in self.m.global_kinds:
            return []
        for stmt in self.m.tree.body:
            value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
            if isinstance(value, ast.Dict) and any(isinstance(t, ast.Name) and t.id == name for t in targets):
                names = [v.id for v in value.values if isinstance(v, ast.Name)]
                if names and len(names) == len(value.values) and all(self.p.function(self.m, n) for n in names):
                    return names
        return []

    def _constructed(self, qualified: str) -> Optional[Value]:
        """A patched predictor made by its class, ``from_pretrained`` or a builder."""
        made = REGISTRY.patched_class(qualified) or REGISTRY.builder(qualified)
        if made is None and qualified.endswith(".from_pretrained"):
            made = REGISTRY.patched_class(qualified[: -len(".from_pretrained")])
        if made is None:
            made = self.p.forks.get(qualified)
        return (CLEAN, K.patched(made)) if made else None

    def _overrides(self, func: ast.AST, target: Target) -> List[Target]:
        """For ``self.m(...)`` in a class: the scanned subclasses' own ``m``."""
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and self.cls is not None
                and target[0] is not None and self.kind_of(func.value.id) == K.SELF):
            return []
        out: List[Target] = []
        for cls in self.p.subclasses(self.cls):
            m = cls.methods.get(func.attr)
            if m is not None and m is not target[0] and m.is_method:
                out.append((m, True, None, False))
        return out

    def _run_project(self, node: ast.Call, target: Target) -> Value:
        func, bound_self, cls, pass_context = target
        context = self.context_for_call() if pass_context else None
        if func is not None:
            summary = self.p.call(func, node, self, bound_self, context)
            if cls is not None:
                return summary.ret, f"class:{cls.name}"
            return self._decorated(func, (summary.ret, summary.ret_kind))
        # a class without __init__: its constructor
        args = self._args(node)
        taint = frozenset().union(*(t for _, t, _ in args)) if args else CLEAN
        names = [*cls.field_order[:len(node.args)], *(kw.arg for kw in node.keywords)]  # type: ignore[union-attr]
        for name, (_, t, k) in zip(names, args):
            if name is not None and len(node.args) <= len(cls.field_order):  # type: ignore[union-attr]
                self.p.share(cls.fields, name, t, k)  # type: ignore[union-attr]
        return taint, f"class:{cls.name}"  # type: ignore[union-attr]

    def _decorated(self, func: FuncInfo, value: Value) -> Value:
        """What a call of ``func`` returns through its scanned decorators: a
        wrapper that returns ``out, ms`` after ``out = fn(*args, **kwargs)``
        puts the function's own value in the first place."""
        for dec in reversed(getattr(func.node, "decorator_list", [])):  # the innermost wraps first
            name = dotted_name(dec)
            outer = self.p.function(func.module, name) if name and "." not in name else None
            if outer is None:
                continue  # a library decorator (functools.cache, torch.no_grad): the value as is
            value = _through_wrapper(outer.node, value)
        return value

    def _args(self, node: ast.Call) -> Args:
        out = []
        for a in node.args:
            t, k = self._eval(a)
            out.append((a, t, k))
        for kw in node.keywords:
            t, k = self._eval(kw.value)
            out.append((kw.value, t, k))
        return out

    def _callable_instance(self, cls: Optional[ClassInfo]) -> Optional[Target]:
        """Calling an instance: ``__call__``, or ``forward`` for an ``nn.Module``."""
        if cls is None:
            return None
        call = self.p.method(cls, "__call__")
        if call is None and self.p.is_module_class(cls):
            call = self.p.method(cls, "forward")
        return (call, True, None, False) if call is not None else None

    def _project_callable(self, func: ast.AST, base_t: Taint, base_k: Kind) -> Optional[Target]:
        """The scanned function or method a call runs, if any."""
        if isinstance(func, ast.Name):
            if func.id in self.local_funcs:
                return self.local_funcs[func.id], False, None, False
            kind = self.kind_of(func.id)
            if K.class_kind(kind):
                return self._callable_instance(self.p.class_by_name(K.class_kind(kind)))
            if self.local(func.id):
                return None
            f = self.p.function(self.m, func.id)
            if f is not None:
                return f, False, None, False
            cls = self.p.cls(self.m, func.id)
            if cls is not None and self.predictor_class(cls) is None:
                return self.p.method(cls, "__init__"), True, cls, False
            return None
        if not isinstance(func, ast.Attribute):
            return None
        base = func.value
        if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super" \
                and self.cls is not None:
            # super().predict(...): the first scanned base class's method, on this self
            for name in self.cls.bases:
                parent = self.p.class_by_name(name)
                m = self.p.method(parent, func.attr) if parent is not None else None
                if m is not None:
                    return m, m.is_method, None, m.is_method
            return None
        if isinstance(base, ast.Name) and not self.local(base.id):
            named = self.p.cls(self.m, base.id)
            if named is not None and self.predictor_class(named) is None:
                m = self.p.method(named, func.attr)
                if m is not None and (not m.is_method or m.is_classmethod):
                    # Tool.mask_to_polygons(m): a static or class method through its class
                    return m, m.is_classmethod, None, False
        is_self = isinstance(base, ast.Name) and self.kind_of(base.id) == K.SELF
        cls = self.self_class(base) or (self.p.class_by_name(K.class_kind(base_k)) if K.class_kind(base_k) else None)
        if cls is not None:
            m = self.p.method(cls, func.attr)
            if m is not None:
                return m, m.is_method, None, is_self and m.is_method
            if isinstance(base, ast.Name):
                _, attr_kind = self.self_attr(cls, func.attr, is_self)
                if K.class_kind(attr_kind):  # self.segmenter(image): an instance held in an attribute
                    return self._callable_instance(self.p.class_by_name(K.class_kind(attr_kind)))
            return None
        qualified = self.qualify(func)
        if qualified:
            module_name, _, name = qualified.rpartition(".")
            other = self.p.module_named(module_name)
            if other is not None:
                found = self.p.function(other, name)  # defined there, or imported there from scanned code
                if found is not None:
                    return found, False, None, False
                cls = self.p.cls(other, name)
                if cls is not None and self.predictor_class(cls) is None:
                    return self.p.method(cls, "__init__"), True, cls, False
            return None
        if func.attr in PREDICT_METHODS or base_t or base_k is not None:
            return None
        m = self.p.unique_method(func.attr)
        if m is not None and m.is_method:
            return m, True, None, False
        return None

    def _method(self, node: ast.Call, func: ast.Attribute, recv_t: Taint, recv_k: Kind, args: Args,
                arg_taint: Taint) -> Value:
        attr = func.attr
        cls = self.p.class_by_name(K.class_kind(recv_k)) if K.class_kind(recv_k) else None
        if cls is not None and attr in MODULE_RETURNS_SELF and self.p.is_module_class(cls):
            return CLEAN, recv_k  # head = Head().eval()
        if attr == "submit" and node.args and not isinstance(node.args[0], ast.Starred) and \
                words(last_name(func.value)) & {"pool", "executor", "ex", "workers", "threads"}:
            # pool.submit(fn, *args): fn runs with these arguments (its result is a Future)
            self._call(_through(node))
            return CLEAN, None
        if attr == "update" and node.keywords and not node.args and (recv_k is None or isinstance(recv_k, Keys)):
            # d.update(masks=m, scores=s): one key per keyword
            keys = recv_k if isinstance(recv_k, Keys) else Keys(())
            for kw, (_, t, k) in zip(node.keywords, args):
                if kw.arg is not None:
                    keys = keys.set(repr(kw.arg), t, k)
                    if t:
                        self.note_result_key(kw.arg)
            self.bind_into(func.value, arg_taint, None, replace=keys)
            return CLEAN, None
        if attr in CONTAINER_ADDERS and not K.is_tensor(recv_k) and recv_k != K.NUMPY:
            value = args[-1] if args else None
            # (alive if ok else finished).append(tr): either list may get it
            receivers = [func.value] if not isinstance(func.value, ast.IfExp) else [func.value.body, func.value.orelse]
            for receiver in receivers:
                if len(receivers) > 1:
                    recv_t, recv_k = self._eval(receiver)
                if value is not None and (value[1] or isinstance(recv_k, Elements)):
                    element = value[2]
                    if attr == "extend" or attr == "update":
                        element = K.element(element) if attr == "extend" else None
                    replace: Kind = "?"
                    if attr == "update" and not isinstance(recv_k, Keys):
                        replace = None
                    elif recv_k is None and not recv_t and attr != "update":
                        replace = Elements((element,))  # a container nothing was known of: now its elements are
                    self.bind_into(receiver, value[1], element, replace=replace)
                    if attr in CHANNEL_PUT and value[1]:
                        self._channel_put(receiver, value[1], value[2] if len(args) == 1 else None)
            return CLEAN, None
        if attr in CHANNEL_GET:
            name = last_name(func.value)
            if name in self.p.channels and not isinstance(recv_k, (Keys, Elements)):
                return self.p.channels[name]
        if attr == "__setitem__" and arg_taint:
            self.bind_into(func.value, arg_taint)
        if recv_t:
            return self.tensor_method(node, attr, recv_t, recv_k)
        if isinstance(recv_k, (Elements, Keys, Positions)):
            value = self.container_read(attr, node, recv_t, recv_k)
            if value is not None:
                return value  # type: ignore[return-value]
        if attr in PLOT_METHODS and arg_taint:
            self._apply(node, call_row(attr), f".{attr}()", arg_taint)
            return CLEAN, None
        external = K.prefixed(recv_k, "external")
        if external and external.split(".")[0] == "h5py":
            if attr in ("create_group", "require_group"):
                return CLEAN, K.external("h5py.Group")
            if attr in ("create_dataset", "require_dataset"):
                # h5py converts data= with numpy; the dataset takes items as an array does
                if arg_taint:
                    self._apply(node, numpy_row("asarray"), f".{attr}()", arg_taint)
                return CLEAN, K.external("h5py.Dataset")
        if external and arg_taint:
            self.unscanned_call(node, f"{external}.{attr}", arg_taint)
            return CLEAN, None
        if recv_k not in (K.PREDICTOR, K.TORCH, K.OTHER) and not K.prefixed(recv_k, "patched") and \
                self.numpy_helper(node, attr, arg_taint):
            return CLEAN, K.NUMPY
        if recv_k == K.NUMPY and attr in ("max", "min", "sum", "mean", "any", "all", "prod", "std") and \
                not node.args and not node.keywords:
            return CLEAN, K.NPSCALAR  # a whole-array reduction: a numpy scalar (t + it runs)
        if recv_k == K.NUMPY and attr in ("reshape", "copy", "astype", "transpose", "squeeze", "flatten", "ravel",
                                          "clip", "view", "max", "min", "sum", "resize", "crop", "convert"):
            return CLEAN, K.NUMPY
        return CLEAN, None

    def _name_call(self, node: ast.Call, name: str, args: Args, arg_taint: Taint) -> Value:
        if self.local(name):
            return CLEAN, None
        if name in PLAIN_BUILTINS or name == "open":
            return CLEAN, None
        if name == "round" and args and args[0][1]:
            op = row("round()")
            self.report(node, "round()", effect(op), op.why, op.fix, args[0][1])
            return CLEAN, None
        if name in ("enumerate", "zip"):
            return arg_taint, None
        if name == "map" and len(node.args) == 2 and isinstance(node.args[0], ast.Lambda) and \
                len(node.args[0].args.args) == 1:
            # map(lambda it: it[1].sum(), items): the lambda's body on one element
            lam = node.args[0]
            _, it_t, it_k = args[1]
            saved = self.snapshot()
            self.bind_iteration(ast.Name(id=lam.args.args[0].arg, ctx=ast.Store()), node.args[1], it_t, it_k)
            t, k = self._eval(lam.body)
            self.restore(saved)
            return t, Elements((k,))
        if name in ("dict",) and not args:
            return CLEAN, Keys(())
        if name in ("list", "set", "tuple", "sorted", "reversed", "iter", "frozenset", "filter"):
            if not args:
                return CLEAN, Elements((K.EMPTY,))
            return arg_taint, Elements((K.element(args[-1][2]),))
        if name in PASS_THROUGH_BUILTINS:
            if name in ("next", "max", "min") and len(node.args) == 1 and isinstance(args[0][2], (Elements, Positions)):
                return arg_taint, K.element(args[0][2])  # an element: max(segments, key=...)
            if name == "next" and args:
                return arg_taint, K.element(args[0][2])
            return arg_taint, K.SCALAR if name in ("max", "min", "sum") and arg_taint else None
        if self.numpy_helper(node, name, arg_taint):
            return CLEAN, K.NUMPY
        if name.endswith("Predictor"):
            return CLEAN, K.PREDICTOR
        if name[:1].isupper():
            return CLEAN, K.OTHER
        return CLEAN, None

    def _channel_put(self, channel: ast.AST, taint: Taint, kind: Kind) -> None:
        name = last_name(channel)
        if not name:
            return
        self.p.share(self.p.channels, name, taint, kind)



def _through_wrapper(decorator: ast.AST, value: Value) -> Value:
    """``value`` as the wrapper that ``decorator`` returns hands it back: itself
    for ``return fn(...)`` or ``return out``, a place of a tuple for ``return out,
    ms``; unchanged when the wrapper's returns say nothing clear."""
    params = decorator.args.args  # type: ignore[attr-defined]
    if not params:
        return value
    fn = params[0].arg
    inner = {n.name: n for n in decorator.body  # type: ignore[attr-defined]
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    returned = [n.value.id for n in decorator.body  # type: ignore[attr-defined]
                if isinstance(n, ast.Return) and isinstance(n.value, ast.Name) and n.value.id in inner]
    if len(returned) != 1:
        return value
    wrapper = inner[returned[0]]

    def calls_fn(node: Optional[ast.AST]) -> bool:
        while isinstance(node, ast.Await):
            node = node.value
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == fn

    held = {t.id for n in ast.walk(wrapper) if isinstance(n, ast.Assign) and calls_fn(n.value)
            for t in n.targets if isinstance(t, ast.Name)}

    def is_value(node: Optional[ast.AST]) -> bool:
        return calls_fn(node) or (isinstance(node, ast.Name) and node.id in held)

    shapes = set()
    for ret in (n for n in ast.walk(wrapper) if isinstance(n, ast.Return)):
        if is_value(ret.value):
            shapes.add(None)
        elif isinstance(ret.value, ast.Tuple) and not any(isinstance(e, ast.Starred) for e in ret.value.elts):
            shapes.add(tuple(is_value(e) for e in ret.value.elts))
        else:
            return value
    if len(shapes) != 1:
        return value
    shape = shapes.pop()
    if shape is None:
        return value
    taint, _ = value
    return taint, Positions.of(value if here else (CLEAN, None) for here in shape)
