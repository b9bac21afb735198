"""What each operation on a result does to a tensor: the sinks, read from
:mod:`samgpu_shim.ops` (the table the transfer guard reads too).

A row's ``cpu`` and ``cuda`` columns give the finding's effect:

* ``cpu`` raises: :data:`ANY` (raises on any tensor);
* ``cuda`` raises, ``cpu`` works: :data:`CUDA` (works on a CPU tensor only);
* ``differs``: :data:`SILENT` (runs, means something else);
* both work: no finding.

What stays here is what the table does not say: the kind of an operation's
result (``np.squeeze`` keeps a tensor, ``np.float64(x)`` is a numpy scalar),
which libraries the scan knows, and the conditions that pick a row
(``.mean()`` breaks on a boolean mask only).
"""

from __future__ import annotations

import ast
import sys
from typing import Optional

from .. import ops
from ..ops import Op

CUDA, ANY, SILENT, UNSCANNED = "cuda", "any", "silent", "unscanned"
WHAT = {
    CUDA: "works on a CPU tensor, raises on a CUDA tensor",
    ANY: "raises on any tensor",
    SILENT: "runs on a tensor but means something else",
    UNSCANNED: "reaches code the audit did not read",
}
TO_NUMPY = "samgpu_shim.to_numpy(x) at the boundary, or predict(..., as_numpy=True) for this code"


def effect(op: Optional[Op]) -> Optional[str]:
    """The finding a row makes, or None when it works on every tensor."""
    if op is None:
        return None
    if op.cpu == ops.RAISES:
        return ANY
    if op.cuda == ops.RAISES:
        return CUDA
    if ops.DIFFERS in (op.cpu, op.cuda):
        return SILENT
    return None


def row(name: str) -> Op:
    """A row by its name (the conditional rows: ``.mean() of a mask``, ``.max(axis=)``)."""
    return ops.BY_NAME[name]


def numpy_row(function: str) -> Op:
    return ops.lookup("numpy", function) or ops.BY_NAME["np.*()"]


def call_row(*names: str) -> Optional[Op]:
    """The row of a library call, by its qualified name first, then as written."""
    for name in names:
        found = ops.lookup("call", name) if name else None
        if found is not None:
            return found
    return None


SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
           ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.MatMult: "@", ast.Eq: "==",
           ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


def operator_row(op: ast.AST, reflected: bool, in_place: bool = False) -> Optional[Op]:
    """The row of ``tensor <op> ndarray`` (or, reflected, ``ndarray <op> tensor``)."""
    symbol = SYMBOLS.get(type(op))
    if symbol is None:
        return None
    if reflected:
        symbol = "r" + symbol + ("=" if in_place else "")
    return ops.lookup("operator", symbol)


# -- what the table does not say: kinds of results ---------------------------

# Attributes of a tensor that are plain Python values.
METADATA = frozenset({"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad", "layout", "itemsize",
                      "nbytes", "names", "is_leaf"})
# Methods of a tensor whose result is no longer a device tensor.
LEAVES_DEVICE = frozenset({"item", "tolist", "cpu", "numpy", "size", "dim", "numel", "element_size", "data_ptr",
                           "__len__", "get_device", "stride", "is_contiguous", "nelement", "__index__"})
SCALAR_METHODS = frozenset({"argmax", "argmin", "sum", "max", "min", "any", "all", "mean", "count_nonzero"})
# Tensor methods whose result is a boolean tensor, and those that turn one into numbers.
BOOL_METHODS = frozenset({"bool", "logical_not", "logical_and", "logical_or", "gt", "lt", "ge", "le", "eq", "ne",
                          "isnan", "isinf", "isfinite"})
KEEPS_DTYPE = frozenset({"clone", "detach", "contiguous", "squeeze", "unsqueeze", "reshape", "view", "flatten",
                         "permute", "flip", "to", "cuda", "__getitem__", "expand", "repeat", "t", "roll", "rot90"})
