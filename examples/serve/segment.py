"""The request path of one replica, without Ray: request checks, frame
decoding, the result packet on the device and its RLE at the boundary.

``app.py`` serves it with Ray Serve; ``bench_replica.py`` times it alone on a
GPU. Nothing here imports Ray.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from struct import error as struct_error
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

# Defaults of the request limits; each has an environment variable, read when
# a replica starts (Limits.from_env), carried by Serve's runtime_env.
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
MAX_POINTS = 64

ENV_MAX_BODY = "SAMGPU_SERVE_MAX_BODY_BYTES"
"""Largest request body, in bytes (default 32 MiB): 413 beyond it, read no further."""
ENV_MAX_PIXELS = "SAMGPU_SERVE_MAX_PIXELS"
"""Largest frame, width x height from the image header (default 4096*4096): 413 beyond it, not decoded."""
ENV_MAX_POINTS = "SAMGPU_SERVE_MAX_POINTS"
"""Most prompt points in one request (default 64): 413 beyond it."""


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Bounds checked before anything of that size is allocated."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_pixels: int = MAX_PIXELS
    max_points: int = MAX_POINTS

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    def max_json_items(self) -> int:
        """Commas and brackets a body may hold outside its image (base64 has
        neither): room for ``max_points`` points, their labels, a box and the
        object itself. Counted before parsing, so that the parser never builds
        a large structure of small objects."""
        return 8 * self.max_points + 64

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Limits:
        environ = os.environ if environ is None else environ
        values = {}
        for key, env in (("max_body_bytes", ENV_MAX_BODY), ("max_pixels", ENV_MAX_PIXELS),
                         ("max_points", ENV_MAX_POINTS)):
            raw = environ.get(env)
            if raw not in (None, ""):
                try:
                    values[key] = int(raw)
                except ValueError:
                    raise ValueError(f"{env}={raw!r} is not an integer") from None
        return cls(**values)


DEFAULT_LIMITS = Limits()
_PROMPT_KEYS = ("point_coords", "point_labels", "box")


def decode_request(body: bytes, limits: Limits = DEFAULT_LIMITS) -> Tuple[bytes, Dict[str, Any]]:
    """(encoded image, prompt keywords) of a request body; BadRequest names what is wrong."""
    if len(body) > limits.max_body_bytes:
        raise BadRequest(413, f"request body is {len(body)} bytes, over the {limits.max_body_bytes} limit")
    items = body.count(b",") + body.count(b"[")
    if items > limits.max_json_items:
        raise BadRequest(413, f"request has {items} JSON items outside the image, over the {limits.max_json_items} "
                              f"limit (prompts of up to {limits.max_points} points)")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(400, f"body is not JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or "image" not in payload:
        raise BadRequest(400, "body must be a JSON object with an 'image' field (base64 PNG or JPEG)")
    if not isinstance(payload["image"], str):
        raise BadRequest(400, f"'image' must be a base64 string, got {type(payload['image']).__name__}")
    try:
        encoded = base64.b64decode(payload["image"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise BadRequest(400, f"'image' is not base64: {exc}") from None
    unknown = set(payload) - {"image", "point_coords", "point_labels", "box", "multimask_output"}
    if unknown:
        raise BadRequest(400, f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    prompts: Dict[str, Any] = {}
    for key in _PROMPT_KEYS:
        value = payload.get(key)
        if value is None:
            continue
        if key != "box" and isinstance(value, list) and len(value) > limits.max_points:
            raise BadRequest(413, f"'{key}' has {len(value)} points, over the {limits.max_points} limit")
        prompts[key] = value
    if "point_coords" not in prompts and "box" not in prompts:
        raise BadRequest(400, "give 'point_coords' (with 'point_labels') or 'box'")
    prompts["multimask_output"] = bool(payload.get("multimask_output", True))
    return encoded, prompts


def image_size(encoded: bytes, limits: Limits = DEFAULT_LIMITS) -> Tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels.

    Only PNG and JPEG are opened (other formats are not even tried: an
    animated GIF decodes every frame, a small file can hold thousands)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # The limit below is ours; PIL's own bomb warning is not needed.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(encoded), formats=("PNG", "JPEG")) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise BadRequest(413, f"image is over the pixel limit: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct_error) as exc:
        raise BadRequest(400, f"'image' is not a PNG or JPEG image: {exc}") from None
    if width < 1 or height < 1:
        raise BadRequest(400, f"image is {width}x{height}")
    if width * height > limits.max_pixels:
        raise BadRequest(413, f"image is {width}x{height}, over the {limits.max_pixels} pixel limit")
    return height, width


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_frame(encoded: bytes, device: Any, size: Optional[Tuple[int, int]] = None) -> Any:
    """An ``(H, W, 3)`` uint8 tensor: JPEGs decoded by torchvision (on the GPU
    where possible), PNGs by PIL on the host. ``size``: the (height, width) the
    header announced, checked against the pixels.

    Not torchvision for PNG: its decoder (0.29) kills the process (SIGSEGV)
    on a PNG whose compressed data is corrupt, found by fuzzing this function
    (tests/fuzz, docs/results/fuzz-cpu-run1.log); PIL raises instead."""
    import torch

    if encoded[:8] == PNG_SIGNATURE:
        hwc = _decode_png(encoded)
    else:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        data = torch.frombuffer(bytearray(encoded), dtype=torch.uint8)
        try:
            if device.type == "cuda" and encoded[:2] == b"\xff\xd8":
                chw = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            else:
                chw = decode_image(data, mode=ImageReadMode.RGB)
        except RuntimeError as exc:
            if isinstance(exc, torch.OutOfMemoryError):
                raise
            if any(words in str(exc).lower() for words in ("out of memory", "allocator_failure")):
                # nvjpeg's own allocation failures come as plain RuntimeErrors: still ours, not the client's.
                raise torch.OutOfMemoryError(f"decoding the JPEG: {exc}") from exc
            raise BadRequest(400, f"'image' could not be decoded: {exc}") from None
        if chw.dtype != torch.uint8 or chw.dim() != 3 or chw.shape[0] != 3:
            raise BadRequest(400, f"'image' decodes to {tuple(chw.shape)} {chw.dtype}; 8-bit RGB expected")
        hwc = chw.permute(1, 2, 0)
    if size is not None and tuple(hwc.shape[:2]) != tuple(size):
        raise BadRequest(400, f"'image' decodes to {tuple(hwc.shape[:2])}, its header says {tuple(size)}")
    return hwc


def _decode_png(encoded: bytes) -> Any:
    import torch
    from PIL import Image

    try:
        with Image.open(io.BytesIO(encoded), formats=("PNG",)) as image:
            if image.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA"):
                raise BadRequest(400, f"'image' is a {image.mode} PNG; 8-bit images only")
            rgb = np.array(image.convert("RGB"))  # writable, as torch.from_numpy wants
    except BadRequest:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, struct_error) as exc:
        raise BadRequest(400, f"'image' could not be decoded: {exc}") from None
    return torch.from_numpy(rgb)


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



def as_arrays(prompts: Dict[str, Any]) -> Dict[str, Any]:
    """JSON prompts as numpy arrays (float64 coordinates, int64 labels)."""
    out = dict(prompts)
    for key in ("point_coords", "point_labels", "box"):
        if key in out:
            try:
                out[key] = np.asarray(out[key], dtype=np.float64 if key != "point_labels" else np.int64)
            except (TypeError, ValueError, OverflowError) as exc:
                raise BadRequest(400, f"'{key}' is not an array of numbers: {exc}") from None
    return out


SAM2_MODELS = ("hiera_t", "hiera_s", "hiera_b+", "hiera_l")


def make_predictor(model: str, image_size: int, device: Any, seed: int = 0) -> Any:
    """segment-anything (tiny, vit_b/l/h) or SAM 2.1 (hiera_*), random weights."""
    from samgpu_shim.tools.models import build_sam, build_sam2

    if model in SAM2_MODELS:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return SAM2ImagePredictor(build_sam2(model, seed=seed, device=device))
    from segment_anything import SamPredictor

    return SamPredictor(build_sam(model, seed=seed, device=device, image_size=image_size))


# -- one replica's request path --------------------------------------------------


class _LastEvent(logging.Handler):
    """Keeps the KPI event of the request being answered (by request id)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.events: Dict[str, Dict[str, Any]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "samgpu_kpi", None)
        if event and "request_id" in event:
            self.events[event["request_id"]] = event


