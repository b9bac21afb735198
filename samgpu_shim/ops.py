"""The operations client code applies to predict's results, in one table.

Code written for upstream's numpy results does things to them (``np.where``,
``.astype``, ``Image.fromarray``, ``volume[z] = mask``, ``json.dumps``...).
Each row here says what one such operation does on the numpy result, on a
plain CPU tensor and on a CUDA tensor, and what the transfer guard makes of
it. Three readers, so that they cannot disagree:

* the transfer guard (:mod:`samgpu_shim.gpu.guard`) intercepts the rows whose
  ``guard`` is ``"copies"``, and its tests run every row's ``sample``;
* the audit (``samgpu-shim audit``) reports the rows that do not simply work
  on a CUDA tensor, with the row's ``why`` and ``fix``;
* docs/migration.rst shows the table, generated from these rows.

This module imports neither torch nor numpy: the audit reads it without them.

Vocabulary of the ``cpu`` and ``cuda`` columns: ``works`` (same meaning as on
the numpy result, possibly a tensor instead of an array), ``raises``,
``differs`` (runs, but means something else: another shape, dtype or type).
Vocabulary of the ``guard`` column, for GPU-mode results under
``SAMGPU_TRANSFER_GUARD``:

* ``copies``: an implicit host copy, counted per call site; under ``allow``
  and ``log`` the outcome equals the numpy-mode outcome, under ``disallow``
  it raises as CUDA does;
* ``device``: stays a tensor operation on the device, no copy, any mode;
* ``explicit``: an explicit exit to the host, open in every mode;
* ``uncaught``: the guard cannot see it (a library that checks the type
  itself, or a torch semantic that differs): the audit's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

WORKS, RAISES, DIFFERS = "works", "raises", "differs"
COPIES, DEVICE, EXPLICIT, UNCAUGHT = "copies", "device", "explicit", "uncaught"
KINDS = ("numpy", "method", "call", "index", "operator")


@dataclass(frozen=True)
class Op:
    """One operation a client applies to a result (see the module docstring)."""

    name: str  # how reports and docs name it
    kind: str  # numpy | method | call | index | operator
    match: Tuple[str, ...]  # what the audit matches for that kind
    cpu: str  # on a plain CPU tensor
    cuda: str  # on a CUDA tensor
    guard: str  # copies | device | explicit | uncaught
    sample: str  # an expression over m (masks), s (scores), lg (logits), img (an ndarray H x W)
    why: str
    fix: str
    numpy: str = WORKS  # on the numpy result (the reference); raises for tensor-only code (.cpu())
    reported: bool = True  # False: runs, and the audit follows the value on instead of reporting the line
    cpu_numpy1: str = ""  # the cpu column under numpy 1.x, where it differs (value-based casting)

    @property
    def breaks_on_cuda(self) -> bool:
        """Whether the audit reports it: anything but a plain ``works`` on CUDA, unless
        the row says the line runs and only what follows it may break."""
        return self.cuda != WORKS and self.reported


_HOST = "samgpu_shim.to_numpy(x) at the boundary, or predict(..., as_numpy=True) for this code"
_CONVERT_CUDA = "converts its argument with __array__, which a CUDA tensor refuses"


def _numpy(name: str, match: Tuple[str, ...], sample: str, cpu: str = WORKS, cuda: str = RAISES,
           guard: str = COPIES, why: str = _CONVERT_CUDA, fix: str = _HOST) -> Op:
    return Op(name, "numpy", match, cpu, cuda, guard, sample, why, fix)


OPS: Tuple[Op, ...] = (
    # -- numpy functions that convert their argument -------------------------
    _numpy("np.asarray()", ("asarray", "asanyarray", "ascontiguousarray", "asfortranarray"), "np.asarray(m)"),
    _numpy("np.array()", ("array",), "np.array([m[0], m[1]])"),
    _numpy("np.stack()", ("stack", "vstack", "hstack", "dstack", "concatenate", "column_stack"),
           "np.concatenate([lg[0], lg[1]])"),
    _numpy("np.argmax()", ("argmax", "argmin"), "np.argmax(s)"),
    _numpy("np.argsort()", ("argsort", "sort"), "np.argsort(s)"),
    _numpy("np.where()", ("where",), "np.where(m[0])"),
    _numpy("np.count_nonzero()", ("count_nonzero",), "np.count_nonzero(m[0])"),
    _numpy("np.unique()", ("unique",), "np.unique(m[0])"),
    _numpy("np.logical_and()", ("logical_and", "logical_or", "logical_xor", "logical_not", "bitwise_and",
                                "bitwise_or", "maximum", "minimum", "clip", "isclose", "allclose",
                                "array_equal"), "np.logical_and(m[0], m[1])", cpu=DIFFERS,
           why="converts with __array__ (refused on CUDA); on a CPU tensor torch rewraps the result, a bool "
               "mask coming back as uint8"),
    _numpy("np.zeros_like()", ("zeros_like", "ones_like", "empty_like", "full_like"), "np.zeros_like(m[0])"),
    _numpy("np.save()", ("save", "savez", "savez_compressed", "savetxt"), "np.save(path, m)"),
    _numpy("np.uint8()", ("uint8", "int32", "int64", "float32", "bool_"), "np.uint8(m[0])"),
    # np.float64 subclasses Python's float: its constructor reads a one-element
    # tensor through float(), not __array__ (measured on tensors whose
    # __array__ raises; np.float32 and the integer types go through __array__)
    Op("np.float64()", "numpy", ("float64", "double", "float_"), WORKS, WORKS, EXPLICIT, "np.float64(s[0])",
       "reads a one-element tensor with float() (one sync on CUDA); a tensor of more elements raises on any "
       "device, where numpy would give an array", ""),
    _numpy("np.sum()", ("sum", "mean", "max", "min", "amax", "amin", "any", "all", "std", "var", "prod",
                        "median", "average"),
           "np.sum(m[0])", cpu=RAISES, cuda=RAISES,
           why="forwards numpy's keywords (axis=, out=) to the tensor's own method, which refuses them"),
    _numpy("np.nonzero()", ("nonzero", "argwhere", "flatnonzero"), "np.nonzero(m[0])", cpu=DIFFERS,
           cuda=DIFFERS, guard=UNCAUGHT,
           why="calls the tensor's own nonzero(): one (N, ndim) tensor, not a tuple of index arrays",
           fix="m.nonzero(as_tuple=True) on the device, or convert first"),
    _numpy("np.squeeze()", ("squeeze", "shape", "ndim"), "np.squeeze(m[0:1])", cuda=WORKS, guard=DEVICE,
           why="calls the tensor's own method: stays a tensor", fix=""),
    # rows the audit needs (added with issue #25; samples left empty where
    # the guard's tests have no input for them)
    _numpy("np.isscalar()", ("isscalar", "iterable", "result_type"), "", cuda=WORKS, guard=DEVICE,
           why="reads the type only", fix=""),
    _numpy("np.size()", ("size",), "np.size(m)", cpu=DIFFERS, cuda=DIFFERS, guard=UNCAUGHT,
           why="returns the tensor's size method, not a number", fix="x.numel()"),
    _numpy("np.moveaxis()", ("moveaxis",), "np.moveaxis(lg, 0, -1)", cpu=RAISES, cuda=RAISES, guard=UNCAUGHT,
           why="calls the tensor's own transpose() with numpy's axes, which it refuses",
           fix="x.movedim(0, -1) on the device, or convert first"),
    # any other numpy function: numpy converts its array arguments
    _numpy("np.*()", ("*",), ""),
    # -- methods called on the result ----------------------------------------
    Op(".astype()", "method", ("astype",), RAISES, RAISES, COPIES, "m[0].astype(np.uint8)",
       "a tensor has no astype", "x.to(torch.uint8) on the device, or convert first"),
    Op(".copy()", "method", ("copy",), RAISES, RAISES, COPIES, "m[0].copy()",
       "a tensor has no copy() (clone() is torch's)", "x.clone() on the device, or convert first"),
    Op(".tobytes()", "method", ("tobytes", "tostring"), RAISES, RAISES, COPIES, "m[0].tobytes()",
       "a tensor has no tobytes", _HOST),
    Op(".numpy()", "method", ("numpy",), WORKS, RAISES, COPIES, "lg.numpy()",
       "a CUDA tensor refuses .numpy()", "x.cpu().numpy(), or samgpu_shim.to_numpy(x)", numpy=RAISES),
    Op(".mean() of a mask", "method", ("mean",), RAISES, RAISES, UNCAUGHT, "m[0].mean()",
       "torch refuses mean() of a bool tensor", "x.float().mean()"),
    Op(".nonzero()", "method", ("nonzero",), DIFFERS, DIFFERS, UNCAUGHT, "m[0].nonzero()",
       "one (N, ndim) tensor, not a tuple of index arrays", "x.nonzero(as_tuple=True)"),
    Op(".size", "method", ("size",), DIFFERS, DIFFERS, UNCAUGHT, "m.size",
       "a method on a tensor, an int on an array", "x.numel()"),
    Op(".max(axis=)", "method", ("max", "min"), DIFFERS, DIFFERS, UNCAUGHT, "lg.max(axis=0)",
       "with a dimension, a (values, indices) pair", "x.amax(dim=...)"),
    Op(".fill()", "method", ("fill",), RAISES, RAISES, UNCAUGHT, "",
       "a tensor has no fill() (fill_() is torch's)", "x.fill_(v)"),
    Op(".transpose(1, 2, 0)", "method", ("transpose",), RAISES, RAISES, UNCAUGHT, "lg.transpose(1, 2, 0)",
       "torch's transpose swaps two dimensions; numpy's order of all axes raises", "x.permute(1, 2, 0)"),
    Op(".round(n)", "method", ("round",), RAISES, RAISES, UNCAUGHT, "s.round(2)",
       "torch's round takes the decimals as a keyword only", "x.round(decimals=n)"),
    Op(".repeat(axis=)", "method", ("repeat",), RAISES, RAISES, UNCAUGHT, "s.repeat(2, axis=0)",
       "torch's repeat tiles and takes no axis=", "x.repeat_interleave(n, dim=...)"),
    Op(".flat", "method", ("flat",), RAISES, RAISES, UNCAUGHT, "m.flat",
       "a tensor has no flat", "x.flatten()"),
    Op(".cpu()", "method", ("cpu", "item", "tolist"), WORKS, WORKS, EXPLICIT, "lg.cpu().numpy()",
       "an explicit copy to the host", "", numpy=RAISES),
    Op(".any()", "method", ("any", "all", "sum", "argmax", "argmin", "reshape", "flatten", "ravel",
                            "squeeze", "transpose"), WORKS, WORKS, DEVICE, "m[0].any()",
       "the tensor's own method, same meaning", ""),
    # -- functions of other libraries, builtins ------------------------------
    Op("PIL.Image.fromarray()", "call", ("PIL.Image.fromarray", "Image.fromarray"), RAISES, RAISES, COPIES,
       "Image.fromarray(m[0])", "PIL reads __array_interface__, which a tensor lacks",
       "convert first (samgpu_shim.to_numpy)"),
    Op("plt.imshow()", "call", ("plt.imshow", "plt.matshow", "plt.contour", "plt.contourf", "plt.imsave",
                                "ax.imshow", "ax.contour", "imshow", "imsave", "matshow", "contour", "contourf",
                                "pcolormesh", "spy", "add_labels", "add_image", "matplotlib.*", "pylab.*",
                                "seaborn.*"), WORKS, RAISES, COPIES,
       "plt.imshow(lg[0])", "matplotlib converts with numpy", _HOST),
    Op("scipy.ndimage.*()", "call", ("scipy.ndimage.*", "ndimage.*", "skimage.*", "imageio.*"), WORKS, RAISES,
       COPIES, "ndimage.binary_fill_holes(m[0])", "converts its argument with numpy", _HOST),
    Op("cv2.*()", "call", ("cv2.*",), RAISES, RAISES, UNCAUGHT, "cv2.findContours(m[0])",
       "OpenCV accepts numpy arrays only", "convert first (samgpu_shim.to_numpy)"),
    Op("json.dumps()", "call", ("json.dumps", "json.dump", "ujson.dumps", "ujson.dump", "orjson.dumps",
                                "simplejson.dumps", "simplejson.dump"), RAISES, RAISES, UNCAUGHT,
       "json.dumps(np.float64(1.0) * s[0])", "json knows no tensor",
       "json.dumps(..., default=samgpu_shim.json_default)"),
    Op("flask.jsonify()", "call", ("flask.jsonify", "fastapi.responses.JSONResponse", "fastapi.JSONResponse",
                                   "starlette.responses.JSONResponse"), RAISES, RAISES, UNCAUGHT, "",
       "the framework's JSON encoder knows no tensor", "samgpu_shim.to_numpy(x) first, or json_default"),
    Op("torch.from_numpy()", "call", ("torch.from_numpy",), RAISES, RAISES, UNCAUGHT, "torch.from_numpy(lg)",
       "expects an ndarray", "use the tensor as it is"),
    Op("pycocotools.mask.encode()", "call", ("mask_util.encode", "maskUtils.encode", "pycocotools.mask.encode",
                                             "mask.encode", "pycocotools.*"), RAISES, RAISES, UNCAUGHT, "",
       "expects a Fortran-ordered uint8 ndarray", "convert first (samgpu_shim.to_numpy)"),
    Op("sklearn.*()", "call", ("sklearn.*", "scipy.*", "tifffile.*", "nibabel.*", "rasterio.*", "shapely.*",
                               "pandas.*", "vtk.*", "skan.*", "streamlit.*", "gradio.*"), WORKS, RAISES, COPIES, "",
       "converts its argument with numpy", _HOST),
    Op("supervision.*()", "call", ("supervision.*", "SimpleITK.*", "open3d.*", "label_studio_converter.*",
                                   "base64.*", "PIL.*"), RAISES, RAISES, UNCAUGHT, "",
       "accepts numpy arrays (or bytes) only", "convert first (samgpu_shim.to_numpy)"),
    Op("segment_anything.utils.amg.*()", "call", ("segment_anything.utils.*",), RAISES, RAISES, UNCAUGHT, "",
       "SAM's numpy helpers (remove_small_regions: .astype, OpenCV) take arrays",
       "convert first (samgpu_shim.to_numpy)"),
    Op("mask_to_rle_pytorch()", "call", tuple(f"segment_anything.utils.amg.{f}" for f in (
        "mask_to_rle_pytorch", "batched_mask_to_box", "calculate_stability_score", "is_box_near_crop_edge",
        "box_xyxy_to_xywh", "uncrop_masks", "uncrop_boxes_xyxy", "uncrop_points")), WORKS, WORKS, DEVICE, "",
       "SAM's torch helpers take and return tensors", ""),
    Op("float()", "call", ("float", "int", "bool", "len", "str"), WORKS, WORKS, EXPLICIT, "float(s[0])",
       "a scalar read (one sync on CUDA)", ""),
    Op("round()", "call", ("round",), RAISES, RAISES, COPIES, "round(s[0], 2)",
       "a tensor defines no __round__", "round(float(x), n), or x.round(decimals=n) on the device"),
    # -- an ndarray indexed by, or assigned, a result ------------------------
    Op("ndarray[mask]", "index", ("read",), WORKS, RAISES, COPIES, "img[m[0]]",
       "numpy converts the index with __array__", _HOST),
    Op("ndarray[mask] = v", "index", ("write-index",), WORKS, RAISES, COPIES, "img.__setitem__(m[0], 1.0)",
       "numpy converts the index with __array__", _HOST),
    Op("ndarray[i] = mask", "index", ("write-value",), WORKS, RAISES, COPIES, "img3.__setitem__(0, m[0])",
       "writing a result into a numpy array converts it", _HOST),
    Op("t[::-1]", "index", ("negative-step",), RAISES, RAISES, UNCAUGHT, "s.argsort()[::-1]",
       "torch refuses a negative slice step", "x.flip(0), or argsort(descending=True)"),
    Op("ndarray[argmax]", "index", ("scalar",), WORKS, WORKS, EXPLICIT, "img[s.argmax()]",
       "a 0-d integer tensor is an index (one sync on CUDA)", ""),
    # -- arithmetic and comparisons ------------------------------------------
    # r/ and r== too: torch's reflected operator takes the ndarray (measured on CPU tensors)
    Op("mask * ndarray", "operator", ("*", "+", "-", "/", "//", "%", "**", "&", "|", "^", "==", "!=", "<", "<=",
                                      ">", ">=", "@", "r/", "r=="), WORKS, RAISES, COPIES, "m[0] * img",
       "torch makes the ndarray a CPU tensor: device mismatch on CUDA", _HOST),
    Op("ndarray * mask", "operator", ("r*", "r+", "r-", "r&", "r|", "r^", "r@", "r<", "r<=", "r>", "r>=", "r//",
                                      "r%", "r**"), RAISES, RAISES, COPIES,
       "img * m[0]", "numpy defers to the tensor, whose reflected operator refuses the ndarray", _HOST),
    Op("ndarray += mask", "operator", ("r+=", "r-=", "r*=", "r/=", "r&=", "r|="), RAISES, RAISES, UNCAUGHT, "",
       "numpy's in-place operator refuses a tensor", _HOST),
    Op("1 - mask", "operator", ("1-bool", "bool-1", "-bool"), RAISES, RAISES, UNCAUGHT, "1 - m[0]",
       "torch refuses - on bool tensors", "~mask, or mask.to(torch.uint8) first"),
    Op("np.float64 / tensor", "operator", ("npscalar",), DIFFERS, DIFFERS, DEVICE, "np.float64(2.0) / s",
       "a float32 tensor, where numpy gives float64", "convert first if the float64 matters", reported=False,
       cpu_numpy1=WORKS),  # numpy 1.x casts by value: float32 there too
    Op(".dtype comparison", "operator", ("dtype==",), DIFFERS, DIFFERS, UNCAUGHT, "m.dtype == np.bool_",
       "a torch dtype never equals a numpy or Python type: the test is always False",
       "compare with torch.bool / torch.float32", reported=False),
    Op("mask * 255", "operator", ("scalar",), WORKS, WORKS, DEVICE, "m[0] * 255",
       "arithmetic with a Python scalar stays on the device", ""),
)

BY_NAME: Dict[str, Op] = {op.name: op for op in OPS}
assert len(BY_NAME) == len(OPS), "two rows share a name"
assert all(op.kind in KINDS for op in OPS)

_BY_MATCH: Dict[Tuple[str, str], Op] = {}
for _op in OPS:
    for _m in _op.match:
        _BY_MATCH.setdefault((_op.kind, _m), _op)


def lookup(kind: str, name: str) -> Optional[Op]:
    """The row for one operation: ``lookup("numpy", "where")``, ``lookup("call", "cv2.*")``.

    For ``call`` rows a dotted name also matches a ``prefix.*`` entry
    (``cv2.findContours`` -> ``cv2.*``).
    """
    op = _BY_MATCH.get((kind, name))
    if op is not None or kind != "call":
        return op
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        op = _BY_MATCH.get((kind, ".".join(parts[:i]) + ".*"))
        if op is not None:
            return op
    return None


def rst_table() -> str:
    """The table as reStructuredText, for docs/migration.rst."""
    head = ("operation", "example", "CPU tensor", "CUDA tensor", "transfer guard")
    guard_text = {
        COPIES: "host copy (allow, log); raises (disallow)",
        DEVICE: "stays on the device",
        EXPLICIT: "explicit exit, every mode",
        UNCAUGHT: "not seen: audit",
    }
    rows = [head] + [
        (f"``{op.name}``", f"``{op.sample}``" if op.sample else "", op.cpu, op.cuda,
         guard_text[op.guard] if op.reported or op.guard != UNCAUGHT else "not seen; runs, not reported")
        for op in OPS
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths)).rstrip(), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows[1:]]
    lines.append(rule)
    return "\n".join(lines) + "\n"
