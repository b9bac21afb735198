"""Which bodies the analysis needs to run on its own: a cheap pass by names.

Taint starts at predict calls and leaves a body by four roads: its return
value (to the bodies that call it), the attributes it writes (to the bodies
that read them), the queues it puts into (to the bodies that get from a
queue of that name) and, at a module's top level, its globals (to that
module's functions). A body is relevant when it calls a source method or stands at the
end of one of those roads from a relevant body. The bodies that store what a
relevant body calls predict on (``self.predictor = SamPredictor(sam)``) are
relevant too: they decide whether the call is a source and whether --fix may
pin it. Every other function is analysed only when a relevant body calls it.
A file whose text names nothing relevant is not walked, so a tree without a
predict call costs its parsing and nothing more.
"""

from __future__ import annotations

import ast
import re
from typing import Dict, FrozenSet, Iterable, List, Set, Tuple

from .entry_points import PREDICT_METHODS
from .index import ModuleInfo, relative_base
from .names import dotted_name, last_name
from .operations import CHANNEL_GET, CHANNEL_PUT, CONTAINER_ADDERS


class _Names:
    """What one body calls, reads and writes, by name."""

    def __init__(self, nodes: Iterable[ast.AST], top_level: bool, declared: FrozenSet[str] = frozenset()) -> None:
        self.calls: Set[str] = set()
        self.attr_loads: Set[str] = set()
        self.attr_stores: Set[str] = set()
        self.name_loads: Set[str] = set()
        self.name_stores: Set[str] = set()  # globals, at a module's top level
        self.receivers: Set[str] = set()  # what predict is called on: its last name
        self.puts: Set[str] = set()  # queues written and read (by the queue's name)
        self.gets: Set[str] = set()
        self.items_written: Set[str] = set()  # name['key'] written (a state dict callbacks share)
        self.items_read: Set[str] = set()
        self.filled: Set[str] = set()  # containers filled in place by name (a global dict, a list)
        # st.session_state['mask'], st.session_state.masks: paths on an imported
        # module's object, written and read (qualified by relevant())
        self.paths_written: Set[str] = set()
        self.paths_read: Set[str] = set()
        self.top_level = top_level
        for top in nodes:
            for node in ast.walk(top):
                if isinstance(node, ast.Call):
                    func = node.func
                    if isinstance(func, ast.Name):
                        self.calls.add(func.id)
                    elif isinstance(func, ast.Attribute):
                        self.calls.add(func.attr)
                        if func.attr in CONTAINER_ADDERS:  # self.history.append(x) writes history
                            self._written(func.value)
                            if isinstance(func.value, ast.Name):  # state.update(...) on a global, in place
                                self.filled.add(func.value.id)
                            self._item(func.value, self.items_written)
                        if func.attr in CHANNEL_PUT or func.attr in CHANNEL_GET:
                            (self.puts if func.attr in CHANNEL_PUT else self.gets).add(last_name(func.value))
                        if func.attr in PREDICT_METHODS:
                            receiver = func.value
                            while isinstance(receiver, ast.Call):
                                receiver = receiver.func
                            self.receivers.add(receiver.attr if isinstance(receiver, ast.Attribute)
                                               else getattr(receiver, "id", ""))
                elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and not isinstance(
                        node.value, ast.Constant):
                    for target in getattr(node, "targets", [getattr(node, "target", None)]):
                        self._path(target, self.paths_written)  # a constant (a setting) carries nothing
                if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
                    self._written(node.value)  # self.cache[key] = x writes cache
                    self._item(node, self.items_written)
                elif isinstance(node, ast.Subscript):
                    self._item(node, self.items_read)
                    self._path(node, self.paths_read)
                elif isinstance(node, ast.Attribute):
                    (self.attr_stores if isinstance(node.ctx, ast.Store) else self.attr_loads).add(node.attr)
                    if not isinstance(node.ctx, ast.Store):
                        self._path(node, self.paths_read)
                elif isinstance(node, ast.Name):
                    if not isinstance(node.ctx, ast.Store):
                        self.name_loads.add(node.id)
                    elif top_level or node.id in declared:  # a global, or one declared ``global`` here
                        self.name_stores.add(node.id)
        # a predict call, or predict handed over as a value (run_in_threadpool(p.predict, ...), partial)
        self.calls_source = not (self.calls.isdisjoint(PREDICT_METHODS) and self.attr_loads.isdisjoint(PREDICT_METHODS))

    @staticmethod
    def _item(node: ast.AST, into: Set[str]) -> None:
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
                isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            into.add(f"{node.value.id}[{node.slice.value!r}]")

    @staticmethod
    def _path(node: ast.AST, into: Set[str]) -> None:
        if isinstance(node, ast.Subscript):
            name = dotted_name(node.value)
            if name and "." in name and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                into.add(f"{name}[{node.slice.value!r}]")
        else:
            name = dotted_name(node)
            if name and "." in name:
                into.add(name)

    def _written(self, node: ast.AST) -> None:
        while isinstance(node, ast.Subscript):
            node = node.value
        if isinstance(node, ast.Attribute):
            self.attr_stores.add(node.attr)
        elif isinstance(node, ast.Name) and self.top_level:
            self.name_stores.add(node.id)


