"""SAM behind Ray Serve, GPU-resident inside each replica.

Each replica imports ``samgpu_shim`` at start-up, holds one predictor (one
GPU per replica on a GPU cluster, the CPU otherwise) and answers
``POST /segment`` with a JSON body::

    {"image": "<base64 PNG or JPEG>", "point_coords": [[x, y], ...], "point_labels": [1, ...],
     "box": [x0, y0, x1, y1], "multimask_output": true}

(``box`` and the points are optional; one of them is needed). The frame is
decoded (on the GPU for JPEG where torchvision can), ``set_image`` and
``predict`` run on the device, and so does the result packet: best mask by
score, its score, area and box, and the mask itself packed 8 pixels a byte.
One copy brings the packet to the host; the mask's run-length encoding
(COCO's uncompressed RLE, column-major) is made there, at the response
boundary. Every answer says which replica and which mode (``gpu`` or
``numpy``) produced it.

Configuration is Serve's own: ``runtime_env={"env_vars": {...}}`` carries
``SAMGPU_AS_NUMPY``, ``SAMGPU_CUDA_GRAPHS``, ``SAMGPU_ENCODER`` and the rest to
the replicas, so rolling back the fleet is a redeploy of configuration
(``docs/serving.rst``). Requests on the same frame are batched
(``@serve.batch``): one ``set_image`` for all of them.

Bad requests get a 4xx with the reason; a replica never dies from input.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from ray import serve
from segment import BadRequest, answer, as_arrays, decode_frame, decode_request, image_size, make_predictor
from starlette.requests import Request
from starlette.responses import JSONResponse

# -- the deployment ---------------------------------------------------------------


class _LastEvent(logging.Handler):
    """Keeps the KPI event of the request being answered (by request id)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.events: Dict[str, Dict[str, Any]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "samgpu_kpi", None)
        if event and "request_id" in event:
            self.events[event["request_id"]] = event


@serve.deployment(max_ongoing_requests=32)
class Segmenter:
    def __init__(self, model: str = "tiny", image_size: int = 1024, seed: int = 0) -> None:
        import torch

        import samgpu_shim  # at start-up, before segment_anything: the patch is armed for it

        self.shim = samgpu_shim
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        threads = os.environ.get("SAMGPU_SERVE_TORCH_THREADS")
        if threads:  # several CPU replicas on one machine: do not oversubscribe its cores
            torch.set_num_threads(int(threads))
        self.predictor = make_predictor(model, image_size, self.device, seed)
        context = serve.get_replica_context()
        replica_id = getattr(context, "replica_id", None)
        self.replica = str(getattr(replica_id, "unique_id", None) or getattr(context, "replica_tag", "replica"))
        self.lock = threading.Lock()
        self.events = _LastEvent()
        kpi = logging.getLogger(samgpu_shim.KPI_LOGGER_NAME)
        kpi.addHandler(self.events)
        kpi.setLevel(logging.INFO)
        self.metrics = _ray_metrics()

    def check(self) -> Dict[str, Any]:
        """The replica's view of its configuration (for tests and the runbook)."""
        return {"replica": self.replica, "device": str(self.device),
                "SAMGPU_AS_NUMPY": os.environ.get("SAMGPU_AS_NUMPY"), "patched": self.shim.is_patched()}

    async def __call__(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            encoded, prompts = decode_request(await request.body())
            image_size(encoded)
            result = await self.segment((hashlib.sha1(encoded).hexdigest(), encoded, prompts))
        except BadRequest as exc:
            return JSONResponse({"error": str(exc), "replica": self.replica}, status_code=exc.status)
        if "error" in result:
            return JSONResponse(result, status_code=result.pop("status"))
        self._observe(result["mode"], (time.perf_counter() - started) * 1e3)
        return JSONResponse(result)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def segment(self, items: List[Tuple[str, bytes, Dict[str, Any]]]) -> List[Dict[str, Any]]:
        # In a worker thread: the event loop keeps accepting (and batching)
        # requests while the device works.
        return await asyncio.get_running_loop().run_in_executor(None, self._batch, items)

    def _batch(self, items: List[Tuple[str, bytes, Dict[str, Any]]]) -> List[Dict[str, Any]]:
        """Requests of one batch that share a frame share its ``set_image``."""
        with self.lock:
            return self._batch_locked(items)

    def _batch_locked(self, items: List[Tuple[str, bytes, Dict[str, Any]]]) -> List[Dict[str, Any]]:
        results: List[Optional[Dict[str, Any]]] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: items[i][0])
        current = None
        for i in order:
            digest, encoded, prompts = items[i]
            try:
                if digest != current:
                    self.predictor.set_image(decode_frame(encoded, self.device))
                    current = digest
                request_id = f"{self.replica}:{time.monotonic_ns()}:{i}"
                with self.shim.kpi_fields(request_id=request_id, replica=self.replica):
                    masks, scores, _ = self.predictor.predict(**as_arrays(prompts))
                result = answer(masks, scores)
                event = self.events.events.pop(request_id, None)
                result["replica"] = self.replica
                result["kpi"] = None if event is None else {
                    k: event[k] for k in ("as_numpy", "as_numpy_source", "mask_device", "latency_ms")}
                result["batch_size"] = len(items)
                results[i] = result
            except BadRequest as exc:
                current = None
                results[i] = {"error": str(exc), "status": exc.status, "replica": self.replica}
            except (ValueError, AssertionError, TypeError) as exc:  # PromptError is both
                results[i] = {"error": f"{type(exc).__name__}: {exc}", "status": 400, "replica": self.replica}
            except Exception as exc:  # never let input take the replica down
                current = None
                logging.getLogger("serve.segmenter").exception("request failed")
                results[i] = {"error": f"{type(exc).__name__}: {exc}", "status": 500, "replica": self.replica}
        return results  # type: ignore[return-value]

    def _observe(self, mode: str, latency_ms: float) -> None:
        if self.metrics is not None:
            requests, latency = self.metrics
            tags = {"replica": self.replica, "mode": mode}
            requests.inc(1, tags=tags)
            latency.observe(latency_ms, tags=tags)


def _ray_metrics() -> Optional[Tuple[Any, Any]]:
    """Per-replica request counter and latency histogram in Ray's metrics
    (exported on each node's metrics endpoint, tagged with replica and mode)."""
    try:
        from ray.util import metrics
    except ImportError:
        return None
    requests = metrics.Counter("samgpu_serve_requests", description="answered segmentation requests",
                               tag_keys=("replica", "mode"))
    latency = metrics.Histogram("samgpu_serve_latency_ms", description="request latency in the replica, ms",
                                boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000], tag_keys=("replica", "mode"))
    return requests, latency


def app(model: str = "tiny", image_size: int = 1024, replicas: int = 1, env: Optional[Dict[str, str]] = None,
        gpus: float = 0.0) -> Any:
    """The application: ``replicas`` copies, each with ``gpus`` GPUs and ``env`` as environment."""
    options: Dict[str, Any] = {"runtime_env": {"env_vars": dict(env or {})}}
    if gpus:
        options["num_gpus"] = gpus
    return Segmenter.options(num_replicas=replicas, ray_actor_options=options).bind(model, image_size)
