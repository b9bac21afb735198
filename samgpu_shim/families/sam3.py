"""SAM 3 (PyPI ``sam3``): its interactive image predictor, SAM 2's API.

``sam3.model.sam1_task_predictor.SAM3InteractiveImagePredictor`` is a copy
of SAM 2's image predictor (same ``predict``/``predict_batch`` parameters,
same ``_predict``, same transforms), so SAM 2's GPU path serves it as it is:
one packed upload, upstream's transforms and ``_predict`` on the device,
float32 results, graph mode. ``Sam3Image.predict_inst`` and
``predict_inst_batch`` fill the predictor's features and call these very
methods, so they reach the same path (``as_numpy=True`` passes through their
keyword arguments).

Differences from SAM 2 that matter here:

* the predictor fills holes in the low-resolution masks by default
  (``max_hole_area=256``): on CUDA with a Triton kernel that needs no host
  wait, on the CPU with scikit-image (a host round trip by nature), and
  without scikit-image it warns and skips, in both modes alike;
* the text-prompt path (``Sam3Processor``) already returns tensors on the
  device and is not patched (docs/families.rst).
"""

from __future__ import annotations

from typing import Tuple

from . import Family, Target
from .sam2 import image_targets, predictor_targets


def targets(family: Family) -> Tuple[Target, ...]:
    cls = "SAM3InteractiveImagePredictor"
    return predictor_targets(family, cls) + image_targets(family, cls)
