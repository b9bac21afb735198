"""Instance-segmentation dataset whose masks come from SAM, prompted with GT boxes.

Only box annotations are needed on disk; masks are produced on first access and
optionally cached next to the images so later epochs don't pay for SAM again.
"""
import json
import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import samgpu_shim  # noqa: F401
import torch
from PIL import Image
from scipy import ndimage
from segment_anything import SamPredictor, sam_model_registry
from torch.utils.data import Dataset

from .refine import refine_with_box

log = logging.getLogger(__name__)


def build_predictor(checkpoint: str, model_type: str = "vit_h", device: str = "cuda") -> SamPredictor:
    sam = sam_model_registry[model_type](checkpoint=checkpoint)
    return SamPredictor(sam.to(device).eval())


class SamPseudoLabelDataset(Dataset):
    def __init__(
        self,
        root: str,
        annotations: str,
        predictor: SamPredictor,
        cache_dir: Optional[str] = None,
        refine: bool = False,
        fill_holes: bool = False,
        min_score: float = 0.75,
        transforms: Optional[Callable] = None,
    ):
        self.root = Path(root)
        with open(annotations) as fh:
            self.records: List[Dict] = json.load(fh)
        self.predictor = predictor
        self.cache_dir = Path(cache_dir) if cache_dir else None
        if self.cache_dir:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.refine = refine
        self.fill_holes = fill_holes
        self.min_score = min_score
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.records)

    def _pseudo_label(self, image: np.ndarray, boxes: List[List[float]]):
        self.predictor.set_image(image)
        masks, scores = [], []
        for box in boxes:
            box = np.asarray(box, dtype=np.float32)
            if self.refine:
                mask, score = refine_with_box(self.predictor, box)
                mask = mask.cpu().numpy()
            else:
                m, s, _ = self.predictor.predict(box=box, multimask_output=False)
                mask, score = m[0], s[0]
                if self.fill_holes:
                    mask = ndimage.binary_fill_holes(mask)  # expect: ndimage.binary_fill_holes
            masks.append(mask)
            scores.append(score)
        return masks, scores

    def _load_or_label(self, idx: int, image: np.ndarray):
        rec = self.records[idx]
        cache = self.cache_dir / f"{Path(rec['file_name']).stem}.npz" if self.cache_dir else None
        if cache is not None and cache.exists():
            data = np.load(cache)
            return list(data["masks"]), list(data["scores"])
        masks, scores = self._pseudo_label(image, rec["boxes"])
        if cache is not None and masks:
            np.savez_compressed(cache, masks=np.stack(masks), scores=np.array(scores))  # expect: np.stack
        return masks, scores

    def __getitem__(self, idx: int):
        rec = self.records[idx]
        image = np.array(Image.open(self.root / rec["file_name"]).convert("RGB"))
        masks, scores = self._load_or_label(idx, image)

        keep = [i for i, s in enumerate(scores) if s >= self.min_score]
        if len(keep) < len(scores):
            log.debug("%s: dropped %d low-confidence masks", rec["file_name"], len(scores) - len(keep))

        # regions SAM was unsure about are ignored by the loss instead of counted as background
        ignore = np.zeros(image.shape[:2], dtype=bool)
        for i in set(range(len(scores))) - set(keep):
            ignore |= masks[i]  # expect: |=

        h, w = image.shape[:2]
        target = {
            "boxes": torch.as_tensor([rec["boxes"][i] for i in keep], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor([rec["labels"][i] for i in keep], dtype=torch.int64),
            "masks": torch.stack([torch.from_numpy(masks[i]) for i in keep]).to(torch.uint8)  # expect: torch.from_numpy
            if keep else torch.zeros((0, h, w), dtype=torch.uint8),
            "scores": torch.as_tensor([float(scores[i]) for i in keep], dtype=torch.float32),
            "ignore": torch.from_numpy(ignore),
            "image_id": idx,
        }
        img = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target


def collate(batch):
    return tuple(zip(*batch))
