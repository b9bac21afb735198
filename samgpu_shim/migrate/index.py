"""The project index: the files scanned, their imports, functions and classes.

Names are resolved the way Python imports them: ``import numpy as np`` makes
``np.where`` ``numpy.where``; ``from .metrics import iou`` in package ``app``
makes ``iou`` ``app.metrics.iou``. This is done on ``ast`` by hand, not with
libcst's ``QualifiedNameProvider``: it is all the analysis needs from
qualified names, and libcst with that metadata parses about 75 times slower
than ``ast`` (docs/architecture.rst).
"""

from __future__ import annotations

import ast
import os
import re
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

from .names import Taint, dotted_name
from .notebooks import code_cells

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ANNOTATION_WRAPPERS = frozenset({"Optional", "Union", "Annotated", "Final", "ClassVar"})


def relative_base(package: str, level: int, module: str) -> str:
    """The module ``from <level dots><module> import ...`` names, in ``package``."""
    parts = package.split(".") if package else []
    parts = parts[: max(len(parts) - (level - 1), 0)]
    return ".".join(p for p in parts + [module] if p)


class FuncInfo:
    """A function or method of the scanned code."""

    def __init__(self, node: ast.AST, module: ModuleInfo, cls: Optional[ClassInfo]) -> None:
        self.node = node
        self.module = module
        self.cls = cls
        args = node.args  # type: ignore[attr-defined]
        self.params = [a.arg for a in args.posonlyargs + args.args]
        self.vararg = args.vararg.arg if args.vararg else None
        self.kwonly = [a.arg for a in args.kwonlyargs]
        self.kwarg = args.kwarg.arg if args.kwarg else None
        self.annotations: Dict[str, ast.AST] = {
            a.arg: a.annotation for a in args.posonlyargs + args.args + args.kwonlyargs if a.annotation is not None
        }
        self.returns: Optional[ast.AST] = node.returns  # type: ignore[attr-defined]
        decorators = {dotted_name(d) for d in node.decorator_list}  # type: ignore[attr-defined]
        self.is_method = cls is not None and "staticmethod" not in decorators
        self.is_classmethod = "classmethod" in decorators
        self._array_params: Optional[Set[str]] = None
        self._global_names: Optional[FrozenSet[str]] = None
        self._rebound: Optional[FrozenSet[str]] = None

    @property
    def rebound_names(self) -> FrozenSet[str]:
        """The names the body assigns (a parameter among them is not the caller's object after)."""
        if self._rebound is None:
            self._rebound = frozenset(n.id for n in ast.walk(self.node)
                                      if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)))
        return self._rebound

    @property
    def global_names(self) -> FrozenSet[str]:
        """The names the body declares ``global`` (its stores bind the module's)."""
        if self._global_names is None:
            self._global_names = frozenset(n for node in ast.walk(self.node) if isinstance(node, ast.Global)
                                           for n in node.names)
        return self._global_names

    @property
    def name(self) -> str:
        return self.node.name  # type: ignore[attr-defined]

    def array_params(self) -> Set[str]:
        """Parameters the body uses as host arrays: ``p.copy()``, ``p.astype(...)``,
        ``cv2.f(p)``; and, in a module that never imports torch, ``p.shape`` or
        ``p[..., 0]`` too (numpy code has no other arrays)."""
        if self._array_params is None:
            params = set(self.params) | set(self.kwonly)
            found: Set[str] = set()
            loose = not self.module.imports_torch
            for node in ast.walk(self.node):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in params:
                    if node.attr in ("copy", "astype", "tobytes", "fill", "itemset") or (
                        loose and node.attr in ("shape", "ndim", "dtype")
                    ):
                        found.add(node.value.id)
                elif loose and isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and (
                    node.value.id in params and isinstance(node.slice, (ast.Tuple, ast.Slice))
                ):
                    found.add(node.value.id)
                elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Name) and (
                    node.args[0].id in params
                ):
                    head = (dotted_name(node.func) or "").split(".")[0]
                    if self.module.aliases.get(head, "").split(".")[0] == "cv2":
                        found.add(node.args[0].id)
            self._array_params = found
        return self._array_params


