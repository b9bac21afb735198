"""``samgpu-shim bench --frames``: the whole frame loop, upstream against the shim.

Per frame: a new frame, ``set_image``, one point prompt, the best mask's
statistics, a small JSON packet. Upstream gets numpy frames (PIL resize on
the host, blocking upload); the shim gets frames already on the GPU as uint8
tensors (a GPU decoder or camera pipeline) and is also run with the encoder
precision opt-ins. Quality is reported next to speed: the mask IoU of each
shim variant against upstream's masks, and the embedding difference.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List

import numpy as np
import torch

from .. import _config
from ..syncs import count_cuda_syncs
from . import pipeline as _pipeline
from .bench import device_line, environment, family_predictor, pick_device, say, summary
from .models import synthetic_image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _embedding(predictor: Any) -> torch.Tensor:
    features = getattr(predictor, "_features", None)
    if isinstance(features, dict):  # SAM 2, SAM 3
        return features["image_embed"]
    return predictor.features


def run_model(
    model: str, device: torch.device, image_hw: tuple, frames: int, family: str = "sam", compile: bool = False
) -> Dict[str, Any]:
    import samgpu_shim

    predictor_class, predictor = family_predictor(family, model, device)
    original_set = samgpu_shim.get_original(predictor_class, "set_image")
    original_predict = samgpu_shim.get_original(predictor_class, "predict")
    h, w = image_hw
    host_frames = [synthetic_image(h, w, seed=s) for s in range(4)]
    device_frames = [torch.from_numpy(f).to(device) for f in host_frames]
    coords = np.array([[w // 2, h // 2]], dtype=np.float64)
    labels = np.array([1])

    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def upstream(i: int) -> str:
        # Rolled back, so the encoder's relative-position gathers are
        # upstream's too (the patch is module-wide): a pure upstream baseline.
        _config.configure(as_numpy=True)
        try:
            original_set(predictor, host_frames[i % 4])
            masks, scores, _ = original_predict(predictor, coords, labels)
        finally:
            _config.configure(as_numpy=None)
        return _pipeline.packet_numpy(masks, scores)

    def set_only(setting: Dict[str, Any], i: int) -> None:
        _config.configure(**setting)
        try:
            predictor.set_image(device_frames[i % 4])
        finally:
            _config.configure(**{key: None for key in setting})

    def shim(setting: Dict[str, Any], graphs: bool = False) -> Callable[[int], str]:
        def run(i: int) -> str:
            set_only(setting, i)
            if graphs:  # predict replayed as a CUDA graph
                _config.configure(cuda_graphs=True)
            try:
                masks, scores, _ = predictor.predict(coords, labels)
            finally:
                if graphs:
                    _config.configure(cuda_graphs=None)
            return _pipeline.packet_torch(masks, scores)

        run.setting = setting  # type: ignore[attr-defined]
        return run

    fp32 = "shim, CUDA frame, fp32"
    paths: Dict[str, Callable[[int], str]] = {"upstream (numpy frame, host preprocessing)": upstream,
                                              fp32: shim({"encoder_precision": "fp32"})}
    if device.type == "cuda":
        paths["shim, CUDA frame, tf32"] = shim({"encoder_precision": "tf32"})
        paths["shim, CUDA frame, bf16 autocast"] = shim({"encoder_precision": "bf16"})
        paths["shim, CUDA frame, fast encoder"] = shim({"encoder": "fast"})
        paths["shim, CUDA frame, fast encoder, graph mode"] = shim({"encoder": "fast"}, graphs=True)
        if compile:
            paths["shim, CUDA frame, fast-compile encoder"] = shim({"encoder": "fast-compile"})
            paths["shim, CUDA frame, fast-compile, graph mode"] = shim({"encoder": "fast-compile"}, graphs=True)

    # First call of each path (lazy init, cuDNN choices, compilation): the warm-up cost.
    warmup_ms: Dict[str, float] = {}
    for name, run in paths.items():
        wait()
        t0 = time.perf_counter()
        run(0)
        wait()
        warmup_ms[name] = round((time.perf_counter() - t0) * 1e3, 1)
    # Quality on frame 0, before timing: against upstream and against the fp32 path.
    _config.configure(as_numpy=True)
    try:
        original_set(predictor, host_frames[0])
    finally:
        _config.configure(as_numpy=None)
    ref_features = _embedding(predictor).clone()
    ref_masks = np.asarray(original_predict(predictor, coords, labels)[0]) > 0
    outputs = {}
    for name, run in list(paths.items())[1:]:
        run(0)
        outputs[name] = (np.asarray(predictor.predict(coords, labels, as_numpy=True)[0]) > 0,
                         _embedding(predictor).clone())
    quality = {}
    for name, (masks, features) in outputs.items():
        fp32_masks, fp32_features = outputs[fp32]
        quality[name] = {
            "mask_iou_vs_upstream": round(float(np.mean([_iou(a, b) for a, b in zip(masks, ref_masks)])), 4),
            "mask_iou_vs_fp32": round(float(np.mean([_iou(a, b) for a, b in zip(masks, fp32_masks)])), 4),
            "embedding_max_abs_diff_vs_upstream": round(float((features - ref_features).abs().max()), 5),
            "embedding_max_abs_diff_vs_fp32": round(float((features - fp32_features).abs().max()), 5),
        }
    syncs = {}
    for name, run in paths.items():
        for i in range(2):
            run(i)  # warm-up
        wait()
        if device.type == "cuda":
            syncs[name] = count_cuda_syncs(lambda run=run: run(1))[0]
    samples: Dict[str, List[float]] = {name: [] for name in paths}
    for i in range(frames):
        for name, run in paths.items():
            wait()
            t0 = time.perf_counter()
            run(i)
            samples[name].append((time.perf_counter() - t0) * 1e3)
    # set_image alone (a CUDA frame to its embedding, waited for), per shim path.
    set_image_ms: Dict[str, List[float]] = {}
    for name, run in paths.items():
        setting = getattr(run, "setting", None)
        if setting is None:
            continue
        set_image_ms[name] = []
        for i in range(max(frames // 2, 3)):
            wait()
            t0 = time.perf_counter()
            set_only(setting, i)
            wait()
            set_image_ms[name].append((time.perf_counter() - t0) * 1e3)
    rows = []
    for name in paths:
        figures = summary(samples[name])
        if name in set_image_ms:
            figures["set_image_p50_ms"] = summary(set_image_ms[name])["p50_ms"]
        rows.append({
            "path": name,
            "frames": frames,
            "syncs_per_frame": syncs.get(name),
            "fps": round(1e3 / figures["mean_ms"], 2),
            "first_call_ms": warmup_ms[name],
            **figures,
            **quality.get(name, {}),
            "samples_ms": [round(s, 3) for s in samples[name]],
        })
    result: Dict[str, Any] = {"family": family, "model": model, "image_hw": list(image_hw), "rows": rows}
    if family == "sam":
        result.update(_encoder_alone(predictor, device_frames[0], frames, wait))
    return result


def _encoder_alone(predictor: Any, frame: torch.Tensor, frames: int, wait: Callable[[], None]) -> Dict[str, Any]:
    """segment-anything: set_image alone against the encoder alone, same frame, fp32."""
    encoder_ms: List[float] = []
    set_image_ms: List[float] = []
    predictor.set_image(frame)
    encoder_input = predictor.model.preprocess(
        torch.nn.functional.interpolate(
            frame.permute(2, 0, 1)[None].float(), size=tuple(predictor.input_size), mode="bilinear",
            align_corners=False, antialias=True,
        ).round().clamp(0, 255)
    )
    with torch.no_grad():
        for _ in range(max(frames // 2, 3)):
            wait()
            t0 = time.perf_counter()
            predictor.model.image_encoder(encoder_input)
            wait()
            encoder_ms.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            predictor.set_image(frame)
            wait()
            set_image_ms.append((time.perf_counter() - t0) * 1e3)
    return {"encoder_alone_ms": summary(encoder_ms), "shim_set_image_fp32_ms": summary(set_image_ms)}


def run(args: Any) -> Dict[str, Any]:
    device = pick_device(args.device)
    say(device_line(device))
    h, w = (int(v) for v in args.image.lower().split("x"))
    frames = args.calls if args.calls is not None else (40 if device.type == "cuda" else 5)
    return {
        "environment": environment(device),
        "results": [
            run_model(m, device, (h, w), frames, family=getattr(args, "family", "sam"),
                      compile=getattr(args, "compile", False))
            for m in args.model
        ],
    }


def format_table(report: Dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"frame loop on {env['device']} ({env['device_name']}), torch {env['torch']}"]
    for result in report["results"]:
        lines.append("")
        head = f"{result['family']} {result['model']}: frames {result['image_hw'][0]}x{result['image_hw'][1]}"
        if "encoder_alone_ms" in result:
            head += (f"; fp32 p50: encoder alone {result['encoder_alone_ms']['p50_ms']:.2f} ms, shim "
                     f"set_image(CUDA frame) {result['shim_set_image_fp32_ms']['p50_ms']:.2f} ms")
        lines.append(head)
        lines.append(f"{'path':<44} {'syncs':>5} {'fps':>7} {'p50 ms':>8} {'p99 ms':>8} {'set_img':>8} "
                     f"{'IoU up':>7} {'IoU fp32':>8} {'1st ms':>8}")
        for r in result["rows"]:
            syncs = "-" if r["syncs_per_frame"] is None else str(r["syncs_per_frame"])
            iou = r.get("mask_iou_vs_upstream", "")
            iou32 = r.get("mask_iou_vs_fp32", "")
            set_ms = r.get("set_image_p50_ms")
            set_ms = "" if set_ms is None else f"{set_ms:.2f}"
            lines.append(f"{r['path']:<44} {syncs:>5} {r['fps']:>7.2f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                         f"{set_ms:>8} {iou!s:>7} {iou32!s:>8} {r['first_call_ms']:>8.1f}")
    lines += [
        "",
        "Columns:",
        "  syncs     times one frame makes the host wait for the GPU (-: not counted on this device)",
        "  fps       frames per second through the whole loop (new frame, set_image, one point, the packet)",
        "  p50 p99   time of one frame, ms: median and 99th percentile",
        "  set_img   set_image alone, p50 ms",
        "  IoU up    the best mask's overlap with upstream's (1.0: the same pixels); IoU fp32: with the fp32 path's",
        "  1st ms    the first frame (warm-up, compilation) on its own",
    ]
    return "\n".join(lines)
