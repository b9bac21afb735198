"""An annotation tool with two ways to get masks: clicks (SAM's predictor) and
"segment everything" (the automatic mask generator's list of dicts)."""

import cv2
import matplotlib.pyplot as plt
import numpy as np
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry


class Annotator:
    def __init__(self, checkpoint):
        sam = sam_model_registry["vit_b"](checkpoint=checkpoint)
        self.predictor = SamPredictor(sam)
        self.generator = SamAutomaticMaskGenerator(sam)
        self.image = None
        self.masks = None
        self.export_path = "annotations"

    def load(self, image):
        self.image = image
        self.predictor.set_image(image)

    def click(self, points, labels):
        masks, scores, _ = self.predictor.predict(point_coords=points, point_labels=labels)
        self.masks = masks[np.argmax(scores)]  # expect: np.argmax()
        self.result = self.masks
        self._show_click()

    def everything(self):
        self.masks = self.generator.generate(self.image)
        self._show_everything()
        self._export_everything()

    def _show_click(self):
        plt.imshow(self.image)
        plt.imshow(self.masks, alpha=0.5)  # expect: plt.imshow()

    def _show_everything(self):
        canvas = np.zeros(self.image.shape[:2] + (3,), np.uint8)
        for ann in sorted(self.masks, key=lambda a: a["area"], reverse=True):
            canvas[ann["segmentation"]] = np.random.randint(0, 255, 3)
        plt.imshow(canvas)

    def _export_everything(self):
        for i, ann in enumerate(self.masks):
            seg = ann["segmentation"].astype(np.uint8) * 255
            cv2.imwrite(f"{self.export_path}/{i:03d}.png", seg)

    def load_saved(self, path):
        self.result = path
        self._preview_saved()

    def _preview_saved(self):
        preview = cv2.imread(self.result)
        plt.imshow(preview[..., ::-1])

    def set_output(self, folder):
        self.export_path = folder
