"""Pseudo-labels for the student segmenter: detector boxes -> SAM 2 masks.

The SAM stage is an nn.Module so that it slots into the teacher pipeline next
to the detector."""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from company_models.sam_loader import build_sam2_predictor

from evalkit.metrics import iou as mask_iou


class SamTeacher(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.predictor = build_sam2_predictor(cfg)
        self.min_score = cfg.get("min_score", 0.75)

    @torch.inference_mode()
    def forward(self, images, boxes):
        self.predictor.set_image_batch(images)
        masks_b, scores_b, logits_b = self.predictor.predict_batch(box_batch=boxes, multimask_output=False)
        return masks_b, scores_b, logits_b


class PseudoLabeler:
    def __init__(self, cfg, detector):
        self.teacher = SamTeacher(cfg)
        self.detector = detector

    def __call__(self, images):
        dets = [self.detector(img) for img in images]
        boxes = [np.asarray(d["boxes"], dtype=np.float32) for d in dets]
        masks_b, scores_b, logits_b = self.teacher(images, boxes)
        targets = []
        for img, d, masks, scores, logits in zip(images, dets, masks_b, scores_b, logits_b):
            classes = np.asarray(d["labels"], dtype=np.int64)
            masks = masks.reshape(-1, *masks.shape[-2:])
            scores = scores.reshape(-1)
            keep = scores >= self.teacher.min_score
            sem = np.zeros(img.shape[:2], dtype=np.int64)
            kept_classes = classes[keep]  # expect: ndarray[mask]
            for cls, m in zip(kept_classes, masks[keep]):
                sem[m] = cls + 1  # expect: ndarray[mask] = v
            soft = torch.sigmoid(logits.reshape(-1, *logits.shape[-2:])[keep])
            soft = F.interpolate(soft[None], size=img.shape[:2], mode="bilinear", align_corners=False)[0]
            targets.append({"semantic": sem, "soft": soft, "weights": scores[keep]})
        return targets


def agreement(teacher: SamTeacher, images, boxes, gts):
    """Mean IoU of the teacher's masks against human masks on the audit split."""
    masks_b, scores_b, _ = teacher(images, boxes)
    vals = []
    for masks, gt in zip(masks_b, gts):
        for m, g in zip(masks.reshape(-1, *masks.shape[-2:]), gt):
            vals.append(mask_iou(m, g))  # expect: unscanned iou()
    return float(np.mean(vals)) if vals else float("nan")


def to_student_batch(targets, device="cuda"):
    sem = torch.stack([torch.as_tensor(t["semantic"]) for t in targets]).to(device)
    soft = [t["soft"] for t in targets]
    w = torch.cat([t["weights"] for t in targets])
    return sem, soft, w


def score_histogram(teacher: SamTeacher, images, boxes, bins=10):
    _, scores_b, _ = teacher(images, boxes)
    flat = torch.cat([s.reshape(-1) for s in scores_b])
    hist = torch.histc(flat.float(), bins=bins, min=0.0, max=1.0)
    return hist.tolist(), float(flat.mean())
