"""Ahead-of-time encoders for ``fast-compile``: built once, loaded in a second.

``torch.compile`` traces and compiles the image encoder in every new
process: about 50 s before the first frame for vit_h (docs/images.rst), which
a loop restarted beside a patient cannot wait. With ``SAMGPU_COMPILE_DIR``
the encoder is exported once (``torch.export``) and compiled by AOTInductor
into a package (``.pt2``, weights inside) kept in that directory; later
processes load the package and run it, with no tracing and no compiling.

A package is only ever used for what it was built for. Beside it, a manifest
(``.json``) records the key it was built under:

* the package format of this module and the shim's version;
* torch's version, the CUDA version and the GPU (name and compute
  capability);
* the encoder's class, the shapes and dtypes of its state dict (a hash), and
  a checksum of the weights themselves;
* the encoder's input (shape and dtype: SAM and SAM 2 resize every frame to
  1024 x 1024, so the frame size does not change it and needs no rebuild);
* the precision the package runs in.

At first use in a process the key is computed again and compared field by
field; any difference, a missing manifest, or a package whose size or
modification time is not what the manifest recorded, and the package is
rebuilt (the differences are logged), never loaded. The package runs the
encoder with bfloat16 weights and the fast path's fused attention; its
outputs are handed back as float32.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .._version import __version__

_logger = logging.getLogger("samgpu_shim")

FORMAT = 1
"""Bumped whenever what goes into a package changes (export, precision, attention)."""

KEY_FIELDS = ("format", "shim", "torch", "cuda", "device", "module", "structure", "weights", "input", "precision")

_INT_OF_WIDTH = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    return device.type


def structure_hash(module: Any) -> str:
    """The state dict's names, shapes and dtypes."""
    items = [(name, list(t.shape), str(t.dtype)) for name, t in module.state_dict().items()]
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def weights_checksum(module: Any) -> str:
    """A checksum of every weight's bits, computed where the weights are
    (integer sums, exact and independent of the order of the reduction), read
    back once."""
    names, sums = [], []
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().contiguous().reshape(-1)
        if flat.numel() == 0:
            continue
        if flat.dtype == torch.bool:
            flat = flat.to(torch.uint8)
        ints = flat.view(_INT_OF_WIDTH[flat.element_size()]).to(torch.int64)
        # Position weights too, so that a permutation of the same values differs.
        weights = torch.arange(ints.numel(), device=ints.device, dtype=torch.int64).remainder_(65521).add_(1)
        sums.append(torch.stack([ints.sum(), (ints * weights).sum()]))
        names.append(name)
    digest = hashlib.sha256("\n".join(names).encode())
    if sums:
        digest.update(torch.stack(sums).cpu().numpy().tobytes())
    return digest.hexdigest()


def manifest_key(module: Any, example: torch.Tensor) -> Dict[str, Any]:
    """What a package for ``module`` called on inputs like ``example`` must have been built under."""
    kind = type(module)
    return {
        "format": FORMAT,
        "shim": __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device_name(example.device),
        "module": f"{kind.__module__}.{kind.__qualname__}",
        "structure": structure_hash(module),
        "weights": weights_checksum(module),
        "input": {"shape": list(example.shape), "dtype": str(example.dtype)},
        "precision": "bf16",
    }


def differences(found: Optional[Dict[str, Any]], wanted: Dict[str, Any]) -> List[str]:
    """The key fields on which a recorded manifest and the wanted key differ."""
    if found is None:
        return ["no manifest"]
    return [f"{k}: {found.get(k)!r} != {wanted.get(k)!r}" for k in KEY_FIELDS if found.get(k) != wanted.get(k)]


def slot(directory: Path, key: Dict[str, Any]) -> Path:
    """Where the package for this key lives (without suffix): one slot per
    encoder class, architecture and input size; a new torch, GPU or weights
    rebuild the same slot."""
    name = key["module"].rsplit(".", 1)[-1]
    shape = "x".join(str(v) for v in key["input"]["shape"])
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-{shape}-{key['structure'][:12]}")
    return directory / stem


