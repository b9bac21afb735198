"""``samgpu-shim bench``: upstream and the shim side by side, interleaved.

For each model, one process, one predictor, one image: every iteration calls
each path once, so drifts in clocks or load hit all paths alike. Latency is
host wall time until the result is usable: upstream returns host arrays; the
shim's call is followed by a wait for its device, so device work is counted.
Host syncs per call are counted in a separate, untimed pass.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from .._telemetry import KPI_LOGGER_NAME
from ..syncs import SyncProneOps, count_cuda_syncs
from . import pipeline as _pipeline
from .models import (
    FAMILIES,
    build_sam,
    build_sam2,
    build_sam3,
    read_image,
    sam3_predictor,
    synthetic_image,
)

BENCH_FAMILIES = FAMILIES
FAMILY_MODELS = {family: names for family, (_, _, names) in BENCH_FAMILIES.items()}


def family_predictor(family: str, model: str, device: torch.device) -> Tuple[Any, Any]:
    """(predictor class, predictor) of ``family`` over ``model``, random weights (seed 0).

    Warnings the SAM packages raise while being imported (timm's deprecations,
    registry overwrites) are theirs, not the user's: they are not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, message=".*(registry|deprecated).*")
        return _family_predictor(family, model, device)


def _family_predictor(family: str, model: str, device: torch.device) -> Tuple[Any, Any]:
    if family == "sam2":
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return SAM2ImagePredictor, SAM2ImagePredictor(build_sam2(model, device=device))
    if family == "sam3":
        from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

        return SAM3InteractiveImagePredictor, sam3_predictor(build_sam3(model, device=device))
    if family == "sam":
        from segment_anything import SamPredictor

        return SamPredictor, SamPredictor(build_sam(model, device=device))
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        if family == "hq":
            from segment_anything_hq import SamPredictor, sam_model_registry

            sam = sam_model_registry[model](checkpoint=None)
        elif family == "mobile":
            from mobile_sam import SamPredictor, sam_model_registry

            sam = sam_model_registry[model](checkpoint=None)
        else:
            from efficientsam.models.efficientvit.sam import EfficientViTSamPredictor as SamPredictor
            from efficientsam.sam_model_zoo import create_efficientvit_sam_model

            sam = create_efficientvit_sam_model(f"efficientvit-sam-{model}", pretrained=False)
    finally:
        torch.random.set_rng_state(state)
    return SamPredictor, SamPredictor(sam.eval().to(device))


class _FormattingHandler(logging.Handler):
    """Formats each KPI record (JSON included) and drops it: the cost of KPI on."""

    def emit(self, record: logging.LogRecord) -> None:
        record.getMessage()


