"""Minimal Tkinter click annotator.

Left click = positive point, right click = negative point, Tab = cycle the three
multimask proposals, Ctrl+Z = undo, Ctrl+S = save the current mask, Ctrl+E = export all.
"""

from __future__ import annotations

import tkinter as tk
from dataclasses import dataclass
from pathlib import Path
from tkinter import filedialog, messagebox
from typing import List, Optional

import cv2
import numpy as np
import torch
from PIL import Image, ImageTk
from segment_anything import SamPredictor, sam_model_registry


@dataclass
class Step:
    points: np.ndarray
    labels: np.ndarray
    masks: object  # C x H x W, straight from the predictor
    scores: object
    logits: object
    idx: int = 0


class Annotator(tk.Frame):
    sam: Optional[SamPredictor] = None  # shared by every window of the process
    color = (30, 144, 255)

    @classmethod
    def model(cls) -> SamPredictor:
        if cls.sam is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            cls.sam = SamPredictor(sam_model_registry["vit_l"](checkpoint="sam_vit_l_0b3195.pth").to(device))
        return cls.sam

    def __init__(self, master: tk.Tk, image_path: str):
        super().__init__(master)
        self.pack(fill="both", expand=True)
        self.image = np.array(Image.open(image_path).convert("RGB"))
        self.image_path = Path(image_path)
        sidecar = self.image_path.with_name(self.image_path.stem + "_mask.png")
        self.prior = str(sidecar) if sidecar.exists() else None  # path now, array once loaded
        self._history: List[Step] = []
        self.status = tk.StringVar(value="click to segment")
        self.canvas = tk.Canvas(self, width=self.image.shape[1], height=self.image.shape[0], cursor="tcross")
        self.canvas.pack()
        tk.Label(self, textvariable=self.status, anchor="w").pack(fill="x")
        self.canvas.bind("<Button-1>", lambda e: self.click(e.x, e.y, 1))
        self.canvas.bind("<Button-3>", lambda e: self.click(e.x, e.y, 0))
        master.bind("<Tab>", lambda e: self.cycle())
        master.bind("<Control-z>", lambda e: self.undo())
        master.bind("<Control-s>", lambda e: self.save())
        master.bind("<Control-e>", lambda e: self.export_all())
        self.model().set_image(self.image)
        self._render()

    # ----------------------------------------------------------- accessors
    def __len__(self) -> int:
        return len(self._history)

    def __getitem__(self, i: int) -> Step:
        return self._history[i]

    @property
    def prior_mask(self) -> Optional[np.ndarray]:
        if isinstance(self.prior, str):
            self.prior = cv2.imread(self.prior, cv2.IMREAD_GRAYSCALE) > 0
        return self.prior

    @property
    def current(self) -> Optional[Step]:
        return self._history[-1] if self._history else None

    @property
    def current_mask(self):
        step = self.current
        if step is None:
            return self.prior_mask
        return step.masks[step.idx]

    @property
    def current_score(self) -> float:
        step = self.current
        return float(step.scores[step.idx]) if step is not None else 0.0

    # ------------------------------------------------------------- actions
    def click(self, x: int, y: int, label: int) -> None:
        prev = self.current
        pts = np.array([[x, y]], dtype=np.float32)
        lbl = np.array([label])
        if prev is not None:
            pts = np.concatenate([prev.points, pts])
            lbl = np.concatenate([prev.labels, lbl])
        mask_input = prev.logits[prev.idx][None] if prev is not None else None
        masks, scores, logits = self.model().predict(
            point_coords=pts, point_labels=lbl, mask_input=mask_input, multimask_output=prev is None
        )
        step = Step(pts, lbl, masks, scores, logits)
        order = np.argsort(-step.scores)  # expect: np.argsort
        step.idx = int(order[0])
        self._history.append(step)
        self._render()

    def cycle(self) -> None:
        step = self.current
        if step is not None and len(step.masks) > 1:
            step.idx = (step.idx + 1) % len(step.masks)
            self._render()

    def undo(self) -> None:
        if self._history:
            self._history.pop()
            self._render()

    # ----------------------------------------------------------- rendering
    def _render(self) -> None:
        overlay = self.image.copy()
        mask = self.current_mask
        if mask is not None:
            tint = np.array(self.color, dtype=np.float32)
            sel = overlay[mask]  # expect: ndarray[t_bool]
            overlay[mask] = (0.55 * sel + 0.45 * tint).astype(np.uint8)  # expect: ndarray[t_bool] setitem
            contours, _ = cv2.findContours(np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)  # expect: np.asarray
            cv2.drawContours(overlay, contours, -1, (255, 255, 255), 1)
            cols = np.flatnonzero(mask.max(axis=0))  # expect: max(axis=0)
            width = int(cols[-1] - cols[0] + 1) if len(cols) else 0
            self.status.set(
                f"{len(self)} clicks | proposal {getattr(self.current, 'idx', 0) + 1} "
                f"| score {self.current_score:.3f} | width {width}px"
            )
        self._photo = ImageTk.PhotoImage(Image.fromarray(overlay))
        self.canvas.delete("all")
        self.canvas.create_image(0, 0, anchor="nw", image=self._photo)
        for step in self._history[-1:]:
            for (px, py), lab in zip(step.points.astype(int), step.labels):
                fill = "#2ecc71" if lab == 1 else "#e74c3c"
                self.canvas.create_oval(px - 4, py - 4, px + 4, py + 4, fill=fill, outline="white")

    # ---------------------------------------------------------------- io
    def save(self) -> None:
        mask = self.current_mask
        if mask is None:
            return
        path = filedialog.asksaveasfilename(defaultextension=".png", initialfile=self.image_path.stem + "_mask.png")
        if path:
            cv2.imwrite(path, mask * 255)  # expect: cv2.imwrite

    def export_all(self) -> None:
        if not self._history:
            messagebox.showinfo("export", "nothing to export")
            return
        path = filedialog.asksaveasfilename(defaultextension=".npz")
        if not path:
            return
        points = np.concatenate([s.points for s in self._history])
        np.savez_compressed(path, *[self[i].masks[self[i].idx] for i in range(len(self))], points=points)  # expect: np.savez_compressed


if __name__ == "__main__":
    import sys

    root = tk.Tk()
    root.title("SAM annotator")
    Annotator(root, sys.argv[1])
    root.mainloop()
