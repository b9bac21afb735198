"""Real SAM models with random weights, for the benchmark and the tests.

Built from ``segment_anything.modeling`` exactly like upstream's builders but
without a checkpoint, so nothing is downloaded. The shim's contract holds for
any weights.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Dict

# encoder embed dim, depth, heads, global attention blocks, prompt dim,
# decoder MLP dim, decoder heads, IoU head hidden dim
_ARCHS: Dict[str, tuple] = {
    "tiny": (32, 2, 2, (1,), 32, 64, 2, 32),
    "vit_b": (768, 12, 12, (2, 5, 8, 11), 256, 2048, 8, 256),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23), 256, 2048, 8, 256),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31), 256, 2048, 8, 256),
}

MODEL_NAMES = tuple(_ARCHS)


def build_sam(name: str = "tiny", *, seed: int = 0, device: Any = "cpu", image_size: int = 1024) -> Any:
    """A ``segment_anything.modeling.Sam`` of architecture ``name``, random weights.

    ``tiny`` keeps SAM's real geometry (1024-pixel input, 64x64 embedding,
    256x256 low-resolution masks) with very small widths, so it runs on a CPU
    in milliseconds; ``vit_b``, ``vit_l`` and ``vit_h`` are the real ones.
    ``image_size`` (a multiple of 16) shrinks the input for very long test
    runs; SAM itself uses 1024.
    """
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    if name not in _ARCHS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    embed, depth, heads, global_attn, prompt_dim, mlp_dim, dec_heads, iou_hidden = _ARCHS[name]
    patch = 16
    grid = image_size // patch
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=depth,
                embed_dim=embed,
                img_size=image_size,
                mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=heads,
                patch_size=patch,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=global_attn,
                window_size=14,
                out_chans=prompt_dim,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=prompt_dim,
                image_embedding_size=(grid, grid),
                input_image_size=(image_size, image_size),
                mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=2, embedding_dim=prompt_dim, mlp_dim=mlp_dim, num_heads=dec_heads
                ),
                transformer_dim=prompt_dim,
                iou_head_depth=3,
                iou_head_hidden_dim=iou_hidden,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    finally:
        torch.random.set_rng_state(gen_state)
    return sam.eval().to(device)


# SAM 2.1 configs shipped inside the sam2 package, by short name.
SAM2_CONFIGS: Dict[str, str] = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
# ``tiny``: the Hiera-T config with a very narrow, shallow trunk and neck. A
# global-attention block may not open a stage, hence two blocks in stage 3.
_SAM2_TINY = (
    "++model.image_encoder.trunk.embed_dim=8",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
    "++model.image_encoder.neck.d_model=32",
)
SAM2_MODEL_NAMES = tuple(SAM2_CONFIGS)


def build_sam2(name: str = "tiny", *, seed: int = 0, device: Any = "cpu") -> Any:
    """A SAM 2.1 model (``sam2.modeling.sam2_base.SAM2Base``), random weights.

    Built by the package's own ``sam2.build_sam.build_sam2`` from its own
    configs with no checkpoint, so nothing is downloaded. ``tiny`` keeps SAM
    2's geometry (1024-pixel input, 64x64 embedding, 256x256 low-resolution
    masks) with a tiny image encoder; the ``hiera_*`` names are the real ones.
    """
    import torch
    from sam2.build_sam import build_sam2 as build

    if name not in SAM2_CONFIGS:
        raise ValueError(f"unknown SAM 2 model {name!r}; choose one of {', '.join(SAM2_MODEL_NAMES)}")
    overrides = list(_SAM2_TINY) if name == "tiny" else []
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build(SAM2_CONFIGS[name], None, device=str(device), hydra_overrides_extra=overrides)
    finally:
        torch.random.set_rng_state(gen_state)


def synthetic_image(height: int, width: int, seed: int = 0) -> Any:
    """A deterministic RGB uint8 frame with smooth structure and noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            128 + 100 * np.sin(x / max(width, 1) * 6.0),
            128 + 100 * np.cos(y / max(height, 1) * 5.0),
            128 + 60 * np.sin((x + y) / max(height + width, 1) * 9.0),
        ],
        axis=-1,
    )
    noisy = base + rng.normal(0, 12, size=base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)