def device_broken(exc: BaseException) -> bool:
    """A device error after which the CUDA context cannot be trusted (an illegal
    address, a launch failure): the process must be replaced. Out of memory is
    not one of them."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return False
    accelerator = getattr(torch, "AcceleratorError", None)
    return (accelerator is not None and isinstance(exc, accelerator)) or (
        isinstance(exc, RuntimeError) and str(exc).startswith("CUDA error"))


Item = Tuple[str, bytes, Tuple[int, int], Dict[str, Any]]  # digest, encoded image, (h, w), prompts


class Replica:
    """What a Serve replica does, without Ray: ``parse`` a body (BadRequest
    names what is wrong), ``run`` a batch of parsed requests (never raises:
    each request gets its result or ``{"error", "status"}``), ``check_health``.

    Statuses: 4xx for the request's own fault; **503** (retry, another replica
    or later) for out of device memory, for a device error, and for every
    request after a device error (``check_health`` then raises, so that Serve
    replaces this replica); 500 for anything else.
    """

    def __init__(self, predictor: Any, device: Any, name: str = "replica",
                 limits: Optional[Limits] = None) -> None:
        import samgpu_shim

        self.shim = samgpu_shim
        self.predictor = predictor
        self.device = device
        self.name = name
        self.limits = limits if limits is not None else Limits.from_env()
        self.lock = threading.Lock()
        self.broken: Optional[str] = None
        self.events = _LastEvent()
        kpi = logging.getLogger(samgpu_shim.KPI_LOGGER_NAME)
        kpi.addHandler(self.events)
        kpi.setLevel(logging.INFO)
        self._log = logging.getLogger("serve.segmenter")

    def parse(self, body: bytes) -> Item:
        import hashlib

        encoded, prompts = decode_request(body, self.limits)
        size = image_size(encoded, self.limits)
        return hashlib.sha1(encoded).hexdigest(), encoded, size, prompts

    def check_health(self) -> None:
        if self.broken is not None:
            raise RuntimeError(f"replica {self.name} must be replaced: {self.broken}")

    def _error(self, status: int, message: str, retry: bool = False) -> Dict[str, Any]:
        out: Dict[str, Any] = {"error": message, "status": status, "replica": self.name}
        if retry:
            out["retry"] = True
        return out

    def run(self, items: List[Item]) -> List[Dict[str, Any]]:
        """Requests of one batch that share a frame share its ``set_image``."""
        with self.lock:
            return self._run_locked(items)

    def _run_locked(self, items: List[Item]) -> List[Dict[str, Any]]:
        import torch

        results: List[Optional[Dict[str, Any]]] = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: items[i][0])
        current = None
        for i in order:
            digest, encoded, size, prompts = items[i]
            if self.broken is not None:
                results[i] = self._error(503, f"replica unusable after a device error ({self.broken}); "
                                              "retry: it is being replaced", retry=True)
                continue
            step = "set_image"
            try:
                if digest != current:
                    current = None
                    self.predictor.set_image(decode_frame(encoded, self.device, size))
                    current = digest
                step = "predict"
                request_id = f"{self.name}:{time.monotonic_ns()}:{i}"
                with self.shim.kpi_fields(request_id=request_id, replica=self.name):
                    masks, scores, _ = self.predictor.predict(**as_arrays(prompts))
                step = "answer"
                result = answer(masks, scores)
                event = self.events.events.pop(request_id, None)
                result["replica"] = self.name
                result["kpi"] = None if event is None else {
                    k: event[k] for k in ("as_numpy", "as_numpy_source", "mask_device", "latency_ms")}
                result["batch_size"] = len(items)
                results[i] = result
            except BadRequest as exc:
                results[i] = self._error(exc.status, str(exc))
            except torch.OutOfMemoryError as exc:
                # Nothing of this request is kept (current is None when set_image
                # failed), so the memory it took is free again for the next one:
                # the log record gets the message, not the exception, whose
                # traceback's frames hold the request's tensors (its decoded
                # frame, half of its set_image) for as long as a handler keeps
                # the record (pytest's log capture, a MemoryHandler, an error
                # reporter); and those frames are cleared all the same.
                self._log.warning("out of device memory in %s: %s", step, str(exc))
                results[i] = self._error(503, f"out of device memory in {step}; retry", retry=True)
                traceback.clear_frames(exc.__traceback__)
            except (ValueError, AssertionError, TypeError) as exc:  # PromptError is both
                results[i] = self._error(400, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # never let input take the replica down
                current = None
                if device_broken(exc):
                    self.broken = f"{type(exc).__name__} in {step}: {exc}"
                    self._log.error("device error in %s; this replica asks to be replaced: %s", step, str(exc))
                    results[i] = self._error(503, f"device error in {step}; retry", retry=True)
                else:
                    self._log.exception("request failed in %s", step)
                    results[i] = self._error(500, f"{type(exc).__name__} in {step}: {exc}")
                traceback.clear_frames(exc.__traceback__)  # what the request held, even if a handler keeps the record
        return results  # type: ignore[return-value]

    # -- fault injection (tests and drills) ------------------------------------
    def inject(self, step: str = "set_image", error: str = "oom", count: int = 1) -> None:
        """The next ``count`` calls of the model in ``step`` (``set_image``: the
        image encoder; ``predict``: the mask decoder) raise ``error`` (``oom``:
        ``torch.OutOfMemoryError``; ``device``: a CUDA device error), from the
        real model's forward."""
        inject_fault(self.predictor, step, error, count)


def inject_fault(predictor: Any, step: str = "set_image", error: str = "oom", count: int = 1) -> Any:
    """Make the next ``count`` forwards of ``predictor``'s image encoder
    (``step="set_image"``) or mask decoder (``"predict"``) raise; returns the hook handle."""
    import torch

    model = predictor.model
    module = {"set_image": model.image_encoder,
              "predict": getattr(model, "mask_decoder", None) or getattr(model, "sam_mask_decoder", None)}[step]
    accelerator = getattr(torch, "AcceleratorError", RuntimeError)
    make = {"oom": lambda: torch.OutOfMemoryError(f"CUDA out of memory (injected in {step})"),
            "device": lambda: accelerator("CUDA error: an illegal memory access was encountered (injected)")}[error]
    left = [count]

    def hook(_module: Any, _inputs: Any) -> None:
        if left[0] > 0:
            left[0] -= 1
            if left[0] == 0:
                handle.remove()
            raise make()

    handle = module.register_forward_pre_hook(hook)
    return handle
