"""The prompt mixes real callers use, as (name, args, kwargs) builders."""

from __future__ import annotations

import numpy as np

PC = np.array([[50.0, 60.0], [100.0, 30.0]])
PL = np.array([1, 0])
BOX = np.array([10, 12, 90, 100])


def _mask(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 4, size=(1, 256, 256)).astype(np.float32)


# Each entry: id -> (args, kwargs). Kept as data so the CPU, sync and GPU
# suites all exercise the same list.
PROMPT_MIXES = {
    "point_multimask": ((), dict(point_coords=PC[:1], point_labels=PL[:1])),
    "points_single_mask": ((), dict(point_coords=PC, point_labels=PL, multimask_output=False)),
    "box_1d": ((), dict(box=BOX)),
    "box_2d": ((), dict(box=BOX[None, :], multimask_output=False)),
    "points_and_box": ((), dict(point_coords=PC, point_labels=PL, box=BOX)),
    "mask_alone": ((), dict(mask_input=_mask())),
    "points_and_mask": ((), dict(point_coords=PC, point_labels=PL, mask_input=_mask(4))),
    "everything": ((), dict(point_coords=PC, point_labels=PL, box=BOX, mask_input=_mask(5))),
    "return_logits": ((), dict(point_coords=PC, point_labels=PL, return_logits=True)),
    "positional": ((PC, PL, BOX, _mask(6), False, True), {}),
    "int_coords_list_labels": ((), dict(point_coords=np.array([[50, 60], [10, 110]]), point_labels=[1, 1])),
    "negative_only": ((), dict(point_coords=PC[1:], point_labels=np.array([0]))),
    "no_prompt": ((), {}),
}
