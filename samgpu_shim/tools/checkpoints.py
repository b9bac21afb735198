"""SAM models from checkpoint files in the official formats; nothing is downloaded.

A file is read on the CPU with ``torch.load(weights_only=True)`` and its family
told from its keys:

* segment-anything (``sam_vit_b_01ec64.pth`` and its siblings): a bare state
  dict of ``Sam``. Upstream's registry knows three fixed architectures; here
  the file says which one it holds (encoder width, depth, heads, window and
  global-attention blocks, input size and decoder widths are read from the
  tensors' shapes), so the official files and any smaller one load alike. The
  decoder's head count is the one thing no shape shows: it is a named
  architecture's when everything else matches one (vit_b, vit_l, vit_h, tiny),
  SAM's 8 otherwise.
* SAM 2.1 (``sam2.1_hiera_tiny.pt`` ...): ``{"model": state dict}`` of
  ``SAM2Base``. The sam2 package's own config is picked by the trunk's width
  and block count, the one ``build_sam2(config, ckpt_path)`` would be given.
* SAM 3 (``sam3.pt``): the detector's weights under ``detector.`` and the
  tracker's under ``tracker.``, possibly inside ``{"model": ...}``. The
  interactive image predictor runs the tracker's SAM heads on the detector's
  vision backbone; those parts are taken, renamed as ``sam3.model_builder``
  renames them, and must all be there. The video memory parts are not needed
  for images and are left out.

A name given by the caller (``model=``) skips the guessing; the weights must
then fit that architecture exactly.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Tuple

from .models import FAMILIES, SAM1_ARCHS, SAM2_CONFIGS, SAM3_SIZES, Sam1Arch

CHECKPOINT_FAMILIES = ("sam", "sam2", "sam3")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model: one line for people."""


@dataclass
class Loaded:
    """A model built from a checkpoint, and how its architecture was chosen."""

    family: str  # sam, sam2 or sam3
    model: str  # the architecture's name
    module: Any  # the torch module, weights loaded
    how: str  # one line: how the architecture was chosen