# numpy functions whose result is still the tensor (they call its own method),
# and those that return plain values.
NUMPY_KEEPS_TENSOR = frozenset({"squeeze"})
NUMPY_PLAIN = frozenset({"shape", "ndim", "isscalar", "iterable", "result_type"})
NUMPY_SCALARS = frozenset({"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                           "uint32", "uint64", "bool_", "float_", "int_", "intp", "double", "single"})
# numpy names that are types or constants, not conversions.
NUMPY_NOT_CALLS = frozenset({"ndarray", "dtype", "generic", "newaxis", "pi", "e", "inf", "nan"})
# Libraries whose results are numpy arrays (an ndarray operand or indexed base).
NUMPY_PRODUCERS = frozenset({"numpy", "cv2", "imageio", "tifffile", "skimage", "scipy"})
# Functions of other libraries that return a host array (a value known to be
# numpy makes ``tensor & it`` or ``it[tensor]`` a finding).
NUMPY_RETURNING = frozenset({"SimpleITK.GetArrayFromImage", "SimpleITK.GetArrayViewFromImage",
                             "rasterio.plot.reshape_as_image", "pycocotools.mask.decode"})
# On-disk arrays whose items are written through np.asarray of the value (one
# number included, where an ndarray slot reads it with __float__), and the
# functions that make them.
ARRAY_STORES = frozenset({"h5py.Dataset", "zarr.Array"})
ARRAY_STORE_MAKERS = {"zarr.zeros": "zarr.Array", "zarr.ones": "zarr.Array", "zarr.empty": "zarr.Array",
                      "zarr.full": "zarr.Array", "zarr.create": "zarr.Array", "zarr.open_array": "zarr.Array"}
# Libraries the scan knows without reading them: torch and friends keep
# tensors; the rest are in the table or harmless to hand a tensor to.
TENSOR_LIBRARIES = frozenset({"torch", "torchvision", "kornia", "einops", "torchmetrics", "lightning",
                              "pytorch_lightning", "accelerate", "monai", "timm", "samgpu_shim"})
HARMLESS_LIBRARIES = frozenset({"tqdm", "loguru", "rich", "wandb", "tensorboard", "tensorboardX", "hydra",
                                "omegaconf", "click", "typer", "fire", "absl", "attr", "attrs", "pydantic", "yaml",
                                "requests", "httpx", "ray", "dask", "joblib", "cloudpickle"})
# Library calls that hand their first argument back wrapped (progress bars,
# iterator tools): the taint and the parts go through.
PASS_THROUGH_CALLS = frozenset({"tqdm.tqdm", "tqdm.auto.tqdm", "tqdm.notebook.tqdm", "tqdm.std.tqdm",
                                "tqdm.tqdm_notebook", "rich.progress.track", "itertools.islice",
                                "itertools.chain", "itertools.cycle", "itertools.takewhile",
                                "itertools.dropwhile", "more_itertools.chunked", "contextlib.nullcontext"})
STDLIB = frozenset(getattr(sys, "stdlib_module_names", ())) | {"__future__"}
# Methods that any plotting object (Axes, napari viewer, ...) converts with numpy.
PLOT_METHODS = frozenset({"imshow", "matshow", "contour", "contourf", "pcolormesh", "add_labels", "add_image",
                          "imsave", "spy"})
# Words in the name of a helper the scan cannot resolve (a star import, a
# name from another notebook) that say it works on numpy images or arrays;
# and words that say it works on tensors.
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
PLAIN_BUILTINS = frozenset({"int", "float", "bool", "str", "len", "repr", "hash", "id", "type", "isinstance",
                            "print", "hasattr", "getattr", "callable", "range", "format", "complex", "divmod"})
JSON_MODULES = frozenset({"json", "ujson", "orjson", "simplejson"})
# Functions that take a path: a value handed to one is a file name at that
# point (an attribute that holds a path on one path and a result on another),
# not a result, so the call is no finding.
PATH_FUNCTIONS = frozenset({"numpy.load", "numpy.loadtxt", "numpy.fromfile", "rasterio.open", "PIL.Image.open",
                            "cv2.imread", "pathlib.Path", "h5py.File", "nibabel.load", "torch.load",
                            "tifffile.imread", "imageio.imread", "imageio.v3.imread", "SimpleITK.ReadImage",
                            "skimage.io.imread", "open", "io.open", "zipfile.ZipFile", "pydicom.dcmread"})
# Queue-like hand-offs between functions and threads, matched by the channel's name.
CHANNEL_PUT = frozenset({"put", "put_nowait", "send", "appendleft"})
CHANNEL_GET = frozenset({"get", "get_nowait", "recv", "popleft"})
# nn.Module methods that return the module itself.
MODULE_RETURNS_SELF = frozenset({"eval", "train", "to", "cuda", "cpu", "half", "float", "double", "bfloat16",
                                 "requires_grad_", "share_memory", "apply"})


def known_library(top: str) -> bool:
    """Whether the scan knows what a module with this top-level name does."""
    if top in STDLIB or top in TENSOR_LIBRARIES or top in HARMLESS_LIBRARIES or top in NUMPY_PRODUCERS:
        return True
    return ops.lookup("call", f"{top}.x") is not None
