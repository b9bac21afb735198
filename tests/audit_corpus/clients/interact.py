"""Shaped like a click-to-track tool (rewritten, not copied)."""

import cv2
import numpy as np
from PIL import Image


def mask_painter(input_image, input_mask, mask_color=5, mask_alpha=0.7):
    painted = input_image.copy()
    color = np.array([255, 0, 0])
    painted[input_mask > 0] = painted[input_mask > 0] * (1 - mask_alpha) + color * mask_alpha
    contours, _ = cv2.findContours(input_mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(painted, contours, -1, (255, 255, 255), 2)
    return painted.astype("uint8")


class BaseSegmenter:
    def __init__(self, predictor):
        self.predictor = predictor
        self.embedded = False

    def set_image(self, image):
        self.orignal_image = image
        self.predictor.set_image(image)
        self.embedded = True

    def predict(self, prompts, mode, multimask=True):
        if mode == "point":
            masks, scores, logits = self.predictor.predict(point_coords=prompts["point_coords"],
                                                           point_labels=prompts["point_labels"],
                                                           multimask_output=multimask)
        elif mode == "mask":
            masks, scores, logits = self.predictor.predict(mask_input=prompts["mask_input"],
                                                           multimask_output=multimask)
        else:
            masks, scores, logits = self.predictor.predict(point_coords=prompts["point_coords"],
                                                           point_labels=prompts["point_labels"],
                                                           mask_input=prompts["mask_input"],
                                                           multimask_output=multimask)
        return masks, scores, logits


class SamControler:
    def __init__(self, predictor):
        self.sam_controler = BaseSegmenter(predictor)

    def first_frame_click(self, image, points, labels, multimask=True):
        prompts = {"point_coords": points, "point_labels": labels}
        masks, scores, logits = self.sam_controler.predict(prompts, "point", multimask)
        mask, logit = masks[np.argmax(scores)], logits[np.argmax(scores), :, :]  # expect: np.argmax()
        prompts = {"point_coords": points, "point_labels": labels, "mask_input": logit[None, :, :]}
        masks, scores, logits = self.sam_controler.predict(prompts, "both", multimask)
        mask, logit = masks[np.argmax(scores)], logits[np.argmax(scores), :, :]  # expect: np.argmax()
        painted_image = mask_painter(image, mask.astype("uint8"))  # expect: .astype()
        painted_image = Image.fromarray(painted_image)
        return mask, logit, painted_image
