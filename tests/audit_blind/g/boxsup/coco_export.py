"""Export SAM-HQ pseudo masks as COCO instances plus PNG label maps.

    python -m boxsup.coco_export --images data/images --boxes data/labels \
        --classes person,car,bike --out work/pseudo [--polygons] [--debug]
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from labelkit.geometry import mask_to_polygons  # lab tooling, pip install from the internal index

from .pseudo_labels import build_label_map, tight_box
from .sam_wrapper import BoxPrompter, PromptResult


class CocoWriter:
    def __init__(self, categories: List[str]):
        self.images: List[dict] = []
        self.annotations: List[dict] = []
        self.categories = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(categories)]
        self._next_ann = 1

    def add_image(self, file_name: str, height: int, width: int) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        return image_id

    @staticmethod
    def _encode(mask) -> Dict:
        rle = mask_utils.encode(np.asfortranarray(mask))  # expect: np.asfortranarray
        rle["counts"] = rle["counts"].decode("ascii")
        return rle

    def _append(self, image_id: int, category_id: int, segmentation, area: int, bbox, **extra) -> None:
        ann = {
            "id": self._next_ann,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": segmentation,
            "area": area,
            "bbox": bbox,
            "iscrowd": 0,
        }
        ann.update(extra)
        self.annotations.append(ann)
        self._next_ann += 1

    def add_result(self, image_id: int, result: PromptResult, category_id: int, polygons: bool = False) -> None:
        if polygons:
            segmentation = mask_to_polygons(result.mask, tolerance=1.5)  # expect: unscanned mask_to_polygons
        else:
            segmentation = self._encode(result.mask)
        tb = tight_box(result.mask)
        if tb is None:
            return
        x0, y0, x1, y1 = (float(v) for v in tb)
        self._append(
            image_id,
            category_id,
            segmentation,
            area=result.area,
            bbox=[x0, y0, x1 - x0, y1 - y0],
            score=round(result.score, 3),
            refined=result.refined,
        )

    def add_mask_file(self, image_id: int, png_path: Path, category_id: int) -> None:
        """Hand-drawn masks from the previous annotation round (numpy from disk)."""
        m = np.array(Image.open(png_path).convert("L")) > 0
        if not m.any():
            return
        rle = self._encode(m)
        x, y, w, h = mask_utils.toBbox(rle).tolist()
        self._append(image_id, category_id, rle, area=int(m.sum()), bbox=[x, y, w, h], score=1.0, manual=True)

    def iter_annotations(self, image_id: int) -> Iterator[dict]:
        for ann in self.annotations:
            if ann["image_id"] == image_id:
                yield ann

    def dump(self, path: Path) -> None:
        info = {"description": "boxsup pseudo labels", "date_created": datetime.date.today().isoformat()}
        with open(path, "w") as f:
            json.dump({"info": info, "images": self.images, "annotations": self.annotations,
                       "categories": self.categories}, f)


def read_yolo(txt: Path, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    if not txt.exists():
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    rows = np.loadtxt(txt, ndmin=2)
    cls = rows[:, 0].astype(np.int64)
    cx, cy, bw, bh = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)
    return boxes, cls


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--boxes", type=Path, required=True)
    ap.add_argument("--classes", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="vit_l")
    ap.add_argument("--hq-only", action="store_true")
    ap.add_argument("--polygons", action="store_true")
    ap.add_argument("--single-best", action="store_true", help="skip refinement, take best multimask output")
    ap.add_argument("--manual-masks", type=Path, default=None)
    ap.add_argument("--save-masks", action="store_true")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)

    for sub in ("labels", "masks", "debug"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)

    prompter = BoxPrompter(args.model, hq_token_only=args.hq_only)
    writer = CocoWriter(args.classes.split(","))

    for img_path in tqdm(sorted(args.images.glob("*.jpg"))):
        image = cv2.cvtColor(cv2.imread(str(img_path)), cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        boxes, classes = read_yolo(args.boxes / f"{img_path.stem}.txt", w, h)
        if len(boxes) == 0:
            continue

        label_map, kept = build_label_map(image, boxes, classes, prompter, image_id=img_path.stem)
        cv2.imwrite(str(args.out / "labels" / f"{img_path.stem}.png"), label_map)

        image_id = writer.add_image(img_path.name, h, w)
        if args.single_best:
            for i, _, _ in kept:
                mask, score = prompter.best_of_multimask(boxes[i])
                writer.add_result(image_id, PromptResult(box=boxes[i], mask=mask, score=score), int(classes[i]) + 1)
            results = []
        else:
            # embedding is cached from build_label_map, this only runs the decoder again
            results = prompter.prompt_boxes(boxes, refine_iters=0)
            for i, _, _ in kept:
                writer.add_result(image_id, results[i], int(classes[i]) + 1, polygons=args.polygons)

        if args.manual_masks is not None:
            for png in sorted(args.manual_masks.glob(f"{img_path.stem}_c*.png")):
                writer.add_mask_file(image_id, png, int(png.stem.rsplit("_c", 1)[1]))

        if args.save_masks and results:
            np.savez_compressed(args.out / "masks" / f"{img_path.stem}.npz",
                                masks=np.stack([r.mask for r in results]),  # expect: np.stack
                                scores=np.array([r.score for r in results], dtype=np.float32))
        if args.debug and results:
            Image.fromarray(results[0].mask).save(args.out / "debug" / f"{img_path.stem}_0.png")  # expect: Image.fromarray

    writer.dump(args.out / "pseudo_coco.json")
    print(f"{len(writer.images)} images, {len(writer.annotations)} annotations")


if __name__ == "__main__":
    main()
