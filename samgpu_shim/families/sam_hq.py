"""SAM-HQ (``segment_anything_hq``): SAM 1's predictor copy, plus its decoder.

Its ``predict`` takes one more parameter (``hq_token_only``). Its
``MaskDecoderHQ.forward`` picks the best multimask output with a row index
built on the CPU (one sync); inside GPU-mode calls the same pick runs with the
index made on the device.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from .._dispatch import inside_gpu_calls
from . import Family, Target, params_check, signatures
from .sam1 import copy_targets, image_targets, predict_resident


def predict_resident_hq(
    predictor: Any,
    point_coords: Optional[Any] = None,
    point_labels: Optional[Any] = None,
    box: Optional[Any] = None,
    mask_input: Optional[Any] = None,
    multimask_output: bool = True,
    return_logits: bool = False,
    hq_token_only: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SAM-HQ's ``predict`` (one more parameter, ``hq_token_only``), GPU-resident.

    In graph mode the graph reads static copies of both the embedding and the
    intermediate ViT features that ``set_image`` keeps, so it follows a new
    image without recapture.
    """
    return predict_resident(
        predictor,
        point_coords,
        point_labels,
        box,
        mask_input,
        multimask_output,
        return_logits,
        _torch_kwargs={"hq_token_only": bool(hq_token_only)},
    )


def hq_decoder_forward_sync_free(
    decoder: Any,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    multimask_output: bool,
    hq_token_only: bool,
    interm_embeddings: Any,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """SAM-HQ's ``MaskDecoderHQ.forward`` with its row index made on the device.

    SAM-HQ picks the best of the multimask outputs with a row index built by
    ``torch.arange`` on the CPU; indexing a CUDA tensor with it uploads the
    index and makes the host wait. The same gather with the index created on
    the masks' device reads the very same elements, so results are identical.
    """
    vit_features = interm_embeddings[0].permute(0, 3, 1, 2)  # the early ViT block's features
    hq_features = decoder.embedding_encoder(image_embeddings) + decoder.compress_vit_feat(vit_features)
    masks, iou_pred = decoder.predict_masks(
        image_embeddings=image_embeddings,
        image_pe=image_pe,
        sparse_prompt_embeddings=sparse_prompt_embeddings,
        dense_prompt_embeddings=dense_prompt_embeddings,
        hq_features=hq_features,
    )
    hq_token = decoder.num_mask_tokens - 1  # the last token is SAM-HQ's own
    if multimask_output:
        iou_pred, best = torch.max(iou_pred[:, 1:hq_token], dim=1)
        iou_pred = iou_pred.unsqueeze(1)
        rows = torch.arange(masks.size(0), device=masks.device)
        masks_sam = masks[:, 1:hq_token][rows, best].unsqueeze(1)
    else:
        iou_pred = iou_pred[:, 0:1]
        masks_sam = masks[:, 0:1]
    masks_hq = masks[:, hq_token : hq_token + 1]
    return (masks_hq if hq_token_only else masks_sam + masks_hq), iou_pred


def targets(family: Family) -> Tuple[Target, ...]:
    return copy_targets(family, "segment_anything_hq", signatures.SAM_HQ_PREDICT, predict_resident_hq) + image_targets(
        "segment_anything_hq"
    ) + (
        Target(
            module="segment_anything_hq.modeling.mask_decoder_hq",
            attribute="MaskDecoderHQ.forward",
            make_wrapper=inside_gpu_calls(hq_decoder_forward_sync_free),
            check=params_check(signatures.SAM_HQ_DECODER),
        ),
    )
