"""Evaluation against ground truth with the team's metrics package (not part of this scan)."""

import numpy as np
import torch
from evaluation.metrics import boundary_f1, iou
from evaluation.torch_metrics import soft_dice_tensor


def evaluate(predictor, samples):
    rows = []
    for image, box, gt in samples:
        predictor.set_image(image)
        masks, scores, _ = predictor.predict(box=box, multimask_output=False)
        rows.append({
            "iou": iou(masks[0], gt),  # expect: iou()
            "bf1": boundary_f1(masks[0], gt, tolerance=2),  # expect: boundary_f1()
            "dice": float(soft_dice_tensor(masks[0].float(), torch.as_tensor(gt))),
            "score": float(scores[0]),
        })
    return rows, np.mean([r["iou"] for r in rows])
