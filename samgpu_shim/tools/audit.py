"""``samgpu-shim audit``: find the code that still needs numpy from ``predict``.

A static, project-wide taint analysis of Python files and notebooks. Sources
are the patched predict calls (``predict``, ``predict_batch``) made without
``as_numpy=``; their results are followed the way client code moves them:

* assignments, tuple and starred unpacking, conditional expressions,
  comprehensions, ``for`` loops (``zip``/``enumerate`` element by element),
  walrus, ``with``; both sides of a branch are merged, so a variable re-bound
  in one branch only stays tainted after it;
* containers: lists, tuples, sets and dicts built from results or filled with
  ``append``/``extend``/``insert``/``update``/item assignment (constant dict
  keys are tracked one by one);
* functions and methods of the files given: a helper that receives a result
  is analysed with that parameter tainted (its numpy lines are reported where
  they stand), a helper or method that returns results is itself a source for
  its callers, in any file of the scan; ``self.<attr>`` set in one method is
  tainted in every method of the class.

Each use is classified by what it really does to a tensor (measured with
:mod:`samgpu_shim.gpu.strict` tensors, which behave like CUDA ones):
``cuda`` (works on a CPU tensor, raises on CUDA: numpy conversion),
``any`` (raises on every tensor) or ``silent`` (runs, but means something else).
Every finding also records the predict calls it comes from, which is what
``audit --fix`` pins to ``as_numpy=True``.

Blind spots (see docs/migration.rst for the measured recall): dynamic code
(``getattr``, ``exec``), results that leave through objects of libraries the
scan cannot read, and predictors whose variable name says nothing, whose type
the scan does not see and whose call passes no SAM keyword.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, FrozenSet, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from ..families.signatures import PATCHED_METHODS, PREDICT_KEYWORDS

Taint = FrozenSet[int]
CLEAN: Taint = frozenset()
# Whole-project passes at most: each pass can carry taint one more step
# through class attributes, module globals and channels.
MAX_ROUNDS = 6

# The patched methods whose results are tensors in GPU mode.
PREDICT_METHODS = frozenset(PATCHED_METHODS)
# Keywords only SAM's predictors take: a call passing one is SAM's whatever
# its receiver is called.
SAM_KEYWORDS = frozenset(set(PREDICT_KEYWORDS) - {"box", "boxes"})
# Whole words of a receiver's name that say "a SAM predictor".
RECEIVER_WORDS = frozenset({"sam", "sam1", "sam2", "sam3", "samhq", "hq", "predictor", "predictors", "mobilesam",
                            "efficientsam", "efficientvit"})

# Attributes of a tensor that are plain Python values.
METADATA = frozenset({"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad", "layout", "itemsize",
                      "nbytes", "names", "is_leaf"})
# Methods of a tensor whose result is no longer a device tensor.
LEAVES_DEVICE = frozenset({"item", "tolist", "cpu", "numpy", "size", "dim", "numel", "element_size", "data_ptr",
                           "__len__", "get_device", "stride", "is_contiguous", "nelement", "__index__"})
SCALAR_METHODS = frozenset({"argmax", "argmin", "sum", "max", "min", "any", "all", "mean", "count_nonzero"})

CUDA, ANY, SILENT = "cuda", "any", "silent"
WHAT = {
    CUDA: "works on a CPU tensor, raises on a CUDA tensor",
    ANY: "raises on any tensor",
    SILENT: "runs on a tensor but means something else",
}
TO_NUMPY = "samgpu_shim.to_numpy(x) at the boundary, or predict(..., as_numpy=True) for this code"

# numpy functions that take a tensor and keep it one (no finding, still a tensor),
# and those that read only its metadata (no finding, a plain value).
NUMPY_KEEPS_TENSOR = frozenset({"squeeze"})
NUMPY_METADATA = frozenset({"shape", "ndim", "isscalar", "iterable", "result_type"})
# numpy functions that raise on any tensor (numpy forwards them to a tensor
# method with numpy-only keywords: axis=, out=, keepdims=...).
NUMPY_RAISE_ANY = frozenset({"sum", "mean", "max", "min", "amax", "amin", "any", "all", "std", "var", "prod",
                             "moveaxis", "clip", "cumsum", "ptp", "full_like"})
NUMPY_SILENT = {
    "nonzero": ("np.nonzero on a tensor returns the tensor's nonzero(): one (N, ndim) index tensor, "
                "not a tuple of index arrays", "m.nonzero(as_tuple=True)"),
    "size": ("np.size(t) returns the bound method t.size, not a number", "t.numel()"),
}
# numpy names that are types or constants, not conversions.
NUMPY_NOT_CALLS = frozenset({"ndarray", "dtype", "generic", "newaxis", "pi", "e", "inf", "nan"})

# Modules whose functions read host memory (the value is converted, or refused).
LIBRARIES: Dict[str, Tuple[str, str]] = {
    "numpy": (CUDA, "numpy converts its arguments to host arrays"),
    "cv2": (ANY, "OpenCV takes numpy arrays only"),
    "PIL": (ANY, "PIL builds images from numpy arrays (__array_interface__) only"),
    "matplotlib": (CUDA, "matplotlib converts what it plots with np.asarray"),
    "pylab": (CUDA, "matplotlib converts what it plots with np.asarray"),
    "seaborn": (CUDA, "seaborn converts its data with numpy"),
    "supervision": (ANY, "supervision expects numpy arrays"),
    "skimage": (CUDA, "scikit-image converts its input with np.asarray"),
    "scipy": (CUDA, "SciPy converts its input with np.asarray"),
    "sklearn": (CUDA, "scikit-learn converts its input with np.asarray"),
    "pycocotools": (ANY, "pycocotools encodes numpy arrays only"),
    "imageio": (CUDA, "imageio converts what it writes with np.asarray"),
    "tifffile": (CUDA, "tifffile converts what it writes with np.asarray"),
    "SimpleITK": (ANY, "SimpleITK takes numpy arrays"),
    "nibabel": (CUDA, "nibabel converts image data with np.asanyarray"),
    "rasterio": (CUDA, "rasterio converts arrays with numpy"),
    "shapely": (CUDA, "shapely converts coordinates with numpy"),
    "label_studio_converter": (ANY, "the Label Studio converters work on numpy arrays"),
    "base64": (ANY, "base64 needs a bytes-like object"),
    "pandas": (CUDA, "pandas converts its data with numpy"),
    "streamlit": (CUDA, "streamlit converts images with numpy"),
    "gradio": (CUDA, "gradio converts images with numpy"),
    "open3d": (ANY, "open3d takes numpy arrays"),
    "vtk": (CUDA, "vtk's numpy_support converts numpy arrays"),
    "skan": (CUDA, "it converts its input with numpy"),
    "segment_anything": (CUDA, "segment_anything's helpers (remove_small_regions, ...) use numpy and OpenCV"),
}
# segment_anything helpers that take and return tensors.
SAM_TORCH_HELPERS = frozenset({"mask_to_rle_pytorch", "batched_mask_to_box", "calculate_stability_score",
                               "build_point_grid", "is_box_near_crop_edge", "box_xyxy_to_xywh", "uncrop_masks",
                               "uncrop_boxes_xyxy", "uncrop_points"})
# Library results that are numpy arrays: an ndarray operand or indexed base.
NUMPY_PRODUCERS = frozenset({"numpy", "cv2", "imageio", "tifffile", "skimage", "scipy"})
NUMPY_SCALARS = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                           "uint32", "uint64", "bool_", "float_", "int_", "intp", "double", "single"})

# Methods that exist on ndarray only (or mean something else on a tensor).
NUMPY_ONLY_METHODS: Dict[str, Tuple[str, str, str]] = {
    "astype": (ANY, "tensors have no .astype (AttributeError)", "x.to(torch.uint8) (or the dtype you need)"),
    "copy": (ANY, "tensors have no .copy() (AttributeError)", "x.clone()"),
    "tobytes": (ANY, "tensors have no .tobytes() (AttributeError)", "samgpu_shim.to_numpy(x).tobytes()"),
    "tostring": (ANY, "tensors have no .tostring() (AttributeError)", "samgpu_shim.to_numpy(x).tobytes()"),
    "fill": (ANY, "tensors have no .fill() (AttributeError)", "x.fill_(v)"),
    "numpy": (CUDA, ".numpy() refuses a CUDA tensor (TypeError)", "x.cpu().numpy(), or samgpu_shim.to_numpy(x)"),
}
# Methods that any plotting object (Axes, napari viewer, ...) converts with numpy.
PLOT_METHODS = frozenset({"imshow", "matshow", "contour", "contourf", "pcolormesh", "add_labels", "imsave", "spy"})
# Words in the name of a helper the scan cannot read (an installed package)
# that say it works on numpy images or arrays; and words that say it does not.
NUMPY_HELPER_WORDS = frozenset({"numpy", "ndarray", "array", "image", "img", "rle", "polygon", "polygons", "contour",
                                "contours", "imwrite", "imsave", "paint", "painter", "png", "jpg", "jpeg", "tiff",
                                "geotiff", "raster", "vectorize", "shapefile", "geojson", "nifti", "dicom", "draw",
                                "overlay", "visualize", "vis", "show", "plot", "save", "export"})
TORCH_HELPER_WORDS = frozenset({"torch", "pytorch", "tensor", "tensors", "cuda", "gpu", "device", "tb"})
CONTAINER_ADDERS = frozenset({"append", "extend", "insert", "add", "update", "appendleft", "put", "put_nowait",
                              "setdefault", "push"})
# Builtins that hand their (tainted) argument back, or a container of it.
PASS_THROUGH_BUILTINS = frozenset({"list", "tuple", "set", "sorted", "reversed", "iter", "next", "max", "min",
                                   "abs", "round", "dict", "filter", "sum", "frozenset", "copy", "deepcopy"})
JSON_FUNCS = frozenset({"dumps", "dump"})
# Queue-like hand-offs between functions and threads, matched by the channel's name.
CHANNEL_PUT = frozenset({"put", "put_nowait", "send", "appendleft"})
CHANNEL_GET = frozenset({"get", "get_nowait", "recv", "popleft"})


@dataclass
class Finding:
    path: str
    line: int
    operation: str
    why: str
    fix: str
    cell: Optional[int] = None
    effect: str = CUDA
    # the predict calls whose results reach this line: "path:line:col"
    # (notebooks: "path:cell N:line:col")
    sources: List[str] = field(default_factory=list)

    def format(self) -> str:
        where = f"{self.path}:{self.line}" if self.cell is None else f"{self.path}:cell {self.cell}:{self.line}"
        return f"{where}: {self.operation} ({WHAT[self.effect]}): {self.why}. Fix: {self.fix}."


@dataclass(frozen=True)
class SourceCall:
    path: str
    line: int  # in the scanned text (notebooks: the cells joined)
    col: int


def _words(name: str) -> Set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return {w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w}


def _dotted(node: ast.AST) -> Optional[str]:
    parts: List[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class Positions(tuple):
    """The kind of a fixed-length tuple: the taint of each position."""


def _class_kind(kind: object) -> str:
    """``X`` for the kind ``class:X`` (an instance of the scanned class X), else ''."""
    if isinstance(kind, str) and kind.startswith("class:"):
        return kind[6:]
    return ""


def _last_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _tensor_guard(test: ast.AST) -> Optional[Tuple[str, bool]]:
    """(name, whether the ``if`` arm is the tensor one) for a test that asks
    whether a variable is a tensor: ``isinstance(x, torch.Tensor)``,
    ``torch.is_tensor(x)``, ``hasattr(x, "cpu")``, ``not isinstance(x, np.ndarray)``."""
    negated = False
    while isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        negated = not negated
        test = test.operand
    if not (isinstance(test, ast.Call) and test.args and isinstance(test.args[0], ast.Name)):
        return None
    name = test.args[0].id
    func = _dotted(test.func) or ""
    if func == "isinstance" and len(test.args) == 2:
        kind = _dotted(test.args[1]) or ""
        if kind.endswith("Tensor"):
            return name, not negated
        if kind.endswith("ndarray"):
            return name, negated
        return None
    if func.endswith("is_tensor"):
        return name, not negated
    if func == "hasattr" and len(test.args) == 2 and isinstance(test.args[1], ast.Constant) and \
            test.args[1].value in ("cpu", "detach", "numpy", "is_cuda", "device"):
        return name, not negated
    return None


def _target_names(target: ast.AST) -> List[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _target_names(elt)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def _as_numpy_kw(call: ast.Call) -> Optional[ast.keyword]:
    return next((kw for kw in call.keywords if kw.arg == "as_numpy"), None)


# -- the project: every file's functions and classes --------------------------


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
            _dotted(d) == "staticmethod" for d in node.decorator_list  # type: ignore[attr-defined]
        )

    @property
    def name(self) -> str:
        return self.node.name  # type: ignore[attr-defined]


class ClassInfo:
    def __init__(self, node: ast.ClassDef, module: ModuleInfo) -> None:
        self.node = node
        self.module = module
        self.name = node.name
        self.bases = [(_dotted(b) or "").split(".")[-1] for b in node.bases]
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


class Summary:
    """What a function does with tainted parameters: its return, its findings."""

    def __init__(self) -> None:
        self.ret: Taint = CLEAN
        self.ret_kind: Optional[str] = None


class Project:
    def __init__(self) -> None:
        self.modules: List[ModuleInfo] = []
        self.sources: List[SourceCall] = []
        self.source_ids: Dict[SourceCall, int] = {}
        self.findings: Dict[Tuple[str, int, str], Finding] = {}
        self.finding_taint: Dict[Tuple[str, int, str], Set[int]] = {}
        self.summaries: Dict[Tuple[int, Tuple[Taint, ...]], Summary] = {}
        self.in_progress: Set[Tuple[int, Tuple[Taint, ...]]] = set()
        self.changed = False
        self.rounds = 0
        # statements the analysis could not follow: "path:line" -> why
        self.skipped: Dict[str, str] = {}
        # queues and pipes by name: what one thread puts, another gets
        self.channels: Dict[str, Taint] = {}
        self.channel_kinds: Dict[str, object] = {}

    # -- lookups -----------------------------------------------------------
    def source_id(self, path: str, node: ast.Call) -> int:
        key = SourceCall(path, node.lineno, node.col_offset)
        sid = self.source_ids.get(key)
        if sid is None:
            sid = len(self.sources)
            self.sources.append(key)
            self.source_ids[key] = sid
        return sid

    def index(self) -> None:
        """Lookup tables over every module (built once per analysis)."""
        self.by_stem: Dict[str, ModuleInfo] = {}
        self.by_class: Dict[str, ClassInfo] = {}
        self.by_method: Dict[str, List[FuncInfo]] = {}
        for m in self.modules:
            self.by_stem.setdefault(m.stem, m)
            for name, c in m.classes.items():
                self.by_class.setdefault(name, c)
                for method_name, f in c.methods.items():
                    self.by_method.setdefault(method_name, []).append(f)

    def module_named(self, dotted: str) -> Optional[ModuleInfo]:
        return self.by_stem.get(dotted.split(".")[-1])

    def _defined(self, module: ModuleInfo, name: str, table: str) -> Any:
        """``name`` as defined in ``module`` or imported into it from a scanned module."""
        own = getattr(module, table)
        if name in own:
            return own[name]
        target = module.aliases.get(name)
        if target and "." in target:
            mod_name, attr = target.rsplit(".", 1)
            other = self.module_named(mod_name)
            if other is not None:
                return getattr(other, table).get(attr)
        return None

    def function(self, module: ModuleInfo, name: str) -> Optional[FuncInfo]:
        return self._defined(module, name, "functions")

    def cls(self, module: ModuleInfo, name: str) -> Optional[ClassInfo]:
        return self._defined(module, name, "classes")

    def class_by_name(self, name: str) -> Optional[ClassInfo]:
        return self.by_class.get(name)

    def method(self, cls: ClassInfo, name: str, depth: int = 0) -> Optional[FuncInfo]:
        if name in cls.methods:
            return cls.methods[name]
        if depth < 5:
            for base in cls.bases:
                parent = self.class_by_name(base)
                if parent is not None and parent is not cls:
                    found = self.method(parent, name, depth + 1)
                    if found is not None:
                        return found
        return None

    def unique_method(self, name: str) -> Optional[FuncInfo]:
        if name.startswith("__") or name in CONTAINER_ADDERS:
            return None
        found = self.by_method.get(name, [])
        return found[0] if len(found) == 1 else None

    def is_predictor_class(self, cls: ClassInfo, depth: int = 0) -> bool:
        if any(b.endswith("Predictor") for b in cls.bases):
            return True
        if depth < 5:
            for base in cls.bases:
                parent = self.class_by_name(base)
                if parent is not None and parent is not cls and self.is_predictor_class(parent, depth + 1):
                    return True
        return False

    # -- results -----------------------------------------------------------
    def report(self, module: ModuleInfo, node: ast.AST, operation: str, effect: str, why: str, fix: str,
               taint: Taint) -> None:
        concrete = {t for t in taint if t >= 0}
        if not concrete:
            return
        cell, line = module.where(node.lineno)  # type: ignore[attr-defined]
        key = (module.path, node.lineno, operation)  # type: ignore[attr-defined]
        if key not in self.findings:
            self.findings[key] = Finding(module.path, line, operation, why, fix, cell, effect)
            self.finding_taint[key] = set()
        self.finding_taint[key] |= concrete

    def summary(self, func: FuncInfo, args: Tuple[Taint, ...], kinds: Tuple[Optional[str], ...] = ()) -> Summary:
        """Analyse ``func`` with its parameters bound to ``args`` (memoised)."""
        key = (id(func.node), args)
        done = self.summaries.get(key)
        if done is not None:
            return done
        if key in self.in_progress:
            return Summary()  # recursion: what is known so far
        self.in_progress.add(key)
        try:
            scope = Scope(self, func.module, func.cls, func)
            names = list(func.params)
            for i, name in enumerate(names):
                scope.env[name] = args[i] if i < len(args) else CLEAN
                if i < len(kinds) and kinds[i]:
                    scope.kinds[name] = kinds[i]  # type: ignore[assignment]
            extra = [a for a in (func.vararg, *func.kwonly, func.kwarg) if a]
            for j, name in enumerate(extra):
                i = len(names) + j
                scope.env[name] = args[i] if i < len(args) else CLEAN
            if func.is_method and names:
                scope.kinds[names[0]] = "self"
            scope.run(func.node.body)  # type: ignore[attr-defined]
            result = Summary()
            result.ret = scope.returned
            result.ret_kind = scope.returned_kind
            self.summaries[key] = result
            return result
        finally:
            self.in_progress.discard(key)

    def call(self, func: FuncInfo, call: ast.Call, scope: Scope, bound_self: bool) -> Summary:
        """Bind a call's arguments to ``func``'s parameters and analyse it."""
        params = list(func.params)
        slots: List[Taint] = [CLEAN] * (len(params) + (1 if func.vararg else 0) + len(func.kwonly)
                                        + (1 if func.kwarg else 0))
        kinds: List[Optional[str]] = [None] * len(params)
        offset = 1 if (func.is_method and bound_self) else 0
        if offset and params:
            kinds[0] = "self"
        vararg_slot = len(params) if func.vararg else None
        kwarg_slot = len(slots) - 1 if func.kwarg else None
        for i, arg in enumerate(call.args):
            t, k = scope.eval(arg)
            index = i + offset
            if isinstance(arg, ast.Starred):
                for j in range(index, len(params)):
                    slots[j] = slots[j] | t
                if vararg_slot is not None:
                    slots[vararg_slot] |= t
                break
            if index < len(params):
                slots[index] = t
                kinds[index] = k
            elif vararg_slot is not None:
                slots[vararg_slot] |= t
        for kw in call.keywords:
            t, k = scope.eval(kw.value)
            if kw.arg is None:
                for j in range(offset, len(slots)):
                    slots[j] = slots[j] | t
            elif kw.arg in params:
                slots[params.index(kw.arg)] = t
                kinds[params.index(kw.arg)] = k
            elif kw.arg in func.kwonly:
                slots[len(params) + (1 if func.vararg else 0) + func.kwonly.index(kw.arg)] = t
            elif kwarg_slot is not None:
                slots[kwarg_slot] |= t
        return self.summary(func, tuple(slots), tuple(kinds))


# -- one function body (or a module's top level) ------------------------------


class Scope:
    def __init__(self, project: Project, module: ModuleInfo, cls: Optional[ClassInfo],
                 func: Optional[FuncInfo]) -> None:
        self.p = project
        self.m = module
        self.cls = cls
        self.func = func
        self.env: Dict[str, Taint] = {}
        self.kinds: Dict[str, str] = {}  # name -> numpy / torch / predictor / other / scalar / self / class:X
        self.keyed: Set[str] = set()  # containers whose constant keys are tracked one by one
        self.local_funcs: Dict[str, FuncInfo] = {}
        self.returned: Taint = CLEAN
        self.returned_kind: Optional[str] = None
        self.returned_any = False
        self.silent = False

    # -- state -------------------------------------------------------------
    def snapshot(self) -> Tuple[Dict[str, Taint], Dict[str, str], Set[str]]:
        return dict(self.env), dict(self.kinds), set(self.keyed)

    def restore(self, state: Tuple[Dict[str, Taint], Dict[str, str], Set[str]]) -> None:
        self.env, self.kinds, self.keyed = dict(state[0]), dict(state[1]), set(state[2])

    def merge(self, *states: Tuple[Dict[str, Taint], Dict[str, str], Set[str]]) -> None:
        env: Dict[str, Taint] = {}
        kinds: Dict[str, str] = {}
        keyed: Set[str] = set()
        for e, _, ky in states:
            for name, t in e.items():
                env[name] = env.get(name, CLEAN) | t
            keyed |= ky
        for name in set().union(*(k.keys() for _, k, _ in states)):
            values = {k.get(name) for _, k, _ in states}
            if len(values) == 1 and None not in values:
                kinds[name] = values.pop()  # type: ignore[assignment]
        self.env, self.kinds, self.keyed = env, kinds, keyed

    def report(self, node: ast.AST, operation: str, effect: str, why: str, fix: str, taint: Taint) -> None:
        if not self.silent:
            self.p.report(self.m, node, operation, effect, why, fix, taint)

    def lookup(self, name: str) -> Taint:
        if name in self.env:
            return self.env[name]
        if self.func is not None:
            return self.m.globals.get(name, CLEAN)
        return CLEAN

    def kind_of(self, name: str) -> Optional[str]:
        if name in self.kinds:
            return self.kinds[name]
        if name in self.env:
            return None
        if self.func is not None:
            return self.m.global_kinds.get(name)
        return None

    def _self_class(self, node: ast.AST) -> Optional[ClassInfo]:
        if isinstance(node, ast.Name):
            kind = self.kind_of(node.id)
            if kind == "self":
                return self.cls
            if _class_kind(kind):
                return self.p.class_by_name(_class_kind(kind))
        return None

    def bind(self, target: ast.AST, taint: Taint, kind: Optional[str], value: Optional[ast.AST] = None) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = taint
            if target.id in self.keyed:
                self.keyed.discard(target.id)
                for key in [k for k in self.env if k.startswith(target.id + "[")]:
                    del self.env[key]
            if kind:
                self.kinds[target.id] = kind
            else:
                self.kinds.pop(target.id, None)
            if isinstance(value, ast.Dict):
                self._bind_dict(target.id, value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            elts = target.elts
            if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(elts) and not any(
                isinstance(e, ast.Starred) for e in elts + value.elts
            ):
                for t_elt, v_elt in zip(elts, value.elts):
                    t, k = self.eval(v_elt, report=False)
                    self.bind(t_elt, t, k, v_elt)
                return
            if isinstance(kind, Positions) and len(kind) == len(elts) and not any(
                isinstance(e, ast.Starred) for e in elts
            ):
                for elt, t in zip(elts, kind):
                    self.bind(elt, t, None)
                return
            for elt in elts:
                self.bind(elt, taint, "scalar" if kind == "scalar" else None)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, taint, None)
        elif isinstance(target, ast.Attribute):
            base = target.value
            cls = self._self_class(base)
            if cls is not None:
                self.env[f"self.{target.attr}"] = taint
                if taint - cls.attrs.get(target.attr, CLEAN):
                    cls.attrs[target.attr] = cls.attrs.get(target.attr, CLEAN) | taint
                    self.p.changed = True
                known = cls.attr_kinds.get(target.attr)
                if kind and known != kind and known != "mixed":
                    # two methods that store different kinds: nothing is assumed
                    cls.attr_kinds[target.attr] = kind if known is None else "mixed"
                    self.p.changed = True
                if kind:
                    self.kinds[f"self.{target.attr}"] = kind
            else:
                dotted = _dotted(target)
                if dotted:
                    self.env[dotted] = taint
                    if kind:
                        self.kinds[dotted] = kind
                root = base
                while isinstance(root, (ast.Attribute, ast.Subscript)):
                    root = root.value
                if isinstance(root, ast.Name) and taint:
                    # an object that holds a result: the object carries it too
                    self.env[root.id] = self.lookup(root.id) | taint
        elif isinstance(target, ast.Subscript):
            root = target.value
            key = target.slice
            if isinstance(root, ast.Name):
                if isinstance(key, ast.Constant) and isinstance(key.value, (str, int)):
                    self.env[f"{root.id}[{key.value!r}]"] = taint
                    if root.id not in self.env or not self.lookup(root.id):
                        self.keyed.add(root.id)
                self.env[root.id] = self.lookup(root.id) | taint
            elif taint:
                self.bind_into(root, taint)

    def _bind_dict(self, name: str, value: ast.Dict) -> None:
        if all(isinstance(k, ast.Constant) for k in value.keys):
            self.keyed.add(name)
            for k, v in zip(value.keys, value.values):
                self.env[f"{name}[{k.value!r}]"] = self.eval(v, report=False)[0]  # type: ignore[union-attr]

    # -- sources -----------------------------------------------------------
    def is_source(self, call: ast.Call, unpack: Optional[ast.AST] = None, receiver_kind: object = "?") -> bool:
        func = call.func
        if not (isinstance(func, ast.Attribute) and func.attr in PREDICT_METHODS):
            return False
        kw = _as_numpy_kw(call)
        if kw is not None and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
            return False
        receiver = func.value
        kind = self.eval(receiver, report=False)[1] if receiver_kind == "?" else receiver_kind
        if kind == "predictor":
            return True
        if kind == "self":
            return self.cls is not None and self.p.is_predictor_class(self.cls)
        if kind in ("other", "numpy", "torch") or _class_kind(kind):
            cls = self.p.class_by_name(_class_kind(kind)) if _class_kind(kind) else None
            return cls is not None and self.p.is_predictor_class(cls)
        if any(k.arg in SAM_KEYWORDS for k in call.keywords):
            return True
        name = ""
        if isinstance(receiver, ast.Name):
            name = receiver.id
        elif isinstance(receiver, ast.Attribute):
            name = receiver.attr
        elif isinstance(receiver, ast.Call):
            name = _dotted(receiver.func) or ""
            name = name.split(".")[-1]
        if _words(name) & RECEIVER_WORDS:
            return True
        # masks, scores, logits = model.predict(...): SAM's three results by name
        if isinstance(unpack, (ast.Tuple, ast.List)) and len(unpack.elts) == 3:
            first = unpack.elts[0]
            if isinstance(first, ast.Name) and "mask" in first.id.lower():
                return True
        return False

    # -- expressions -------------------------------------------------------
    def eval(self, node: Optional[ast.AST], report: bool = True) -> Tuple[Taint, Optional[str]]:
        """The taint and kind of an expression; with ``report``, its sinks are reported."""
        if node is None:
            return CLEAN, None
        if report or self.silent:
            return self._eval(node)
        self.silent = True
        try:
            return self._eval(node)
        finally:
            self.silent = False

    def _eval(self, node: ast.AST) -> Tuple[Taint, Optional[str]]:
        if isinstance(node, ast.Name):
            taint, kind = self.lookup(node.id), self.kind_of(node.id)
            if kind is None and not taint and "predictor" in _words(node.id):
                # ``self.p = predictor``: the attribute is a predictor too
                kind = "predictor"
            return taint, kind
        if isinstance(node, ast.Constant):
            return CLEAN, None
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            return self._attribute(node)
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.BinOp):
            lt, lk = self._eval(node.left)
            rt, rk = self._eval(node.right)
            if self._mixing(node, lt, lk, rt, rk):
                return CLEAN, "numpy"
            if lt or rt:
                return lt | rt, "torch"
            if lk == "numpy" or rk == "numpy":
                return CLEAN, "numpy"
            return CLEAN, None
        if isinstance(node, ast.UnaryOp):
            t, k = self._eval(node.operand)
            return t, k if k in ("numpy", "torch", "scalar") else None
        if isinstance(node, ast.BoolOp):
            taint = CLEAN
            for v in node.values:
                taint |= self._eval(v)[0]
            return taint, None
        if isinstance(node, ast.Compare):
            taint, kind = self._eval(node.left)
            self._dtype_compare(node)
            for c in node.comparators:
                taint |= self._eval(c)[0]
            if any(isinstance(op, (ast.In, ast.NotIn, ast.Is, ast.IsNot)) for op in node.ops):
                return CLEAN, None
            return taint, kind if taint else None
        if isinstance(node, ast.IfExp):
            self._eval(node.test)
            bt, bk = self._eval(node.body)
            ot, ok = self._eval(node.orelse)
            guarded = _tensor_guard(node.test)
            if guarded:
                # ``x.cpu().numpy() if torch.is_tensor(x) else x``
                name, tensor_arm_is_body = guarded
                other = node.orelse if tensor_arm_is_body else node.body
                if isinstance(other, ast.Name) and other.id == name:
                    return (bt, bk) if tensor_arm_is_body else (ot, ok)
            return bt | ot, bk if bk == ok else None
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            taints = [self._eval(elt)[0] for elt in node.elts]
            taint = frozenset().union(*taints)
            if isinstance(node, ast.Tuple) and not any(isinstance(e, ast.Starred) for e in node.elts):
                return taint, Positions(taints)
            return taint, None
        if isinstance(node, ast.Dict):
            taint = CLEAN
            for k, v in zip(node.keys, node.values):
                if k is not None:
                    self._eval(k)
                taint |= self._eval(v)[0]
            return taint, None
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self._comprehension(node)
        if isinstance(node, ast.Starred):
            return self._eval(node.value)
        if isinstance(node, ast.NamedExpr):
            t, k = self._eval(node.value)
            self.bind(node.target, t, k)
            return t, k
        if isinstance(node, ast.Await):
            return self._eval(node.value)
        if isinstance(node, ast.JoinedStr):
            for v in node.values:
                self._eval(v)
            return CLEAN, None
        if isinstance(node, ast.FormattedValue):
            self._eval(node.value)
            return CLEAN, None
        if isinstance(node, ast.Lambda):
            return CLEAN, None
        if isinstance(node, ast.Slice):
            for part in (node.lower, node.upper, node.step):
                if part is not None:
                    self._eval(part)
            return CLEAN, None
        return CLEAN, None

    def _comprehension(self, node: ast.AST) -> Tuple[Taint, Optional[str]]:
        saved = self.snapshot()
        for gen in node.generators:  # type: ignore[attr-defined]
            it, _ = self._eval(gen.iter)
            self._bind_iteration(gen.target, gen.iter, it)
            for cond in gen.ifs:
                self._eval(cond)
        if isinstance(node, ast.DictComp):
            self._eval(node.key)
            taint = self._eval(node.value)[0]
        else:
            taint = self._eval(node.elt)[0]  # type: ignore[attr-defined]
        self.restore(saved)
        return taint, None

    def _attribute(self, node: ast.Attribute) -> Tuple[Taint, Optional[str]]:
        base = node.value
        cls = self._self_class(base)
        if cls is not None:
            key = f"self.{node.attr}"
            if key in self.env:
                return self.env[key], self.kinds.get(key) or cls.attr_kinds.get(node.attr)
            return cls.attrs.get(node.attr, CLEAN), cls.attr_kinds.get(node.attr)
        dotted = _dotted(node)
        if dotted and dotted in self.env:
            return self.env[dotted], self.kinds.get(dotted)
        if dotted and "." in dotted and self.func is not None and dotted in self.m.globals:
            return self.m.globals[dotted], self.m.global_kinds.get(dotted)
        t, k = self._eval(base)
        if not t:
            if k == "numpy" and node.attr in ("T", "flat", "real", "imag"):
                return CLEAN, "numpy"
            return CLEAN, None
        if node.attr in METADATA:
            return CLEAN, None
        if node.attr == "size":
            self.report(node, ".size", SILENT,
                          "a tensor's .size is a method: comparing or dividing by it is wrong or raises",
                          "x.numel() (or x.size() for the shape)", t)
            return CLEAN, None
        if node.attr == "flat":
            self.report(node, ".flat", ANY, "tensors have no .flat (AttributeError)",
                          "x.flatten()", t)
            return CLEAN, None
        return t, "torch" if node.attr in ("T", "mT", "data", "real") else None

    def _subscript(self, node: ast.Subscript) -> Tuple[Taint, Optional[str]]:
        base = node.value
        key = node.slice
        bt, bk = self._eval(base)
        kt, kk = self._eval(key)
        self._index_check(node, bt, bk, kt, kk)
        if isinstance(bk, Positions) and isinstance(key, ast.Constant) and isinstance(key.value, int) and (
            -len(bk) <= key.value < len(bk)
        ):
            return bk[key.value], None
        if isinstance(base, ast.Name) and base.id in self.keyed and isinstance(key, ast.Constant):
            return self.env.get(f"{base.id}[{key.value!r}]", CLEAN), None
        if isinstance(base, ast.Name) and isinstance(key, ast.Constant) and f"{base.id}[{key.value!r}]" in self.env:
            return self.env[f"{base.id}[{key.value!r}]"], None
        if bt:
            return bt, "torch" if bk in ("torch", "scalar") else None
        return CLEAN, "numpy" if bk == "numpy" else None

    def _index_check(self, node: ast.AST, bt: Taint, bk: Optional[str], kt: Taint, kk: Optional[str]) -> None:
        """``array[tensor]``: numpy converts the index, which CUDA refuses."""
        # A 0-d index (argmax, item) is read through __index__, which CUDA
        # allows (a sync): lists, dicts and arrays all take it. A mask or an
        # index tensor is converted with numpy.
        if not kt or bt or bk in ("torch", "self", "predictor", "other") or kk == "scalar":
            return
        self.report(node, "ndarray[tensor]", CUDA,
                      "indexing a numpy array with a tensor converts the tensor with numpy",
                      "index with samgpu_shim.to_numpy(mask), or make the array a tensor on the same device", kt)

    def _mixing(self, node: ast.BinOp, lt: Taint, lk: Optional[str], rt: Taint, rk: Optional[str]) -> bool:
        if lt and rk == "numpy" and not rt:
            self.report(node, "tensor with ndarray", CUDA,
                          "arithmetic between a tensor and a numpy array moves the array to the CPU; "
                          "a CUDA tensor then meets a CPU one",
                          "torch.as_tensor(array, device=tensor.device), or " + TO_NUMPY, lt)
        elif rt and lk == "numpy" and not lt:
            self.report(node, "ndarray with tensor", ANY,
                          "numpy's operator does not accept a tensor on its right",
                          "torch.as_tensor(array, device=tensor.device), or " + TO_NUMPY, rt)
        else:
            return False
        return True

    def _dtype_compare(self, node: ast.Compare) -> None:
        left = node.left
        if isinstance(left, ast.Attribute) and left.attr == "dtype":
            t = self._eval(left.value)[0]
            if not t:
                return
            for c in node.comparators:
                lib = self._library(c)[0]
                if lib == "numpy" or (isinstance(c, ast.Name) and c.id in ("bool", "float", "int")) or (
                    isinstance(c, ast.Constant) and isinstance(c.value, str)
                ):
                    self.report(node, ".dtype comparison", SILENT,
                                  "a torch dtype never equals a numpy or Python type: the test is always False",
                                  "compare with torch.bool / torch.float32", t)

    def _library(self, func: ast.AST) -> Tuple[Optional[str], str]:
        dotted = _dotted(func)
        if dotted is None:
            return None, ""
        head = dotted.split(".")[0]
        target = self.m.aliases.get(head)
        if target is None or head in self.env or (self.func is not None and head in self.kinds):
            return None, dotted
        full = target + dotted[len(head):]
        return target.split(".")[0], full

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
            if attr in JSON_FUNCS and _dotted(func.value) in ("json", "ujson", "orjson", "simplejson"):
                return self._json(node, arg_taint)
            if attr in CONTAINER_ADDERS and arg_taint:
                self.bind_into(func.value, arg_taint)
                if attr in CHANNEL_PUT:
                    self._channel_put(func.value, arg_taint, args[0][2] if len(args) == 1 else None)
                return CLEAN, None
            if attr in CHANNEL_GET:
                name = _last_name(func.value)
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
            (_dotted(func.value) or "").endswith("Predictor")
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
            if _class_kind(kind):
                cls = self.p.class_by_name(_class_kind(kind))
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
                if _class_kind(kind):
                    cls = self.p.class_by_name(_class_kind(kind))
                elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
                    owner = self._self_class(base.value)
                    if owner is not None:
                        k = owner.attr_kinds.get(base.attr)
                        if _class_kind(k):
                            cls = self.p.class_by_name(_class_kind(k))
            if cls is not None:
                m = self.p.method(cls, func.attr)
                if m is not None:
                    staticm = not m.is_method
                    return m, not staticm, None
                return None
            dotted = _dotted(base)
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
        shown = _dotted(node.func) or dotted
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
        name = _last_name(channel)
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
        words = _words(name)
        if not words & NUMPY_HELPER_WORDS or words & TORCH_HELPER_WORDS:
            return False
        self.report(node, f"{_dotted(node.func) or name}()", CUDA,
                    "a helper outside the scanned files, named for numpy images or arrays, is given a tensor "
                    "(scan its source too for a precise answer)", "pass " + TO_NUMPY, arg_taint)
        return True

    def _json(self, node: ast.Call, arg_taint: Taint) -> Tuple[Taint, Optional[str]]:
        if arg_taint and not any(kw.arg in ("default", "cls") for kw in node.keywords):
            self.report(node, f"{_dotted(node.func)}()", ANY,
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

    # -- statements --------------------------------------------------------
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
            t, k = self.eval(node.value)
            for target in node.targets:
                self._eval_target_parts(target, t)
                self.bind(target, t, k, node.value)
        elif isinstance(node, ast.AnnAssign):
            if node.value is not None:
                t, k = self.eval(node.value)
                self.bind(node.target, t, k, node.value)
        elif isinstance(node, ast.AugAssign):
            t, k = self.eval(node.value)
            cur_t, cur_k = self.eval(node.target, report=False)
            if cur_k == "numpy" and t and not cur_t:
                self.report(node, "ndarray op= tensor", ANY,
                              "numpy's in-place operator does not accept a tensor",
                              "torch.as_tensor(array, device=tensor.device), or " + TO_NUMPY, t)
            elif cur_t and k == "numpy" and not t:
                self.report(node, "tensor op= ndarray", CUDA,
                              "an in-place operation with a numpy array moves the array to the CPU; a CUDA tensor "
                              "then meets a CPU one", "torch.as_tensor(array, device=tensor.device)", cur_t)
            if t:
                self.bind(node.target, cur_t | t, cur_k)
        elif isinstance(node, ast.Expr):
            self.eval(node.value)
        elif isinstance(node, ast.Return):
            t, k = self.eval(node.value)
            first = not self.returned_any
            self.returned_any = True
            self.returned |= t
            if k == "predictor":
                self.returned_kind = k
            elif isinstance(k, Positions):
                # every return a tuple of the same length: keep the positions
                if first:
                    self.returned_kind = k
                elif isinstance(self.returned_kind, Positions) and len(self.returned_kind) == len(k):
                    self.returned_kind = Positions(a | b for a, b in zip(self.returned_kind, k))
                elif self.returned_kind != "predictor":
                    self.returned_kind = None
            elif self.returned_kind != "predictor":
                self.returned_kind = None
        elif isinstance(node, (ast.If, ast.While)):
            self.eval(node.test)
            before = self.snapshot()
            if isinstance(node, ast.While):
                for _ in range(2):
                    self.run(node.body)
                    self.merge(before, self.snapshot())
                self.run(node.orelse)
                return
            self.run(node.body)
            after_body = self.snapshot()
            self.restore(before)
            self.run(node.orelse)
            after_else = self.snapshot()
            # ``if isinstance(x, torch.Tensor): x = x.cpu().numpy()``: on the
            # other arm x was never a tensor, so only the converting arm counts
            guarded = _tensor_guard(node.test)
            if guarded:
                name, tensor_arm_is_body = guarded
                tensor_arm = after_body if tensor_arm_is_body else after_else
                other_arm = after_else if tensor_arm_is_body else after_body
                if not tensor_arm[0].get(name, CLEAN):
                    other_arm[0][name] = CLEAN
            self.merge(after_body, after_else)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            it, _ = self.eval(node.iter)
            before = self.snapshot()
            for _ in range(2):
                self._bind_iteration(node.target, node.iter, it)
                self.run(node.body)
                self.merge(before, self.snapshot())
            self.run(node.orelse)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                t, k = self.eval(item.context_expr)
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

    def _eval_target_parts(self, target: ast.AST, value: Taint = CLEAN) -> None:
        """Sinks inside an assignment target: ``image[mask] = color``, ``array[i] = mask``."""
        if isinstance(target, ast.Subscript):
            bt, bk = self.eval(target.value)
            kt, kk = self.eval(target.slice)
            self._index_check(target, bt, bk, kt, kk)
            if value and not bt and bk == "numpy":
                self.report(target, "ndarray[tensor]=", CUDA,
                            "assigning a tensor into a numpy array converts it with numpy",
                            "assign samgpu_shim.to_numpy(x), or build the array as a tensor on the device", value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._eval_target_parts(elt)

    def _bind_iteration(self, target: ast.AST, iterable: ast.AST, taint: Taint) -> None:
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name):
            name = iterable.func.id
            if name == "enumerate" and isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == 2:
                self.bind(target.elts[0], CLEAN, None)
                item_t = self.eval(iterable.args[0], report=False)[0] if iterable.args else CLEAN
                self._bind_iteration(target.elts[1], iterable.args[0] if iterable.args else iterable, item_t)
                return
            if name == "zip" and isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == len(
                iterable.args
            ):
                for elt, arg in zip(target.elts, iterable.args):
                    self._bind_iteration(elt, arg, self.eval(arg, report=False)[0])
                return
            if name == "range":
                self.bind(target, CLEAN, None)
                return
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Attribute) and \
                iterable.func.attr == "items" and isinstance(target, (ast.Tuple, ast.List)) and len(target.elts) == 2:
            self.bind(target.elts[0], CLEAN, None)
            self.bind(target.elts[1], taint, None)
            return
        self.bind(target, taint, None)


# -- driving it ---------------------------------------------------------------


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


def _load(path: str) -> ModuleInfo:
    if path.endswith(".ipynb"):
        # Cells share one namespace: they are scanned as one program, and each
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
        return ModuleInfo(path, ast.parse("\n".join(lines), filename=path), where)
    with open(path, encoding="utf-8") as f:
        source = f.read()
    return ModuleInfo(path, ast.parse(source, filename=path))


def _files(path: str) -> List[str]:
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


def analyse(modules: Sequence[ModuleInfo]) -> Project:
    """Run the analysis over parsed modules until class attributes settle."""
    project = Project()
    project.modules = list(modules)
    project.index()
    for _ in range(MAX_ROUNDS):
        project.rounds += 1
        project.changed = False
        project.summaries.clear()
        project.findings.clear()
        project.finding_taint.clear()
        for module in project.modules:
            top = Scope(project, module, None, None)
            top.run(module.tree.body)
            for name, t in top.env.items():
                if t - module.globals.get(name, CLEAN):
                    module.globals[name] = module.globals.get(name, CLEAN) | t
                    project.changed = True
            for name, k in top.kinds.items():
                if module.global_kinds.get(name) != k:
                    module.global_kinds[name] = k
                    project.changed = True
            # every function once on its own, parameters clean: the sources
            # inside it and what it does with them
            for func in list(module.functions.values()) + [
                m for c in module.classes.values() for m in c.methods.values()
            ]:
                args: Tuple[Taint, ...] = ()
                project.summary(func, args, ("self",) if func.is_method else ())
        if not project.changed:
            break
    for key, finding in project.findings.items():
        finding.sources = sorted(_source_label(project, sid) for sid in project.finding_taint[key])
    return project


def _source_label(project: Project, sid: int) -> str:
    src = project.sources[sid]
    module = next(m for m in project.modules if m.path == src.path)
    cell, line = module.where(src.line)
    if cell is None:
        return f"{src.path}:{line}:{src.col}"
    return f"{src.path}:cell {cell}:{line}:{src.col}"


def _sorted(findings: Iterable[Finding]) -> List[Finding]:
    return sorted(findings, key=lambda f: (f.path, f.cell or 0, f.line, f.operation))


def audit_source(source: str, path: str = "<string>") -> List[Finding]:
    """Findings for one Python source text."""
    module = ModuleInfo(path, ast.parse(source, filename=path))
    return _sorted(analyse([module]).findings.values())


def scan(paths: Sequence[str]) -> Tuple[Project, List[Tuple[str, str]]]:
    """Parse every file under ``paths`` and analyse them together; also the files that failed."""
    modules: List[ModuleInfo] = []
    errors: List[Tuple[str, str]] = []
    for path in paths:
        try:
            files = _files(path)
        except OSError as exc:
            errors.append((path, str(exc)))
            continue
        for file in files:
            try:
                modules.append(_load(file))
            except (OSError, SyntaxError, ValueError, UnicodeDecodeError) as exc:
                errors.append((file, f"{type(exc).__name__}: {exc}"))
    project = analyse(modules)
    errors.extend((where, f"statement skipped, internal error ({why}); please report it")
                  for where, why in sorted(project.skipped.items()))
    return project, errors


def audit_path(path: str) -> List[Finding]:
    """Findings for a .py file, a .ipynb notebook, or every such file under a folder (one project)."""
    project, errors = scan([path])
    if errors:
        raise ValueError("; ".join(f"{p}: {e}" for p, e in errors))
    return _sorted(project.findings.values())


def main(paths: Sequence[str], as_json: bool = False, fix: bool = False, diff: bool = False) -> int:
    """The ``audit`` command: 0 clean, 1 findings remain, 2 a path could not be scanned."""
    project, errors = scan(paths)
    for path, error in errors:
        print(f"{path}: cannot scan: {error}", file=sys.stderr)
    findings = _sorted(project.findings.values())
    if fix or diff:
        from .fix import apply_fixes, available

        missing = available()
        if missing:
            print(missing, file=sys.stderr)
            return 2
        changed = apply_fixes(project, write=not diff, show_diff=diff)
        if diff:
            print(f"{changed} predict call(s) would get as_numpy=True", file=sys.stderr)
            return 2 if errors else 0
        print(f"pinned {changed} predict call(s) to as_numpy=True")
        project, errors = scan(paths)
        findings = _sorted(project.findings.values())
        for finding in findings:
            print(finding.format())
        print(f"{len(findings)} finding(s) remain")
        return 2 if errors else (1 if findings else 0)
    if as_json:
        print(json.dumps([asdict(f) for f in findings], indent=1))
    else:
        for finding in findings:
            print(finding.format())
        summary = f"{len(findings)} finding(s) in {len(project.modules)} file(s)"
        if errors:
            summary += f"; {len(errors)} path(s) could not be scanned (see above)"
        print(summary)
    if errors:
        return 2
    return 1 if findings else 0
