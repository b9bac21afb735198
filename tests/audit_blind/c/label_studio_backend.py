"""Label Studio ML backend: interactive SAM brush + rectangle pre-annotation.

Run with ``label-studio-ml start ./label_studio_backend``. Keypoint and
rectangle prompts from the labelling UI arrive in ``context``; we answer with a
BrushLabels region (RLE) and, when the project also has a RectangleLabels
control, the tight box around the mask.
"""

import json
import logging
import os
from typing import Dict, List, Optional
from uuid import uuid4

import cv2
import numpy as np
from label_studio_ml.model import LabelStudioMLBase
from label_studio_ml.response import ModelResponse
from label_studio_sdk.converter import brush
from label_studio_sdk._extensions.label_studio_tools.core.utils.io import get_local_path

from acme_annot.models import load_sam_predictor  # returns a segment_anything.SamPredictor (GPU)
from acme_annot.qc import flag_suspicious_mask
from sam_tools.engine import CachedPromptEngine
from sam_tools.postprocess import keep_largest_component

logger = logging.getLogger(__name__)

SAM_CHECKPOINT = os.getenv("SAM_CHECKPOINT", "/data/models/sam_vit_h_4b8939.pth")
SAM_DEVICE = os.getenv("SAM_DEVICE", "cuda")
CLEAN_MASKS = os.getenv("SAM_CLEAN_MASKS", "1") == "1"
MULTI_REGIONS = os.getenv("SAM_RETURN_ALL_CANDIDATES", "0") == "1"


class SamBrushBackend(LabelStudioMLBase):
    """Interactive SAM for BrushLabels (+ optional RectangleLabels)."""

    def setup(self):
        self.set("model_version", f"sam-{os.path.basename(SAM_CHECKPOINT)}")
        predictor = load_sam_predictor(SAM_CHECKPOINT, device=SAM_DEVICE)
        self.engine = CachedPromptEngine(predictor, multimask=True)

    # ------------------------------------------------------------------ io
    def _load_image(self, task: Dict, value: str) -> np.ndarray:
        url = task["data"][value]
        path = get_local_path(url, task_id=task.get("id"))
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read {url}")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    @staticmethod
    def _parse_context(context: Dict, width: int, height: int):
        points, labels, box = [], [], None
        for ctx in context.get("result", []):
            v = ctx["value"]
            if ctx["type"] == "keypointlabels":
                points.append([v["x"] * width / 100.0, v["y"] * height / 100.0])
                labels.append(0 if v.get("is_negative") else 1)
            elif ctx["type"] == "rectanglelabels":
                x, y = v["x"] * width / 100.0, v["y"] * height / 100.0
                box = [x, y, x + v["width"] * width / 100.0, y + v["height"] * height / 100.0]
        return points, labels, box

    # -------------------------------------------------------------- regions
    def _brush_region(self, mask, score, label: str, from_name: str, to_name: str,
                      height: int, width: int) -> Dict:
        rle = brush.mask2rle(mask.astype(np.uint8) * 255)  # expect: astype
        return {
            "id": str(uuid4())[:8],
            "from_name": from_name,
            "to_name": to_name,
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {"format": "rle", "rle": rle, "brushlabels": [label]},
            "score": float(score),
            "type": "brushlabels",
            "readonly": False,
        }

    def _rect_region(self, mask, label: str, from_name: str, to_name: str,
                     height: int, width: int) -> Optional[Dict]:
        ys, xs = mask.nonzero()  # expect: nonzero
        if len(xs) == 0:
            return None
        x0, x1 = int(xs.min()), int(xs.max()) + 1
        y0, y1 = int(ys.min()), int(ys.max()) + 1
        return {
            "from_name": from_name,
            "to_name": to_name,
            "type": "rectanglelabels",
            "value": {
                "x": 100.0 * x0 / width,
                "y": 100.0 * y0 / height,
                "width": 100.0 * (x1 - x0) / width,
                "height": 100.0 * (y1 - y0) / height,
                "rectanglelabels": [label],
            },
        }

    # -------------------------------------------------------------- predict
    def predict(self, tasks: List[Dict], context: Optional[Dict] = None, **kwargs) -> ModelResponse:
        if not context or not context.get("result"):
            # no interaction yet: nothing to pre-annotate
            return ModelResponse(predictions=[])

        from_name, to_name, value = self.get_first_tag_occurence("BrushLabels", "Image")
        rect_control = self.label_interface.get_control("RectangleLabels") if self.label_interface else None
        task = tasks[0]
        image = self._load_image(task, value)
        height, width = image.shape[:2]
        label = context["result"][0]["value"].get("keypointlabels", context["result"][0]["value"].get("rectanglelabels", ["Object"]))[0]

        points, labels, box = self._parse_context(context, width, height)
        self.engine.set_image(image, key=str(task["id"]))
        out = self.engine.predict(points=points or None, labels=labels or None, box=box)
        masks, scores = out["masks"], out["scores"]
        logger.info("task %s: %d candidates, best %.3f", task["id"], len(masks), scores[0])
        logger.debug("task %s: candidate areas %s", task["id"], [int(np.sum(m)) for m in masks])  # expect: np.sum
        self.set("last_scores", json.dumps(scores.tolist()))

        results = []
        if MULTI_REGIONS:
            for m, s in zip(masks, scores):
                results.append(self._brush_region(m, s, label, from_name, to_name, height, width))
        else:
            best = keep_largest_component(masks[0]) if CLEAN_MASKS else masks[0]
            if flag_suspicious_mask(masks[0], image):  # expect: unscanned flag_suspicious_mask
                logger.warning("task %s: mask flagged by QC, sending anyway", task["id"])
            results.append(self._brush_region(best, scores[0], label, from_name, to_name, height, width))
            if rect_control is not None:
                rect = self._rect_region(masks[0], label, rect_control.name, to_name, height, width)
                if rect is not None:
                    results.append(rect)

        return ModelResponse(predictions=[{
            "result": results,
            "model_version": self.get("model_version"),
            "score": float(scores[0]),
        }])

    def fit(self, event, data, **kwargs):
        # SAM is not fine-tuned from annotations; just drop the cached prompt logits
        self.engine.reset()
        logger.info("fit(%s) ignored", event)
