"""Small models of the SAM 1 forks, random weights, from each fork's own modules."""

from __future__ import annotations

from functools import partial

import torch


def _seeded(build):
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        return build().eval()
    finally:
        torch.random.set_rng_state(state)


def tiny_sam_hq():
    from segment_anything_hq.modeling import ImageEncoderViT, MaskDecoderHQ, PromptEncoder, Sam, TwoWayTransformer

    def build():
        return Sam(
            image_encoder=ImageEncoderViT(
                depth=2, embed_dim=32, img_size=1024, mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=2, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,),
                window_size=14, out_chans=32,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=32, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
            ),
            mask_decoder=MaskDecoderHQ(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
                transformer_dim=32, iou_head_depth=3, iou_head_hidden_dim=32, vit_dim=32,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )

    return _seeded(build)


def mobile_sam_vit_t():
    """MobileSAM's own architecture (TinyViT encoder, about 10M parameters)."""
    from mobile_sam.build_sam import build_sam_vit_t

    return _seeded(build_sam_vit_t)


def mobilesam_lite_vit_t():
    """The same TinyViT MobileSAM, from mobilesam-lite's copy of the package."""
    from mobilesam_lite.mobile_sam.build_sam import build_sam_vit_t

    return _seeded(build_sam_vit_t)


def efficientvit_sam_l0():
    """EfficientViT-SAM L0, the package's own builder, random weights (about 35M parameters)."""
    from efficientsam.sam_model_zoo import create_efficientvit_sam_model

    return _seeded(lambda: create_efficientvit_sam_model("efficientvit-sam-l0", pretrained=False))


def tiny_sam2():
    """SAM 2.1 from the package's own builder and configs, a tiny image encoder."""
    from samgpu_shim.tools.models import build_sam2

    return build_sam2("tiny", seed=0)


def tiny_sam3():
    """SAM 3's tracker heads on a tiny ViT, from sam3's own modules."""
    from samgpu_shim.tools.models import build_sam3

    return build_sam3("tiny", seed=0)


def sam3_predictor(model=None):
    """SAM 3's interactive predictor over ``model`` (default: the tiny one).

    Hole filling is off: on a CPU it needs scikit-image, and without it
    upstream warns and skips on every call (the same in both modes).
    """
    from samgpu_shim.tools.models import sam3_predictor as make

    return make(model if model is not None else tiny_sam3(), max_hole_area=0.0)
