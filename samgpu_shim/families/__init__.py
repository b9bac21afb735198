"""The registry of SAM families: which package, which module, which code.

One :class:`Family` row per package that ships a predictor. A row names the
module whose import fires the patch (``hook_module``) and the family module
of this package that knows what to wrap there (``module``). That module is
imported only when the family's own package is (torch is loaded by then), so
``import samgpu_shim`` imports neither torch nor any SAM package.

Each family module exposes ``targets(family) -> tuple[Target, ...]``.
Adding a family is one module here, one row below, and one test subclass of
``tests/family_contract.py``. A row also names its ``entry_points``: every
public method whose call reaches the patched predict (the predict methods
themselves, and wrappers of the package such as SAM 3's ``predict_inst``).
The audit (:mod:`samgpu_shim.migrate`) reads them as its sources, so a row
cannot be added without telling it; ``tests/test_audit_registry.py`` checks
them against the installed packages and the targets.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

Wrapper = Callable[[Any, Any, tuple, dict], Any]


@dataclass(frozen=True)
class Target:
    """One attribute to wrap: ``module`` then the dotted ``attribute`` path."""

    module: str
    attribute: str
    make_wrapper: Callable[[Any], Wrapper]
    # Returns why ``original`` is not what we support, or None when it is.
    check: Callable[[Any], Optional[str]]
    # Whether the wrapper adds ``as_numpy`` to the visible signature.
    adds_as_numpy: bool = False
    # Skipped (the family is still patched) where the package lacks it: a
    # copy of SAM 1 without a ViT encoder has no ``get_rel_pos`` to speed up.
    optional: bool = False


@dataclass(frozen=True)
class Family:
    """A registry row."""

    name: str
    distribution: str
    hook_module: str
    module: str  # the family module under samgpu_shim.families
    # "package.module:Class.method" for each method whose call reaches a
    # patched predict and takes its as_numpy= keyword
    entry_points: Tuple[str, ...]
    # ("package.module:function", "package.module:Class"): functions of the
    # package that return an instance of a class named in entry_points
    builders: Tuple[Tuple[str, str], ...] = ()
    # for in-house forks: "package.module:ClassName"
    spec: Optional[str] = None

    def targets(self) -> Tuple[Target, ...]:
        """What to wrap (imports the family module, hence torch)."""
        return importlib.import_module(f"{__name__}.{self.module}").targets(self)


def params_check(expected: Tuple[str, ...]) -> Callable[[Any], Optional[str]]:
    """A ``Target.check`` that wants exactly these parameters."""

    def check(original: Any) -> Optional[str]:
        if not callable(original):
            return f"expected a function, found {type(original).__name__}"
        try:
            found = tuple(inspect.signature(original).parameters)
        except (TypeError, ValueError) as exc:
            return f"cannot read its signature: {exc}"
        if found != expected:
            return f"its parameters are {found}, expected {expected}"
        return None

    return check


FAMILIES: Tuple[Family, ...] = (
    Family("segment-anything", "segment-anything", "segment_anything", "sam1",
           ("segment_anything.predictor:SamPredictor.predict",)),
    Family("segment-anything-hq", "segment-anything-hq", "segment_anything_hq", "sam_hq",
           ("segment_anything_hq.predictor:SamPredictor.predict",)),
    Family("mobile-sam", "mobilesam-mirror", "mobile_sam", "mobile_sam",
           ("mobile_sam.predictor:SamPredictor.predict",)),
    # mobilesam-lite ships the same MobileSAM code under mobilesam_lite.mobile_sam
    # (its mobilesamv2 subpackage does not import in 0.1.2: docs/families.rst).
    Family("mobilesam-lite", "mobilesam-lite", "mobilesam_lite.mobile_sam", "mobile_sam",
           ("mobilesam_lite.mobile_sam.predictor:SamPredictor.predict",)),
    # EfficientViT-SAM (PyPI efficientsam) does not import its predictor module itself.
    Family("efficientvit-sam", "efficientsam", "efficientsam.models.efficientvit.sam", "efficientvit_sam",
           ("efficientsam.models.efficientvit.sam:EfficientViTSamPredictor.predict",)),
    Family("sam2", "sam2", "sam2.sam2_image_predictor", "sam2",
           ("sam2.sam2_image_predictor:SAM2ImagePredictor.predict",
            "sam2.sam2_image_predictor:SAM2ImagePredictor.predict_batch")),
    # Sam3Image.predict_inst(_batch) fill the predictor's features and call
    # predict(_batch) with their keyword arguments (docs/families.rst).
    Family("sam3", "sam3", "sam3.model.sam1_task_predictor", "sam3",
           ("sam3.model.sam1_task_predictor:SAM3InteractiveImagePredictor.predict",
            "sam3.model.sam1_task_predictor:SAM3InteractiveImagePredictor.predict_batch",
            "sam3.model.sam3_image:Sam3Image.predict_inst",
            "sam3.model.sam3_image:Sam3Image.predict_inst_batch"),
           builders=(("sam3.model_builder:build_sam3_image_model", "sam3.model.sam3_image:Sam3Image"),)),
)


def fork_family(spec: str) -> Family:
    """A row for an in-house copy of the SAM 1 predictor: ``"pkg.mod:Class"``."""
    module, sep, cls = spec.partition(":")
    if not sep or not module or not cls:
        raise ValueError(f"patch target must look like 'package.module:ClassName', got {spec!r}")
    return Family(name=spec, distribution=module.split(".")[0], hook_module=module, module="fork",
                  entry_points=(f"{module}:{cls}.predict",), spec=spec)
