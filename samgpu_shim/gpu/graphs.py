"""Graph mode: replay the prompt-to-mask work as a captured CUDA graph.

The eager GPU path is bound by Python and kernel launches (about 4 ms of host
work for about 1 ms of device work on an H100 with SAM's decoder). Replaying a
captured graph launches all of it at once.

* One graph per prompt signature: number of points, box or not, mask or not,
  multimask, return_logits, input and original image sizes, embedding shape,
  mask threshold and device. Each predictor keeps at most
  ``configure(graph_cache_size=...)`` graphs, least recently used out.
* Prompts are copied into the graph's static input buffers; the image
  embedding is copied into one static buffer per predictor only when
  ``set_image`` replaced it, so no recapture is needed after ``set_image``.
* Outputs are cloned after each replay: what a call returned is never
  overwritten by a later call.
* All static buffers of a predictor are ordered on one chain: a replay from a
  stream other than the previous one makes its stream wait (on the GPU) for the
  previous replay's event.
* Capture needs one host synchronisation (PyTorch's capture prologue), paid
  once per new signature. When capture fails, the call and every later call of
  that signature take the eager GPU path, and the reason is logged once.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

import torch

from .. import _config
from .prompts import KEYS, batched

_logger = logging.getLogger("samgpu_shim")
_capture_lock = threading.Lock()
_registry_lock = threading.Lock()
_warned: set = set()
_counters: Dict[str, float] = {"captures": 0, "replays": 0, "fallbacks": 0, "evictions": 0, "capture_ms": 0.0}

_FAILED = object()


class _Graph:
    __slots__ = ("graph", "packed", "ready", "outputs", "bytes", "capture_ms")

    def __init__(
        self,
        graph: Any,
        packed: Optional[torch.Tensor],
        ready: Dict[str, torch.Tensor],
        outputs: Tuple[torch.Tensor, ...],
        nbytes: int,
        capture_ms: float,
    ) -> None:
        self.graph = graph
        self.packed = packed  # static device buffer the host prompts are copied into
        self.ready = ready  # static copies of prompts that were already on the device
        self.outputs = outputs
        self.bytes = nbytes
        self.capture_ms = capture_ms


class _PredictorGraphs:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.graphs: OrderedDict[tuple, Any] = OrderedDict()
        self.features: Optional[torch.Tensor] = None  # static copy read by every graph
        self.features_source: Optional[torch.Tensor] = None
        self.features_version = -1
        self.event: Optional[torch.cuda.Event] = None
        self.stream: Optional[torch.cuda.Stream] = None


_states: weakref.WeakKeyDictionary[Any, _PredictorGraphs] = weakref.WeakKeyDictionary()


def _state_for(predictor: Any) -> _PredictorGraphs:
    with _registry_lock:
        state = _states.get(predictor)
        if state is None:
            state = _states[predictor] = _PredictorGraphs()
        return state


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        _logger.warning("samgpu_shim: CUDA graph mode falls back to the eager GPU path: %s", reason)


def usable(device: torch.device) -> bool:
    """Graph mode is on and this device can use it (logs why not, once)."""
    if not _config.cuda_graphs_enabled():
        return False
    if device.type != "cuda":
        _warn_once(f"needs a CUDA device, predictor is on {device.type}")
        return False
    return True


def _refresh_features(state: _PredictorGraphs, features: torch.Tensor) -> None:
    if state.features is None or state.features.shape != features.shape or state.features.dtype != features.dtype:
        state.features = torch.empty_like(features)
        state.features_source = None
    if state.features_source is not features or state.features_version != features._version:
        state.features.copy_(features)
        state.features_source = features
        state.features_version = features._version


def _run(predictor: Any, inputs: Dict[str, Any], multimask: bool, return_logits: bool) -> Any:
    return predictor.predict_torch(*batched(inputs), multimask, return_logits=return_logits)


def _capture(
    predictor: Any, state: _PredictorGraphs, prompts: Any, multimask: bool, return_logits: bool
) -> _Graph:
    device = predictor.device
    before = torch.cuda.memory_allocated(device)
    host = prompts.packed()
    packed = None if host is None else host.to(device, non_blocking=True)
    ready = {key: value.clone() for key, value in prompts.ready.items()}
    static: Dict[str, Any] = dict.fromkeys(KEYS)
    static.update(ready)
    if packed is not None:
        static.update(prompts.views(packed))
    live_features = predictor.features
    started = time.perf_counter()
    # predict_torch reads ``self.features``: point it at the static buffer for
    # the capture so that every replay reads whatever that buffer holds.
    predictor.features = state.features
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: kernels' lazy init stays out of the graph
                _run(predictor, static, multimask, return_logits)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            masks, iou, low = _run(predictor, static, multimask, return_logits)
    finally:
        predictor.features = live_features
    capture_ms = (time.perf_counter() - started) * 1e3
    outputs = (masks[0], iou[0], low[0])
    nbytes = max(torch.cuda.memory_allocated(device) - before, 0)
    return _Graph(graph, packed, ready, outputs, nbytes, capture_ms)


def predict(
    predictor: Any,
    prompts: Any,
    multimask: bool,
    return_logits: bool,
) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Replay (capturing first if needed); None means: use the eager path."""
    features = predictor.features
    key = (
        prompts.signature(),
        bool(multimask),
        bool(return_logits),
        tuple(predictor.input_size),
        tuple(predictor.original_size),
        tuple(features.shape),
        features.dtype,
        float(predictor.model.mask_threshold),
        str(predictor.device),
        type(predictor).predict_torch,
    )
    state = _state_for(predictor)
    with state.lock:
        entry = state.graphs.get(key)
        if entry is _FAILED:
            _counters["fallbacks"] += 1
            return None
        device = predictor.device
        stream = torch.cuda.current_stream(device)
        if state.event is not None and state.stream != stream:
            stream.wait_event(state.event)  # the GPU waits, not the host
        _refresh_features(state, features)
        if entry is None:
            try:
                with _capture_lock:
                    entry = _capture(predictor, state, prompts, multimask, return_logits)
            except Exception as exc:
                state.graphs[key] = _FAILED
                _counters["fallbacks"] += 1
                _warn_once(f"capture failed for {type(predictor).__name__}: {type(exc).__name__}: {exc}")
                return None
            _counters["captures"] += 1
            _counters["capture_ms"] += entry.capture_ms
            state.graphs[key] = entry
            limit = _config.graph_cache_size()
            while sum(1 for v in state.graphs.values() if v is not _FAILED) > limit:
                for old_key, old in state.graphs.items():
                    if old is not _FAILED:
                        del state.graphs[old_key]
                        _counters["evictions"] += 1
                        break
        else:
            state.graphs.move_to_end(key)
            host = prompts.packed()
            if host is not None:
                entry.packed.copy_(host, non_blocking=True)
            for name, value in prompts.ready.items():
                entry.ready[name].copy_(value)
        entry.graph.replay()
        # Clones belong to the caller; the graph's own outputs are reused.
        out = tuple(t.clone() for t in entry.outputs)
        if state.event is None:
            state.event = torch.cuda.Event()
        state.event.record(stream)
        state.stream = stream
        _counters["replays"] += 1
        return out  # type: ignore[return-value]


def stats() -> Dict[str, Any]:
    """Counters and cached graphs: captures, replays, fallbacks, evictions, memory."""
    with _registry_lock:
        states = list(_states.values())
    graphs = [g for s in states for g in s.graphs.values() if g is not _FAILED]
    return {
        "enabled": _config.cuda_graphs_enabled(),
        "cache_size_per_predictor": _config.graph_cache_size(),
        "predictors": len(states),
        "cached_graphs": len(graphs),
        "graph_bytes": sum(g.bytes for g in graphs),
        **{k: (round(v, 3) if isinstance(v, float) else int(v)) for k, v in _counters.items()},
    }


def clear() -> None:
    """Drop every captured graph (e.g. after replacing a model's parameters)."""
    with _registry_lock:
        for state in list(_states.values()):
            with state.lock:
                state.graphs.clear()
                state.features = None
                state.features_source = None