def say(text: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(text, file=sys.stderr, flush=True)


def device_line(device: torch.device) -> str:
    """The device, its name, torch and numpy: the bench's first line once torch is imported."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    threads = "" if device.type == "cuda" else f", {torch.get_num_threads()} threads"
    return f"device: {device} ({name}), torch {torch.__version__}, numpy {np.__version__}{threads}"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _percentile(samples: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def summary(samples_ms: List[float]) -> Dict[str, float]:
    return {
        "p50_ms": round(_percentile(samples_ms, 50), 4),
        "p99_ms": round(_percentile(samples_ms, 99), 4),
        "max_ms": round(max(samples_ms), 4),
        "mean_ms": round(statistics.fmean(samples_ms), 4),
    }


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, label: str, quiet: bool = False) -> Any:
    """A progress bar on a terminal (tqdm); nothing when piped, with --json, or without tqdm."""
    if quiet or not sys.stderr.isatty():
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, desc=label, unit="call", leave=False, file=sys.stderr)


# Round-to-round spread of the p50 above which figures are called noisy.
NOISY_SPREAD = 0.2


def noise(samples: List[float], rounds: int) -> float:
    """Spread of the p50 between consecutive rounds: (max - min) / median of the round p50s."""
    size = max(len(samples) // rounds, 1)
    p50s = [statistics.median(samples[i : i + size]) for i in range(0, size * rounds, size) if samples[i : i + size]]
    if len(p50s) < 2:
        return 0.0
    return (max(p50s) - min(p50s)) / statistics.median(p50s)


def _syncs_per_call(fn: Callable[[], Any], device: torch.device, repeats: int = 5) -> Dict[str, Any]:
    if device.type == "cuda":
        total = 0
        for _ in range(repeats):
            n, _ = count_cuda_syncs(fn)
            total += n
        torch.cuda.synchronize(device)
        return {"syncs_per_call": total / repeats, "sync_measure": "cuda sync debug mode"}
    ops = SyncProneOps()
    with ops:
        for _ in range(repeats):
            fn()
    return {"syncs_per_call": len(ops.calls) / repeats, "sync_measure": "sync-prone ops (CPU proxy)"}


def run_model(
    model: str,
    device: torch.device,
    image_hw: tuple,
    calls: int,
    warmup: int,
    pipeline: bool = True,
    cuda_graphs: bool = False,
    kpi: bool = False,
    family: str = "sam",
    quiet: bool = False,
    metrics: bool = False,
    compile_reference: bool = False,
    built: Optional[Tuple[Any, Any]] = None,
    image: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """One model's rows. ``built``: (predictor class, predictor) already made
    (from a checkpoint); ``image``: the frame to use instead of a synthetic one."""
    import samgpu_shim

    if not samgpu_shim.is_patched():
        samgpu_shim.patch()
    if built is None:
        say(f"{model}: building the model (random weights) ...")
        built = family_predictor(family, model, device)
    predictor_class, predictor = built
    original = samgpu_shim.get_original(predictor_class, "predict")
    if image is None:
        image = synthetic_image(*image_hw)
    image_hw = tuple(image.shape[:2])
    say(f"{model}: set_image, checking that both paths agree, warm-up ...")
    started = time.perf_counter()
    predictor.set_image(image)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    set_image_ms = (time.perf_counter() - started) * 1e3
    h, w = image_hw
    coords = np.array([[w // 2, h // 2]], dtype=np.float64)
    labels = np.array([1])

    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def upstream_predict() -> Any:
        return original(predictor, coords, labels)

    def shim_predict() -> Any:
        out = predictor.predict(coords, labels)
        wait()
        return out

    def upstream_pipeline() -> str:
        masks, scores, _ = original(predictor, coords, labels)
        return _pipeline.packet_numpy(masks, scores)

    def shim_pipeline() -> str:
        masks, scores, _ = predictor.predict(coords, labels)
        return _pipeline.packet_torch(masks, scores)

    # Paths that need a switch (graph mode, metrics) have it flipped around
    # the call, outside the clock: configure() is not part of a call's cost.
    switches: Dict[str, List[Callable[[bool], None]]] = {}

    def graphs_on(on: bool) -> None:
        samgpu_shim.configure(cuda_graphs=True if on else None)

    def metrics_on(on: bool) -> None:
        samgpu_shim.configure(metrics=list(metric_backends()) if on else None)

    def switched(name: str) -> Callable[[], Any]:
        def run() -> Any:
            for flip in switches.get(name, ()):
                flip(True)
            try:
                return paths[name]()
            finally:
                for flip in switches.get(name, ()):
                    flip(False)

        return run

    def graph_call() -> Any:
        out = predictor.predict(coords, labels)
        wait()
        return out

    def graph_predict() -> Any:
        graphs_on(True)
        try:
            return graph_call()
        finally:
            graphs_on(False)

    paths: Dict[str, Callable[[], Any]] = {
        "upstream predict (numpy out)": upstream_predict,
        "shim predict (tensors out)": shim_predict,
    }

    kpi_logger = logging.getLogger(KPI_LOGGER_NAME)
    kpi_handler = _FormattingHandler()
    kpi_level = [kpi_logger.level]

    def kpi_on(on: bool) -> None:
        if on:
            kpi_level[0] = kpi_logger.level
            kpi_logger.addHandler(kpi_handler)
            kpi_logger.setLevel(logging.INFO)
        else:
            kpi_logger.removeHandler(kpi_handler)
            kpi_logger.setLevel(kpi_level[0])

    if kpi:
        paths["shim predict, KPI events on"] = shim_predict
        switches["shim predict, KPI events on"] = [kpi_on]
    if metrics and cuda_graphs and device.type == "cuda":
        paths["CUDA graph replay, metrics on"] = graph_call
        switches["CUDA graph replay, metrics on"] = [graphs_on, metrics_on]
    if metrics:
        paths["shim predict, metrics on"] = shim_predict
        switches["shim predict, metrics on"] = [metrics_on]
    capture_ms = None
    if cuda_graphs and device.type == "cuda":
        paths["shim predict, CUDA graph replay"] = graph_call
        switches["shim predict, CUDA graph replay"] = [graphs_on]
        if kpi:
            paths["CUDA graph replay, KPI events on"] = graph_call
            switches["CUDA graph replay, KPI events on"] = [graphs_on, kpi_on]
        t0 = time.perf_counter()
        graph_predict()  # the first call of a signature captures
        capture_ms = round((time.perf_counter() - t0) * 1e3, 2)
    compiled = None
    if compile_reference and device.type == "cuda":
        compiled = compiled_reference(predictor, coords, labels)
        paths[COMPILED_PATH] = compiled["call"]
    if pipeline:
        paths["frame pipeline, numpy on upstream"] = upstream_pipeline
        paths["frame pipeline, shim on device"] = shim_pipeline

    # Same answers before timing anything.
    ref = upstream_predict()
    got = shim_predict()
    identical = all(np.array_equal(r, g.cpu().numpy()) for r, g in zip(ref, got))
    if "shim predict, CUDA graph replay" in paths:
        replayed = graph_predict()
        identical = identical and all(torch.equal(a, b) for a, b in zip(got, replayed))
    compiled_identical = None
    if compiled is not None:
        compiled_identical = all(torch.equal(a, b) for a, b in zip(got, compiled["call"]()))
    if pipeline:
        pipelines_agree = json.loads(upstream_pipeline())["area_px"] == json.loads(shim_pipeline())["area_px"]
    else:
        pipelines_agree = None

    for name in paths:
        for _ in range(warmup):
            switched(name)()
    syncs = {name: _syncs_per_call(switched(name), device) for name in paths}

    samples: Dict[str, List[float]] = {name: [] for name in paths}
    clock = time.perf_counter
    say(f"{model}: timing {calls} rounds of {len(paths)} paths ...")
    bar = progress(calls * len(paths), f"{model} on {device.type}", quiet)
    try:
        for _ in range(calls):
            for name, fn in paths.items():
                flips = switches.get(name, ())
                for flip in flips:
                    flip(True)
                t0 = clock()
                fn()
                samples[name].append((clock() - t0) * 1e3)
                for flip in flips:
                    flip(False)
                bar.update()
    finally:
        bar.close()
    rounds = min(5, calls)
    if "shim predict, CUDA graph replay" in paths:
        from ..gpu import graphs as _graphs

        graph_predict()  # the graph of this signature is the last replayed
        samples["device floor (graph replays back to back)"] = _graphs.device_floor_ms(predictor, calls)
        syncs["device floor (graph replays back to back)"] = {"syncs_per_call": 0.0, "sync_measure": syncs[
            "shim predict, CUDA graph replay"]["sync_measure"]}

    rows = []
    for name in samples:
        rows.append(
            {
                "model": model,
                "path": name,
                "calls": calls,
                **syncs[name],
                **summary(samples[name]),
                "p50_spread_between_rounds": round(noise(samples[name], rounds), 4),
                "samples_ms": [round(s, 4) for s in samples[name]],
            }
        )
    outputs = [type(x).__name__ + (f"@{x.device}" if isinstance(x, torch.Tensor) else "") for x in got]
    return {
        "family": family,
        "model": model,
        "image_hw": list(image_hw),
        "set_image_ms": round(set_image_ms, 2),
        "identical_to_upstream": identical,
        "pipelines_agree": pipelines_agree,
        "shim_outputs": outputs,
        "graph_capture_ms": capture_ms,
        "compiled_reference": None if compiled is None else {
            "identical_to_shim": compiled_identical, "compile_ms": compiled["compile_ms"],
            "mode": "reduce-overhead"},
        "rows": rows,
    }


COMPILED_PATH = "torch.compile reduce-overhead (reference)"


def compiled_reference(predictor: Any, coords: np.ndarray, labels: np.ndarray) -> Dict[str, Any]:
    """segment-anything's prompt-to-mask work for one point, under
    ``torch.compile(mode="reduce-overhead")``: a reference row for graph mode.

    The same work as ``predict_torch`` with points only (sync-free point
    embedding, decoder, upscaling, threshold), prompts transformed and
    uploaded like the shim's (pinned, non-blocking); outputs cloned, since
    compiled CUDA graphs reuse their output memory too.
    """
    from ..gpu.sync_free import embed_points_sync_free

    sam = predictor.model
    encoder = sam.prompt_encoder
    input_size, original_size = tuple(predictor.input_size), tuple(predictor.original_size)
    features = predictor.features
    device = features.device

    def work(points: torch.Tensor, point_labels: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        sparse = embed_points_sync_free(encoder, points, point_labels, pad=True)
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *encoder.image_embedding_size)
        low, iou = sam.mask_decoder(
            image_embeddings=features,
            image_pe=encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        masks = sam.postprocess_masks(low, input_size, original_size) > sam.mask_threshold
        return masks[0], iou[0], low[0]

    fn = torch.compile(work, mode="reduce-overhead", fullgraph=False)
    scaled = predictor.transform.apply_coords(coords, original_size)

    def call() -> Tuple[torch.Tensor, ...]:
        points = torch.as_tensor(scaled, dtype=torch.float).pin_memory().to(device, non_blocking=True)
        point_labels = torch.as_tensor(labels, dtype=torch.int).pin_memory().to(device, non_blocking=True)
        with torch.inference_mode():
            out = tuple(t.clone() for t in fn(points[None], point_labels[None]))
        torch.cuda.synchronize(device)
        return out

    started = time.perf_counter()
    for _ in range(3):  # compile, then cudagraph trees record on the later calls
        call()
    return {"call": call, "compile_ms": round((time.perf_counter() - started) * 1e3, 1)}


def metric_backends() -> List[str]:
    """The metrics backends installed here; with the OpenTelemetry SDK, a real
    MeterProvider (in-memory reader) is set so that recording does its work."""
    import importlib.util

    found = []
    if importlib.util.find_spec("opentelemetry") and importlib.util.find_spec("opentelemetry.sdk"):
        from opentelemetry import metrics as otel_metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        if not isinstance(otel_metrics.get_meter_provider(), MeterProvider):
            otel_metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        found.append("otel")
    if importlib.util.find_spec("prometheus_client"):
        found.append("prometheus")
    return found


def metrics_overhead_us(iterations: int = 20_000) -> Dict[str, Any]:
    """Host cost per call of recording metrics (both backends when installed)."""
    from .. import _config, _metrics

    backends = metric_backends()
    if not backends:
        return {"backends": [], "per_call_us": None}
    _config.configure(metrics=backends)
    try:
        clock = time.perf_counter
        t0 = clock()
        for _ in range(iterations):
            _metrics.observe("segment-anything", False, "default", "cuda:0", ("app.module", "f", 1), 1.0)
        per_call = (clock() - t0) / iterations * 1e6
        t0 = clock()
        _metrics.flush()
        per_call_flush = (clock() - t0) / iterations * 1e6
    finally:
        _config.configure(metrics=None)
    return {"backends": backends, "per_call_us": round(per_call, 3),
            "background_per_call_us": round(per_call_flush, 3)}


def wrapper_overhead_us(iterations: int = 100_000) -> Dict[str, float]:
    """Host cost per call of call-site attribution, mode resolution (with a
    module rule active) and the counters: what the wrapper adds to a call."""
    from .. import _config
    from .. import _telemetry as _stats

    site = ("app.module", "f", 1)
    outputs = (np.zeros(1), np.zeros(1), np.zeros(1))
    _config.configure(as_numpy_modules=["legacy.*"])
    try:

        def caller() -> None:
            s = _stats.call_site()
            _config.resolve_as_numpy(None, s[0])

        clock = time.perf_counter
        t0 = clock()
        for _ in range(iterations):
            caller()
        attribution = (clock() - t0) / iterations * 1e6
        t0 = clock()
        for _ in range(iterations):
            _stats.record(site, False, outputs, 1.0)
        counters = (clock() - t0) / iterations * 1e6
    finally:
        _config.configure(as_numpy_modules=None)
        _stats.reset()
    return {"attribution_and_resolution_us": round(attribution, 3), "counters_us": round(counters, 3)}


def environment(device: torch.device) -> Dict[str, Any]:
    from importlib import metadata

    def version(dist: str) -> Optional[str]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    info = {
        "device": str(device),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "wrapt": version("wrapt"),
        "segment_anything": version("segment-anything"),
        "sam2": version("sam2"),
        "cpu_threads": torch.get_num_threads(),
    }
    return info


UPSTREAM = "upstream predict (numpy out)"
SHIM = "shim predict (tensors out)"
PIPELINE_UPSTREAM = "frame pipeline, numpy on upstream"
PIPELINE_SHIM = "frame pipeline, shim on device"
GRAPH = "shim predict, CUDA graph replay"
FLOOR = "device floor (graph replays back to back)"


def reference(path: str) -> str:
    """The upstream row a path is compared with: the same work done the numpy way."""
    return PIPELINE_UPSTREAM if path.startswith("frame pipeline") else UPSTREAM


def vs_upstream(by_path: Dict[str, Dict[str, Any]], path: str) -> Optional[float]:
    """This path's p50 / its upstream reference's p50: every ratio the bench prints is
    this one, in this direction (below 1: the shim is faster)."""
    ref = by_path.get(reference(path))
    if ref is None or not ref["p50_ms"]:
        return None
    return by_path[path]["p50_ms"] / ref["p50_ms"]


def _legend(report: Dict[str, Any]) -> List[str]:
    on_cuda = report["environment"]["device"].startswith("cuda")
    lines = [
        "Columns:",
        "  calls        timed calls of each path, interleaved with the other paths",
        "  syncs/call   times one call makes the host wait for the GPU (counted by CUDA's sync debug mode)"
        if on_cuda else
        "  syncs/call   operations in one call that make the host wait when run on a GPU (nonzero, .item(),",
    ]
    if not on_cuda:
        lines.append("               .cpu() ...): a CPU has nothing to wait for, so this is a count, not a wait")
    lines += [
        "  p50 p99 max  host time of one call until its result is usable, ms: median, 99th percentile, slowest",
        "  x upstream   p50 / upstream's p50 for the same work: below 1.00 the shim is faster (ref: upstream)",
        "Paths: predict alone, and a frame pipeline (predict, then the best mask's area, centroid and box",
        "  as a JSON packet) done the numpy way on upstream's output or on the device from the shim's.",
    ]
    overhead = report.get("wrapper_overhead")
    if overhead:
        lines.append(
            f"The shim's own work in each call, included above: {overhead['attribution_and_resolution_us']:.1f} us to "
            f"find the caller and pick\n  numpy or tensors, {overhead['counters_us']:.1f} us to update its counters."
        )
    metrics = report.get("metrics_overhead")
    if metrics and metrics["per_call_us"] is not None:
        lines.append(
            f"Metrics ({'+'.join(metrics['backends'])}): {metrics['per_call_us']:.1f} us per call in the call, "
            f"{metrics['background_per_call_us']:.1f} us later in the background thread."
        )
    return lines


def format_table(report: Dict[str, Any]) -> str:
    env = report["environment"]
    threads = "" if env["device"].startswith("cuda") else f", {env.get('cpu_threads')} threads"
    lines = [f"device: {env['device']} ({env['device_name']}), torch {env['torch']}, numpy {env['numpy']}{threads}"]
    header = (f"{'path':<44} {'calls':>5} {'syncs/call':>10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} "
              f"{'x upstream':>10}")
    for result in report["results"]:
        weights = result.get("weights", "random")
        source = result.get("image_source", "synthetic")
        lines.append("")
        lines.append(
            f"{result['family']} {result['model']} ({'random weights' if weights == 'random' else weights}), "
            f"image {result['image_hw'][0]}x{result['image_hw'][1]}"
            f"{' (synthetic)' if source == 'synthetic' else ' from ' + source}, "
            f"set_image {result['set_image_ms']:.1f} ms"
        )
        lines.append(
            f"shim outputs: {', '.join(result['shim_outputs'])}; identical to upstream: "
            f"{'yes' if result['identical_to_upstream'] else 'NO'}"
        )
        lines.append(header)
        by_path = {row["path"]: row for row in result["rows"]}
        for row in result["rows"]:
            ratio = vs_upstream(by_path, row["path"])
            shown = "ref" if row["path"] == reference(row["path"]) else ("" if ratio is None else f"{ratio:.2f}")
            lines.append(
                f"{row['path']:<44} {row['calls']:>5} {row['syncs_per_call']:>10.1f} "
                f"{row['p50_ms']:>9.3f} {row['p99_ms']:>9.3f} {row['max_ms']:>9.3f} {shown:>10}"
            )
        if result.get("graph_capture_ms") is not None:
            lines.append(f"CUDA graph capture (first call of the signature): {result['graph_capture_ms']:.1f} ms")
        floor = by_path.get(FLOOR)
        if floor:
            graph = by_path[GRAPH]
            lines.append(
                f"graph mode took {graph['p50_ms'] / floor['p50_ms']:.2f}x the device floor's time (p50); "
                f"its p99 was {graph['p99_ms'] / graph['p50_ms']:.2f}x its p50"
            )
        ref = result.get("compiled_reference")
        if ref:
            lines.append(
                f"torch.compile reference: compiled in {ref['compile_ms'] / 1e3:.1f} s, "
                f"bit-identical to the shim: {'yes' if ref['identical_to_shim'] else 'no'}"
            )
    lines.append("")
    lines.extend(_legend(report))
    lines.append("")
    lines.append(verdict(report))
    return "\n".join(lines)


def verdict(report: Dict[str, Any]) -> str:
    """A few short lines in plain words: what this run shows, and how far to trust it."""
    on_cuda = report["environment"]["device"].startswith("cuda")
    lines = []
    for result in report["results"]:
        by_path = {row["path"]: row for row in result["rows"]}
        up, shim = by_path[UPSTREAM], by_path[SHIM]
        lines.append(f"Verdict, {result['family']} {result['model']}:")
        lines.append(f"  identical results: {'yes' if result['identical_to_upstream'] else 'NO'}")
        lines.append(f"  host syncs per call: {up['syncs_per_call']:.0f} upstream, {shim['syncs_per_call']:.0f} shim")
        timing = (f"  the shim took {vs_upstream(by_path, SHIM):.2f}x upstream's time "
                  f"(p50 {shim['p50_ms']:.2f} against {up['p50_ms']:.2f} ms)")
        extras = [f"{label} {vs_upstream(by_path, path):.2f}x" for label, path in
                  (("frame pipeline", PIPELINE_SHIM), ("graph mode", GRAPH)) if path in by_path]
        lines.append(timing + ("; " + ", ".join(extras) if extras else ""))
        spreads = [(r["p50_spread_between_rounds"], r["path"]) for r in result["rows"]
                   if r.get("p50_spread_between_rounds") is not None]
        worst = max(spreads) if spreads else None
        if worst and worst[0] > NOISY_SPREAD:
            lines.append(f"  noisy: a p50 moved by {worst[0]:.0%} between rounds; rerun on a quiet machine "
                         "before quoting")
        elif worst:
            lines.append(f"  steady: no p50 moved by more than {worst[0]:.0%} between rounds")
    if not on_cuda:
        lines.append("On a CPU, expect about 1.00x: nothing waits for a GPU. The speed-up needs --device cuda.")
    return "\n".join(lines)


def plot(report: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, result in zip(axes[0], results):
        rows = result["rows"]
        ax.boxplot([r["samples_ms"] for r in rows], vert=False, whis=(1, 99), showfliers=True)
        ax.set_yticks(range(1, len(rows) + 1), [r["path"] for r in rows], fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("latency per call, ms (log scale; whiskers p1-p99)")
        ax.set_title(f"{result['model']} on {report['environment']['device_name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: Any) -> Dict[str, Any]:
    device = pick_device(args.device)
    say(device_line(device))
    image = None
    if getattr(args, "image_kind", "size") == "file":
        image = read_image(args.image)
        h, w = image.shape[:2]
    else:
        h, w = (int(v) for v in args.image.lower().split("x"))
    calls = args.calls if args.calls is not None else (300 if device.type == "cuda" else 50)
    family = getattr(args, "family", None) or "sam"
    checkpoint = getattr(args, "checkpoint", None)
    built = None
    names = list(args.model or [])
    if checkpoint:
        from . import checkpoints

        say(f"loading {checkpoint} ...")
        loaded = checkpoints.load(checkpoint, family=getattr(args, "family", None),
                                  model=names[0] if names else None, device=device)
        say(f"model: {loaded.family} {loaded.how}")
        family, names = loaded.family, [loaded.model]
        built = checkpoints.predictor_for(loaded.family, loaded.module)
    unknown = [m for m in names if not checkpoint and m not in FAMILY_MODELS[family]]
    if unknown:
        raise SystemExit(
            f"--family {family} has no model {', '.join(unknown)}; choose from {', '.join(FAMILY_MODELS[family])}"
        )
    report = {"environment": environment(device), "wrapper_overhead": wrapper_overhead_us(), "results": []}
    if getattr(args, "metrics", False):
        report["metrics_overhead"] = metrics_overhead_us()
    for model in names:
        result = run_model(
            model,
            device,
            (h, w),
            calls,
            args.warmup,
            pipeline=not args.no_pipeline,
            cuda_graphs=getattr(args, "cuda_graphs", False),
            kpi=getattr(args, "kpi", False),
            family=family,
            quiet=bool(getattr(args, "json", None)),
            metrics=getattr(args, "metrics", False),
            compile_reference=getattr(args, "compile", False),
            built=built,
            image=image,
        )
        result["weights"] = checkpoint or "random"
        result["image_source"] = args.image if image is not None else "synthetic"
        report["results"].append(result)
    return report
