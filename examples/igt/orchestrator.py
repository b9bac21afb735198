"""A real-time OpenIGTLink segmentation loop behind ``import samgpu_shim``.

Frames arrive as IMAGE messages (from a PLUS server, 3D Slicer, or
``source.py``); each is segmented with a SAM predictor and answered on the
same connection with a label map (IMAGE, uint8, 1 inside the structure) and
a result packet (STRING, JSON: score, area, centroid, bounding box, the
frame's timestamp, the mode).

Between a frame's arrival and its two replies the work stays on the device:
the frame goes up in one pinned copy, ``set_image`` takes the CUDA frame,
the prompts come from the previous result on the device (its centroid as the
next point, its low-res logits as ``mask_input``), the packet's statistics
are computed on the device, and one copy brings back the numbers and the
label map together. Rolled back (``SAMGPU_AS_NUMPY=1``) the same code runs on
upstream's numpy path and sends the same packets; ``legacy=True`` is the
numpy code this replaced (``as_numpy=True`` everywhere).

Several structures (``seed_points`` with K points): one prompt per
structure, all in one batched call (SAM 2's ``predict`` with ``(K, 1, 2)``
points, segment-anything's ``predict_torch``), one packet with an entry per
structure and one label map (value k + 1 inside structure k).

Real-time rules: a bounded queue between the socket and the model (frames
that arrive faster than they are processed are dropped, oldest first, and
counted); a deadline per frame (late frames counted); reconnection when the
server goes away; a malformed or unexpected message is logged and skipped.

Timing (``instrument=True``): every answered frame's time split into stages
(receive, queue wait, upload, set_image, predict, packet, reply packing,
send; on CUDA also each stage's device time from events read after the
frame's one sync), the interpreter's garbage collections that overlapped it,
and the caching allocator's counters, so that a tail can be named.

Hostile input: the loop opens no port, it connects out to ``host:port``
(127.0.0.1 by default). Only IMAGE messages are unpacked; every size the
peer announces is checked before anything of that size is allocated
(``link.Limits``: body bytes, pixels, components, a deadline for each body;
``SAMGPU_IGT_*`` in the environment); ``frame_size`` restricts frames to one
size; a reply the peer does not read within ``send_timeout_s`` costs the
connection, not the loop. A frame whose processing raises (out of device
memory included) is counted in ``errors`` and ``errors_by_type``, and the
next frame is processed.
"""

from __future__ import annotations

import collections
import gc
import json
import logging
import socket
import struct
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from link import BadMessage, FramingLost, Limits, LinkBroken, read_message, string_message
from packing import label_message

import samgpu_shim

log = logging.getLogger("igt.orchestrator")
kpi_log = logging.getLogger(samgpu_shim.KPI_LOGGER_NAME)

LABEL_DEVICE = "LabelMap"
PACKET_DEVICE = "SegmentationPacket"


@dataclass
class Frame:
    image: np.ndarray  # (H, W) grey or (H, W, 3) RGB, uint8
    frame_id: int
    timestamp: float  # the sender's, from the message header
    arrived: float  # perf_counter when the whole message was in
    connection: int
    first_byte: float = 0.0  # perf_counter when its first bytes could be read


@dataclass
class Counters:
    received: int = 0
    processed: int = 0
    dropped: int = 0  # evicted from the queue by newer frames
    late: int = 0  # answered after the deadline
    bad_messages: int = 0  # could not be unpacked
    bad_frames: int = 0  # an IMAGE that is not a 2D uint8 frame (or not of frame_size)
    ignored: int = 0  # other message types and devices
    stale: int = 0  # processed, but their connection was gone
    reconnects: int = 0
    framing_lost: int = 0  # a header or size that broke the stream: connection remade
    errors: int = 0  # processing raised (logged; the loop goes on)
    errors_by_type: Dict[str, int] = field(default_factory=dict)  # exception class name -> count
    dropped_ids: List[int] = field(default_factory=list)
    error_ids: List[int] = field(default_factory=list)
    stale_ids: List[int] = field(default_factory=list)


