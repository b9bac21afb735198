"""Real SAM models with random weights, for the benchmark and the tests.

Built from ``segment_anything.modeling`` exactly like upstream's builders but
without a checkpoint, so nothing is downloaded. The shim's contract holds for
any weights.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Dict, NamedTuple, Tuple


class Sam1Arch(NamedTuple):
    """A segment-anything architecture: what its builder needs beyond the defaults."""

    embed: int  # encoder embed dim
    depth: int  # encoder blocks
    heads: int  # encoder attention heads
    global_attn: Tuple[int, ...]  # blocks with global attention (the others are windowed)
    prompt_dim: int  # prompt and decoder width
    mlp_dim: int  # decoder MLP width
    dec_heads: int  # decoder attention heads
    iou_hidden: int  # IoU head hidden width
    window: int = 14  # encoder attention window


SAM1_ARCHS: Dict[str, Sam1Arch] = {
    "tiny": Sam1Arch(32, 2, 2, (1,), 32, 64, 2, 32),
    "vit_b": Sam1Arch(768, 12, 12, (2, 5, 8, 11), 256, 2048, 8, 256),
    "vit_l": Sam1Arch(1024, 24, 16, (5, 11, 17, 23), 256, 2048, 8, 256),
    "vit_h": Sam1Arch(1280, 32, 16, (7, 15, 23, 31), 256, 2048, 8, 256),
}

MODEL_NAMES = tuple(SAM1_ARCHS)


def build_sam(
    name: str = "tiny", *, seed: int = 0, device: Any = "cpu", image_size: int = 1024, init_on_device: bool = False
) -> Any:
    """A ``segment_anything.modeling.Sam`` of architecture ``name``, random weights.

    ``tiny`` keeps SAM's real geometry (1024-pixel input, 64x64 embedding,
    256x256 low-resolution masks) with very small widths, so it runs on a CPU
    in milliseconds; ``vit_b``, ``vit_l`` and ``vit_h`` are the real ones.
    ``image_size`` (a multiple of 16) shrinks the input for very long test
    runs; SAM itself uses 1024. ``init_on_device``: the random weights are
    drawn where the model runs (vit_h in a second on a GPU instead of many on
    a CPU; other numbers than a CPU build, and any weights do).
    """
    if name not in SAM1_ARCHS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return build_sam_arch(SAM1_ARCHS[name], seed=seed, device=device, image_size=image_size,
                          init_on_device=init_on_device)


def build_sam_arch(arch: Sam1Arch, *, seed: int = 0, device: Any = "cpu", image_size: int = 1024,
                   init_on_device: bool = False) -> Any:
    """A ``segment_anything.modeling.Sam`` of any :class:`Sam1Arch`, random weights
    (the checkpoint loader builds what a state dict describes with it)."""
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    patch = 16
    grid = image_size // patch
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    place = torch.device(device) if init_on_device else contextlib.nullcontext()
    try:
        with place:
            sam = Sam(
                image_encoder=ImageEncoderViT(
                    depth=arch.depth,
                    embed_dim=arch.embed,
                    img_size=image_size,
                    mlp_ratio=4,
                    norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                    num_heads=arch.heads,
                    patch_size=patch,
                    qkv_bias=True,
                    use_rel_pos=True,
                    global_attn_indexes=arch.global_attn,
                    window_size=arch.window,
                    out_chans=arch.prompt_dim,
                ),
                prompt_encoder=PromptEncoder(
                    embed_dim=arch.prompt_dim,
                    image_embedding_size=(grid, grid),
                    input_image_size=(image_size, image_size),
                    mask_in_chans=16,
                ),
                mask_decoder=MaskDecoder(
                    num_multimask_outputs=3,
                    transformer=TwoWayTransformer(
                        depth=2, embedding_dim=arch.prompt_dim, mlp_dim=arch.mlp_dim, num_heads=arch.dec_heads
                    ),
                    transformer_dim=arch.prompt_dim,
                    iou_head_depth=3,
                    iou_head_hidden_dim=arch.iou_hidden,
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


def build_sam2(name: str = "tiny", *, seed: int = 0, device: Any = "cpu", init_on_device: bool = False) -> Any:
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
    place = torch.device(device) if init_on_device else contextlib.nullcontext()
    try:
        with place:
            return build(SAM2_CONFIGS[name], None, device=str(device), hydra_overrides_extra=overrides)
    finally:
        torch.random.set_rng_state(gen_state)


# SAM 3's interactive predictor (its tracker's SAM heads on its ViT), by
# short name: (image size, trunk width, depth, heads, window, global blocks,
# SAM head width). ``tiny`` keeps the low-resolution mask at 256x256 (so the
# same mask prompts fit every family) with a trunk a CPU runs in a blink;
# ``full`` is the released geometry (1008 px, the 1024-wide 32-block ViT).
SAM3_SIZES: Dict[str, tuple] = {
    "tiny": (896, 32, 2, 2, 8, (1,), 32),
    "full": (1008, 1024, 32, 16, 24, (7, 15, 23, 31), 256),
}
SAM3_MODEL_NAMES = tuple(SAM3_SIZES)


def build_sam3(name: str = "tiny", *, seed: int = 0, device: Any = "cpu") -> Any:
    """SAM 3's tracker model (``Sam3TrackerBase``) for its interactive image
    predictor, from sam3's own modules, random weights, nothing downloaded.

    sam3's builder hard-codes CUDA allocations and a text vocabulary file, so
    the parts are put together here the way ``sam3.model_builder`` does,
    with the sizes of :data:`SAM3_SIZES`. Give the model to
    :func:`sam3_predictor` (the predictor class assumes 1008 pixels).
    """
    import torch
    from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention
    from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
    from sam3.model.model_misc import TransformerWrapper
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_tracker_base import Sam3TrackerBase
    from sam3.model.vitdet import ViT
    from sam3.model.vl_combiner import SAM3VLBackbone
    from sam3.sam.transformer import RoPEAttention

    if name not in SAM3_SIZES:
        raise ValueError(f"unknown SAM 3 model {name!r}; choose one of {', '.join(SAM3_MODEL_NAMES)}")
    size, width, depth, heads, window, global_blocks, dim = SAM3_SIZES[name]
    grid = size // 14
    mem_dim = max(dim // 4, 8)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    # Built where it runs: the full model's 32 ViT blocks initialise in seconds
    # on a GPU (the weights then differ from a CPU build's; any weights do).
    try:
        with torch.device(device):
            trunk = ViT(
                img_size=size, pretrain_img_size=336 if name == "full" else size, patch_size=14, embed_dim=width,
                depth=depth, num_heads=heads, mlp_ratio=4.625, norm_layer="LayerNorm", drop_path_rate=0.0,
                qkv_bias=True, use_abs_pos=True, tile_abs_pos=True, global_att_blocks=global_blocks,
                rel_pos_blocks=(), use_rope=True, use_interp_rope=True, window_size=window,
                pretrain_use_cls_token=True, retain_cls_token=False, ln_pre=True, ln_post=False,
                return_interm_layers=False, bias_patch_embed=False,
            )
            position = PositionEmbeddingSine(num_pos_feats=dim, normalize=True, scale=None, temperature=10000)
            neck = Sam3DualViTDetNeck(
                trunk=trunk, position_encoding=position, d_model=dim, scale_factors=[4.0, 2.0, 1.0, 0.5],
                add_sam2_neck=True,
            )
            attention = dict(num_heads=1, downsample_rate=1, dropout=0.0, rope_theta=10000.0,
                             feat_sizes=[grid, grid], use_fa3=False, use_rope_real=False)
            layer = TransformerDecoderLayerv2(
                cross_attention_first=False, activation="relu", dim_feedforward=4 * dim, dropout=0.0,
                pos_enc_at_attn=False, pre_norm=True, d_model=dim, pos_enc_at_cross_attn_keys=True,
                pos_enc_at_cross_attn_queries=False,
                self_attention=RoPEAttention(embedding_dim=dim, **attention),
                cross_attention=RoPEAttention(embedding_dim=dim, kv_in_dim=mem_dim, rope_k_repeat=True, **attention),
            )
            memory_attention = TransformerWrapper(
                encoder=TransformerEncoderCrossAttention(
                    remove_cross_attention_layers=[], batch_first=True, d_model=dim, frozen=False,
                    pos_enc_at_input=True, layer=layer, num_layers=1, use_act_checkpoint=False,
                ),
                decoder=None,
                d_model=dim,
            )
            memory_encoder = SimpleMaskEncoder(
                out_dim=mem_dim,
                position_encoding=PositionEmbeddingSine(num_pos_feats=mem_dim, normalize=True, scale=None,
                                                        temperature=10000),
                mask_downsampler=SimpleMaskDownSampler(kernel_size=3, stride=2, padding=1, interpol_size=[size, size]),
                fuser=SimpleFuser(layer=CXBlock(dim=dim, kernel_size=7, padding=3, layer_scale_init_value=1e-6,
                                                use_dwconv=True), num_layers=1),
            )
            model = Sam3TrackerBase(
                backbone=SAM3VLBackbone(scalp=1, visual=neck, text=None),
                transformer=memory_attention,
                maskmem_backbone=memory_encoder,
                image_size=size,
                backbone_stride=14,
                multimask_output_in_sam=True,
                sam_mask_decoder_extra_args={
                    "dynamic_multimask_via_stability": True,
                    "dynamic_multimask_stability_delta": 0.05,
                    "dynamic_multimask_stability_thresh": 0.98,
                },
            )
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval().to(device)


def sam3_predictor(model: Any, **kwargs: Any) -> Any:
    """``SAM3InteractiveImagePredictor`` over ``model``, its feature sizes set
    for the model's image size (upstream hard-codes those of 1008 pixels)."""
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

    predictor = SAM3InteractiveImagePredictor(model, **kwargs)
    grid = model.image_size // model.backbone_stride
    predictor._bb_feat_sizes = [(4 * grid, 4 * grid), (2 * grid, 2 * grid), (grid, grid)]
    return predictor


# --family -> (package it needs, pip extra that brings it, model names it
# accepts). Kept here, with no torch import, so that the command line checks
# its arguments before importing anything heavy.
FAMILIES: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "sam": ("segment_anything", "bench", MODEL_NAMES),
    "sam2": ("sam2", "sam2", SAM2_MODEL_NAMES),
    "sam3": ("sam3", "sam3", SAM3_MODEL_NAMES),
    "hq": ("segment_anything_hq", "hq", ("vit_b", "vit_l", "vit_h")),
    "mobile": ("mobile_sam", "mobile", ("vit_t",)),
    "efficientvit": ("efficientsam", "efficientvit", ("l0", "l1", "l2", "xl0", "xl1")),
}


def read_image(path: str) -> Any:
    """An image file as an (H, W, 3) uint8 RGB array (what every predictor's set_image takes)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return np.array(img.convert("RGB"))  # writable: torchvision warns on a read-only array


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