def read(path: str) -> Dict[str, Any]:
    """The checkpoint's top-level dict, on the CPU, tensors only (``weights_only``)."""
    import pickle
    import zipfile

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a PyTorch checkpoint of tensors ({first[:160]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return obj


def _inner(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    model = ckpt.get("model")
    return model if isinstance(model, dict) else ckpt


def family_of(ckpt: Dict[str, Any], path: str = "checkpoint") -> str:
    """``sam``, ``sam2`` or ``sam3``, from the checkpoint's keys."""
    state = _inner(ckpt)
    if any(k.startswith(("tracker.", "detector.")) for k in state):
        return "sam3"
    if "image_encoder.trunk.patch_embed.proj.weight" in state:
        return "sam2"
    if "image_encoder.patch_embed.proj.weight" in state:
        return "sam"
    raise CheckpointError(
        f"{path}: not a segment-anything, SAM 2.1 or SAM 3 checkpoint (no image encoder weights under the "
        "names those packages use)"
    )


def _shape(state: Dict[str, Any], key: str, path: str) -> Tuple[int, ...]:
    tensor = state.get(key)
    if tensor is None or not hasattr(tensor, "shape"):
        raise CheckpointError(f"{path}: no {key} in it, so not a whole segment-anything model")
    return tuple(tensor.shape)


def sam1_arch(state: Dict[str, Any], path: str = "checkpoint") -> Tuple[str, Sam1Arch, int, str]:
    """(name, architecture, input size, how it was chosen) of a segment-anything state dict."""
    embed, _, patch, _ = _shape(state, "image_encoder.patch_embed.proj.weight", path)
    if patch != 16:
        raise CheckpointError(f"{path}: patch size {patch}; segment-anything's image encoder uses 16")
    grid = _shape(state, "image_encoder.pos_embed", path)[1]
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")})
    if not blocks:
        raise CheckpointError(f"{path}: no image encoder blocks in it")
    rel = [_shape(state, f"image_encoder.blocks.{i}.attn.rel_pos_h", path) for i in blocks]
    head_dim = rel[0][1]
    global_attn = tuple(i for i, r in zip(blocks, rel) if r[0] == 2 * grid - 1)
    windowed = [r[0] for i, r in zip(blocks, rel) if i not in global_attn]
    found = Sam1Arch(
        embed=embed,
        depth=len(blocks),
        heads=embed // head_dim,
        global_attn=global_attn,
        prompt_dim=_shape(state, "image_encoder.neck.0.weight", path)[0],
        mlp_dim=_shape(state, "mask_decoder.transformer.layers.0.mlp.lin1.weight", path)[0],
        dec_heads=0,  # not in any shape: settled below
        iou_hidden=_shape(state, "mask_decoder.iou_prediction_head.layers.0.weight", path)[0],
        window=(windowed[0] + 1) // 2 if windowed else 14,
    )
    image_size = grid * patch
    for name, arch in SAM1_ARCHS.items():
        if arch._replace(dec_heads=0) == found:
            return name, arch, image_size, f"{name}, recognised from the weights' shapes"
    if (found.prompt_dim // 2) % 8:
        raise CheckpointError(
            f"{path}: a segment-anything model of no known size (decoder width {found.prompt_dim}); "
            "give its architecture with --model"
        )
    arch = found._replace(dec_heads=8)
    name = f"ViT {arch.embed} wide, {arch.depth} blocks, {image_size} px"
    return name, arch, image_size, f"{name}, read from the weights' shapes (decoder heads: SAM's 8)"


# (trunk width, trunk blocks) -> SAM 2.1 config short name
_SAM2_TRUNKS: Dict[Tuple[int, int], str] = {
    (8, 5): "tiny",
    (96, 12): "hiera_t",
    (96, 16): "hiera_s",
    (112, 24): "hiera_b+",
    (144, 48): "hiera_l",
}


def sam2_name(state: Dict[str, Any], path: str = "checkpoint") -> str:
    """The SAM 2.1 config short name whose trunk the state dict holds."""
    width = _shape(state, "image_encoder.trunk.patch_embed.proj.weight", path)[0]
    blocks = {int(k.split(".")[3]) for k in state if k.startswith("image_encoder.trunk.blocks.")}
    name = _SAM2_TRUNKS.get((width, len(blocks)))
    if name is None:
        raise CheckpointError(
            f"{path}: a SAM 2 trunk {width} wide with {len(blocks)} blocks matches none of the SAM 2.1 configs "
            f"({', '.join(n for n in SAM2_CONFIGS if n != 'tiny')}); give one with --model"
        )
    return name


_SAM3_BACKBONE = "detector.backbone.vision_backbone."
# What SAM 3's interactive image predictor runs: these must all be loaded.
_SAM3_IMAGE_PARTS = ("backbone.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")


def sam3_state(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """The tracker model's state dict, from a SAM 3 checkpoint's names."""
    state = _inner(ckpt)
    out = {"backbone.vision_backbone." + k[len(_SAM3_BACKBONE):]: v for k, v in state.items()
           if k.startswith(_SAM3_BACKBONE)}
    out.update({k[len("tracker."):]: v for k, v in state.items()
                if k.startswith("tracker.") and not k.startswith("tracker.backbone.")})
    return out


def sam3_name(state: Dict[str, Any], path: str = "checkpoint") -> str:
    """The SAM 3 size (:data:`SAM3_SIZES`) whose vision trunk the tracker state dict holds."""
    width = _shape(state, "backbone.vision_backbone.trunk.patch_embed.proj.weight", path)[0]
    for name, size in SAM3_SIZES.items():
        if size[1] == width:
            return name
    raise CheckpointError(f"{path}: a SAM 3 vision trunk {width} wide matches no known size "
                          f"({', '.join(SAM3_SIZES)})")


def _fit(module: Any, state: Dict[str, Any], path: str, what: str, needed: Optional[Iterable[str]] = None) -> int:
    """Load ``state`` into ``module``; a missing, extra or mis-shaped weight is a CheckpointError.

    With ``needed`` (name prefixes), only those parts are loaded and checked.
    Returns the number of tensors loaded.
    """
    if needed is not None:
        prefixes = tuple(needed)
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        first = lines[0] if lines else str(exc).strip().splitlines()[0]
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise CheckpointError(f"{path} does not fit {what}: {first}{more}") from None
    missing = list(result.missing_keys)
    if needed is not None:
        missing = [k for k in missing if k.startswith(prefixes)]
    unexpected = [] if needed is not None else list(result.unexpected_keys)
    problems = []
    if missing:
        problems.append(f"{len(missing)} weight(s) missing, e.g. {missing[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} weight(s) it does not have, e.g. {unexpected[0]}")
    if problems:
        raise CheckpointError(f"{path} does not fit {what}: {'; '.join(problems)}")
    return len(state)


def _same_size(asked: str, found: Any, path: str) -> None:
    """A model asked for by name must be the one the file holds, when the file's is a known one:
    said at once, before the asked architecture is built (seconds for the big ones)."""
    try:
        name = found()
    except CheckpointError:
        return  # a size without a name: the weights' own fit decides
    if name != asked and not name.startswith("ViT "):
        raise CheckpointError(f"{path}: holds {name}, not {asked}")


def load(path: str, *, family: Optional[str] = None, model: Optional[str] = None, device: Any = "cpu") -> Loaded:
    """Build the model a checkpoint holds and load its weights.

    ``family`` (``sam``, ``sam2``, ``sam3``) and ``model`` (an architecture
    name of that family) are read from the file when not given.
    """
    import torch

    ckpt = read(path)
    found = family_of(ckpt, path)
    if family is not None and family != found:
        raise CheckpointError(f"{path}: holds a {found} model, not {family}")
    package, extra, _ = FAMILIES[found]
    if importlib.util.find_spec(package) is None:
        raise CheckpointError(f"{path}: holds a {found} model, and {package} is not installed "
                              f"(pip install 'samgpu-shim[{extra}]')")
    if found == "sam":
        from .models import build_sam_arch

        state = _inner(ckpt)
        if model is None:
            name, arch, image_size, how = sam1_arch(state, path)
        elif model in SAM1_ARCHS:
            _same_size(model, lambda: sam1_arch(state, path)[0], path)
            name, arch, how = model, SAM1_ARCHS[model], f"{model}, as asked"
            image_size = _shape(state, "image_encoder.pos_embed", path)[1] * 16
        else:
            raise CheckpointError(f"{path}: holds a sam model; --model {model} is not one of its "
                                  f"({', '.join(SAM1_ARCHS)})")
        module = build_sam_arch(arch, image_size=image_size)
        _fit(module, state, path, f"segment-anything {name}")
    elif found == "sam2":
        from .models import build_sam2

        if "model" not in ckpt:
            raise CheckpointError(f"{path}: a SAM 2 checkpoint keeps its weights under 'model'; this one does not")
        state = ckpt["model"]
        if model is not None and model not in SAM2_CONFIGS:
            raise CheckpointError(f"{path}: holds a sam2 model; --model {model} is not one of its "
                                  f"({', '.join(SAM2_CONFIGS)})")
        if model is not None:
            _same_size(model, lambda: sam2_name(state, path), path)
        name = model or sam2_name(state, path)
        how = f"{name}, as asked" if model else f"{name} ({SAM2_CONFIGS[name]}), recognised from the trunk"
        module = build_sam2(name)
        _fit(module, state, path, f"SAM 2.1 {name}")
    else:
        from .models import build_sam3

        state = sam3_state(ckpt)
        if model is not None and model not in SAM3_SIZES:
            raise CheckpointError(f"{path}: holds a sam3 model; --model {model} is not one of its "
                                  f"({', '.join(SAM3_SIZES)})")
        if model is not None:
            _same_size(model, lambda: sam3_name(state, path), path)
        name = model or sam3_name(state, path)
        module = build_sam3(name)
        count = _fit(module, state, path, f"SAM 3 {name}", needed=_SAM3_IMAGE_PARTS)
        how = (f"{name}, {'as asked' if model else 'recognised from the vision trunk'}; {count} tensors of the "
               "image predictor loaded (the video memory parts are not used for images)")
    return Loaded(found, name, module.eval().to(torch.device(device)), how)


def predictor_for(family: str, module: Any) -> Tuple[Any, Any]:
    """(predictor class, predictor) of ``family`` over a built model."""
    if family == "sam2":
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return SAM2ImagePredictor, SAM2ImagePredictor(module)
    if family == "sam3":
        from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

        from .models import sam3_predictor

        return SAM3InteractiveImagePredictor, sam3_predictor(module)
    from segment_anything import SamPredictor

    return SamPredictor, SamPredictor(module)


def load_predictor(path: str, device: Any = None, *, model: Optional[str] = None) -> Any:
    """The image predictor of the family a checkpoint holds (``SamPredictor``,
    ``SAM2ImagePredictor`` or SAM 3's ``SAM3InteractiveImagePredictor``), its
    weights loaded; ``device`` defaults to CUDA when there is one."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load(path, model=model, device=device)
    return predictor_for(loaded.family, loaded.module)[1]
