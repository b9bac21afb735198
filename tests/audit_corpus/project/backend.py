"""An annotation backend that uses the wrapper from another module."""

import json

from label_studio_converter import brush
from segmenter import Segmenter, bbox_from_mask, mask_to_polygon


class SamBackend:
    def __init__(self, checkpoint):
        self.segmenter = Segmenter(checkpoint)

    def predict_tasks(self, image, boxes):
        self.segmenter.set_frame(image)
        results = []
        for box in boxes:
            mask, score = self.segmenter.segment_box(box)
            rle = brush.mask2rle(mask * 255)  # expect: brush.mask2rle()
            results.append(
                {
                    "rle": rle,
                    "score": score,
                    "polygon": mask_to_polygon(mask),
                    "bbox": bbox_from_mask(mask),
                }
            )
        return json.dumps({"results": results})  # expect: json.dumps()

    def preview(self, image, box):
        mask, _ = self.segmenter.segment_box(box)
        overlay = image.copy()
        overlay[mask] = (255, 0, 0)  # expect: ndarray[mask] = v
        return overlay
