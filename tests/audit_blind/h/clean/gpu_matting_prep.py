"""Trimap generation for the matting model, entirely on the GPU.

SAM 2 gives a coarse mask; we build an unknown band around its boundary with
max-pool morphology and hand (image, trimap) tensors straight to the matting net.
Nothing here touches numpy after the prompt arrays.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import samgpu_shim  # noqa: F401
import torch
import torch.nn.functional as F
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor


def dilate(m: torch.Tensor, r: int) -> torch.Tensor:
    return F.max_pool2d(m[None, None].float(), 2 * r + 1, stride=1, padding=r)[0, 0]


def erode(m: torch.Tensor, r: int) -> torch.Tensor:
    return 1.0 - dilate(1.0 - m.float(), r)


def trimap(mask: torch.Tensor, band: int = 12) -> torch.Tensor:
    fg = erode(mask, band) > 0.5
    maybe = dilate(mask, band) > 0.5
    t = torch.zeros_like(mask, dtype=torch.uint8)
    t[maybe] = 128
    t[fg] = 255
    return t


class TrimapBuilder:
    def __init__(self, cfg: str = "configs/sam2.1/sam2.1_hiera_l.yaml", ckpt: str = "checkpoints/sam2.1_hiera_large.pt"):
        self.predictor = SAM2ImagePredictor(build_sam2(cfg, ckpt, device="cuda"))
        self.stats: Dict[str, List[float]] = {"score": [], "area": []}

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, clicks: List[Tuple[int, int, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        self.predictor.set_image(image)
        pts = np.array([[x, y] for x, y, _ in clicks], np.float32)
        lbl = np.array([l for _, _, l in clicks], np.int32)
        masks, scores, logits = self.predictor.predict(point_coords=pts, point_labels=lbl, multimask_output=True)
        assert masks.shape[0] == len(scores) == logits.shape[0]
        best = int(scores.argmax())
        mask = masks[best]
        if scores[best] < 0.5 and len(clicks) > 1:
            # ambiguous: re-run single-output with the previous logits as a hint
            masks, scores, logits = self.predictor.predict(
                point_coords=pts, point_labels=lbl, mask_input=logits[best][None], multimask_output=False
            )
            mask, best = masks[0], 0
        area = mask.sum()
        self.stats["score"].append(float(scores[best]))
        self.stats["area"].append(area.item() / mask.numel())
        soft = torch.sigmoid(F.interpolate(logits[best][None, None], size=mask.shape, mode="bilinear")[0, 0])
        mask = torch.where((soft > 0.5) | (mask > 0), 1.0, 0.0)
        img = torch.as_tensor(image, device=mask.device).permute(2, 0, 1).float() / 255.0
        return img, trimap(mask)

    def summary(self) -> str:
        s = torch.tensor(self.stats["score"])
        return f"n={len(s)} mean score={s.mean():.3f} min={s.min():.3f}"


def build_batch(builder: TrimapBuilder, samples) -> Dict[str, torch.Tensor]:
    imgs, tris = zip(*(builder(img, clicks) for img, clicks in samples))
    h = max(t.shape[-2] for t in tris)
    w = max(t.shape[-1] for t in tris)
    pad = lambda t: F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]))  # noqa: E731
    return {"image": torch.stack([pad(i) for i in imgs]), "trimap": torch.stack([pad(t) for t in tris])}
