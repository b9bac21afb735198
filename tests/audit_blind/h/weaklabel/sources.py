"""Pluggable box -> mask sources for the weak-label pipeline."""
from __future__ import annotations

import asyncio
import functools
import os
from typing import Callable, List, TypedDict

import cv2
import numpy as np
import samgpu_shim  # noqa: F401
from efficientvit.models.efficientvit.sam import EfficientViTSamPredictor
from efficientvit.sam_model_zoo import create_efficientvit_sam_model


class Proposal(TypedDict):
    mask: object
    score: object
    box: list


class MaskSource:
    """Baseline source: the box itself, filled. Subclasses override `propose`."""

    name = "box"

    def __init__(self) -> None:
        self.hooks: List[Callable[[Proposal], None]] = []

    def propose(self, image: np.ndarray, box) -> Proposal:
        m = np.zeros(image.shape[:2], bool)
        x0, y0, x1, y1 = map(int, box)
        m[y0:y1, x0:x1] = True
        return Proposal(mask=m, score=1.0, box=list(box))

    def run(self, image: np.ndarray, box) -> Proposal:
        p = self.propose(image, box)
        for hook in self.hooks:
            hook(p)
        return p

    def polygon(self, image: np.ndarray, box):
        p = self.run(image, box)
        cnts, _ = cv2.findContours(p["mask"].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)  # expect: astype
        return max(cnts, key=cv2.contourArea).reshape(-1, 2) if cnts else None


class EfficientSamSource(MaskSource):
    name = "efficientvit-sam"

    def __init__(self, variant: str = "efficientvit-sam-l1") -> None:
        super().__init__()
        model = create_efficientvit_sam_model(name=variant, pretrained=True).cuda().eval()
        self.predictor = EfficientViTSamPredictor(model)
        self._image_key = None

    def propose(self, image: np.ndarray, box) -> Proposal:
        if self._image_key != id(image):
            self.predictor.set_image(image)
            self._image_key = id(image)
        masks, scores, *_ = self.predictor.predict(box=np.asarray(box, np.float32), multimask_output=False)
        return Proposal(mask=masks[0], score=scores[0], box=list(box))

    @staticmethod
    def fill_ratio(p: Proposal) -> float:
        x0, y0, x1, y1 = map(int, p["box"])
        inside = p["mask"][y0:y1, x0:x1]
        return float(inside.sum()) / max(inside.size, 1)  # expect: size

    @classmethod
    def from_config(cls, cfg: dict) -> "EfficientSamSource":
        src = cls(cfg.get("variant", "efficientvit-sam-l1"))
        if cfg.get("min_score"):
            src.hooks.append(functools.partial(_warn_low, threshold=cfg["min_score"]))
        if debug_dir := cfg.get("debug_dir"):
            os.makedirs(debug_dir, exist_ok=True)
            src.hooks.append(
                lambda p: cv2.imwrite(os.path.join(debug_dir, "%d_%d.png" % tuple(map(int, p["box"][:2]))), p["mask"] * 255)  # expect: cv2.imwrite
            )
        return src


def _warn_low(p: Proposal, threshold: float) -> None:
    if p["score"] < threshold:
        print(f"[weaklabel] low score {p['score']:.2f} for box {p['box']}")


async def propose_many(src: MaskSource, image: np.ndarray, boxes) -> List[Proposal]:
    loop = asyncio.get_running_loop()
    jobs = [loop.run_in_executor(None, functools.partial(src.run, image, b)) for b in boxes]
    return list(await asyncio.gather(*jobs))


def merge_instances(proposals: List[Proposal], shape) -> np.ndarray:
    """Paint instances highest-score-first; later ones only fill free pixels."""
    canvas = np.zeros(shape, np.uint16)
    for inst_id, p in enumerate(sorted(proposals, key=lambda q: -float(q["score"])), start=1):
        free = canvas == 0
        canvas[free & p["mask"]] = inst_id  # expect: &
    return canvas


if __name__ == "__main__":
    import json
    import sys

    rgb = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB)
    boxes = json.loads(sys.argv[2])
    source = EfficientSamSource.from_config({"min_score": 0.6, "debug_dir": "/tmp/weaklabel"})
    props = asyncio.run(propose_many(source, rgb, boxes))
    print("fill ratios:", [round(EfficientSamSource.fill_ratio(p), 3) for p in props])
    cv2.imwrite("instances.png", merge_instances(props, rgb.shape[:2]))
    print("first polygon:", source.polygon(rgb, boxes[0]))
