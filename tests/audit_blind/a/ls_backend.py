"""Label Studio ML backend: keypoint / rectangle prompts -> brush masks."""

import json
import os

import numpy as np
from PIL import Image
from label_studio_converter import brush
from label_studio_ml.model import LabelStudioMLBase
from label_studio_ml.utils import get_image_local_path

from segmenter import Segmenter

SAM_CHECKPOINT = os.environ.get("SAM_CHECKPOINT", "/models/sam_vit_h_4b8939.pth")


class SamBackend(LabelStudioMLBase):
    def setup(self):
        self.seg = Segmenter(SAM_CHECKPOINT)
        self.from_name, self.to_name, self.value = self.get_first_tag_occurence("BrushLabels", "Image")
        self.set("model_version", "sam-vit-h-0.3")

    def _load(self, task):
        url = task["data"][self.value]
        path = get_image_local_path(url, task_id=task.get("id"))
        return np.array(Image.open(path).convert("RGB"))

    @staticmethod
    def _prompts(context):
        points, labels, box, label = [], [], None, None
        for ctx in context["result"]:
            x = ctx["value"]["x"] * ctx["original_width"] / 100
            y = ctx["value"]["y"] * ctx["original_height"] / 100
            if ctx["type"] == "keypointlabels":
                points.append([x, y])
                labels.append(int(ctx.get("is_positive", 1)))
                label = ctx["value"]["keypointlabels"][0]
            elif ctx["type"] == "rectanglelabels":
                bw = ctx["value"]["width"] * ctx["original_width"] / 100
                bh = ctx["value"]["height"] * ctx["original_height"] / 100
                box = [x, y, x + bw, y + bh]
                label = ctx["value"]["rectanglelabels"][0]
        return points, labels, box, label

    def predict(self, tasks, context=None, **kwargs):
        if not context or not context.get("result"):
            return []
        task = tasks[0]
        image = self._load(task)
        h, w = image.shape[:2]
        points, labels, box, label = self._prompts(context)
        mask, score = self.seg.predict(image, points, labels, box=box)
        rle = brush.mask2rle(mask.astype(np.uint8) * 255)  # expect: .astype()
        result = {
            "from_name": self.from_name,
            "to_name": self.to_name,
            "original_width": w,
            "original_height": h,
            "image_rotation": 0,
            "value": {"format": "rle", "rle": rle, "brushlabels": [label]},
            "type": "brushlabels",
            "score": float(score),
            "readonly": False,
        }
        return [{"result": [result], "model_version": self.get("model_version"), "score": float(score)}]

    def candidates(self, task, box):
        """All candidates for a box, for the 'cycle proposals' hotkey."""
        image = self._load(task)
        masks, scores = self.seg.predict_all(image, box)
        out = []
        for m, s in zip(masks, scores):
            out.append({"rle": brush.mask2rle(m), "score": round(s, 4)})  # expect: unscanned brush.mask2rle(), round()
        return json.dumps(out)

    def fit(self, event, data, **kwargs):
        ann = data.get("annotation") or {}
        areas = []
        for r in ann.get("result", []):
            if r.get("type") != "brushlabels":
                continue
            flat = brush.decode_rle(r["value"]["rle"])
            mask = np.reshape(flat, [r["original_height"], r["original_width"], 4])[:, :, 3] > 0
            areas.append(int(np.count_nonzero(mask)))
        if areas:
            self.set("median_area", str(int(np.median(areas))))
