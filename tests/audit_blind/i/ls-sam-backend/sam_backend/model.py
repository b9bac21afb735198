"""Label Studio ML backend: interactive SAM-HQ segmentation from keypoints / boxes."""
import logging
import os
from typing import Dict, List, Optional
from uuid import uuid4

import cv2
import numpy as np
import samgpu_shim  # noqa: F401
import torch
from label_studio_ml.model import LabelStudioMLBase
from label_studio_ml.response import ModelResponse
from PIL import Image
from segment_anything_hq import SamPredictor, sam_model_registry

from .rle import mask_bbox_percent, mask_to_ls_rle, mask_to_polygon_points

logger = logging.getLogger(__name__)

SAM_CHECKPOINT = os.getenv("SAM_HQ_CHECKPOINT", "/data/models/sam_hq_vit_l.pth")
SAM_MODEL_TYPE = os.getenv("SAM_HQ_MODEL_TYPE", "vit_l")
DEBUG_DIR = os.getenv("SAM_DEBUG_DIR")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

OUTPUT_TAGS = ("BrushLabels", "PolygonLabels", "RectangleLabels")


class SamHQBackend(LabelStudioMLBase):
    """Keeps one predictor per worker; the embedding is recomputed only when the image changes."""

    def setup(self):
        sam = sam_model_registry[SAM_MODEL_TYPE](checkpoint=SAM_CHECKPOINT)
        sam.to(device=DEVICE)
        self.predictor = SamPredictor(sam)
        self._current_image: Optional[str] = None
        self._last_logits: Dict[str, object] = {}
        self.set("model_version", f"sam-hq-{SAM_MODEL_TYPE}")

    def _set_image(self, image_path: str):
        if self._current_image == image_path:
            return
        image = cv2.cvtColor(cv2.imread(image_path), cv2.COLOR_BGR2RGB)
        self.predictor.set_image(image)
        self._current_image = image_path
        self._last_logits.clear()

    @staticmethod
    def _prompts_from_context(context, width, height):
        points, labels, box = [], [], None
        for ctx in context.get("result", []):
            value = ctx["value"]
            if ctx["type"] == "keypointlabels":
                points.append([value["x"] * width / 100, value["y"] * height / 100])
                labels.append(int(ctx.get("is_positive", 1)))
            elif ctx["type"] == "rectanglelabels":
                x, y = value["x"] * width / 100, value["y"] * height / 100
                w, h = value["width"] * width / 100, value["height"] * height / 100
                box = np.array([x, y, x + w, y + h])
        point_coords = np.array(points) if points else None
        point_labels = np.array(labels) if labels else None
        return point_coords, point_labels, box

    def _segment(self, image_path, point_coords, point_labels, box):
        prev = self._last_logits.get(image_path)
        masks, scores, logits = self.predictor.predict(
            point_coords=point_coords,
            point_labels=point_labels,
            box=box,
            mask_input=prev[None, :, :] if prev is not None else None,
            multimask_output=box is None and prev is None,
            hq_token_only=False,
        )
        best = int(scores.argmax())
        self._last_logits[image_path] = logits[best]
        return masks[best], scores[best]

    def _output_tag(self):
        for tag in OUTPUT_TAGS:
            try:
                from_name, to_name, value = self.get_first_tag_occurence(tag, "Image")
                return tag, from_name, to_name, value
            except Exception:
                continue
        raise ValueError("No supported output tag in the labeling config")

    def predict(self, tasks: List[Dict], context: Optional[Dict] = None, **kwargs) -> ModelResponse:
        if not context or not context.get("result"):
            return ModelResponse(predictions=[])

        tag, from_name, to_name, value = self._output_tag()
        task = tasks[0]
        image_path = self.get_local_path(task["data"][value], task_id=task["id"])
        first = context["result"][0]
        width, height = first["original_width"], first["original_height"]
        label = next(iter(v for k, v in first["value"].items() if k.endswith("labels")), ["Object"])[0]

        self._set_image(image_path)
        point_coords, point_labels, box = self._prompts_from_context(context, width, height)
        mask, score = self._segment(image_path, point_coords, point_labels, box)
        logger.debug("SAM-HQ score %.3f, %d px", score, mask.sum())

        if not mask.any():
            return ModelResponse(predictions=[])

        if DEBUG_DIR:
            Image.fromarray(mask).save(os.path.join(DEBUG_DIR, f"task_{task['id']}.png"))  # expect: Image.fromarray

        if tag == "BrushLabels":
            result_value = {"format": "rle", "rle": mask_to_ls_rle(mask), "brushlabels": [label]}
        elif tag == "PolygonLabels":
            result_value = {"points": mask_to_polygon_points(mask, width, height), "polygonlabels": [label]}
        else:
            x, y, w, h = mask_bbox_percent(mask, width, height)
            result_value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}

        result = {
            "id": str(uuid4())[:8],
            "from_name": from_name,
            "to_name": to_name,
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": result_value,
            "score": score.item(),
            "type": tag.lower(),
            "readonly": False,
        }
        return ModelResponse(predictions=[{
            "result": [result],
            "model_version": self.get("model_version"),
            "score": float(np.round(score, 4)),  # expect: np.round
        }])
