"""Box-supervised instance segmentation: turn COCO boxes into SAM pseudo-masks on the fly.

Masks are generated lazily in ``__getitem__`` with MobileSAM and cached on disk
(one pickle per image) so that the second epoch is I/O bound only.
"""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from mobile_sam import SamPredictor, sam_model_registry
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader, Dataset


class BoxToMaskDataset(Dataset):
    def __init__(
        self,
        root: str,
        ann_file: str,
        cache_dir: str,
        checkpoint: str = "weights/mobile_sam.pt",
        device: str = "cuda",
        min_score: float = 0.7,
        transform: Optional[Callable[[dict], dict]] = None,
    ):
        self.root = Path(root)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint = checkpoint
        self.device = device
        self.min_score = min_score
        self.transform = transform
        coco = json.loads(Path(ann_file).read_text())
        self.images = {im["id"]: im for im in coco["images"]}
        self.anns: dict = {}
        for a in coco["annotations"]:
            self.anns.setdefault(a["image_id"], []).append(a)
        self.ids = sorted(i for i in self.images if i in self.anns)
        self._predictor: Optional[SamPredictor] = None

    @property
    def predictor(self) -> SamPredictor:
        if self._predictor is None:
            net = sam_model_registry["vit_t"](checkpoint=self.checkpoint)
            self._predictor = SamPredictor(net.to(self.device).eval())
        return self._predictor

    def __len__(self) -> int:
        return len(self.ids)

    @functools.lru_cache(maxsize=64)
    def _load_rgb(self, file_name: str) -> np.ndarray:
        return np.asarray(Image.open(self.root / file_name).convert("RGB"))

    def _pseudo_masks(self, image_id: int) -> list:
        cache = self.cache_dir / f"{image_id}.pkl"
        if cache.exists():
            with cache.open("rb") as fh:
                return pickle.load(fh)
        info = self.images[image_id]
        img = self._load_rgb(info["file_name"])
        self.predictor.set_image(img)
        records = []
        for ann in self.anns[image_id]:
            x, y, w, h = ann["bbox"]
            box = np.array([x, y, x + w, y + h], dtype=np.float32)
            masks, scores, _ = self.predictor.predict(box=box, multimask_output=True)
            k = scores.argmax()
            records.append(
                {
                    "category_id": ann["category_id"],
                    "iscrowd": ann.get("iscrowd", 0),
                    "box": box,
                    "mask": masks[k],
                    "score": scores[k],
                }
            )
        with cache.open("wb") as fh:
            pickle.dump(records, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return records

    @staticmethod
    def _tight_box(mask, fallback: np.ndarray) -> np.ndarray:
        ys, xs = np.where(mask)  # expect: np.where
        if len(xs) == 0:
            return fallback
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        img = self._load_rgb(self.images[image_id]["file_name"])
        h, w = img.shape[:2]
        records = [r for r in self._pseudo_masks(image_id) if r["score"] >= self.min_score]
        things = [r for r in records if not r["iscrowd"]]

        ignore = np.zeros((h, w), dtype=bool)
        for r in records:
            if r["iscrowd"]:
                ignore |= r["mask"]  # expect: ndarray |= t

        semantic = np.zeros((h, w), dtype=np.int64)
        for r in things:
            semantic[r["mask"]] = r["category_id"]  # expect: ndarray[t_bool] setitem
        semantic[ignore] = 255

        if things:
            inst = torch.from_numpy(np.stack([r["mask"] for r in things])).to(torch.uint8)  # expect: np.stack
            boxes = np.stack([self._tight_box(r["mask"], r["box"]) for r in things])
            quality = np.array([r["score"] for r in things], dtype=np.float32)  # expect: np.array
        else:
            inst = torch.zeros((0, h, w), dtype=torch.uint8)
            boxes = np.zeros((0, 4), dtype=np.float32)
            quality = np.zeros((0,), dtype=np.float32)

        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255),
            "masks": inst,
            "semantic": torch.from_numpy(semantic),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([r["category_id"] for r in things], dtype=torch.int64),
            "mask_quality": torch.from_numpy(quality),
            "image_id": image_id,
        }
        return self.transform(sample) if self.transform else sample


def collate(batch: list) -> tuple:
    images = torch.stack([b["image"] for b in batch])
    targets = [{k: v for k, v in b.items() if k != "image"} for b in batch]
    return images, targets


def export_coco_rle(ds: BoxToMaskDataset, out_json: str) -> None:
    """Write the pseudo-labels as a COCO results file (numpy path, for the eval server)."""
    results = []
    for image_id in ds.ids:
        img = ds._load_rgb(ds.images[image_id]["file_name"])
        ds.predictor.set_image(img)
        for ann in ds.anns[image_id]:
            x, y, w, h = ann["bbox"]
            masks, scores, _ = ds.predictor.predict(
                box=np.array([x, y, x + w, y + h]), multimask_output=False, as_numpy=True
            )
            rle = mask_utils.encode(np.asfortranarray(masks[0].astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            results.append(
                {"image_id": image_id, "category_id": ann["category_id"], "segmentation": rle, "score": float(scores[0])}
            )
    Path(out_json).write_text(json.dumps(results))


def make_loader(root: str, ann_file: str, cache_dir: str, batch_size: int = 4) -> DataLoader:
    ds = BoxToMaskDataset(root, ann_file, cache_dir)
    # SAM runs inside __getitem__ on the GPU, so keep loading in the main process
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0, collate_fn=collate)
