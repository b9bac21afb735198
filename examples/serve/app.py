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
Every size is bounded before anything of that size is allocated (body,
pixels from the image header, prompt points: ``segment.Limits``,
``SAMGPU_SERVE_*`` in the runtime env). Out of device memory is a 503 for
that request (retry) and the replica goes on; after a device error the
replica answers 503 and fails its health check, so that Serve replaces it.
``client.py`` is a client that retries what can be retried.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from ray import serve
from segment import BadRequest, Item, Limits, Replica, make_predictor
from starlette.requests import Request
from starlette.responses import JSONResponse

ENV_FAULT_INJECTION = "SAMGPU_SERVE_FAULT_INJECTION"
"""1: the replica's ``inject_fault`` method works (drills and tests); unset: it refuses."""

# -- the deployment ---------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The body, holding no more than ``limit`` bytes of it. A body over the
    limit (declared or not) is read to its end and dropped, chunk by chunk:
    answering before the client has finished sending would reset its
    connection, and it would see a network error (which it may retry) instead
    of its 413. (Ray's HTTP proxy buffers whole bodies before this; the front
    proxy's own limit is what bounds them there: docs/serving.rst.)"""
    declared = request.headers.get("content-length")
    over = False
    if declared is not None:
        try:
            over = int(declared) > limit
        except ValueError:
            raise BadRequest(400, f"Content-Length {declared!r} is not a number") from None
    body = bytearray()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if over:
            continue
        body += chunk
        if len(body) > limit:
            over, body = True, bytearray()
    if over:
        raise BadRequest(413, f"request body is {size} bytes, over the {limit} limit")
    return bytes(body)


# health_check_period_s: a replica whose device failed says so in check_health;
# Serve replaces it within a few seconds rather than the default ten.
@serve.deployment(max_ongoing_requests=32, health_check_period_s=2)
class Segmenter:
    def __init__(self, model: str = "tiny", image_size: int = 1024, seed: int = 0) -> None:
        import torch

        import samgpu_shim  # noqa: F401  (at start-up, before segment_anything: the patch is armed for it)

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        threads = os.environ.get("SAMGPU_SERVE_TORCH_THREADS")
        if threads:  # several CPU replicas on one machine: do not oversubscribe its cores
            torch.set_num_threads(int(threads))
        context = serve.get_replica_context()
        replica_id = getattr(context, "replica_id", None)
        name = str(getattr(replica_id, "unique_id", None) or getattr(context, "replica_tag", "replica"))
        self.core = Replica(make_predictor(model, image_size, self.device, seed), self.device, name,
                            Limits.from_env())
        self.replica = name
        self.metrics = _ray_metrics()

    def check(self) -> Dict[str, Any]:
        """The replica's view of its configuration (for tests and the runbook)."""
        return {"replica": self.replica, "device": str(self.device), "pid": os.getpid(),
                "SAMGPU_AS_NUMPY": os.environ.get("SAMGPU_AS_NUMPY"), "patched": self.core.shim.is_patched(),
                "limits": self.core.limits.__dict__}

    def check_health(self) -> None:
        """Serve calls this every few seconds; raising has the replica replaced."""
        self.core.check_health()

    def inject_fault(self, step: str = "set_image", error: str = "oom", count: int = 1) -> str:
        """Drills: the next ``count`` model calls in ``step`` raise ``error`` (see
        ``segment.Replica.inject``). Only with SAMGPU_SERVE_FAULT_INJECTION=1;
        reachable through a Ray handle, never over HTTP."""
        if os.environ.get(ENV_FAULT_INJECTION) != "1":
            raise PermissionError(f"fault injection is off ({ENV_FAULT_INJECTION} is not 1)")
        self.core.inject(step, error, count)
        return self.replica

    async def __call__(self, request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            item = self.core.parse(await read_body(request, self.core.limits.max_body_bytes))
            result = await self.segment(item)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc), "replica": self.replica}, status_code=exc.status)
        if "error" in result:
            status = result.pop("status")
            # 503: this request may succeed if sent again (here later, or to another replica).
            headers = {"Retry-After": "1"} if status == 503 else None
            return JSONResponse(result, status_code=status, headers=headers)
        self._observe(result["mode"], (time.perf_counter() - started) * 1e3)
        return JSONResponse(result)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def segment(self, items: List[Item]) -> List[Dict[str, Any]]:
        # In a worker thread: the event loop keeps accepting (and batching)
        # requests while the device works.
        return await asyncio.get_running_loop().run_in_executor(None, self.core.run, items)

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