def frame_from(message: Any, frame_size: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, int]:
    """(image, frame id) of an IMAGE message; ValueError names what is wrong.
    ``frame_size`` (height, width): only frames of that size are accepted."""
    image = np.asarray(message.image)
    if image.dtype != np.uint8:
        raise ValueError(f"frame dtype is {image.dtype}, expected uint8")
    if image.ndim == 3 and image.shape[0] == 1:  # (1, H, W): one slice
        image = image[0]
    elif image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3:  # (1, H, W, 3): RGB
        image = image[0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)) or min(image.shape[:2]) < 8:
        raise ValueError(f"frame shape is {tuple(message.image.shape)}, expected (1, H, W) or (1, H, W, 3)")
    if frame_size is not None and tuple(image.shape[:2]) != tuple(frame_size):
        raise ValueError(f"frame is {image.shape[0]}x{image.shape[1]}, this loop takes {frame_size[0]}x{frame_size[1]}")
    try:
        frame_id = int(message.metadata.get("frame_id", -1))
    except (TypeError, ValueError):
        frame_id = -1
    return image, frame_id


# -- the packet, two ways ------------------------------------------------------
# Per structure: [best index, score, area, sum of x, sum of y, x0, y0, x1, y1].
# Sums of integer pixel coordinates are exact in float64 in any order, so the
# device and numpy versions agree to the bit.


