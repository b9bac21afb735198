"""SAM 3's interactive path (predict_inst) and SAM 2's batch API."""

import numpy as np
from PIL import Image
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam3 import build_sam3_image_model
from sam3.model.sam3_image import Sam3Image
from sam3.model.sam3_image_processor import Sam3Processor


def sam3_points(image_path, points, labels):
    model = build_sam3_image_model(enable_inst_interactivity=True)
    processor = Sam3Processor(model)
    state = processor.set_image(Image.open(image_path))
    masks, scores, logits = model.predict_inst(state, point_coords=points, point_labels=labels, multimask_output=True)
    best = masks[np.argmax(scores)]  # expect: np.argmax()
    return Image.fromarray(best)  # expect: Image.fromarray()


def sam3_many(model, state, boxes):
    masks, scores, _ = Sam3Image.predict_inst_batch(model, state, None, None, box_batch=boxes, multimask_output=False)
    return np.stack(masks)  # expect: np.stack()


def sam2_batch(images, boxes):
    predictor = SAM2ImagePredictor.from_pretrained("facebook/sam2-hiera-tiny")
    predictor.set_image_batch(images)
    masks_batch, scores_batch, _ = predictor.predict_batch(box_batch=boxes, multimask_output=False)
    areas = []
    for masks, scores in zip(masks_batch, scores_batch):
        areas.append(masks[0].sum())
    return np.array(areas)  # expect: np.array()
