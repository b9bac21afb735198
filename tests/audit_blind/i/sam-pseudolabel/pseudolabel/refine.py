"""Iterative box-prompt refinement that keeps everything on the GPU."""
from typing import Tuple

import torch
import torch.nn.functional as F


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    k = 2 * radius + 1
    return F.max_pool2d(mask[None, None].float(), k, stride=1, padding=radius)[0, 0] > 0


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return ~_dilate(~mask, radius)


def close_holes(mask: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Morphological closing; cheap stand-in for hole filling on small gaps."""
    return _erode(_dilate(mask, radius), radius)


def box_from_mask(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return torch.zeros(4, device=mask.device)
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:2], b[:2])
    rb = torch.minimum(a[2:], b[2:])
    inter = (rb - lt).clamp(min=0).prod()
    area = lambda t: (t[2:] - t[:2]).clamp(min=0).prod()
    return inter / (area(a) + area(b) - inter + 1e-6)


@torch.inference_mode()
def refine_with_box(predictor, box, n_iters: int = 2, radius: int = 2) -> Tuple[torch.Tensor, torch.Tensor]:
    """Predict a mask for `box`, then re-prompt with the low-res logits until the
    mask's bounding box stops moving. Returns (mask, score) as tensors."""
    masks, scores, logits = map(torch.as_tensor, predictor.predict(box=box, multimask_output=True))
    best = torch.argmax(scores)
    mask, score, logit = masks[best], scores[best], logits[best]

    prev_box = box_from_mask(mask)
    for _ in range(n_iters):
        masks, scores, logits = map(torch.as_tensor, predictor.predict(box=box, mask_input=logit[None], multimask_output=False))
        mask, score, logit = masks[0], scores[0], logits[0]
        cur_box = box_from_mask(mask)
        if box_iou(prev_box, cur_box) > 0.98:
            break
        prev_box = cur_box

    return close_holes(mask, radius), score