def read_manifest(stem: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(stem.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None


def check(stem: Path, wanted: Dict[str, Any]) -> List[str]:
    """Why the package at ``stem`` must not be used for ``wanted`` (empty: it may)."""
    found = read_manifest(stem)
    reasons = differences(found, wanted)
    if reasons:
        return reasons
    package = stem.with_suffix(".pt2")
    try:
        stat = package.stat()
    except OSError:
        return ["no package"]
    assert found is not None
    if stat.st_size != found.get("package_bytes") or stat.st_mtime_ns != found.get("package_mtime_ns"):
        return ["the package is not the one the manifest describes (size or time differ)"]
    return []


class _BFloat16Outputs(torch.nn.Module):
    """The encoder in bfloat16, taking and returning float32."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Any:
        out = self.inner(x.to(torch.bfloat16))
        return torch.utils._pytree.tree_map(
            lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, out
        )


def build_package(module: Any, example: torch.Tensor, package: Path) -> None:
    """Export ``module`` for inputs like ``example`` and compile it with AOTInductor into ``package``.

    Called from inside the encoder call of ``fast-compile``, whose context
    (the fast attention switch) the export sees, so the package holds the
    fused attention."""
    from torch._inductor import aoti_compile_and_package

    module(example)  # eager once: lazily filled caches (SAM 2's position encodings) hold real tensors
    half = _BFloat16Outputs(copy.deepcopy(module).to(torch.bfloat16)).eval()
    with torch.no_grad(), torch.autocast(example.device.type, enabled=False):
        program = torch.export.export(half, (example,), strict=False)
        aoti_compile_and_package(program, package_path=str(package))


def load_package(package: Path) -> Callable[..., Any]:
    from torch._inductor import aoti_load_package

    return aoti_load_package(str(package))


# Indirections the tests replace (building a real package takes minutes).
_build: Callable[[Any, torch.Tensor, Path], None] = build_package
_load: Callable[[Path], Callable[..., Any]] = load_package


def obtain(module: Any, example: torch.Tensor, directory: Any) -> Tuple[Callable[..., Any], Dict[str, Any]]:
    """A runner for ``module`` on inputs like ``example``: the package in
    ``directory`` when its manifest matches, else a new one built there first.
    Returns the runner and a report (slot, built or loaded, why, seconds)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    wanted = manifest_key(module, example)
    stem = slot(directory, wanted)
    reasons = check(stem, wanted)
    report: Dict[str, Any] = {"package": str(stem.with_suffix(".pt2")), "built": bool(reasons), "why": reasons}
    if reasons:
        _logger.warning("samgpu_shim: building the fast-compile encoder package %s (%s); this takes minutes",
                        stem.with_suffix(".pt2"), "; ".join(reasons))
        _rebuild(module, example, stem, wanted)
    runner = _load(stem.with_suffix(".pt2"))
    report["seconds"] = round(time.perf_counter() - started, 3)
    return runner, report


def _rebuild(module: Any, example: torch.Tensor, stem: Path, wanted: Dict[str, Any]) -> None:
    # Written beside the slot and moved in place: a process that reads the
    # slot meanwhile sees the old pair or the new one, never half of one, and
    # the manifest goes last, so a crash in between leaves a mismatch.
    stem.with_suffix(".json").unlink(missing_ok=True)
    started = time.perf_counter()
    fd, temporary = tempfile.mkstemp(suffix=".pt2", dir=stem.parent)
    os.close(fd)
    try:
        _build(module, example, Path(temporary))
        package = stem.with_suffix(".pt2")
        os.replace(temporary, package)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    stat = package.stat()
    manifest = {**wanted, "package_bytes": stat.st_size, "package_mtime_ns": stat.st_mtime_ns,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.perf_counter() - started, 1)}
    fd, temporary = tempfile.mkstemp(suffix=".json", dir=stem.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=1)
    os.replace(temporary, stem.with_suffix(".json"))


class Packaged:
    """Stands in for an encoder module under ``fast-compile`` with a compile
    directory: the first call of each input shape obtains the package, later
    calls run it."""

    def __init__(self, module: Any, directory: Any) -> None:
        self.module = module
        self.directory = directory
        self.runners: Dict[tuple, Callable[..., Any]] = {}
        self.reports: List[Dict[str, Any]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not isinstance(x, torch.Tensor):
            return self.module(x, *args, **kwargs)
        key = (tuple(x.shape), x.dtype, x.device)
        runner = self.runners.get(key)
        if runner is None:
            with self._lock:
                runner = self.runners.get(key)
                if runner is None:
                    runner, report = obtain(self.module, x, self.directory)
                    self.reports.append(report)
                    self.runners[key] = runner
        return runner(x)


_packaged: weakref.WeakKeyDictionary[Any, Dict[str, Packaged]] = weakref.WeakKeyDictionary()


def packaged(module: Any, model: Any, directory: Any) -> Packaged:
    """The stand-in for ``module`` with packages in ``directory``, one per module and directory."""
    per_module = _packaged.setdefault(module, {})
    key = os.fspath(directory)
    found = per_module.get(key)
    if found is None:
        found = per_module[key] = Packaged(module, directory)
    return found


def prepare(predictor: Any, frame_size: Tuple[int, int]) -> Dict[str, Any]:
    """Build (or check and load) the package for this predictor's encoder and
    frames of ``frame_size``: one ``set_image`` of a blank frame under
    ``fast-compile`` with the configured directory. Returns the report."""
    from .. import _config

    directory = _config.get("compile_dir")
    if not directory:
        raise RuntimeError("no compile directory: set SAMGPU_COMPILE_DIR or configure(compile_dir=...)")
    height, width = frame_size
    device = torch.device(predictor.device)
    predictor.set_image(torch.zeros((height, width, 3), dtype=torch.uint8, device=device))
    reports = [r for per in _packaged.values() for p in per.values() if p.directory == directory for r in p.reports]
    if not reports:
        raise RuntimeError("set_image did not reach the package (is the encoder on CUDA, fast-compile on?)")
    return reports[-1]
