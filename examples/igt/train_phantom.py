"""Train the tiny SAM on the synthetic phantom, so that a test can check that
the loop follows the structure (random weights segment nothing in particular).

400 steps on a CPU (5.0 minutes of CPU time on a 2-core Xeon at 2.0 GHz,
docs/results/phantom-train-cpu2.log; longer in wall time on a busy machine):
speckle frames from phantom seeds 1 to 5 (the tests stream seed 0, never seen
here), a point near the structure's centre, the previous frame's mask as
``mask_input`` half of the time. Writes ``phantom_tiny_sam.pt`` (float32 state dict of
``samgpu_shim.tools.models.build_sam("tiny", image_size=256)``)::

    python examples/igt/train_phantom.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from source import Phantom  # noqa: E402

from samgpu_shim.tools.models import build_sam  # noqa: E402

OUT = HERE / "phantom_tiny_sam.pt"
SIZE = (192, 256)


def disk(phantom: Phantom, k: int) -> torch.Tensor:
    cx, cy = phantom.centre(k)
    y, x = np.mgrid[0:SIZE[0], 0:SIZE[1]]
    return torch.from_numpy((((x - cx) ** 2 + (y - cy) ** 2) <= phantom.radius**2).astype(np.float32))


def low_res(mask: torch.Tensor, side: int) -> torch.Tensor:
    padded = F.pad(mask, (0, 256 - SIZE[1], 0, 256 - SIZE[0]))
    return F.interpolate(padded[None, None], size=(side, side), mode="area")[0]


def main(steps: int = 400, seed: int = 0) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_sam("tiny", image_size=256).train()
    phantoms = [Phantom(*SIZE, seed=s) for s in range(1, 6)]
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    side = model.prompt_encoder.mask_input_size[0]
    started = time.time()
    for step in range(steps):
        phantom = phantoms[rng.integers(len(phantoms))]
        k = int(rng.integers(1, 3000))
        frame, (cx, cy) = phantom.frame(k)
        rgb = torch.from_numpy(np.repeat(frame[:, :, None], 3, axis=2)).permute(2, 0, 1)[None].float()
        embedding = model.image_encoder(model.preprocess(rgb))
        jitter = rng.normal(0, phantom.radius / 3, size=2)
        point = torch.tensor([[[cx + jitter[0], cy + jitter[1]]]], dtype=torch.float32)
        mask_input = None
        if rng.random() < 0.5:  # the previous frame's result, as the loop feeds it back
            mask_input = (low_res(disk(phantom, k - 1), side) * 16 - 8)[None]
        sparse, dense = model.prompt_encoder(points=(point, torch.ones(1, 1, dtype=torch.int)), boxes=None,
                                             masks=mask_input)
        logits, iou = model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                         sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                         multimask_output=True)
        target = low_res(disk(phantom, k), logits.shape[-1]).expand_as(logits)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        probs = logits.sigmoid()
        dice = 1 - (2 * (probs * target).sum((-1, -2)) + 1) / (probs.sum((-1, -2)) + target.sum((-1, -2)) + 1)
        hard = (logits > 0).float()
        true_iou = ((hard * target).sum((-1, -2)) / ((hard + target).clamp(max=1).sum((-1, -2)) + 1e-6)).detach()
        loss = bce + dice.mean() + F.mse_loss(iou, true_iou)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.3f}, IoU {true_iou.mean().item():.3f}, "
                  f"{time.time() - started:.0f} s", flush=True)
    torch.save(model.eval().state_dict(), OUT)
    print(f"saved {OUT}")


if __name__ == "__main__":
    main()
