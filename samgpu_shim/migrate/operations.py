"""What each operation on a result does to a tensor: the sinks of the analysis."""

from __future__ import annotations

from typing import Dict, Tuple

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


