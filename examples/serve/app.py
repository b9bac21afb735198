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
import base64
import binascii
import hashlib
import io
import json
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_PIXELS = 4096 * 4096


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_request(body: bytes) -> Tuple[bytes, Dict[str, Any]]:
    """(encoded image, prompt keywords) of a request body; BadRequest names what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, f"request body is {len(body)} bytes, over the {MAX_BODY_BYTES} limit")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise BadRequest(400, f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict) or "image" not in payload:
        raise BadRequest(400, "body must be a JSON object with an 'image' field (base64 PNG or JPEG)")
    try:
        encoded = base64.b64decode(payload["image"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise BadRequest(400, f"'image' is not base64: {exc}") from None
    prompts: Dict[str, Any] = {}
    for key in ("point_coords", "point_labels", "box"):
        if payload.get(key) is not None:
            prompts[key] = payload[key]
    if "point_coords" not in prompts and "box" not in prompts:
        raise BadRequest(400, "give 'point_coords' (with 'point_labels') or 'box'")
    prompts["multimask_output"] = bool(payload.get("multimask_output", True))
    unknown = set(payload) - {"image", "point_coords", "point_labels", "box", "multimask_output"}
    if unknown:
        raise BadRequest(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    return encoded, prompts


def image_size(encoded: bytes) -> Tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(encoded)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadRequest(400, f"'image' is not a PNG or JPEG image: {exc}") from None
    if width * height > MAX_PIXELS:
        raise BadRequest(413, f"image is {width}x{height}, over the {MAX_PIXELS} pixel limit")
    return height, width


def decode_frame(encoded: bytes, device: Any) -> Any:
    """An ``(H, W, 3)`` uint8 tensor on ``device``: JPEGs decoded on the GPU where possible."""
    import torch
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    data = torch.frombuffer(bytearray(encoded), dtype=torch.uint8)
    try:
        if device.type == "cuda" and encoded[:2] == b"\xff\xd8":
            chw = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        else:
            chw = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise BadRequest(400, f"'image' could not be decoded: {exc}") from None
    return chw.permute(1, 2, 0)


# -- the result packet -----------------------------------------------------------


def packet_device(masks: Any, scores: Any) -> Tuple[Dict[str, Any], np.ndarray, Tuple[int, int]]:
    """Best mask's packet computed on the device, brought back in one copy."""
    import torch

    index = scores.argmax(dim=0, keepdim=True)
    best = masks.index_select(0, index)[0] > 0
    height, width = best.shape
    ys = torch.arange(height, device=best.device, dtype=torch.float64)
    xs = torch.arange(width, device=best.device, dtype=torch.float64)
    rows = best.sum(dim=1, dtype=torch.float64)
    cols = best.sum(dim=0, dtype=torch.float64)
    numbers = torch.stack([
        index[0].to(torch.float64), scores.index_select(0, index)[0].to(torch.float64), rows.sum(),
        torch.where(cols > 0, xs, float(width)).amin(), torch.where(rows > 0, ys, float(height)).amin(),
        torch.where(cols > 0, xs, -1.0).amax(), torch.where(rows > 0, ys, -1.0).amax(),
    ])
    # Column-major bits, 8 pixels a byte, as the RLE below wants them.
    flat = best.t().reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=flat.device)
    packed = (flat.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)
    payload = torch.cat([numbers.view(torch.uint8), packed]).cpu().numpy()  # the one copy
    return _packet(payload[:56].view(np.float64)), payload[56:], (height, width)


def packet_numpy(masks: np.ndarray, scores: np.ndarray) -> Tuple[Dict[str, Any], np.ndarray, Tuple[int, int]]:
    """The same packet from upstream's numpy results."""
    index = int(scores.argmax())
    best = masks[index] > 0
    height, width = best.shape
    rows, cols = best.sum(axis=1), best.sum(axis=0)
    ys, xs = np.arange(height), np.arange(width)
    numbers = np.array([
        index, np.float64(scores[index]), rows.sum(),
        np.where(cols > 0, xs, width).min(), np.where(rows > 0, ys, height).min(),
        np.where(cols > 0, xs, -1).max(), np.where(rows > 0, ys, -1).max(),
    ], dtype=np.float64)
    return _packet(numbers), np.packbits(best.T.reshape(-1)), (height, width)


def _packet(numbers: np.ndarray) -> Dict[str, Any]:
    index, score, area, x0, y0, x1, y1 = (float(v) for v in numbers)
    return {
        "mask_index": int(index),
        "score": score,
        "area_px": int(area),
        "bbox_xyxy": [int(x0), int(y0), int(x1), int(y1)] if area > 0 else None,
    }


def rle(packed: np.ndarray, size: Tuple[int, int]) -> Dict[str, Any]:
    """COCO uncompressed RLE (column-major, counts start with zeros) of a packed mask."""
    height, width = size
    bits = np.unpackbits(packed)[: height * width]
    changes = np.flatnonzero(np.diff(bits)) + 1
    edges = np.concatenate([[0], changes, [bits.size]])
    counts = np.diff(edges).tolist()
    if bits.size and bits[0] == 1:
        counts = [0] + counts
    return {"size": [height, width], "counts": counts}


def answer(masks: Any, scores: Any) -> Dict[str, Any]:
    """The response body's result part, whatever ``predict`` returned."""
    if isinstance(masks, np.ndarray):
        result, packed, size = packet_numpy(masks, scores)
        result["mode"] = "numpy"
    else:
        result, packed, size = packet_device(masks, scores)
        result["mode"] = "gpu"
    result["mask_rle"] = rle(packed, size)
    return result


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
        from segment_anything import SamPredictor

        import samgpu_shim  # at start-up, before segment_anything: the patch is armed for it
        from samgpu_shim.tools.models import build_sam

        self.shim = samgpu_shim
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        threads = os.environ.get("SAMGPU_SERVE_TORCH_THREADS")
        if threads:  # several CPU replicas on one machine: do not oversubscribe its cores
            torch.set_num_threads(int(threads))
        self.predictor = SamPredictor(build_sam(model, seed=seed, device=self.device, image_size=image_size))
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
                    masks, scores, _ = self.predictor.predict(**_as_arrays(prompts))
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


def _as_arrays(prompts: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(prompts)
    for key in ("point_coords", "point_labels", "box"):
        if key in out:
            try:
                out[key] = np.asarray(out[key], dtype=np.float64 if key != "point_labels" else np.int64)
            except (TypeError, ValueError) as exc:
                raise BadRequest(400, f"'{key}' is not an array of numbers: {exc}") from None
    return out


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
