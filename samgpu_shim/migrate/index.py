"""The project index: the files scanned, their imports, functions and classes."""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Optional, Tuple

from .names import Taint, dotted_name
from .notebooks import code_cells


class FuncInfo:
    def __init__(self, node: ast.AST, module: ModuleInfo, cls: Optional[ClassInfo]) -> None:
        self.node = node
        self.module = module
        self.cls = cls
        args = node.args  # type: ignore[attr-defined]
        self.params = [a.arg for a in args.posonlyargs + args.args]
        self.vararg = args.vararg.arg if args.vararg else None
        self.kwonly = [a.arg for a in args.kwonlyargs]
        self.kwarg = args.kwarg.arg if args.kwarg else None
        self.is_method = cls is not None and not any(
            dotted_name(d) == "staticmethod" for d in node.decorator_list  # type: ignore[attr-defined]
        )

    @property
    def name(self) -> str:
        return self.node.name  # type: ignore[attr-defined]


class ClassInfo:
    def __init__(self, node: ast.ClassDef, module: ModuleInfo) -> None:
        self.node = node
        self.module = module
        self.name = node.name
        self.bases = [(dotted_name(b) or "").split(".")[-1] for b in node.bases]
        self.methods: Dict[str, FuncInfo] = {}
        # attribute -> taint, and attribute -> kind, over every method
        self.attrs: Dict[str, Taint] = {}
        self.attr_kinds: Dict[str, str] = {}


class ModuleInfo:
    def __init__(self, path: str, tree: ast.Module, cells: Optional[List[Tuple[int, int]]] = None) -> None:
        self.path = path
        self.tree = tree
        self.cells = cells  # notebooks: scanned line -> (cell, line in cell)
        self.stem = os.path.splitext(os.path.basename(path))[0]
        self.aliases: Dict[str, str] = {}  # local name -> dotted module or module.attr it refers to
        self.functions: Dict[str, FuncInfo] = {}
        self.classes: Dict[str, ClassInfo] = {}
        self.globals: Dict[str, Taint] = {}
        self.global_kinds: Dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.aliases[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        self.aliases[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in tree.body:
            self._collect(node)

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


def load(path: str) -> ModuleInfo:
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
        return ModuleInfo(path, ast.parse("\n".join(lines), filename=path), where)
    with open(path, encoding="utf-8") as f:
        source = f.read()
    return ModuleInfo(path, ast.parse(source, filename=path))


def files_under(path: str) -> List[str]:
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
