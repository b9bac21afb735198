"""Offline pseudo-label cache: one SAM 3 instance mask per GT box of a COCO-style json.

The detector team trains on these instead of the coarse polygon annotations.
Output: one HDF5 file (image_id/ann_id/{mask,logits}) + a small json summary.
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, List, NamedTuple

import h5py
import numpy as np
import samgpu_shim  # noqa: F401
import torch
from PIL import Image
from sam3 import build_sam3_image_model
from sam3.model.sam3_image_processor import Sam3Processor


class InstanceResult(NamedTuple):
    image_id: int
    ann_id: int
    mask: object
    score: object
    logits: object


def iter_instances(model, processor, coco: dict, image_root: Path) -> Iterator[InstanceResult]:
    anns_by_img = {}
    for a in coco["annotations"]:
        anns_by_img.setdefault(a["image_id"], []).append(a)
    for info in coco["images"]:
        anns = anns_by_img.get(info["id"])
        if not anns:
            continue
        image = Image.open(image_root / info["file_name"]).convert("RGB")
        with torch.inference_mode():
            state = processor.set_image(image)
            for ann in anns:
                x, y, w, h = ann["bbox"]
                masks, scores, logits = model.predict_inst(
                    state,
                    box=np.array([x, y, x + w, y + h], np.float32),
                    multimask_output=True,
                )
                best = scores.argmax()
                yield InstanceResult(info["id"], ann["id"], masks[best], scores[best], logits[best])


def write_group(h5: h5py.File, r: InstanceResult) -> None:
    g = h5.require_group(str(r.image_id)).create_group(str(r.ann_id))
    g.create_dataset("mask", data=np.packbits(r.mask > 0, axis=-1), compression="lzf")  # expect: np.packbits
    g.create_dataset("logits", data=r.logits.half(), compression="lzf")  # expect: unscanned g.create_dataset
    g.attrs["score"] = float(r.score)
    g.attrs["width"] = int(r.mask.shape[-1])


def summarise(results: List[InstanceResult]) -> dict:
    areas = [int((r.mask > 0).sum()) for r in results]
    scores = np.array([r.score for r in results])  # expect: np.array
    hist, _ = np.histogram(scores, bins=10, range=(0.0, 1.0))
    return {
        "instances": len(results),
        "mean_area": float(np.mean(areas)) if areas else 0.0,
        "score_hist": hist.tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("coco_json")
    ap.add_argument("image_root")
    ap.add_argument("out_h5")
    ap.add_argument("--ckpt", default=None)
    args = ap.parse_args()

    coco = json.loads(Path(args.coco_json).read_text())
    model = build_sam3_image_model(
        checkpoint_path=args.ckpt,
        load_from_HF=args.ckpt is None,
        enable_inst_interactivity=True,
    )
    processor = Sam3Processor(model, confidence_threshold=0.4)

    results: List[InstanceResult] = []
    with h5py.File(args.out_h5, "w") as h5, ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        for r in iter_instances(model, processor, coco, Path(args.image_root)):
            results.append(r)
            pending.append(pool.submit(write_group, h5, r))
        for fut in pending:
            fut.result()
    Path(args.out_h5).with_suffix(".summary.json").write_text(json.dumps(summarise(results), indent=2))


if __name__ == "__main__":
    main()