def stats_torch_batch(masks: torch.Tensor, scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(K, 3, H, W) masks, (K, 3) scores -> (K, 9) float64 numbers, (K, H, W) best masks."""
    count, _, height, width = masks.shape
    index = scores.argmax(dim=1)
    rows_k = torch.arange(count, device=masks.device)
    best = masks[rows_k, index]
    ys = torch.arange(height, device=best.device, dtype=torch.float64)
    xs = torch.arange(width, device=best.device, dtype=torch.float64)
    rows = best.sum(dim=2, dtype=torch.float64)
    cols = best.sum(dim=1, dtype=torch.float64)
    row_hit, col_hit = rows > 0, cols > 0
    numbers = torch.stack([
        index.to(torch.float64),
        scores[rows_k, index].to(torch.float64),
        rows.sum(dim=1),
        cols @ xs,
        rows @ ys,
        torch.where(col_hit, xs, float(width)).amin(dim=1),
        torch.where(row_hit, ys, float(height)).amin(dim=1),
        torch.where(col_hit, xs, -1.0).amax(dim=1),
        torch.where(row_hit, ys, -1.0).amax(dim=1),
    ], dim=1)
    return numbers, best


def stats_numpy_batch(masks: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    count, _, height, width = masks.shape
    index = scores.argmax(axis=1)
    rows_k = np.arange(count)
    best = masks[rows_k, index]
    ys = np.arange(height, dtype=np.float64)
    xs = np.arange(width, dtype=np.float64)
    rows = best.sum(axis=2).astype(np.float64)
    cols = best.sum(axis=1).astype(np.float64)
    row_hit, col_hit = rows > 0, cols > 0
    numbers = np.stack([
        index.astype(np.float64), scores[rows_k, index].astype(np.float64), rows.sum(axis=1), cols @ xs, rows @ ys,
        np.where(col_hit, xs, width).min(axis=1), np.where(row_hit, ys, height).min(axis=1),
        np.where(col_hit, xs, -1).max(axis=1), np.where(row_hit, ys, -1).max(axis=1),
    ], axis=1)
    return numbers, best


def stats_torch(masks: torch.Tensor, scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One structure: (3, H, W) masks, (3,) scores -> (9,) numbers, (H, W) best mask."""
    numbers, best = stats_torch_batch(masks[None], scores[None])
    return numbers[0], best[0]


def stats_numpy(masks: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    numbers, best = stats_numpy_batch(masks[None], scores[None])
    return numbers[0], best[0]


def _structure(numbers: Any) -> Dict[str, Any]:
    index, score, area, sum_x, sum_y, x0, y0, x1, y1 = (float(v) for v in numbers)
    found = area > 0
    return {
        "mask_index": int(index),
        "score": score,
        "area_px": int(area),
        "centroid_xy": [sum_x / area, sum_y / area] if found else None,
        "bbox_xyxy": [int(x0), int(y0), int(x1), int(y1)] if found else None,
    }


def packet(numbers: Any, frame: Frame, mode: str) -> Dict[str, Any]:
    """The JSON packet: one structure's fields inline ((9,) numbers), or an
    ``objects`` list for several ((K, 9) numbers)."""
    out: Dict[str, Any] = {"frame_id": frame.frame_id, "timestamp": frame.timestamp, "mode": mode}
    if np.ndim(numbers) == 2:
        out["objects"] = [_structure(row) for row in numbers]
    else:
        out.update(_structure(numbers))
    return out


def label_numpy(best: np.ndarray) -> np.ndarray:
    """(K, H, W) masks -> one uint8 label map, k + 1 inside structure k (later ones on top)."""
    values = np.arange(1, best.shape[0] + 1, dtype=np.uint8)[:, None, None]
    return (best.astype(np.uint8) * values).max(axis=0)


def label_torch(best: torch.Tensor) -> torch.Tensor:
    values = torch.arange(1, best.shape[0] + 1, dtype=torch.uint8, device=best.device)[:, None, None]
    return (best.to(torch.uint8) * values).amax(dim=0)


def is_sam2(predictor: Any) -> bool:
    """SAM 2's (and SAM 3's) image predictor: batched points go through ``predict``."""
    return hasattr(predictor, "_transforms") and hasattr(predictor, "_features")


STAGES = ("upload", "set_image", "predict", "packet")


class _Marks:
    """Stage boundaries of one frame: host clock, and CUDA events (read after
    the frame's one sync, so reading them costs no wait)."""

    __slots__ = ("names", "host", "events", "cuda")

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.names: List[str] = []
        self.host: List[float] = []
        self.events: List[Any] = []

    def mark(self, name: str) -> None:
        self.names.append(name)
        self.host.append(time.perf_counter())
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.events.append(event)

    def split(self) -> Tuple[Dict[str, float], Dict[str, float]]:
        host = {n: (self.host[i] - self.host[i - 1]) * 1e3 for i, n in enumerate(self.names) if i}
        device = {}
        if self.cuda:
            device = {n: self.events[i - 1].elapsed_time(self.events[i]) for i, n in enumerate(self.names) if i}
        return host, device


class Orchestrator:
    """Receives frames, segments them, answers; ``start()``, ``stop()``, ``counters``."""

    def __init__(
        self,
        predictor: Any,
        host: str = "127.0.0.1",
        port: int = 18944,
        *,
        seed_point: Optional[Tuple[float, float]] = None,
        seed_points: Optional[Sequence[Tuple[float, float]]] = None,
        deadline_ms: float = 33.0,
        queue_size: int = 1,
        legacy: bool = False,
        frame_device: Optional[str] = None,
        reconnect_max_s: float = 1.0,
        trace: bool = False,
        instrument: bool = False,
        gc_mode: str = "default",
        gc_every: int = 30,
        switch_interval_ms: Optional[float] = None,
        limits: Optional[Limits] = None,
        frame_size: Optional[Tuple[int, int]] = None,
        send_timeout_s: float = 2.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if (seed_point is None) == (seed_points is None):
            raise ValueError("give seed_point (one structure) or seed_points (several)")
        if gc_mode not in ("default", "freeze"):
            raise ValueError("gc_mode must be 'default' or 'freeze'")
        self.predictor = predictor
        self.host, self.port = host, port
        # What the reader accepts: only IMAGE messages are unpacked (others are
        # read past), sizes bounded (link.Limits; SAMGPU_IGT_* environment).
        self.limits = limits if limits is not None else Limits.from_env(accept=frozenset({"IMAGE"}))
        self.frame_size = frame_size
        self.send_timeout_s = send_timeout_s
        self.deadline_ms = deadline_ms
        self.legacy = legacy
        self.frame_device = frame_device  # None: every IMAGE is a frame
        self.reconnect_max_s = reconnect_max_s
        self.counters = Counters()
        self.latencies_ms: List[float] = []  # arrival -> both replies written
        # (frame id, point prompt(s)) per frame: tests only, reading the
        # points back makes the host wait for the device.
        self.trace: Optional[List[Tuple[int, Any]]] = [] if trace else None
        self.instrument = instrument
        self.timings: List[Dict[str, Any]] = []  # one entry per answered frame (instrument)
        self.gc_pauses: List[Tuple[float, float, int]] = []  # (start, end, generation), perf_counter
        self.gc_mode, self.gc_every = gc_mode, gc_every
        self.switch_interval_ms = switch_interval_ms
        self._saved: Dict[str, Any] = {}
        self._queue: Deque[Frame] = collections.deque(maxlen=queue_size)
        self._ready = threading.Condition()
        self._send_lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._connection = 0
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.device = torch.device(predictor.device)
        self.single = seed_points is None
        points = [seed_point] if seed_points is None else list(seed_points)
        if not points:
            raise ValueError("seed_points must hold at least one point")
        self.objects = len(points)
        self._seed = np.array(points, dtype=np.float64)  # (K, 2)
        # Reused buffers: the pinned frame for the upload and the pinned
        # landing place of the frame's one device-to-host copy. Reusing them
        # is safe because each frame ends in a sync (that copy), so the
        # previous frame's upload is over before the buffer is written again.
        self._pinned_in: Dict[Tuple[int, ...], torch.Tensor] = {}
        self._pinned_out: Dict[int, torch.Tensor] = {}
        self._gc_started = 0.0
        self._since_collect = 0
        self._reset_tracking()

    # -- tracking state: where the next prompt comes from --------------------
    def _reset_tracking(self) -> None:
        self._point: Any = self._seed[:1] if self.single else self._seed[:, None, :]  # (1, 2) or (K, 1, 2)
        self._logits: Any = None  # (1, h, w) or (K, 1, h, w) low-res logits of the last best masks
        self._seed_t = torch.as_tensor(self._seed, device=self.device)
        self._label_t = torch.ones(1, dtype=torch.int, device=self.device)
        self._labels_k = torch.ones(self.objects, 1, dtype=torch.int, device=self.device)

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> Orchestrator:
        self._stop.clear()
        if self.switch_interval_ms is not None:
            self._saved["switch"] = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval_ms / 1e3)
        if self.gc_mode == "freeze":
            # Everything alive now (torch, the model, hydra's configs...) leaves
            # the collector's view, and the automatic collections stop: the
            # work thread collects the young generations itself between frames.
            self._saved["gc_enabled"] = gc.isenabled()
            gc.collect()
            gc.freeze()
            gc.disable()
        if self.instrument:
            gc.callbacks.append(self._on_gc)
        for target, name in ((self._receive_loop, "igt-receive"), (self._work_loop, "igt-work")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._ready:
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if "gc_enabled" in self._saved:
            gc.unfreeze()
            if self._saved.pop("gc_enabled"):
                gc.enable()
        if "switch" in self._saved:
            sys.setswitchinterval(self._saved.pop("switch"))

    def connected(self) -> bool:
        return self._sock is not None

    def _on_gc(self, phase: str, info: Dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            self.gc_pauses.append((self._gc_started, now, int(info.get("generation", -1))))

    # -- socket side --------------------------------------------------------
    def _connect(self) -> Optional[socket.socket]:
        backoff = 0.02
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # A peer that stops reading our replies must not block the
                # working thread for ever: sends (only sends) time out.
                seconds = int(self.send_timeout_s)
                timeval = struct.pack("ll", seconds, int((self.send_timeout_s - seconds) * 1e6))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
                return sock
            except OSError:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.reconnect_max_s)
        return None

    def _receive_loop(self) -> None:
        first = True
        while not self._stop.is_set():
            sock = self._connect()
            if sock is None:
                return
            with self._send_lock:
                self._sock = sock
                self._connection += 1
                connection = self._connection
            if not first:
                self.counters.reconnects += 1
                log.warning("reconnected to %s:%d", self.host, self.port)
            first = False
            try:
                self._read(sock, connection)
            except FramingLost as exc:
                self.counters.framing_lost += 1
                if not self._stop.is_set():
                    log.warning("stream out of step (%s); reconnecting", exc)
            except (LinkBroken, OSError) as exc:
                if not self._stop.is_set():
                    log.warning("connection lost (%s); reconnecting", exc)
            finally:
                with self._send_lock:
                    if self._sock is sock:
                        self._sock = None
                sock.close()

    def _read(self, sock: socket.socket, connection: int) -> None:
        while not self._stop.is_set():
            first_byte = 0.0
            if self.instrument:
                # Wait for the next message's first bytes without taking them:
                # the receive stage is then the transfer and unpacking alone.
                sock.recv(1, socket.MSG_PEEK)
                first_byte = time.perf_counter()
            try:
                message = read_message(sock, self.limits)
            except BadMessage as exc:
                self.counters.bad_messages += 1
                log.warning("%s", exc)
                continue
            arrived = time.perf_counter()
            if message is None or message._message_type != "IMAGE" or (
                self.frame_device is not None and message.device_name != self.frame_device
            ):
                self.counters.ignored += 1
                continue
            try:
                image, frame_id = frame_from(message, self.frame_size)
            except ValueError as exc:
                self.counters.bad_frames += 1
                log.warning("IMAGE from %r skipped: %s", message.device_name, exc)
                continue
            self.counters.received += 1
            frame = Frame(image, frame_id, float(message.timestamp), arrived, connection, first_byte)
            with self._ready:
                if len(self._queue) == self._queue.maxlen:
                    self.counters.dropped += 1
                    self.counters.dropped_ids.append(self._queue[0].frame_id)
                self._queue.append(frame)
                self._ready.notify()

    # -- model side ---------------------------------------------------------
    def _work_loop(self) -> None:
        while not self._stop.is_set():
            with self._ready:
                while not self._queue and not self._stop.is_set():
                    self._ready.wait(0.1)
                if self._stop.is_set():
                    return
                frame = self._queue.popleft()
            popped = time.perf_counter()
            marks = _Marks(self.instrument and self.device.type == "cuda") if self.instrument else None
            try:
                result, label = self.process(frame, marks)
            except Exception as exc:
                self.counters.errors += 1
                self.counters.error_ids.append(frame.frame_id)
                name = type(exc).__name__
                self.counters.errors_by_type[name] = self.counters.errors_by_type.get(name, 0) + 1
                log.exception("frame %d failed; the loop goes on", frame.frame_id)
                # The traceback's frames hold what the failed frame had on the
                # device (its upload, half of its set_image): let it go now, even
                # if a log handler keeps the record, so that after out of memory
                # the next frame finds the memory free.
                traceback.clear_frames(exc.__traceback__)
                continue
            self._reply(frame, result, label, popped, marks)
            self._between_frames()

    def _between_frames(self) -> None:
        if self.gc_mode != "freeze":
            return
        self._since_collect += 1
        # Collected when no frame waits, young generations only (what the
        # loop made since the freeze): a fraction of a millisecond.
        if self._since_collect >= self.gc_every and not self._queue:
            self._since_collect = 0
            gc.collect(1)

    def process(self, frame: Frame, marks: Optional[_Marks] = None) -> Tuple[Dict[str, Any], np.ndarray]:
        """Segment one frame: (packet, label map)."""
        if self.trace is not None:
            point = self._point
            point = point.cpu().numpy() if isinstance(point, torch.Tensor) else point
            points = [[float(v) for v in p] for p in np.asarray(point).reshape(-1, 2)]
            self.trace.append((frame.frame_id, points[0] if self.single else points))
        if marks is not None:
            marks.mark("start")
        with samgpu_shim.kpi_fields(frame_id=frame.frame_id):
            if self.legacy:
                return self._process_numpy(frame, marks)
            return self._process_device(frame, marks)

    def _upload(self, image: np.ndarray) -> torch.Tensor:
        # The message's pixels are read-only bytes: one host copy, into pinned
        # memory on CUDA so that the upload does not make the host wait.
        if self.device.type == "cuda":
            pinned = self._pinned_in.get(image.shape)
            if pinned is None:
                pinned = self._pinned_in[image.shape] = torch.empty(image.shape, dtype=torch.uint8, pin_memory=True)
            pinned.numpy()[...] = image
            frame = pinned.to(self.device, non_blocking=True)
        else:
            frame = torch.from_numpy(image.copy())
        if frame.dim() == 2:  # grey: the three channels SAM expects, no copy
            frame = frame[:, :, None].expand(-1, -1, 3)
        return frame

    def _to_host(self, payload: torch.Tensor) -> np.ndarray:
        """The frame's one device-to-host copy (into a reused pinned buffer on CUDA)."""
        if payload.device.type != "cuda":
            return payload.cpu().numpy()
        size = payload.numel()
        out = self._pinned_out.get(size)
        if out is None:
            out = self._pinned_out[size] = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        out.copy_(payload, non_blocking=True)
        torch.cuda.current_stream(payload.device).synchronize()
        # A view, not a copy: the frame's reply is sent before the next frame
        # writes this buffer again (one work thread, frames in turn).
        return out.numpy()

    def prompts(self, frame: Frame) -> Dict[str, Any]:
        """``predict``'s prompts for this frame, from the last result (on the
        device): the centroid as the point, the low-res logits as ``mask_input``.
        A subclass may add to them (the soak varies their shapes).

        One structure: ``point_coords`` (1, 2), ``point_labels`` (1,),
        ``mask_input`` (1, h, w), as for ``predict``. Several structures: the
        batched shapes, ``point_coords`` (K, 1, 2), ``point_labels`` (K, 1),
        ``mask_input`` (K, 1, h, w), in image coordinates (segment-anything's
        batched call gets them, and a ``box``, moved into the model's frame)."""
        if self.single:
            return {"point_coords": self._point, "point_labels": self._label_t, "mask_input": self._logits}
        points = self._point if isinstance(self._point, torch.Tensor) else torch.as_tensor(
            self._point, dtype=torch.float32, device=self.device)
        return {"point_coords": points, "point_labels": self._labels_k, "mask_input": self._logits}

    def _predict_device(self, frame: Frame, marks: Optional[_Marks]) -> Tuple[Any, Any, Any]:
        predictor = self.predictor
        prompts = self.prompts(frame)
        # One structure, or SAM 2's batched points ((K, 1, 2), masks (K, 1, h, w)).
        if self.single or is_sam2(predictor):
            return predictor.predict(**prompts, multimask_output=True)
        # segment-anything: its batched call, in the model's input frame.
        coords, box = prompts.get("point_coords"), prompts.get("box")
        if coords is not None:
            coords = predictor.transform.apply_coords_torch(coords.to(torch.float32), predictor.original_size)
        if box is not None:
            box = predictor.transform.apply_boxes_torch(box.to(torch.float32), predictor.original_size)
        return predictor.predict_torch(coords, prompts.get("point_labels"), box, prompts.get("mask_input"),
                                       multimask_output=True)

    def _process_device(self, frame: Frame, marks: Optional[_Marks]) -> Tuple[Dict[str, Any], np.ndarray]:
        predictor = self.predictor
        image = self._upload(frame.image)
        if marks is not None:
            marks.mark("upload")
        predictor.set_image(image)
        if marks is not None:
            marks.mark("set_image")
        masks, scores, logits = self._predict_device(frame, marks)
        if marks is not None:
            marks.mark("predict")
        if isinstance(masks, np.ndarray):  # rolled back: upstream's numpy results
            return self._finish_numpy(frame, masks, scores, logits, marks)
        if self.single:
            masks, scores, logits = masks[None], scores[None], logits[None]
        numbers, best = stats_torch_batch(masks, scores)
        count = numbers.shape[0]
        # Next prompts, on the device: the centroids (the seed where nothing
        # was found) and the best masks' low-res logits.
        area = numbers[:, 2:3]
        centroid = numbers[:, 3:5] / area.clamp(min=1)
        points = torch.where(area > 0, centroid, self._seed_t)  # (K, 2)
        chosen = logits[torch.arange(count, device=logits.device), numbers[:, 0].to(torch.long)]  # (K, h, w)
        if self.single:
            self._point, self._logits = points, chosen
        else:
            self._point, self._logits = points[:, None, :], chosen[:, None]
        label = best[0].to(torch.uint8) if self.single else label_torch(best)
        # One copy for the frame: the numbers and the label map, together.
        payload = self._to_host(torch.cat([numbers.reshape(-1).view(torch.uint8), label.reshape(-1)]))
        if marks is not None:
            marks.mark("packet")
        host_numbers = payload[: 72 * count].view(np.float64).reshape(count, 9)
        label_map = payload[72 * count :].reshape(label.shape)
        return packet(host_numbers[0] if self.single else host_numbers, frame, "gpu"), label_map

    def _process_numpy(self, frame: Frame, marks: Optional[_Marks]) -> Tuple[Dict[str, Any], np.ndarray]:
        image = frame.image if frame.image.ndim == 3 else np.repeat(frame.image[:, :, None], 3, axis=2)
        if marks is not None:
            marks.mark("upload")
        self.predictor.set_image(image)
        if marks is not None:
            marks.mark("set_image")
        if self.single:
            masks, scores, logits = self.predictor.predict(
                point_coords=self._point, point_labels=np.array([1]), mask_input=self._logits,
                multimask_output=True, as_numpy=True,
            )
        elif is_sam2(self.predictor):
            masks, scores, logits = self.predictor.predict(
                point_coords=self._point, point_labels=np.ones((self.objects, 1), dtype=np.int64),
                mask_input=self._logits, multimask_output=True, as_numpy=True,
            )
        else:  # segment-anything's numpy predict takes one structure: one call each
            results = [
                self.predictor.predict(
                    point_coords=self._point[k], point_labels=np.array([1]),
                    mask_input=None if self._logits is None else self._logits[k], multimask_output=True,
                    as_numpy=True,
                )
                for k in range(self.objects)
            ]
            masks, scores, logits = (np.stack([r[i] for r in results]) for i in range(3))
        if marks is not None:
            marks.mark("predict")
        return self._finish_numpy(frame, masks, scores, logits, marks)

    def _finish_numpy(self, frame: Frame, masks: np.ndarray, scores: np.ndarray, logits: np.ndarray,
                      marks: Optional[_Marks]) -> Any:
        if self.single:
            masks, scores, logits = masks[None], scores[None], logits[None]
        numbers, best = stats_numpy_batch(masks, scores)
        area = numbers[:, 2:3]
        centroid = numbers[:, 3:5] / np.maximum(area, 1.0)
        points = np.where(area > 0, centroid, self._seed)
        chosen = logits[np.arange(len(numbers)), numbers[:, 0].astype(np.int64)]
        if self.single:
            self._point, self._logits = points, chosen
            label = best[0].astype(np.uint8)
        else:
            self._point, self._logits = points[:, None, :], chosen[:, None]
            label = label_numpy(best)
        if marks is not None:
            marks.mark("packet")
        return packet(numbers[0] if self.single else numbers, frame, "numpy"), label

    def _reply(self, frame: Frame, result: Dict[str, Any], label: np.ndarray, popped: float = 0.0,
               marks: Optional[_Marks] = None) -> None:
        stamp = time.time()
        started = time.perf_counter()
        raw = label_message(label, LABEL_DEVICE, stamp, frame_id=frame.frame_id) + string_message(
            json.dumps(result), PACKET_DEVICE, stamp, frame_id=frame.frame_id
        )
        packed = time.perf_counter()
        with self._send_lock:
            sock = self._sock
            if sock is None or frame.connection != self._connection:
                self.counters.stale += 1
                self.counters.stale_ids.append(frame.frame_id)
                return
            try:
                sock.sendall(raw)
            except OSError as exc:
                self.counters.stale += 1
                self.counters.stale_ids.append(frame.frame_id)
                log.warning("reply to frame %d not sent (%s); dropping the connection", frame.frame_id, exc)
                # Part of a reply may have gone out: the peer's stream is out
                # of step. The receiving thread sees the shutdown and reconnects.
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
        sent = time.perf_counter()
        latency = (sent - frame.arrived) * 1e3
        self.latencies_ms.append(latency)
        self.counters.processed += 1
        late = latency > self.deadline_ms
        self.counters.late += int(late)
        if marks is not None:
            self._record(frame, popped, marks, started, packed, sent, latency)
        if kpi_log.isEnabledFor(logging.INFO):
            event = {"ts": time.time(), "event": "igt_frame", "frame_id": frame.frame_id,
                     "latency_ms": round(latency, 3), "late": late, "mode": result["mode"],
                     "dropped_total": self.counters.dropped}
            kpi_log.info(json.dumps(event), extra={"samgpu_kpi": event})

    def _record(self, frame: Frame, popped: float, marks: _Marks, started: float, packed: float, sent: float,
                latency: float) -> None:
        host, device = marks.split()
        # Contiguous by construction: the queue stage ends at the first mark and
        # reply_pack starts at the last, so a thread switch between two stamps
        # (the receiving thread holds the interpreter for up to a switch
        # interval) lands in a stage instead of in no stage at all.
        first = marks.host[0] if marks.host else popped
        last = marks.host[-1] if marks.host else started
        stages = {"receive": (frame.arrived - frame.first_byte) * 1e3, "queue": (first - frame.arrived) * 1e3}
        stages.update(host)
        stages["reply_pack"] = (packed - last) * 1e3
        stages["send"] = (sent - packed) * 1e3
        begin = frame.first_byte or frame.arrived
        gc_ms = sum(max(0.0, min(end, sent) - max(start, begin)) for start, end, _ in self.gc_pauses[-8:]) * 1e3
        self.timings.append({
            "frame_id": frame.frame_id,
            "loop_ms": round(latency, 3),
            "stages_ms": {k: round(v, 3) for k, v in stages.items()},
            "device_ms": {k: round(v, 3) for k, v in device.items()},
            "gc_ms": round(gc_ms, 3),
            "arrived": frame.arrived,
        })
