"""Shaped like a Label Studio ML backend for SAM (rewritten, not copied)."""

from uuid import uuid4

import numpy as np
from label_studio_converter import brush
from PIL import Image
from segment_anything import SamPredictor, sam_model_registry


class SAMPredictorWrapper:
    def __init__(self, model_type, checkpoint, device):
        sam = sam_model_registry[model_type](checkpoint=checkpoint)
        sam.to(device=device)
        self.predictor = SamPredictor(sam)

    def predict(self, img_path, point_coords=None, point_labels=None, input_box=None):
        image = np.array(Image.open(img_path).convert("RGB"))
        self.predictor.set_image(image)
        point_coords = np.array(point_coords, dtype=np.float32) if point_coords else None
        point_labels = np.array(point_labels, dtype=np.float32) if point_labels else None
        input_box = np.array(input_box, dtype=np.float32) if input_box else None
        masks, scores, logits = self.predictor.predict(
            point_coords=point_coords,
            point_labels=point_labels,
            box=input_box,
            multimask_output=False,
        )
        mask = masks[0, :, :].astype(np.uint8)  # expect: .astype()
        prob = float(scores[0])
        return {"masks": [mask], "probs": [prob]}


class SamMLBackend:
    def __init__(self):
        self.model = SAMPredictorWrapper("vit_b", "sam_vit_b.pth", "cuda")

    def get_results(self, masks, probs, width, height, from_name, to_name, label):
        results = []
        total_prob = 0
        for mask, prob in zip(masks, probs):
            label_id = str(uuid4())[:4]
            mask = mask * 255
            rle = brush.mask2rle(mask)
            total_prob += prob
            results.append({"id": label_id, "from_name": from_name, "to_name": to_name,
                            "original_width": width, "original_height": height,
                            "value": {"format": "rle", "rle": rle, "brushlabels": [label]},
                            "score": prob, "type": "brushlabels"})
        return [{"result": results, "model_version": "sam", "score": total_prob / max(len(results), 1)}]

    def predict(self, tasks, context):
        task = tasks[0]
        point_coords, point_labels, input_box = [], [], None
        for ctx in context["result"]:
            x = ctx["value"]["x"] * ctx["original_width"] / 100
            y = ctx["value"]["y"] * ctx["original_height"] / 100
            point_coords.append([int(x), int(y)])
            point_labels.append(1)
        out = self.model.predict(task["data"]["image"], point_coords, point_labels, input_box)
        return self.get_results(out["masks"], out["probs"], 0, 0, "tag", "image", "Object")
