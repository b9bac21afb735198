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

Real-time rules: a bounded queue between the socket and the model (frames
that arrive faster than they are processed are dropped, oldest first, and
counted); a deadline per frame (late frames counted); reconnection when the
server goes away; a malformed or unexpected message is logged and skipped.

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
import json
import logging
import socket
import struct
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np
import torch
from link import BadMessage, FramingLost, Limits, LinkBroken, image_message, read_message, string_message

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
# [best index, score, area, sum of x, sum of y, x0, y0, x1, y1]: sums of
# integer pixel coordinates are exact in float64 in any order, so the device
# and numpy versions agree to the bit.


def stats_torch(masks: torch.Tensor, scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    index = scores.argmax(dim=0, keepdim=True)
    best = masks.index_select(0, index)[0]
    height, width = best.shape
    ys = torch.arange(height, device=best.device, dtype=torch.float64)
    xs = torch.arange(width, device=best.device, dtype=torch.float64)
    rows = best.sum(dim=1, dtype=torch.float64)
    cols = best.sum(dim=0, dtype=torch.float64)
    row_hit, col_hit = rows > 0, cols > 0
    numbers = torch.stack([
        index[0].to(torch.float64),
        scores.index_select(0, index)[0].to(torch.float64),
        rows.sum(),
        cols @ xs,
        rows @ ys,
        torch.where(col_hit, xs, float(width)).amin(),
        torch.where(row_hit, ys, float(height)).amin(),
        torch.where(col_hit, xs, -1.0).amax(),
        torch.where(row_hit, ys, -1.0).amax(),
    ])
    return numbers, best


def stats_numpy(masks: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    index = int(scores.argmax())
    best = masks[index]
    height, width = best.shape
    ys = np.arange(height, dtype=np.float64)
    xs = np.arange(width, dtype=np.float64)
    rows = best.sum(axis=1).astype(np.float64)
    cols = best.sum(axis=0).astype(np.float64)
    row_hit, col_hit = rows > 0, cols > 0
    numbers = np.array([
        index, np.float64(scores[index]), rows.sum(), cols @ xs, rows @ ys,
        np.where(col_hit, xs, width).min(), np.where(row_hit, ys, height).min(),
        np.where(col_hit, xs, -1).max(), np.where(row_hit, ys, -1).max(),
    ], dtype=np.float64)
    return numbers, best


def packet(numbers: Any, frame: Frame, mode: str) -> Dict[str, Any]:
    index, score, area, sum_x, sum_y, x0, y0, x1, y1 = (float(v) for v in numbers)
    found = area > 0
    return {
        "frame_id": frame.frame_id,
        "timestamp": frame.timestamp,
        "mode": mode,
        "mask_index": int(index),
        "score": score,
        "area_px": int(area),
        "centroid_xy": [sum_x / area, sum_y / area] if found else None,
        "bbox_xyxy": [int(x0), int(y0), int(x1), int(y1)] if found else None,
    }


class Orchestrator:
    """Receives frames, segments them, answers; ``start()``, ``stop()``, ``counters``."""

    def __init__(
        self,
        predictor: Any,
        host: str = "127.0.0.1",
        port: int = 18944,
        *,
        seed_point: Tuple[float, float],
        deadline_ms: float = 33.0,
        queue_size: int = 1,
        legacy: bool = False,
        frame_device: Optional[str] = None,
        reconnect_max_s: float = 1.0,
        trace: bool = False,
        limits: Optional[Limits] = None,
        frame_size: Optional[Tuple[int, int]] = None,
        send_timeout_s: float = 2.0,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
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
        # (frame id, point prompt) per frame: tests only, reading the point
        # back makes the host wait for the device.
        self.trace: Optional[List[Tuple[int, List[float]]]] = [] if trace else None
        self._queue: Deque[Frame] = collections.deque(maxlen=queue_size)
        self._ready = threading.Condition()
        self._send_lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._connection = 0
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.device = torch.device(predictor.device)
        self._seed = np.array([seed_point], dtype=np.float64)
        self._reset_tracking()

    # -- tracking state: where the next prompt comes from --------------------
    def _reset_tracking(self) -> None:
        self._point: Any = self._seed  # (1, 2): x, y
        self._logits: Any = None  # (1, h, w) low-res logits of the last best mask
        self._seed_t = torch.as_tensor(self._seed, device=self.device)
        self._label_t = torch.ones(1, dtype=torch.int, device=self.device)

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> Orchestrator:
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

    def connected(self) -> bool:
        return self._sock is not None

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
            frame = Frame(image, frame_id, float(message.timestamp), arrived, connection)
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
            try:
                result, label = self.process(frame)
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
            self._reply(frame, result, label)

    def process(self, frame: Frame) -> Tuple[Dict[str, Any], np.ndarray]:
        """Segment one frame: (packet, label map)."""
        if self.trace is not None:
            point = self._point
            point = point.cpu().numpy() if isinstance(point, torch.Tensor) else point
            self.trace.append((frame.frame_id, [float(v) for v in point[0]]))
        with samgpu_shim.kpi_fields(frame_id=frame.frame_id):
            if self.legacy:
                return self._process_numpy(frame)
            return self._process_device(frame)

    def _upload(self, image: np.ndarray) -> torch.Tensor:
        # The message's pixels are read-only bytes: one host copy, into pinned
        # memory on CUDA so that the upload does not make the host wait.
        if self.device.type == "cuda":
            pinned = torch.empty(image.shape, dtype=torch.uint8, pin_memory=True)
            pinned.numpy()[...] = image
            frame = pinned.to(self.device, non_blocking=True)
        else:
            frame = torch.from_numpy(image.copy())
        if frame.dim() == 2:  # grey: the three channels SAM expects, no copy
            frame = frame[:, :, None].expand(-1, -1, 3)
        return frame

    def prompts(self, frame: Frame) -> Dict[str, Any]:
        """``predict``'s prompts for this frame, from the last result (on the
        device): its centroid as the point, its low-res logits as ``mask_input``.
        A subclass may add to them (the soak varies their shapes)."""
        return {"point_coords": self._point, "point_labels": self._label_t, "mask_input": self._logits}

    def _process_device(self, frame: Frame) -> Tuple[Dict[str, Any], np.ndarray]:
        predictor = self.predictor
        predictor.set_image(self._upload(frame.image))
        masks, scores, logits = predictor.predict(**self.prompts(frame), multimask_output=True)
        if isinstance(masks, np.ndarray):  # rolled back: upstream's numpy results
            return self._finish_numpy(frame, masks, scores, logits)
        numbers, best = stats_torch(masks, scores)
        # Next prompts, on the device: the centroid (or the seed when nothing
        # was found) and the best mask's low-res logits.
        area = numbers[2]
        centroid = torch.stack([numbers[3], numbers[4]]) / area.clamp(min=1)
        self._point = torch.where(area > 0, centroid, self._seed_t[0])[None]
        self._logits = logits.index_select(0, numbers[0].to(torch.long))
        # One copy for the frame: the nine numbers and the label map, together.
        payload = torch.cat([numbers.view(torch.uint8), best.to(torch.uint8).reshape(-1)]).cpu().numpy()
        host_numbers = payload[:72].view(np.float64)
        label = payload[72:].reshape(best.shape)
        return packet(host_numbers, frame, "gpu"), label

    def _process_numpy(self, frame: Frame) -> Tuple[Dict[str, Any], np.ndarray]:
        image = frame.image if frame.image.ndim == 3 else np.repeat(frame.image[:, :, None], 3, axis=2)
        self.predictor.set_image(image)
        masks, scores, logits = self.predictor.predict(
            point_coords=self._point, point_labels=np.array([1]), mask_input=self._logits, multimask_output=True,
            as_numpy=True,
        )
        return self._finish_numpy(frame, masks, scores, logits)

    def _finish_numpy(self, frame: Frame, masks: np.ndarray, scores: np.ndarray, logits: np.ndarray) -> Any:
        numbers, best = stats_numpy(masks, scores)
        area = numbers[2]
        centroid = np.array([numbers[3], numbers[4]]) / max(area, 1.0)
        self._point = (centroid if area > 0 else self._seed[0])[None]
        self._logits = logits[int(numbers[0])][None]
        return packet(numbers, frame, "numpy"), best.astype(np.uint8)

    def _reply(self, frame: Frame, result: Dict[str, Any], label: np.ndarray) -> None:
        stamp = time.time()
        raw = image_message(label[None], LABEL_DEVICE, stamp, frame_id=frame.frame_id) + string_message(
            json.dumps(result), PACKET_DEVICE, stamp, frame_id=frame.frame_id
        )
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
        latency = (time.perf_counter() - frame.arrived) * 1e3
        self.latencies_ms.append(latency)
        self.counters.processed += 1
        late = latency > self.deadline_ms
        self.counters.late += int(late)
        if kpi_log.isEnabledFor(logging.INFO):
            event = {"ts": time.time(), "event": "igt_frame", "frame_id": frame.frame_id,
                     "latency_ms": round(latency, 3), "late": late, "mode": result["mode"],
                     "dropped_total": self.counters.dropped}
            kpi_log.info(json.dumps(event), extra={"samgpu_kpi": event})