Body = Tuple[ast.AST, str, str, _Names]  # node, its name, its class's name, names


def _bodies(module: ModuleInfo) -> List[Body]:
    top = [n for n in module.tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    out: List[Body] = [(module.tree, "", "", _Names(top, True))]
    for func in module.functions.values():
        out.append((func.node, func.name, "", _Names([func.node], False, func.global_names)))
    for cls in module.classes.values():
        for method in cls.methods.values():
            out.append((method.node, method.name, cls.name, _Names([method.node], False, method.global_names)))
    for func in module.nested.values():
        out.append((func.node, func.name, "", _Names([func.node], False, func.global_names)))
    return out


def _imports(module: ModuleInfo) -> Set[str]:
    out = set()
    for target in module.aliases.values():
        out.add(target)
        out.add(target.rsplit(".", 1)[0])
    return out


_RELATIVE = re.compile(r"^\s*from\s+(\.+)([\w.]*)\s+import\s+\(?([\w\s,]+)", re.M)


def _relative_imports(module: ModuleInfo) -> Set[str]:
    """What a module's relative imports name (``from . import a`` in pkg: ``pkg``
    and ``pkg.a``), from its text alone: cheaper than its syntax tree."""
    if "from ." not in module.source:
        return set()
    out = set()
    for dots, rest, names in _RELATIVE.findall(module.source):
        base = relative_base(module.package, len(dots), rest)
        if base:
            out.add(base)
            out.update(f"{base}.{n.split()[0]}" for n in names.split(",") if n.strip())
    return out


def _qualified(module: ModuleInfo, paths: Set[str]) -> Set[str]:
    """The paths that start at an imported name, qualified (ModuleInfo.through_imports)."""
    return {q for q in map(module.through_imports, paths) if q}


def _same(a: str, b: str) -> bool:
    """One module, as far as the scan root lets names tell (``app.utils`` and ``utils``)."""
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def relevant(modules: Iterable[ModuleInfo]) -> Set[int]:
    """The ids of the relevant bodies (function nodes, module trees).

    Past the bodies that call predict themselves, a body is a road for results
    only in a module that imports one holding relevant bodies (or is one): a
    result crosses modules through what they import from each other, and a
    name shared by chance (``forward`` in a thousand files of a library) is no
    road. A body storing what predict is called on may also sit in a module
    such a module imports (``config.PREDICTOR = SamPredictor(...)``)."""
    modules = list(modules)
    called: Set[str] = set(PREDICT_METHODS)  # relevant functions, methods and classes, called by these names
    attributes: Set[str] = set()  # written by relevant bodies
    receivers: Set[str] = set()  # what relevant bodies call predict on
    read: Set[str] = set()  # attributes relevant bodies (and what they call) read: their writers say what they hold
    callees: Set[str] = set()  # what relevant bodies call, by name
    channels: Set[str] = set()  # queues relevant bodies put into
    classes: Set[str] = set()  # classes with relevant methods
    items: Set[str] = set()  # name['key'] written by relevant bodies
    filled: Set[str] = set()  # containers relevant bodies fill in place, by name
    shared: Set[str] = set()  # paths on an imported module's object relevant bodies write (qualified)
    globals_: Dict[str, Set[str]] = {}  # module path -> globals its relevant top level binds
    reached: Set[str] = set()  # names of the modules with relevant bodies
    reached_imports: Set[str] = set()  # what those modules import
    found: Set[int] = set()
    indexed: Dict[str, List[Body]] = {}

    def imports_reached(module: ModuleInfo) -> bool:
        if module.name in reached:
            return True
        # the text must name a reached module before its imports are worth reading
        if module.identifiers.isdisjoint(r.rsplit(".", 1)[-1] for r in reached):
            # ``from . import segment`` names no module: its targets, read from the text
            return any(_same(i, r) for i in _relative_imports(module) for r in reached)
        return any(_same(i, r) for i in _imports(module) for r in reached)

    def imported_by_reached(module: ModuleInfo) -> bool:
        return any(_same(module.name, i) for i in reached_imports)

    def shares_state(module: ModuleInfo) -> bool:
        """It imports the module whose object a relevant body wrote into (streamlit)."""
        roots = {p.split(".", 1)[0] for p in shared}
        return any(t.split(".", 1)[0] in roots for t in module.aliases.values())

    while True:
        words = called | attributes | receivers | channels | read | {i.split("[", 1)[0] for i in items} | {
            p.split("[", 1)[0].rsplit(".", 1)[-1] for p in shared}
        grew = False
        for module in modules:
            if module.path not in indexed:
                if module.identifiers.isdisjoint(words):
                    continue
                if module.identifiers.isdisjoint(PREDICT_METHODS) and not (
                        imports_reached(module) or imported_by_reached(module) or shares_state(module)):
                    continue  # no seed, no link: nothing here can matter (yet)
                indexed[module.path] = _bodies(module)
            local = globals_.get(module.path, set())
            for node, name, owner, info in indexed[module.path]:
                if id(node) in found:
                    continue
                consumer = info.calls_source or (
                    bool(info.calls & called or info.attr_loads & (attributes | called) or info.name_loads & local
                         or info.gets & channels or info.name_loads & (classes | called | filled)
                         or info.items_read & items)
                    and imports_reached(module)) or bool(shared and _qualified(module, info.paths_read) & shared)
                if not consumer:
                    if name in callees and info.attr_loads - read:
                        # run when a relevant body calls it: what it reads is wanted too
                        read |= info.attr_loads
                        grew = True
                    # what a relevant body calls predict on is stored here: analysed, for
                    # the kind it stores, but not a road for results
                    if ((info.attr_stores | info.name_stores) & receivers or info.attr_stores & read) and (
                            imports_reached(module) or imported_by_reached(module)):
                        found.add(id(node))
                        grew = True
                    continue
                found.add(id(node))
                grew = True
                called |= {n for n in (name, owner) if n and not n.startswith("__")}
                if owner:
                    # a body that names the class (``refiner: SamRefiner``) may call its instances
                    classes.add(owner)
                attributes |= info.attr_stores
                receivers |= info.receivers
                read |= info.attr_loads
                callees |= info.calls
                channels |= info.puts
                items |= info.items_written
                filled |= info.filled
                shared |= _qualified(module, info.paths_written)
                globals_.setdefault(module.path, set()).update(info.name_stores)
                if module.name not in reached:
                    reached.add(module.name)
                    reached_imports.update(_imports(module))
        if not grew:
            return found
