"""Sync-free replacements for upstream steps that make the host wait.

They run only inside GPU-mode calls (:data:`SYNC_FREE`); every other caller
(numpy mode, rollback, direct ``predict_torch`` users) runs upstream's code.
"""

from __future__ import annotations

import contextvars
from typing import Any

import torch

# True while a GPU-mode predict runs in this thread/context. The patched
# ``_embed_points`` takes the sync-free branch only then.
SYNC_FREE = contextvars.ContextVar("samgpu_shim_sync_free", default=False)


def embed_points_sync_free(
    encoder: Any, points: torch.Tensor, labels: torch.Tensor, pad: bool
) -> torch.Tensor:
    """``PromptEncoder._embed_points`` without boolean-mask indexing.

    Upstream writes ``emb[labels == k] += w``: each boolean-mask read and
    write calls ``nonzero``, which waits for the GPU (six waits per call).
    ``torch.where`` picks per element instead and performs the very same
    float additions, so the result is bit-identical (``0.0 + w`` for padding
    points, ``emb + w`` for labelled ones, untouched for other labels).
    """
    points = points + 0.5  # to the centre of the pixel, as upstream
    if pad:
        padding_point = torch.zeros((points.shape[0], 1, 2), device=points.device)
        padding_label = -torch.ones((labels.shape[0], 1), device=labels.device)
        points = torch.cat([points, padding_point], dim=1)
        labels = torch.cat([labels, padding_label], dim=1)
    emb = encoder.pe_layer.forward_with_coords(points, encoder.input_image_size)
    label = labels.unsqueeze(-1)
    emb = torch.where(label == -1, encoder.not_a_point_embed.weight + 0.0, emb)
    emb = torch.where(label == 0, emb + encoder.point_embeddings[0].weight, emb)
    emb = torch.where(label == 1, emb + encoder.point_embeddings[1].weight, emb)
    return emb
