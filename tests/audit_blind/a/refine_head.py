"""Box-refinement stage of the detection pipeline: detector boxes -> SAM masks."""

import cv2
import numpy as np
import torch
import torch.nn as nn
from company_models.zoo import ModelZoo
from pycocotools import mask as mask_utils
from torchvision.ops import masks_to_boxes


class SamRefiner(nn.Module):
    """Wraps a SAM predictor so the pipeline can call it like any other stage."""

    def __init__(self, predictor, score_thr: float = 0.7):
        super().__init__()
        self.predictor = predictor
        self.score_thr = score_thr

    @torch.no_grad()
    def forward(self, image: np.ndarray, boxes: np.ndarray):
        self.predictor.set_image(image)
        kept_masks, kept_scores = [], []
        for box in boxes:
            masks, scores, _ = self.predictor.predict(box=box, multimask_output=True)
            j = scores.argmax()
            if scores[j] >= self.score_thr:
                kept_masks.append(masks[j])
                kept_scores.append(scores[j])
        return kept_masks, kept_scores


class Pipeline:
    def __init__(self, detector, predictor):
        self.detector = detector
        self.refiner = SamRefiner(predictor)

    def __call__(self, image):
        det = self.detector.predict(image, verbose=False)[0]
        boxes = det.boxes.xyxy.cpu().numpy()
        classes = det.boxes.cls.cpu().numpy().astype(int)
        keep = np.where(det.boxes.conf.cpu().numpy() > 0.3)[0]
        masks, scores = self.refiner(image, boxes[keep])
        if not masks:
            return [], None
        stacked = np.stack(masks)  # expect: np.stack()
        tight = masks_to_boxes(torch.stack(masks))
        out = []
        for k, (m, s, tb) in enumerate(zip(masks, scores, tight)):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))  # expect: .astype()
            rle["counts"] = rle["counts"].decode("ascii")
            out.append({"category_id": int(classes[keep][k]), "segmentation": rle,
                        "bbox": tb.tolist(), "score": float(s), "area": int(m.sum())})
        return out, stacked


def build_pipeline(zoo_root="/models"):
    zoo = ModelZoo(zoo_root)
    return Pipeline(zoo.detector("yolov8m-coco"), zoo.sam_predictor("vit_l", device="cuda"))


def debug_one_box(zoo_root, image, box):
    """Quick look at what the raw predictor gives for one box, outside the pipeline."""
    engine = ModelZoo(zoo_root).sam_predictor("vit_l", device="cuda")
    engine.set_image(image)
    masks, scores, logits = engine.predict(box=np.asarray(box, np.float32), multimask_output=True)
    print("scores", scores.tolist(), "areas", masks.sum(axis=(1, 2)).tolist())
    m8 = masks[int(scores.argmax())].to(torch.uint8) * 255
    cv2.imwrite("debug_box.png", m8)  # expect: cv2.imwrite()
    return float(logits.abs().max())


def best_instance(refiner: SamRefiner, image, boxes):
    masks, scores = refiner(image, boxes)
    if not scores:
        return None
    k = int(np.argmax(scores))  # expect: np.argmax()
    return masks[k]


def blur_background(image, mask, ksize=31):
    """Portrait-mode style: keep the object sharp, blur the rest."""
    blurred = cv2.GaussianBlur(image, (ksize, ksize), 0)
    keep = mask[..., None]
    return image * keep + blurred * ~keep  # expect: ndarray * mask


def portrait(refiner: SamRefiner, image, person_box):
    m = best_instance(refiner, image, np.asarray([person_box], dtype=np.float32))
    if m is None:
        return image
    return blur_background(image, m)
