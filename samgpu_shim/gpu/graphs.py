"""Graph mode: replay a family's prompt-to-mask work as a captured CUDA graph.

The eager GPU path is bound by Python and kernel launches (about 4 ms of host
work for about 1 ms of device work on an H100 with SAM's decoder). Replaying a
captured graph launches all of it at once.

Every family hands :func:`replay` the same three things (a :class:`Work`):
the call's staged prompts, the image tensors its work reads (SAM 1's
embedding, SAM-HQ's intermediate features, SAM 2's and SAM 3's feature
pyramid) and a function that runs the work from static copies of both. So:

* One graph per signature: the prompts' keys, shapes, dtypes and placement,
  the family's own key (multimask, return_logits, image sizes, thresholds,
  the function that runs), the feature shapes, the device and the autocast
  state. Each predictor keeps at most ``configure(graph_cache_size=...)``
  graphs, least recently used out.
* Prompts are copied into the graph's static input buffers; each image tensor
  is copied into one static buffer per predictor only when ``set_image``
  replaced it (or wrote into it), so no recapture is needed after
  ``set_image``.
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
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import _config

_logger = logging.getLogger("samgpu_shim")
_capture_lock = threading.RLock()
# One warm-up stream per device, for every capture. cuBLAS keeps a workspace
# (32 MiB on an H100/H200) for each stream it has run on, for the life of the
# process: a new stream per capture left one more workspace behind each time
# (device memory grew by ~33 MB per capture until the pool of CUDA streams
# wrapped around, run 37's probe and run 35's soak).
_warmup_streams: Dict[str, Any] = {}
_registry_lock = threading.Lock()
_warned: set = set()
_counters: Dict[str, float] = {"captures": 0, "replays": 0, "fallbacks": 0, "evictions": 0, "capture_ms": 0.0}

_FAILED = object()

Outputs = Tuple[torch.Tensor, ...]


@dataclass
class Work:
    """One call's prompt-to-mask work, as a family describes it to graph mode.

    ``run(inputs, features)`` must do the whole work reading only ``inputs``
    (the staged prompts, by the keys they were staged under) and ``features``
    (stand-ins for ``features``, same order), and return a flat tuple of
    tensors. ``key`` holds whatever else changes the work (flags, sizes,
    thresholds, the upstream function it calls).
    """

    prompts: Any  # a samgpu_shim.gpu.prompts.Prompts
    features: Sequence[torch.Tensor]
    run: Callable[[Dict[Any, torch.Tensor], List[torch.Tensor]], Outputs]
    key: tuple


class _Graph:
    __slots__ = ("graph", "packed", "ready", "outputs", "bytes", "capture_ms")

    def __init__(
        self,
        graph: Any,
        packed: Optional[torch.Tensor],
        ready: Dict[Any, torch.Tensor],
        outputs: Outputs,
        nbytes: int,
        capture_ms: float,
    ) -> None:
        self.graph = graph
        self.packed = packed  # static device buffer the host prompts are copied into
        self.ready = ready  # static copies of prompts that were already on the device
        self.outputs = outputs
        self.bytes = nbytes
        self.capture_ms = capture_ms


class _Feature:
    """A static copy of one image tensor, refreshed when its source changes."""

    __slots__ = ("static", "source", "version")

    def __init__(self, like: torch.Tensor) -> None:
        self.static = torch.empty_like(like)
        self.source: Any = None
        self.version = -1

    def fits(self, live: torch.Tensor) -> bool:
        s = self.static
        return s.shape == live.shape and s.dtype == live.dtype and s.device == live.device


class _PredictorGraphs:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.graphs: OrderedDict[tuple, Any] = OrderedDict()
        self.features: List[_Feature] = []  # static copies read by every graph
        self.event: Optional[torch.cuda.Event] = None
        self.stream: Optional[torch.cuda.Stream] = None
        self.last: Optional[_Graph] = None

    def drop_graphs(self) -> None:
        """Every graph out of the cache, its memory given back (see :func:`_release`)."""
        graphs = list(self.graphs.values())
        self.graphs.clear()
        for entry in graphs:
            if entry is not _FAILED:
                _release(self, entry)
        self.last = None

    def refresh(self, live: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(self.features) != len(live) or not all(f.fits(t) for f, t in zip(self.features, live)):
            # A new layout (another model size, a batch of images): new buffers,
            # and the graphs that read the old ones are dropped.
            self.features = [_Feature(t) for t in live]
            self.drop_graphs()
        for feature, tensor in zip(self.features, live):
            # Inference tensors (EfficientViT-SAM sets its image under
            # inference_mode) keep no version counter: those are copied on
            # every call, a device-side copy that costs no host wait.
            version = -1 if tensor.is_inference() else tensor._version
            source = feature.source() if feature.source is not None else None
            if source is not tensor or version < 0 or feature.version != version:
                feature.static.copy_(tensor)
                feature.source = weakref.ref(tensor)
                feature.version = version
        return [f.static for f in self.features]


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


_streams_lock = threading.Lock()


def warmup_stream(device: torch.device) -> Any:
    """The device's warm-up stream for captures (graph mode's and the fast encoder's), made once."""
    key = str(torch.device(device.type, device.index if device.index is not None else torch.cuda.current_device()))
    with _streams_lock:
        stream = _warmup_streams.get(key)
        if stream is None:
            stream = _warmup_streams[key] = torch.cuda.Stream(device)
    return stream