class ClassInfo:
    """A class of the scanned code, and what its methods store on ``self``."""

    def __init__(self, node: ast.ClassDef, module: ModuleInfo) -> None:
        self.node = node
        self.module = module
        self.name = node.name
        self.base_nodes = list(node.bases)
        self.bases = [(dotted_name(b) or "").split(".")[-1] for b in node.bases]
        self.methods: Dict[str, FuncInfo] = {}
        # attribute -> taint, and attribute -> kind, over every method
        self.attrs: Dict[str, Taint] = {}
        self.attr_kinds: Dict[str, object] = {}
        # attribute -> kind over the writers that store a result: what a reader that
        # gets a result holds when a clean writer (a file's mask) disagrees
        self.result_kinds: Dict[str, object] = {}
        # a class without __init__ (a dataclass, a NamedTuple): field -> (taint, kind)
        # over every construction seen, keywords by name, positions in field order
        self.fields: Dict[str, Tuple[FrozenSet[int], object]] = {}
        self.field_order = [n.target.id for n in node.body
                            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
        self._self_calls: Optional[Tuple[Set[str], Set[str]]] = None

    def _scan_self(self) -> Tuple[Set[str], Set[str]]:
        called: Set[str] = set()
        referenced: Set[str] = set()
        for method in self.methods.values():
            if not method.is_method or not method.params:
                continue
            me = method.params[0]
            calls = set()
            for node in ast.walk(method.node):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    calls.add(id(node.func))
            # a call inside a lambda or a nested def runs later, from elsewhere (a
            # GUI callback: lambda e: self.click(...)): the method is handed out
            for inner in ast.walk(method.node):
                if isinstance(inner, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef)) and inner is not method.node:
                    for node in ast.walk(inner):
                        calls.discard(id(node))
            for node in ast.walk(method.node):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == me:
                    (called if id(node) in calls else referenced).add(node.attr)
        return called, referenced

    def internal(self, name: str) -> bool:
        """Whether the method ``name`` is only ever called by the class's own
        methods (``self.name(...)``), never handed out (``button.on(self.name)``)."""
        if self._self_calls is None:
            self._self_calls = self._scan_self()
        called, referenced = self._self_calls
        return name in called and name not in referenced


