"""``samgpu-shim segment``: one image, your prompts, upstream and the shim, an overlay.

The model comes from a checkpoint file (:mod:`.checkpoints`) or, without one,
has random weights. Both paths answer the same prompts on the same image;
their answers are compared, timed interleaved and their host syncs counted
with the bench's own code, and the shim's masks are drawn over the image
with their scores.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import bench as _bench
from . import checkpoints as _checkpoints
from .models import read_image

# Mask colours (RGB), one per mask in order.
_COLOURS = ((30, 144, 255), (255, 140, 0), (50, 205, 50), (220, 20, 60), (186, 85, 211))


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build(family: Optional[str], model: Optional[str], checkpoint: Optional[str],
          device: torch.device) -> Dict[str, Any]:
    """The predictor to run, from the checkpoint (family and model read from it
    unless given) or with random weights (both needed)."""
    if checkpoint:
        loaded = _checkpoints.load(checkpoint, family=family, model=model, device=device)
        cls, predictor = _checkpoints.predictor_for(loaded.family, loaded.module)
        return {"family": loaded.family, "model": loaded.model, "weights": checkpoint, "how": loaded.how,
                "class": cls, "predictor": predictor}
    assert family is not None and model is not None
    cls, predictor = _bench.family_predictor(family, model, device)
    return {"family": family, "model": model, "weights": None, "how": "random weights (no --checkpoint)",
            "class": cls, "predictor": predictor}


def prompts(points: Sequence[Tuple[float, float, int]], box: Optional[Sequence[float]],
            multimask: Optional[bool] = None) -> Dict[str, Any]:
    """predict() keywords for the prompts; one mask per prompt set unless a
    single point is the only prompt (SAM's advice: three masks for an ambiguous prompt)."""
    kwargs: Dict[str, Any] = {"point_coords": None, "point_labels": None, "box": None}
    if points:
        kwargs["point_coords"] = np.array([[x, y] for x, y, _ in points], dtype=np.float64)
        kwargs["point_labels"] = np.array([label for _, _, label in points])
    if box is not None:
        kwargs["box"] = np.array(box, dtype=np.float64)
    kwargs["multimask_output"] = (len(points) == 1 and box is None) if multimask is None else multimask
    return kwargs


# Warnings the SAM packages raise on a CPU (a missing optional extension, their
# use of deprecated torch APIs): theirs to fix, noise on the user's screen.
_THEIRS = r"(sam2|sam3|segment_anything\w*|mobile_sam|mobilesam_lite|efficientsam|timm|torch\.jit)(\.|$)"


def run(image_path: str, points: Sequence[Tuple[float, float, int]], box: Optional[Sequence[float]], *,
        family: Optional[str], model: Optional[str], checkpoint: Optional[str], device: torch.device, calls: int,
        warmup: int = 1) -> Dict[str, Any]:
    """Both paths on the image with the prompts: the report :func:`format_report` and :func:`overlay` read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=_THEIRS)
        warnings.filterwarnings("ignore", category=FutureWarning, module=_THEIRS)
        return _run(image_path, points, box, family=family, model=model, checkpoint=checkpoint, device=device,
                    calls=calls, warmup=warmup)


def _run(image_path: str, points: Sequence[Tuple[float, float, int]], box: Optional[Sequence[float]], *,
         family: Optional[str], model: Optional[str], checkpoint: Optional[str], device: torch.device, calls: int,
         warmup: int) -> Dict[str, Any]:
    import samgpu_shim

    if not samgpu_shim.is_patched():
        samgpu_shim.patch()
    image = read_image(image_path)
    _say(f"loading {checkpoint} ..." if checkpoint else f"building {family} {model} with random weights ...")
    built = build(family, model, checkpoint, device)
    predictor = built["predictor"]
    original = samgpu_shim.get_original(built["class"], "predict")
    _say(f"model: {built['family']} {built['how']}")
    started = time.perf_counter()
    predictor.set_image(image)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    set_image_ms = (time.perf_counter() - started) * 1e3
    kwargs = prompts(points, box)

    def upstream() -> Any:
        return original(predictor, **kwargs)

    def shim() -> Any:
        out = predictor.predict(**kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    ref = upstream()
    got = shim()
    identical = all(np.array_equal(r, g.cpu().numpy()) for r, g in zip(ref, got))
    paths = {"upstream predict (numpy out)": upstream, "shim predict (tensors out)": shim}
    for fn in paths.values():
        for _ in range(warmup):
            fn()
    syncs = {name: _bench._syncs_per_call(fn, device, repeats=2) for name, fn in paths.items()}
    samples: Dict[str, List[float]] = {name: [] for name in paths}
    _say(f"timing {calls} call(s) of each path, interleaved ...")
    for _ in range(calls):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    masks = got[0].detach().cpu().numpy()
    scores = got[1].detach().float().cpu().numpy()
    return {
        "image": image_path,
        "image_hw": list(image.shape[:2]),
        "family": built["family"],
        "model": built["model"],
        "weights": built["weights"],
        "how": built["how"],
        "environment": _bench.environment(device),
        "points": [list(p) for p in points],
        "box": None if box is None else list(box),
        "multimask_output": kwargs["multimask_output"],
        "set_image_ms": round(set_image_ms, 2),
        "identical_to_upstream": identical,
        "scores": [round(float(s), 4) for s in scores],
        "rows": [{"path": name, "calls": calls, **syncs[name], **_bench.summary(samples[name])}
                 for name in paths],
        "_image": image,
        "_masks": masks > 0 if masks.dtype != bool else masks,
    }


def format_report(report: Dict[str, Any]) -> str:
    """The report for people: image, model (and whether its weights are random), both paths, the scores."""
    env = report["environment"]
    rows = {r["path"]: r for r in report["rows"]}
    up, shim = rows["upstream predict (numpy out)"], rows["shim predict (tensors out)"]
    h, w = report["image_hw"]
    prompt = []
    if report["points"]:
        prompt.append(f"{len(report['points'])} point(s)")
    if report["box"] is not None:
        prompt.append("a box")
    lines = [
        f"image: {report['image']} ({w}x{h}), prompt: {' and '.join(prompt)}",
        f"model: {report['family']} {report['how']}",
        f"device: {env['device']} ({env['device_name']}), torch {env['torch']}; "
        f"set_image {report['set_image_ms']:.1f} ms",
    ]
    if report["weights"] is None:
        lines.append("RANDOM WEIGHTS: the masks and scores say nothing about the image; give --checkpoint "
                     "sam_vit_b_01ec64.pth (or a SAM 2.1 / SAM 3 checkpoint) for real ones")
    lines.append(f"{'path':<30} {'calls':>5} {'syncs/call':>10} {'p50 ms':>9} {'max ms':>9}")
    for r in report["rows"]:
        lines.append(f"{r['path']:<30} {r['calls']:>5} {r['syncs_per_call']:>10.1f} {r['p50_ms']:>9.3f} "
                     f"{r['max_ms']:>9.3f}")
    same = "identical" if report["identical_to_upstream"] else "NOT identical"
    lines.append(f"results: {same} to upstream; the shim took {shim['p50_ms'] / up['p50_ms']:.2f}x upstream's time "
                 f"(p50), with {shim['syncs_per_call']:.0f} host syncs per call against {up['syncs_per_call']:.0f}")
    if report["rows"][0]["sync_measure"].startswith("sync-prone"):
        lines.append("(on a CPU, syncs/call counts the operations that would make the host wait for a GPU: "
                     "nonzero, .item(), .cpu() ...)")
    scores = report["scores"]
    best = int(np.argmax(scores))
    lines.append("masks: " + ", ".join(f"{i + 1}: score {s:.3f}{' (best)' if i == best else ''}"
                                       for i, s in enumerate(scores)))
    return "\n".join(lines)


def overlay(report: Dict[str, Any], path: str, panel_width: int = 512) -> None:
    """A PNG with one panel per mask: the image, the mask tinted over it, the
    prompts (foreground points green, background red, the box yellow) and
    the mask's score above it."""
    from PIL import Image, ImageDraw, ImageFont

    image, masks, scores = report["_image"], report["_masks"], report["scores"]
    h, w = image.shape[:2]
    scale = min(1.0, panel_width / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    caption = 22
    font = ImageFont.load_default()
    sheet = Image.new("RGB", (size[0] * len(masks), size[1] + caption), "white")
    best = int(np.argmax(scores))
    base = image.astype(np.float32)
    for i, mask in enumerate(masks):
        colour = np.array(_COLOURS[i % len(_COLOURS)], dtype=np.float32)
        tinted = base.copy()
        tinted[mask] = 0.45 * tinted[mask] + 0.55 * colour
        panel = Image.fromarray(tinted.astype(np.uint8)).resize(size, Image.BILINEAR)
        draw = ImageDraw.Draw(panel)
        r = max(3, round(min(size) / 80))
        for x, y, label in report["points"]:
            cx, cy = x * scale, y * scale
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(0, 200, 0) if label else (220, 0, 0),
                         outline="white")
        if report["box"] is not None:
            draw.rectangle([v * scale for v in report["box"]], outline=(255, 215, 0), width=2)
        sheet.paste(panel, (i * size[0], caption))
        text = f"mask {i + 1}  score {scores[i]:.3f}{'  best' if i == best else ''}"
        if report["weights"] is None:
            text += "  (random weights)"
        ImageDraw.Draw(sheet).text((i * size[0] + 6, 5), text, fill="black", font=font)
    sheet.save(path, format="PNG")
