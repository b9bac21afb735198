"""Realistic client code written for the audit tests.

A line that must be reported ends with a comment 'expect: <operation>'; every
other line must not be reported.
"""

import json

import cv2
import matplotlib.pyplot as plt
import numpy as np
import supervision as sv
import torch
from PIL import Image


def overlay(predictor, frame, points, labels):
    masks, scores, logits = predictor.predict(point_coords=points, point_labels=labels)
    best = masks[np.argmax(scores)]  # expect: np.argmax()
    mask_u8 = best.astype(np.uint8) * 255  # expect: .astype()
    contours, _ = cv2.findContours(mask_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    ys, xs = np.nonzero(best)  # expect: np.nonzero()
    Image.fromarray(mask_u8).save("mask.png")
    plt.imshow(best)  # expect: plt.imshow()
    return contours, ys, xs


def packet(sam_predictor, box):
    out = sam_predictor.predict(box=box, multimask_output=False)
    masks = out[0]
    score = out[1][0]
    message = json.dumps({"score": score})  # expect: json.dumps()
    ok = json.dumps({"score": score}, default=str)
    detections = sv.Detections(xyxy=np.array([box]), mask=masks)  # expect: sv.Detections()
    return message, ok, detections


def legacy_refine(predictor, pts, lbls):
    masks, scores, logits = predictor.predict(pts, lbls)
    for m in masks:
        area = np.count_nonzero(m)  # expect: np.count_nonzero()
        print(area)
    previous = logits.copy()  # expect: .copy()
    y, x = masks[0].nonzero()  # expect: .nonzero()
    if masks.dtype == np.bool_:  # runs (always False on a tensor): not where it breaks
        pass
    return previous, y, x, torch.from_numpy(logits)  # expect: torch.from_numpy()


def migrated(predictor, pts, lbls):
    # Tensor-safe code: nothing here may be reported.
    masks, scores, logits = predictor.predict(pts, lbls)
    best = masks[scores.argmax(dim=0, keepdim=True)][0]
    area = best.sum()
    ys, xs = best.nonzero(as_tuple=True)
    mask_u8 = best.to(torch.uint8)
    refined = predictor.predict(pts, lbls, mask_input=logits[scores.argmax(dim=0, keepdim=True)])
    shape = np.zeros(masks.shape)
    return area, ys, xs, mask_u8, refined, shape


def rolled_back(predictor, pts, lbls):
    # as_numpy=True: numpy code is fine here.
    masks, scores, _ = predictor.predict(pts, lbls, as_numpy=True)
    return masks[np.argmax(scores)].astype(np.uint8)


def not_sam(model, features):
    # A scikit-learn style predict: not a SAM predictor, not reported.
    labels = model.predict(features)
    return np.bincount(labels)


def sam2_batch(image_predictor, frames_points, frames_labels):
    all_masks, all_scores, _ = image_predictor.predict_batch(frames_points, frames_labels)
    for masks, scores in zip(all_masks, all_scores):
        keep = np.argmax(scores)  # expect: np.argmax()
        cv2.imwrite("m.png", masks[keep])  # expect: cv2.imwrite()
    first = all_masks[0]
    return first.shape, np.count_nonzero(first)  # expect: np.count_nonzero()


def sam2_point(model, pts, lbls):
    masks, _, _ = model.predict(pts, lbls, normalize_coords=False)
    return masks.astype(bool)  # expect: .astype()
