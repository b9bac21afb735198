"""One function body (or a module's top level): what each name holds, and
which calls are sources."""

from __future__ import annotations

import ast
from typing import Any, Dict, Optional, Tuple

from . import kinds as K
from .entry_points import PREDICT_METHODS, RECEIVER_WORDS, REGISTRY, SAM_KEYWORDS
from .index import ClassInfo, FuncInfo, ModuleInfo
from .kinds import ANY_KEY, CLEAN, Elements, Keys, Kind, Positions
from .names import Taint, as_numpy_kw, dotted_name, last_name, words
from .operations import ARRAY_STORES

State = Tuple[Dict[str, Taint], Dict[str, Kind]]
# A caller's view of ``self``'s attributes: attribute -> (taint, kind).
Context = Dict[str, Tuple[Taint, Kind]]


class BaseScope:
    """Names and their values (taint and kind); binding; sources."""

    # ``project`` is a project.Project (not imported: project.py builds scopes)
    def __init__(self, project: Any, module: ModuleInfo, cls: Optional[ClassInfo], func: Optional[FuncInfo],
                 context: Optional[Context] = None) -> None:
        self.p = project
        self.m = module
        self.cls = cls
        self.func = func
        self.context: Context = dict(context or {})
        self.env: Dict[str, Taint] = {}
        self.kinds: Dict[str, Kind] = {}
        self.local_funcs: Dict[str, FuncInfo] = {}
        # ask = functools.partial(engine.predict, ...): name -> the partial's call node
        self.partials: Dict[str, ast.Call] = {}
        self.returned: Taint = CLEAN
        self.returned_kind: Kind = K.EMPTY
        # a generator's yields: what iterating over its call gives
        self.generator = False
        self.yielded: Taint = CLEAN
        self.yielded_kind: Kind = K.EMPTY
        self.silent = False

    # -- state -------------------------------------------------------------
    def snapshot(self) -> State:
        return dict(self.env), dict(self.kinds)

    def restore(self, state: State) -> None:
        self.env, self.kinds = dict(state[0]), dict(state[1])

    def merge(self, *states: State) -> None:
        """The state after branches: a name's taint from any, its kind where they agree."""
        env: Dict[str, Taint] = {}
        kinds: Dict[str, Kind] = {}
        for e, _ in states:
            for name, t in e.items():
                env[name] = env.get(name, CLEAN) | t
        for name in set().union(*(k.keys() for _, k in states)):
            kind: Kind = K.EMPTY
            structured = any(isinstance(k.get(name), (Elements, Keys, Positions)) for _, k in states)
            for e, k in states:
                arm = k.get(name)
                if arm is None and structured and not e.get(name, CLEAN):
                    continue  # an arm that knows nothing of a clean value: the container's parts stand
                kind = K.join(kind, arm)
            if kind is not None and kind != K.EMPTY:
                kinds[name] = kind
        self.env, self.kinds = env, kinds

    def report(self, node: ast.AST, operation: str, effect: Optional[str], why: str, fix: str, taint: Taint) -> None:
        if effect and not self.silent:
            self.p.report(self.m, node, operation, effect, why, fix, taint)

    def lookup(self, name: str) -> Taint:
        if name in self.env:
            return self.env[name]
        if self.func is not None:
            return self.m.globals.get(name, CLEAN)
        return CLEAN

    def kind_of(self, name: str) -> Kind:
        if name in self.kinds:
            return self.kinds[name]
        if name in self.env:
            return None
        if self.func is not None:
            kind = self.m.global_kinds.get(name)
            return None if kind == K.MIXED else kind
        return None

    def local(self, name: str) -> bool:
        """Whether ``name`` is a variable here (not an imported module or class)."""
        return name in self.env or name in self.kinds or (self.func is not None and name in self.m.global_kinds)

    def self_class(self, node: ast.AST) -> Optional[ClassInfo]:
        """The scanned class of ``self`` or of an instance, for ``node`` a name."""
        if isinstance(node, ast.Name):
            kind = self.kind_of(node.id)
            if kind == K.SELF:
                return self.cls
            if K.class_kind(kind):
                return self.p.class_by_name(K.class_kind(kind))
        return None

    def self_attr(self, cls: ClassInfo, attr: str, is_self: bool) -> Tuple[Taint, Kind]:
        """``self.attr`` as this path sees it: set here, set by the caller, or any writer's."""
        key = f"self.{attr}"
        if is_self and key in self.env:
            return self.env[key], self.kinds.get(key)
        if is_self and attr in self.context:
            return self.context[attr]
        kind = cls.attr_kinds.get(attr)
        taint = cls.attrs.get(attr, CLEAN)
        if kind == K.MIXED and taint and cls.result_kinds.get(attr, K.MIXED) != K.MIXED:
            kind = cls.result_kinds[attr]  # a result, where it is one, is of this kind
        return taint, None if kind == K.MIXED else kind

    def context_for_call(self) -> Context:
        """What this path knows of ``self``'s attributes, for a method it calls on ``self``."""
        out = dict(self.context)
        for key, taint in self.env.items():
            if key.startswith("self.") and key.count(".") == 1:
                out[key[5:]] = (taint, self.kinds.get(key))
        return out

    # -- binding -----------------------------------------------------------
    def bind(self, target: ast.AST, taint: Taint, kind: Kind, value: Optional[ast.AST] = None) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = taint
            if kind is not None:
                self.kinds[target.id] = kind
            else:
                self.kinds.pop(target.id, None)
            if (taint or kind is not None) and self.func is not None and target.id in self.func.global_names:
                # the module's global, for the functions that read it
                self.p.share(self.p.mutated, (self.m.path, target.id), taint, kind)
        elif isinstance(target, (ast.Tuple, ast.List)):
            self._bind_unpack(target.elts, taint, kind, value)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, taint, None)
        elif isinstance(target, ast.Attribute):
            self._bind_attribute(target, taint, kind)
        elif isinstance(target, ast.Subscript):
            self._bind_item(target, taint, kind)

    def _bind_unpack(self, elts: list, taint: Taint, kind: Kind, value: Optional[ast.AST]) -> None:
        starred = [i for i, e in enumerate(elts) if isinstance(e, ast.Starred)]
        if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(elts) and not starred and not any(
            isinstance(e, ast.Starred) for e in value.elts
        ):
            for t_elt, v_elt in zip(elts, value.elts):
                t, k = self.eval(v_elt, report=False)  # type: ignore[attr-defined]
                self.bind(t_elt, t, k, v_elt)
            return
        if isinstance(kind, Positions) and not starred and len(kind) == len(elts):
            for elt, (t, k) in zip(elts, kind):
                self.bind(elt, t, k)
            return
        if isinstance(kind, Positions) and len(starred) == 1 and len(kind) >= len(elts) - 1:
            star = starred[0]
            after = len(elts) - star - 1
            for elt, (t, k) in zip(elts[:star], kind[:star]):
                self.bind(elt, t, k)
            middle = kind[star:len(kind) - after]
            mid_taint = frozenset().union(*(t for t, _ in middle)) if middle else CLEAN
            mid_kind: Kind = K.EMPTY
            for _, k in middle:
                mid_kind = K.join(mid_kind, k)
            self.bind(elts[star].value, mid_taint, Elements((mid_kind,)))
            for elt, (t, k) in zip(elts[star + 1:], kind[len(kind) - after:]):
                self.bind(elt, t, k)
            return
        each = K.SCALAR if kind == K.SCALAR else K.element(kind)
        for elt in elts:
            self.bind(elt, taint, each)

    def _bind_attribute(self, target: ast.Attribute, taint: Taint, kind: Kind) -> None:
        base = target.value
        cls = self.self_class(base)
        if cls is not None:
            if isinstance(base, ast.Name) and self.kind_of(base.id) == K.SELF:
                key = f"self.{target.attr}"
                self.env[key] = taint
                if kind is None:
                    self.kinds.pop(key, None)
                else:
                    self.kinds[key] = kind
            if taint - cls.attrs.get(target.attr, CLEAN):
                cls.attrs[target.attr] = cls.attrs.get(target.attr, CLEAN) | taint
                self.p.changed = True
            if taint and kind is not None:
                had = cls.result_kinds.get(target.attr, K.EMPTY)
                now = K.join(had, kind)
                now = K.MIXED if now is None else now
                if now != had:
                    cls.result_kinds[target.attr] = now
                    self.p.changed = True
            known = cls.attr_kinds.get(target.attr)
            if kind is not None and known != kind and known != K.MIXED:
                # two writers that disagree: nothing is assumed of the attribute
                joined = kind if known is None else K.join(known, kind)
                joined = K.MIXED if joined is None else joined
                if joined != known:
                    cls.attr_kinds[target.attr] = joined
                    self.p.changed = True
            return
        name = dotted_name(target)
        if name:
            self.env[name] = taint
            if kind is not None:
                self.kinds[name] = kind
        held = self.module_state(target)
        if held is not None and (taint or kind is not None):
            self.p.share(self.p.keyed, held, taint, kind)
        root = base
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        if isinstance(root, ast.Name) and taint:
            # an object that holds a result: the object carries it too
            self.env[root.id] = self.lookup(root.id) | taint

    def module_state(self, node: ast.AST) -> Optional[str]:
        """The qualified name of ``st.session_state`` or ``flask.g``: an attribute
        path rooted at an imported module, one object for every function that
        names it (a web framework's per-session or per-request store)."""
        name = dotted_name(node) if isinstance(node, ast.Attribute) else None
        if not name or self.local(name.split(".")[0]):
            return None
        return self.m.through_imports(name)

    def state_key(self, base: ast.AST, key: ast.AST) -> Optional[str]:
        """``state['mask']`` for a parameter's item under a string key: a state dict
        that callbacks hand each other, matched across functions by these names;
        ``streamlit.session_state['mask']`` for a module's object (module_state)."""
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            return None
        held = self.module_state(base)
        if held is not None:
            return f"{held}[{key.value!r}]"
        if not isinstance(base, ast.Name):
            return None
        func = self.func
        if func is None or base.id not in func.params or (func.is_method and func.params[:1] == [base.id]):
            return None
        return f"{base.id}[{key.value!r}]"

    def mutated(self, name: str, taint: Taint, kind: Kind) -> Tuple[Taint, Kind]:
        """A module global as a function filled it in place, joined with what is known here."""
        found = self.p.mutated.get((self.m.path, name))
        if found is None or (self.func is not None and name in self.env):
            return taint, kind
        return taint | found[0], K.join(kind if kind is not None else K.EMPTY, found[1])

    def note_result_key(self, key: str) -> None:
        if key not in self.p.result_keys:
            self.p.result_keys.add(key)
            self.p.changed = True

    def _bind_item(self, target: ast.Subscript, taint: Taint, kind: Kind) -> None:
        base, key = target.value, target.slice
        if taint and isinstance(key, ast.Constant) and isinstance(key.value, str):
            self.note_result_key(key.value)
        shared = self.state_key(base, key)
        if shared is not None and (taint or kind is not None):
            self.p.share(self.p.keyed, shared, taint, kind)
        _, base_kind = self.eval(base, report=False)  # type: ignore[attr-defined]
        if base_kind == K.NUMPY or K.is_tensor(base_kind) or K.prefixed(base_kind, "external") in ARRAY_STORES:
            return  # written into an array (a sink, reported) or a tensor: no new taint there
        constant = key.value if isinstance(key, ast.Constant) and isinstance(key.value, (str, int)) else None
        if isinstance(base_kind, Keys) or (base_kind is None and (constant is not None or kind is not None)
                                           and isinstance(base, ast.Name) and not self.lookup(base.id)):
            keys = base_kind if isinstance(base_kind, Keys) else Keys(())
            if constant is not None:
                new_kind: Kind = keys.set(repr(constant), taint, kind)
            elif kind is not None:
                # cache[name] = build(name): what any key holds
                have = keys.get(ANY_KEY)
                new_kind = keys.set(ANY_KEY, taint | (have[0] if have else CLEAN),
                                    K.join(have[1], kind) if have else kind)
            else:
                new_kind = None
            self.bind_into(base, taint, None, replace=new_kind)
        elif isinstance(base_kind, Elements):
            self.bind_into(base, taint, kind)
        else:
            self.bind_into(base, taint, None, replace=None)

    def bind_into(self, container: ast.AST, taint: Taint, element: Kind = None, replace: Kind = "?") -> None:
        """``container`` now also holds a value of this taint and kind (an append,
        an item); ``replace`` is its new kind when the caller knows it."""
        global_name = (isinstance(container, ast.Name) and self.func is not None and container.id not in self.env
                       and (container.id in self.m.global_kinds or container.id in self.m.globals))
        current_t, current_k = self.eval(container, report=False)  # type: ignore[attr-defined]
        if replace != "?":
            new_kind = replace
        elif isinstance(current_k, Elements):
            new_kind = Elements((K.join(current_k[0], element),))
        else:
            new_kind = current_k if not taint else None
        if isinstance(container, ast.Name):
            self.env[container.id] = self.lookup(container.id) | taint
            if new_kind is None:
                self.kinds.pop(container.id, None)
            else:
                self.kinds[container.id] = new_kind
            if global_name:
                self.p.share(self.p.mutated, (self.m.path, container.id), current_t | taint, new_kind)
        elif isinstance(container, (ast.Attribute, ast.Subscript)):
            self.bind(container, current_t | taint, new_kind)

    # -- sources -----------------------------------------------------------
    def predictor_class(self, cls: ClassInfo) -> Optional[str]:
        """For a scanned class: its patched base (``module.Class``), "name" when a base
        is only called ``...Predictor``, else None."""
        return self.p.predictor_base(cls)

    def receiver(self, call: ast.Call, recv_k: Kind) -> str:
        """Why the receiver of a predict call is a predictor: ``patched:module.Class``
        (known), ``wrapper:X`` (a scanned class that is not one), ``external:module.Class``
        (a class the scan cannot read), or ``name`` (its name or keywords only)."""
        func = call.func
        assert isinstance(func, ast.Attribute)
        unbound = REGISTRY.patched_class(self.qualify(func.value))
        if unbound:
            return f"patched:{unbound}"
        patched = K.prefixed(recv_k, "patched")
        if patched:
            return f"patched:{patched}"
        if recv_k == K.SELF or K.class_kind(recv_k):
            cls = self.cls if recv_k == K.SELF else self.p.class_by_name(K.class_kind(recv_k))
            base = self.predictor_class(cls) if cls is not None else None
            if base and base != "name":
                return f"patched:{base}"
            return f"wrapper:{cls.name}" if cls is not None and base is None else "name"
        if isinstance(func.value, ast.Call) and dotted_name(func.value.func) == "super" and self.cls is not None:
            base = self.predictor_class(self.cls)
            return f"patched:{base}" if base and base != "name" else "name"
        external = K.prefixed(recv_k, "external")
        if external:
            return f"external:{external}"
        return "name"

    def qualify(self, node: ast.AST) -> Optional[str]:
        """The qualified name of a dotted expression through imports, unless its
        head is a variable here."""
        name = dotted_name(node)
        if not name or self.local(name.split(".")[0]):
            return None
        return self.m.qualify(name)

    def is_source(self, call: ast.Call, unpack: Optional[ast.AST], recv_k: Kind) -> bool:
        func = call.func
        if not (isinstance(func, ast.Attribute) and func.attr in PREDICT_METHODS):
            return False
        kw = as_numpy_kw(call)
        if kw is not None and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
            return False
        unbound = REGISTRY.patched_class(self.qualify(func.value))
        if unbound:
            return func.attr in self.p.patched_methods(unbound)
        patched = K.prefixed(recv_k, "patched")
        if patched:
            return func.attr in self.p.patched_methods(patched)
        if recv_k == K.PREDICTOR:
            return True
        if recv_k == K.SELF or K.class_kind(recv_k):
            cls = self.cls if recv_k == K.SELF else self.p.class_by_name(K.class_kind(recv_k))
            return cls is not None and self.predictor_class(cls) is not None
        if recv_k in (K.OTHER, K.NUMPY) or K.is_tensor(recv_k) or isinstance(recv_k, (Positions, Keys, Elements)):
            return False
        if any(k.arg in SAM_KEYWORDS for k in call.keywords):
            return True
        receiver = func.value
        name = last_name(receiver)
        if isinstance(receiver, ast.Call):
            name = (dotted_name(receiver.func) or "").split(".")[-1]
        if words(name) & RECEIVER_WORDS:
            return True
        # masks, scores, logits = model.predict(...): SAM's three results by name
        if isinstance(unpack, (ast.Tuple, ast.List)) and len(unpack.elts) == 3:
            first = unpack.elts[0]
            if isinstance(first, ast.Name) and "mask" in first.id.lower():
                return True
        return False

    def source_kind(self, call: ast.Call, sid: int, receiver: str = "name") -> Tuple[Taint, Kind]:
        """The value of a source call: SAM's (masks, scores, logits), lists of them for
        the batch methods. Masks are boolean but for SAM 2 and SAM 3 (whose
        predictors, and so the shim, return them as float 0/1)."""
        taint = frozenset({sid})
        float_masks = call.func.attr.startswith("predict_inst") or (  # type: ignore[attr-defined]
            receiver.startswith("patched:") and receiver[8:].split(".")[0] in ("sam2", "sam3"))
        logits = float_masks or any(
            k.arg == "return_logits" and not (isinstance(k.value, ast.Constant) and not k.value.value)
            for k in call.keywords)
        parts: Tuple[Kind, ...] = (K.TORCH if logits else K.MASK, K.TORCH, K.TORCH)
        if call.func.attr.endswith("batch"):  # type: ignore[attr-defined]
            parts = tuple(Elements((p,)) for p in parts)
        return taint, Positions.of((taint, p) for p in parts)

