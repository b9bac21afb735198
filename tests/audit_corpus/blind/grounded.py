"""Boxes from a detector, masks from SAM, drawn with supervision."""

import cv2
import numpy as np
import supervision as sv


def segment(sam_predictor, image, xyxy):
    sam_predictor.set_image(image)
    result_masks = []
    for box in xyxy:
        masks, scores, logits = sam_predictor.predict(box=box, multimask_output=True)
        index = np.argmax(scores)  # expect: np.argmax()
        result_masks.append(masks[index])
    return np.array(result_masks)  # expect: np.array()


def annotate(sam_predictor, detector, image_path, classes):
    image = cv2.imread(image_path)
    detections = detector.predict_with_classes(image=image, classes=classes, box_threshold=0.35,
                                               text_threshold=0.25)
    detections.mask = segment(sam_predictor, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), detections.xyxy)
    annotated = sv.MaskAnnotator().annotate(scene=image.copy(), detections=detections)
    cv2.imwrite("annotated.jpg", annotated)
    return detections
