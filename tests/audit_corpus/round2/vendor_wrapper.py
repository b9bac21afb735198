"""A script over a lab's own SAM wrapper, installed as a package the audit does not read."""

import json

import numpy as np
from labtools.segmentation import SamWrapper
from labtools.tracking import KalmanModel


def segment_folder(images, clicks, checkpoint):
    sam_obj = SamWrapper(checkpoint, device="cuda")
    motion = KalmanModel()
    rows = []
    for image, click in zip(images, clicks):
        sam_obj.set_image(image)
        masks, scores, _ = sam_obj.predict(np.array([click]), np.array([1]))
        best = int(np.argmax(scores))  # expect: np.argmax()
        guess = motion.predict(click)
        rows.append({"best": best, "area": int(masks[best].sum()), "next": np.asarray(guess).tolist()})
    return json.dumps(rows)
