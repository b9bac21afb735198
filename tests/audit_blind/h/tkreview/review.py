"""Reviewer tool: one box prompt per object from the detector, reviewer nudges the mask.

Keys: d dilate, e erode, f fill holes, s save, n next object.
"""
from __future__ import annotations

import json
import tkinter as tk
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import samgpu_shim  # noqa: F401
from PIL import Image, ImageTk
from scipy import ndimage
from segment_anything import SamPredictor, sam_model_registry

KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


class Reviewer:
    min_area = 64

    def __init__(self, root: tk.Tk, image_path: str, det_path: str, out_dir: str):
        self.root = root
        self.rgb = np.array(Image.open(image_path).convert("RGB"))
        self.dets = json.loads(Path(det_path).read_text())
        self.out_dir = Path(out_dir)
        self.idx = -1
        sam = sam_model_registry["vit_b"](checkpoint="weights/sam_vit_b_01ec64.pth").to("cuda")
        self.predictor = SamPredictor(sam)
        self.predictor.set_image(self.rgb)
        self.label = tk.Label(root)
        self.label.pack()
        self.status = tk.StringVar()
        tk.Label(root, textvariable=self.status, anchor="w").pack(fill="x")
        root.bind("<Key>", self.on_key)
        self.next_object()

    def next_object(self) -> None:
        self.idx += 1
        if self.idx >= len(self.dets):
            self.root.quit()
            return
        box = np.array(self.dets[self.idx]["bbox_xyxy"], np.float32)
        masks, scores, _ = self.predictor.predict(box=box, multimask_output=False)
        self.mask, self.score = masks[0], scores[0]
        self.redraw()

    def redraw(self) -> None:
        overlay = self.rgb.copy()
        overlay[..., 1] = np.maximum(overlay[..., 1], self.mask * 200)  # expect: np.maximum
        self.tkimg = ImageTk.PhotoImage(Image.fromarray(overlay))
        self.label.configure(image=self.tkimg)
        if (area := self.mask.sum()) < self.min_area:
            self.status.set(f"#{self.idx}: tiny mask ({area} px) - check the box")
        else:
            self.status.set(f"#{self.idx}: score {self.score:.3f}, fill {self.mask.mean():.1%}")  # expect: mean

    def on_key(self, ev) -> None:
        match ev.char:
            case "d":
                self.mask = cv2.dilate(self.mask.astype(np.uint8), KERNEL).astype(bool)  # expect: astype
            case "e":
                self.mask = cv2.erode(np.uint8(self.mask), KERNEL) > 0  # expect: np.uint8
            case "f":
                self.mask = ndimage.binary_fill_holes(self.mask)  # expect: unscanned ndimage.binary_fill_holes
            case "s":
                self.save()
                return
            case "n":
                self.next_object()
                return
            case _:
                return
        self.redraw()

    def save(self) -> None:
        det = self.dets[self.idx]
        iio.imwrite(self.out_dir / f"{det['id']}.png", self.mask)  # expect: unscanned iio.imwrite
        meta = {"id": det["id"], "score": self.score.item(), "box": det["bbox_xyxy"]}
        (self.out_dir / f"{det['id']}.json").write_text(json.dumps(meta))


if __name__ == "__main__":
    import sys

    root = tk.Tk()
    root.title("mask review")
    Reviewer(root, *sys.argv[1:4])
    root.mainloop()