class ModuleInfo:
    """One scanned file (a notebook's code cells are one module)."""

    def __init__(self, path: str, tree: ast.Module, cells: Optional[List[Tuple[int, int]]] = None,
                 name: Optional[str] = None, source: Optional[str] = None) -> None:
        self.path = path
        self.tree = tree
        self.source = source if source is not None else ast.unparse(tree)
        self.cells = cells  # notebooks: scanned line -> (cell, line in cell)
        self.stem = os.path.splitext(os.path.basename(path))[0]
        # the dotted name Python would import it by, as far as the scan root tells
        self.name = name or self.stem
        self.is_package = os.path.basename(path) == "__init__.py"
        self.functions: Dict[str, FuncInfo] = {}
        self.classes: Dict[str, ClassInfo] = {}
        self.globals: Dict[str, Taint] = {}
        self.global_kinds: Dict[str, object] = {}
        self._aliases: Optional[Dict[str, str]] = None
        self._identifiers: Optional[FrozenSet[str]] = None
        for node in tree.body:
            self._collect(node)
        # functions defined inside functions (closures handed out: a stepper a
        # factory returns, a callback): analysed on their own like the others
        self.nested: Dict[str, FuncInfo] = {}
        outer = [*self.functions.values(), *(m for c in self.classes.values() for m in c.methods.values())]
        for func in outer:
            for inner in ast.walk(func.node):
                if inner is not func.node and isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.nested[f"{func.name}.<locals>.{inner.name}.{inner.lineno}"] = FuncInfo(inner, self, None)

    @property
    def package(self) -> str:
        """The package a relative import in this module starts from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]

    @property
    def aliases(self) -> Dict[str, str]:
        """Local name -> the dotted module, or module.attribute, it was imported as."""
        if self._aliases is None:
            self._aliases = {}
            package = self.package
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.asname:
                            self._aliases[alias.asname] = alias.name
                        else:
                            top = alias.name.split(".")[0]
                            self._aliases[top] = top
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        base = relative_base(package, node.level, node.module or "")
                    for alias in node.names:
                        if alias.name != "*" and base:
                            self._aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
        return self._aliases

    @property
    def identifiers(self) -> FrozenSet[str]:
        """Every identifier in the text (what the relevance pass looks for first)."""
        if self._identifiers is None:
            self._identifiers = frozenset(_IDENTIFIER.findall(self.source))
        return self._identifiers

    @property
    def imports_torch(self) -> bool:
        return any(target.split(".")[0] == "torch" for target in self.aliases.values())

    def qualify(self, dotted: Optional[str]) -> Optional[str]:
        """The qualified name of a dotted expression, through this module's imports
        and definitions (``np.where`` -> ``numpy.where``); None for local variables."""
        if not dotted:
            return None
        head, _, rest = dotted.partition(".")
        target = self.aliases.get(head)
        if target is None:
            if head in self.classes or head in self.functions:
                target = f"{self.name}.{head}"
            else:
                return None
        return f"{target}.{rest}" if rest else target

    def through_imports(self, dotted: str) -> Optional[str]:
        """``qualify`` for a path whose head this module imported, else None
        (``st.session_state.masks`` -> ``streamlit.session_state.masks``)."""
        return self.qualify(dotted) if dotted.partition(".")[0] in self.aliases else None

    def _collect(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.functions[node.name] = FuncInfo(node, self, None)
        elif isinstance(node, ast.ClassDef):
            cls = ClassInfo(node, self)
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    cls.methods[item.name] = FuncInfo(item, self, cls)
            self.classes[node.name] = cls
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            # definitions under ``if TYPE_CHECKING``/``try: import`` guards
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self._collect(child)

    def where(self, line: int) -> Tuple[Optional[int], int]:
        if self.cells is None:
            return None, line
        cell, number = self.cells[line - 1]
        return cell, number

    def reset(self) -> None:
        self.globals = {}
        self.global_kinds = {}
        for cls in self.classes.values():
            cls.attrs, cls.attr_kinds = {}, {}


def annotation_names(node: Optional[ast.AST]) -> List[str]:
    """The dotted names an annotation may mean: ``Optional["SamPredictor"]`` ->
    ``["SamPredictor"]``, ``np.ndarray | None`` -> ``["np.ndarray", "None"]``."""
    if node is None:
        return []
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return annotation_names(ast.parse(node.value, mode="eval").body)
        except SyntaxError:
            return []
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return annotation_names(node.left) + annotation_names(node.right)
    if isinstance(node, ast.Subscript):
        outer = (dotted_name(node.value) or "").split(".")[-1]
        if outer in _ANNOTATION_WRAPPERS:
            inner = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return [n for elt in inner[: 1 if outer == "Annotated" else None] for n in annotation_names(elt)]
        return annotation_names(node.value)  # NDArray[np.uint8] is an NDArray
    name = dotted_name(node)
    if name is None and isinstance(node, ast.Constant) and node.value is None:
        name = "None"
    return [name] if name else []


def module_name(path: str, root: str) -> str:
    """The dotted name of ``path`` under the scan root ``root``; a root that is a
    package itself (its ``__init__.py``, and its parents') names it too."""
    rel = os.path.relpath(path, root) if os.path.isdir(root) else os.path.basename(path)
    parts = list(os.path.splitext(rel)[0].split(os.sep))
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    package: List[str] = []
    folder = os.path.abspath(root if os.path.isdir(root) else os.path.dirname(path) or ".")
    while os.path.exists(os.path.join(folder, "__init__.py")):
        package.insert(0, os.path.basename(folder))
        folder = os.path.dirname(folder)
    return ".".join(p for p in package + parts if p and p != ".") or os.path.splitext(os.path.basename(path))[0]


def load(path: str, name: Optional[str] = None) -> ModuleInfo:
    """Parse one ``.py`` file or notebook."""
    if path.endswith(".ipynb"):
        # Cells share one namespace: they are scanned as one program, and each
        # finding is mapped back to its cell and line. A cell that does not
        # parse on its own is left out (blank lines keep the numbering).
        lines: List[str] = []
        where: List[Tuple[int, int]] = []
        for cell, source in code_cells(path):
            cell_lines = source.splitlines() or [""]
            try:
                ast.parse(source)
            except SyntaxError:
                cell_lines = [""] * len(cell_lines)
            for number, line in enumerate(cell_lines, start=1):
                lines.append(line)
                where.append((cell, number))
        text = "\n".join(lines)
        return ModuleInfo(path, ast.parse(text, filename=path), where, name, text)
    with open(path, encoding="utf-8") as f:
        source = f.read()
    return ModuleInfo(path, ast.parse(source, filename=path), None, name, source)


def files_under(path: str) -> List[str]:
    """The ``.py`` files and notebooks under ``path`` (hidden folders, caches and
    installed packages left out), or ``path`` itself."""
    if os.path.isdir(path):
        out = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in (
                "__pycache__", "node_modules", ".ipynb_checkpoints", "site-packages"))
            out.extend(os.path.join(root, n) for n in sorted(files) if n.endswith((".py", ".ipynb")))
        return out
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file or folder: {path}")
    return [path]

