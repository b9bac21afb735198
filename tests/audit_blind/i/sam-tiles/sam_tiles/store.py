"""Append-only HDF5 store for per-image mask proposals."""
import json
from typing import Iterable, Tuple

import h5py
import numpy as np


class MaskStore:
    """Layout:
        masks   (N, H, W) uint8, gzip, one chunk per mask
        scores  (N,) float32
        points  (N, 2) float32  - the prompt that produced each mask
        boxes   (N, 4) int32    - xyxy, inclusive
        index   JSON attr: [{"image": name, "start": i, "count": n}, ...]
    """

    def __init__(self, path: str, height: int, width: int):
        self._f = h5py.File(path, "a")
        self._masks = self._f.require_dataset(
            "masks", shape=(0, height, width), maxshape=(None, height, width),
            dtype="u1", chunks=(1, height, width), compression="gzip",
        )
        self._scores = self._f.require_dataset("scores", shape=(0,), maxshape=(None,), dtype="f4")
        self._points = self._f.require_dataset("points", shape=(0, 2), maxshape=(None, 2), dtype="f4")
        self._boxes = self._f.require_dataset("boxes", shape=(0, 4), maxshape=(None, 4), dtype="i4")
        self._index = json.loads(self._f.attrs.get("index", "[]"))

    def __len__(self) -> int:
        return self._masks.shape[0]

    def _grow(self, n: int) -> int:
        start = len(self)
        for ds in (self._masks, self._scores, self._points, self._boxes):
            ds.resize(start + n, axis=0)
        return start

    def add(self, image_name: str, items: Iterable[Tuple[np.ndarray, object, object]]):
        items = list(items)
        if not items:
            return
        start = self._grow(len(items))
        for k, (point, mask, score) in enumerate(items):
            i = start + k
            self._masks[i] = mask  # expect: h5py setitem
            self._scores[i] = score  # expect: h5py setitem
            self._points[i] = point
            ys, xs = np.where(mask)  # expect: np.where
            self._boxes[i] = (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else (0, 0, -1, -1)
        self._index.append({"image": image_name, "start": start, "count": len(items)})
        self._f.attrs["index"] = json.dumps(self._index)

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