def _capture(work: Work, statics: List[torch.Tensor], device: torch.device) -> _Graph:
    prompts = work.prompts
    before = torch.cuda.memory_allocated(device)
    host = prompts.packed()
    packed = None if host is None else host.to(device, non_blocking=True)
    ready = {key: value.clone() for key, value in prompts.ready.items()}
    inputs: Dict[Any, torch.Tensor] = dict(ready)
    if packed is not None:
        inputs.update(prompts.views(packed))
    started = time.perf_counter()
    side = warmup_stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up: kernels' lazy init stays out of the graph
            work.run(inputs, statics)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # Captured on the warm-up stream too: cuBLAS's workspace for it was made
    # during the warm-up, outside any graph's pool (captured on torch's own
    # capture stream, the first graph's pool would keep that workspace alive).
    # torch.cuda.graph empties the allocator's cache first: that is what hands
    # evicted graphs' pools back to the driver (run 39 captured without it:
    # reserved memory grew by ~56 MB a capture, 4266 to 7508 MB in 5 minutes).
    with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
        outputs = tuple(work.run(inputs, statics))
    capture_ms = (time.perf_counter() - started) * 1e3
    nbytes = max(torch.cuda.memory_allocated(device) - before, 0)
    return _Graph(graph, packed, ready, outputs, nbytes, capture_ms)


def _autocast_state(device: torch.device) -> tuple:
    kind = device.type
    if not torch.is_autocast_enabled(kind):
        return (False,)
    return (True, torch.get_autocast_dtype(kind))


def replay(predictor: Any, work: Work) -> Optional[Outputs]:
    """Replay ``work`` (capturing it first if needed); None means: run it eagerly."""
    device = work.prompts.device
    features = list(work.features)
    key = (
        work.prompts.signature(),
        work.key,
        tuple((tuple(t.shape), t.dtype) for t in features),
        str(device),
        _autocast_state(device),
    )
    state = _state_for(predictor)
    with state.lock:
        entry = state.graphs.get(key)
        if entry is _FAILED:
            _counters["fallbacks"] += 1
            return None
        stream = torch.cuda.current_stream(device)
        if state.event is not None and state.stream != stream:
            stream.wait_event(state.event)  # the GPU waits, not the host
        statics = state.refresh(features)
        entry = state.graphs.get(key)  # a new feature layout drops the graphs
        if entry is None:
            try:
                with _capture_lock:
                    entry = _capture(work, statics, device)
            except Exception as exc:
                state.graphs[key] = _FAILED
                _counters["fallbacks"] += 1
                _warn_once(f"capture failed for {type(predictor).__name__}: {type(exc).__name__}: {exc}")
                return None
            _counters["captures"] += 1
            _counters["capture_ms"] += entry.capture_ms
            state.graphs[key] = entry
            _evict(state)
        else:
            state.graphs.move_to_end(key)
            host = work.prompts.packed()
            if host is not None:
                entry.packed.copy_(host, non_blocking=True)
            for name, value in work.prompts.ready.items():
                entry.ready[name].copy_(value)
        entry.graph.replay()
        try:
            # Clones belong to the caller; the graph's own outputs are reused.
            out = tuple(t.clone() for t in entry.outputs)
        finally:
            # Recorded even when a clone fails (out of memory): the replay was
            # launched, and the next one from another stream must wait for it.
            if state.event is None:
                state.event = torch.cuda.Event()
            state.event.record(stream)
            state.stream = stream
            state.last = entry
        _counters["replays"] += 1
        return out


def _evict(state: _PredictorGraphs) -> None:
    limit = _config.graph_cache_size()
    while sum(1 for v in state.graphs.values() if v is not _FAILED) > limit:
        for old_key, old in state.graphs.items():
            if old is not _FAILED:
                del state.graphs[old_key]
                _release(state, old)
                _counters["evictions"] += 1
                break


def _release(state: _PredictorGraphs, entry: _Graph) -> None:
    """Give an evicted graph's device memory back now, not when the last
    reference to its entry happens to go.

    Dropping the cache's reference is not enough: anything else that still
    reaches the entry (``state.last``, a reference cycle waiting for a full
    collection) keeps its CUDA graph, and with it the graph's private memory
    pool and its static outputs, allocated. So the graph is reset (its
    executable destroyed and its pool given back to the allocator) and the
    entry lets go of its tensors: what is left of it holds no device memory.
    Safe with a replay still in flight: the stream's queued work keeps
    running, and the allocator hands a released pool's blocks to no one
    before it synchronizes (``empty_cache``).
    """
    if state.last is entry:
        state.last = None
    graph = entry.graph
    entry.graph = None
    entry.outputs = ()
    entry.packed = None
    entry.ready = {}
    entry.bytes = 0
    if graph is not None:
        graph.reset()


def device_floor_ms(predictor: Any, replays: int = 200) -> List[float]:
    """The device time of this predictor's last replayed graph, replayed back to back.

    Each replay is timed with CUDA events on the current stream: the floor
    that graph mode can reach for this work on this card, with no host in
    the way. Benchmarks put it beside graph mode's latency.
    """
    state = _state_for(predictor)
    with state.lock:
        entry = state.last
        if entry is None:
            raise RuntimeError("no graph was replayed for this predictor yet")
        stream = torch.cuda.current_stream()
        pairs = []
        for _ in range(replays):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            entry.graph.replay()
            end.record(stream)
            pairs.append((start, end))
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in pairs]


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
                state.drop_graphs()
                state.features = []
