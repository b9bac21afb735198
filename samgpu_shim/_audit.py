"""``samgpu-shim audit``: find code that still needs numpy from ``predict``.

A static scan of Python files and notebooks. It finds calls of a SAM
predictor's ``predict`` (or SAM 2's ``predict_batch``) made without
``as_numpy=True``, follows their results
through plain assignments, subscripts, attribute and method chains and for
loops within the same function (or module level), and reports every use that
needs a numpy array: numpy functions, OpenCV, PIL, matplotlib, JSON without
``default=``, supervision, ``torch.from_numpy``, and numpy-only methods.

What it cannot see: results passed into other functions or stored on objects
(``self.masks``), containers, ``getattr``/``exec`` and other dynamic code, and
receivers whose name does not say they are a predictor and whose call passes
none of SAM's prompt keywords. It reports what it can prove, never more.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from ._targets import SAM2_PREDICT_BATCH_PARAMS, SAM2_PREDICT_PARAMS

_METADATA = ("shape", "ndim", "dtype", "device", "size")
# The keywords of every supported predict and SAM 2's predict_batch.
SAM_KEYWORDS = set(SAM2_PREDICT_PARAMS + SAM2_PREDICT_BATCH_PARAMS) - {"self"}
# SAM 2's predict_batch returns lists of results: subscripts and for loops
# carry the taint into each image's arrays.
PREDICT_METHODS = ("predict", "predict_batch")

# module (as imported) -> (operation label, why it breaks, fix)
LIBRARIES: Dict[str, Tuple[str, str]] = {
    "numpy": (
        "numpy needs host arrays: a CUDA tensor raises TypeError (and some calls change meaning)",
        "use the torch equivalent (torch.where, t.argmax(dim=0, keepdim=True), t.nonzero(as_tuple=True)) "
        "or convert once at the boundary with samgpu_shim.to_numpy",
    ),
    "cv2": (
        "OpenCV reads host memory only",
        "pass samgpu_shim.to_numpy(x) (e.g. .astype(np.uint8) after it), or predict(..., as_numpy=True) here",
    ),
    "PIL": ("PIL builds images from host arrays only", "PIL.Image.fromarray(samgpu_shim.to_numpy(x))"),
    "matplotlib": ("matplotlib plots host arrays only", "plot samgpu_shim.to_numpy(x)"),
    "supervision": ("supervision expects numpy arrays", "pass samgpu_shim.to_numpy(x)"),
    "skimage": ("scikit-image works on numpy arrays", "pass samgpu_shim.to_numpy(x)"),
    "scipy": ("SciPy works on numpy arrays", "pass samgpu_shim.to_numpy(x)"),
}

NUMPY_ONLY_METHODS: Dict[str, Tuple[str, str]] = {
    "astype": ("tensors have no .astype (AttributeError)", "x.to(torch.uint8) (or the dtype you need)"),
    "copy": ("tensors have no .copy() (AttributeError)", "x.clone()"),
    "tobytes": ("tensors have no .tobytes() (AttributeError)", "samgpu_shim.to_numpy(x).tobytes()"),
    "tostring": ("tensors have no .tostring() (AttributeError)", "samgpu_shim.to_numpy(x).tobytes()"),
    "ravel": ("torch .ravel() exists but returns a tensor, not an ndarray", "keep it a tensor or convert"),
    "nonzero": (
        "torch .nonzero() returns an (N, ndim) tensor, not a tuple of index arrays: "
        "'y, x = m.nonzero()' unpacks rows",
        "m.nonzero(as_tuple=True)",
    ),
}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    operation: str
    why: str
    fix: str
    cell: Optional[int] = None

    def format(self) -> str:
        where = f"{self.path}:{self.line}" if self.cell is None else f"{self.path}:cell {self.cell}:{self.line}"
        return f"{where}: {self.operation}: {self.why}. Fix: {self.fix}."


def _receiver_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _receiver_name(node.func)
    return ""


def _is_sam_predict(call: ast.Call) -> bool:
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in PREDICT_METHODS):
        return False
    for kw in call.keywords:
        if kw.arg == "as_numpy" and isinstance(kw.value, ast.Constant) and kw.value.value is True:
            return False
    receiver = _receiver_name(func.value).lower()
    if "predictor" in receiver or "sam" in receiver:
        return True
    return any(kw.arg in SAM_KEYWORDS for kw in call.keywords)


def _names_in(target: ast.AST) -> List[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _names_in(elt)]
    if isinstance(target, ast.Starred):
        return _names_in(target.value)
    return []


class _Scope(ast.NodeVisitor):
    """One function body (or the module level): taint, then sinks."""

    def __init__(self, aliases: Dict[str, str], path: str, findings: List[Finding]) -> None:
        self.aliases = aliases  # local name -> top-level module it refers to
        self.path = path
        self.findings = findings
        self.tainted: Set[str] = set()
        self.seen: Set[Tuple[int, str]] = set()

    # -- taint ---------------------------------------------------------
    def _expr_tainted(self, node: Optional[ast.AST]) -> bool:
        if node is None:
            return False
        if isinstance(node, ast.Call) and _is_sam_predict(node):
            return True
        if isinstance(node, ast.Name):
            return node.id in self.tainted
        if isinstance(node, ast.Subscript):
            return self._expr_tainted(node.value)
        if isinstance(node, ast.Attribute):
            return self._expr_tainted(node.value) and node.attr not in _METADATA
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            # a method of a result returns a result (squeeze, float, ...)
            return self._expr_tainted(node.func.value) and node.func.attr not in ("item", "tolist", "cpu", "numpy")
        if isinstance(node, (ast.BinOp,)):
            return self._expr_tainted(node.left) or self._expr_tainted(node.right)
        if isinstance(node, ast.Compare):
            return self._expr_tainted(node.left) or any(self._expr_tainted(c) for c in node.comparators)
        if isinstance(node, ast.UnaryOp):
            return self._expr_tainted(node.operand)
        return False

    def _bind(self, targets: Iterable[ast.AST], value: ast.AST) -> None:
        tainted = self._expr_tainted(value)
        for target in targets:
            for name in _names_in(target):
                if tainted:
                    self.tainted.add(name)
                else:
                    self.tainted.discard(name)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        self._bind(node.targets, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._bind([node.target], node.value)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        if self._expr_tainted(node.iter):
            self.tainted.update(_names_in(node.target))
        elif isinstance(node.iter, ast.Call) and isinstance(node.iter.func, ast.Name) and node.iter.func.id in (
            "zip",
            "enumerate",
        ):
            if any(self._expr_tainted(a) for a in node.iter.args):
                self.tainted.update(_names_in(node.target))
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        _Scope(self.aliases, self.path, self.findings).run(node.body)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Lambda(self, node: ast.Lambda) -> None:
        return

    # -- sinks ---------------------------------------------------------
    def _report(self, node: ast.AST, operation: str, why: str, fix: str) -> None:
        key = (node.lineno, operation)
        if key not in self.seen:
            self.seen.add(key)
            self.findings.append(Finding(self.path, node.lineno, operation, why, fix))

    def _library_of(self, func: ast.AST) -> Tuple[Optional[str], str]:
        parts: List[str] = []
        node = func
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(node.id)
            dotted = ".".join(reversed(parts))
            module = self.aliases.get(node.id)
            if module is not None:
                return module, dotted
        return None, ".".join(reversed(parts))

    def visit_Call(self, node: ast.Call) -> None:
        args = list(node.args) + [kw.value for kw in node.keywords]
        tainted_arg = any(self._expr_tainted(a) or self._contains_tainted(a) for a in args)
        module, dotted = self._library_of(node.func)
        if tainted_arg and module in LIBRARIES:
            why, fix = LIBRARIES[module]
            self._report(node, f"{dotted}()", why, fix)
        elif tainted_arg and module == "json" and dotted.endswith(("dumps", "dump")):
            if not any(kw.arg == "default" for kw in node.keywords):
                self._report(
                    node,
                    f"{dotted}()",
                    "json cannot serialise tensors (TypeError: Object of type Tensor is not JSON serializable)",
                    "json.dumps(packet, default=samgpu_shim.json_default)",
                )
        elif tainted_arg and module == "torch" and dotted.endswith("from_numpy"):
            self._report(node, f"{dotted}()", "the result is already a tensor; from_numpy raises TypeError",
                         "use the tensor directly")
        elif isinstance(node.func, ast.Attribute) and node.func.attr in NUMPY_ONLY_METHODS:
            as_tuple = any(kw.arg == "as_tuple" for kw in node.keywords)
            if self._expr_tainted(node.func.value) and not (node.func.attr == "nonzero" and as_tuple):
                why, fix = NUMPY_ONLY_METHODS[node.func.attr]
                self._report(node, f".{node.func.attr}()", why, fix)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        left = node.left
        if isinstance(left, ast.Attribute) and left.attr == "dtype" and self._expr_tainted(left.value):
            if any(self._library_of(c)[0] == "numpy" or (isinstance(c, ast.Name) and c.id in ("bool", "float", "int"))
                   for c in node.comparators):
                self._report(node, ".dtype comparison", "a torch dtype never equals a numpy or Python type: "
                             "the test is silently False", "compare with torch.bool / torch.float32")
        self.generic_visit(node)

    def _contains_tainted(self, node: ast.AST) -> bool:
        """A result anywhere inside ``node`` (a dict, a list, an argument...)."""
        if isinstance(node, ast.Attribute) and node.attr in _METADATA:
            return False  # masks.shape and friends are plain Python values
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Attribute) and child.attr in _METADATA:
                continue  # masks.shape and friends are plain Python values
            if self._expr_tainted(child) or self._contains_tainted(child):
                return True
        return False

    def run(self, body: Sequence[ast.stmt]) -> None:
        for stmt in body:
            self.visit(stmt)


def _aliases(tree: ast.AST) -> Dict[str, str]:
    aliases: Dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = top
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            for alias in node.names:
                aliases[alias.asname or alias.name] = top
    return aliases


def audit_source(source: str, path: str = "<string>") -> List[Finding]:
    """Findings for one Python source text."""
    tree = ast.parse(source, filename=path)
    findings: List[Finding] = []
    _Scope(_aliases(tree), path, findings).run(tree.body)
    return sorted(findings, key=lambda f: (f.line, f.operation))


def _notebook_cells(path: str) -> Iterator[Tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    index = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        index += 1
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else source
        # IPython magics and shell lines are not Python: blank them, keep line numbers.
        lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in text.splitlines()]
        yield index, "\n".join(lines)


def audit_path(path: str) -> List[Finding]:
    """Findings for a .py file, a .ipynb notebook, or every such file under a folder."""
    if os.path.isdir(path):
        out: List[Finding] = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules"))
            for name in sorted(files):
                if name.endswith((".py", ".ipynb")):
                    out.extend(audit_path(os.path.join(root, name)))
        return out
    if path.endswith(".ipynb"):
        # Cells share one namespace, so they are scanned as one program; each
        # finding is mapped back to its cell and line. A cell that does not
        # parse on its own is left out (blank lines keep the numbering).
        lines: List[str] = []
        where: List[Tuple[int, int]] = []
        for cell, source in _notebook_cells(path):
            cell_lines = source.splitlines() or [""]
            try:
                ast.parse(source)
            except SyntaxError:
                cell_lines = [""] * len(cell_lines)
            for number, line in enumerate(cell_lines, start=1):
                lines.append(line)
                where.append((cell, number))
        found = audit_source("\n".join(lines), path)
        return [
            Finding(f.path, where[f.line - 1][1], f.operation, f.why, f.fix, cell=where[f.line - 1][0])
            for f in found
        ]
    with open(path, encoding="utf-8") as f:
        return audit_source(f.read(), path)


def main(paths: Sequence[str], as_json: bool = False) -> int:
    findings: List[Finding] = []
    errors = 0
    for path in paths:
        try:
            findings.extend(audit_path(path))
        except (OSError, SyntaxError, ValueError) as exc:
            print(f"{path}: cannot scan: {exc}", file=sys.stderr)
            errors += 1
    if as_json:
        print(json.dumps([asdict(f) for f in findings], indent=1))
    else:
        for finding in findings:
            print(finding.format())
        print(f"{len(findings)} finding(s) in {len(paths)} path(s)")
    if errors:
        return 2
    return 1 if findings else 0
