"""A frame source for tests and demos: an OpenIGTLink server that streams
synthetic ultrasound on loopback, like a PLUS server or 3D Slicer would.

Frames are IMAGE messages (uint8, one component, ``(1, H, W)``) with the
frame id and the send time in their metadata (header version 2). The server
reads the orchestrator's replies on the same connection and times each frame
from the moment it was sent to the moment both replies (the label map and the
JSON packet) are in: end-to-end latency, as the application sees it.

Run alone: ``python examples/igt/source.py --port 18944 --fps 30 --frames 300``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from link import BadMessage, LinkBroken, image_message, read_message
from packing import restamp

FRAME_DEVICE = "Image_Probe"


class Phantom:
    """Speckle, depth attenuation and one bright round structure moving on a
    Lissajous path; ``frame(k)`` also returns the structure's true centre."""

    def __init__(self, height: int = 192, width: int = 256, seed: int = 0, radius: float = 0.12) -> None:
        self.height, self.width = height, width
        self.radius = radius * min(height, width)
        rng = np.random.default_rng(seed)
        # Speckle: a Rayleigh field, a few fixed patterns cycled with a slow drift.
        self._speckle = rng.rayleigh(1.0, size=(4, height, width)).astype(np.float32)
        depth = np.linspace(1.0, 0.45, height, dtype=np.float32)[:, None]
        self._background = 55.0 * depth
        self._y, self._x = np.mgrid[0:height, 0:width].astype(np.float32)

    def centre(self, k: int) -> Tuple[float, float]:
        t = k / 30.0
        cx = self.width * (0.5 + 0.25 * math.sin(2 * math.pi * 0.23 * t))
        cy = self.height * (0.5 + 0.22 * math.sin(2 * math.pi * 0.31 * t + 0.7))
        return cx, cy

    def frame(self, k: int) -> Tuple[np.ndarray, Tuple[float, float]]:
        cx, cy = self.centre(k)
        inside = ((self._x - cx) ** 2 + (self._y - cy) ** 2) <= self.radius**2
        speckle = self._speckle[k % 4]
        image = self._background * speckle + np.where(inside, 150.0, 0.0) * (0.6 + 0.4 * speckle)
        return np.clip(image, 0, 255).astype(np.uint8), (cx, cy)


def _render_into(out: Any, size: Tuple[int, int], seed: int, first: int, count: int) -> None:
    """The renderer process: each frame rendered and packed (timestamp 0), in order."""
    phantom = Phantom(*size, seed=seed)
    for k in range(first, first + count):
        image, _ = phantom.frame(k)
        out.put((k, image_message(image[None], FRAME_DEVICE, 0.0, frame_id=k)))
    out.put(None)


class Renderer:
    """Frames rendered and packed by a process of their own, a bounded queue ahead.

    Packed ahead in the sending process, a long run would hold every frame
    in memory (1.7 GB for three minutes of 480x640); packed as sent, the
    sender holds the interpreter lock for the render and the CRC while its
    reply-reading thread waits, which delays the frames' sends and the
    replies' timestamps. Here the sender only takes the next message and
    stamps it; at most ``ahead`` frames wait (``ahead`` x 0.3 MB at
    480x640).
    """

    def __init__(self, size: Tuple[int, int], seed: int, first: int, count: int, ahead: int = 60) -> None:
        context = multiprocessing.get_context("spawn")  # no thread of this process is copied into it
        self._queue: Any = context.Queue(maxsize=ahead)
        self._process = context.Process(target=_render_into, args=(self._queue, size, seed, first, count),
                                        daemon=True, name="igt-render")
        self._process.start()
        # The first frame is waited for here, before the stream's clock starts:
        # a process's start (interpreter, numpy, pyigtl) takes a few hundred ms.
        self._next: Any = self._get(first, timeout=60.0)

    def _get(self, k: int, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._queue.get(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if not self._process.is_alive():
                    code = self._process.exitcode
                    raise RuntimeError(f"the renderer exited (code {code}) before frame {k}") from None
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"the renderer did not deliver frame {k} within {timeout} s") from None

    def take(self, k: int, timeout: float = 10.0) -> bytes:
        """Frame ``k``'s packed message (frames are taken in order)."""
        item = self._next if self._next is not None else self._get(k, timeout)
        self._next = None
        if item is None or item[0] != k:
            raise RuntimeError(f"the renderer delivered {item and item[0]!r} where frame {k} was due")
        return item[1]

    def close(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(timeout=5)


@dataclass
class Record:
    sent: Dict[int, float] = field(default_factory=dict)  # frame id -> time sent
    replies: Dict[int, Dict[str, float]] = field(default_factory=dict)  # frame id -> reply type -> time
    packets: Dict[int, dict] = field(default_factory=dict)
    unsent: List[int] = field(default_factory=list)  # no client connected at that moment
    lag_ms: Dict[int, float] = field(default_factory=dict)  # frame id -> sent this late after its slot
    connections: int = 0
    refused: int = 0  # connections from a peer not in allowed_peers

    def answered(self) -> Dict[int, float]:
        """frame id -> end-to-end latency in ms, for frames with both replies."""
        return {
            k: (max(r.values()) - self.sent[k]) * 1e3
            for k, r in self.replies.items()
            if len(r) == 2 and k in self.sent
        }


class FrameServer:
    """Streams ``frames`` phantom frames at ``fps`` to one client at a time.

    ``lockstep=True`` sends the next frame only once the previous one is
    answered (or after ``lockstep_timeout``): every frame is processed, in
    order, whatever the machine's speed; the packet sequence is then
    reproducible. ``restart()`` drops the connection and the listening socket,
    and listens again on the same port. ``inject(raw)`` writes raw bytes to the
    client (malformed or unexpected messages).

    It listens on ``host`` (127.0.0.1 unless told otherwise) and, when
    ``allowed_peers`` is given, closes at once any connection from another
    address (``record.refused`` counts them).
    """

    def __init__(
        self,
        port: int = 0,
        fps: float = 30.0,
        frames: int = 300,
        size: Tuple[int, int] = (192, 256),
        seed: int = 0,
        lockstep: bool = False,
        lockstep_timeout: float = 5.0,
        host: str = "127.0.0.1",
        allowed_peers: Optional[Tuple[str, ...]] = None,
    ) -> None:
        self.host = host
        self.allowed_peers = None if allowed_peers is None else frozenset(allowed_peers)
        self.phantom = Phantom(*size, seed=seed)
        self.seed = seed
        self.fps, self.frames, self.lockstep, self.lockstep_timeout = fps, frames, lockstep, lockstep_timeout
        self.record = Record()
        self.truth: Dict[int, Tuple[float, float]] = {}
        self._packed: Dict[int, bytes] = {}  # frame id -> message packed ahead of time (prepack)
        self.renderer: Optional[Renderer] = None  # frames packed by a process of their own (render_in_process)
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._client: Optional[socket.socket] = None
        self._listener = self._listen(port)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._done = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True, name="igt-accept").start()

    # -- connection ---------------------------------------------------------
    def _listen(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        listener.listen(1)
        return listener

    def _accept_loop(self) -> None:
        listener = self._listener
        while not self._stop.is_set():
            try:
                client, peer = listener.accept()
            except OSError:  # closed: stopped, or restarted (a new loop serves the new socket)
                return
            if self.allowed_peers is not None and peer[0] not in self.allowed_peers:
                with self._lock:
                    self.record.refused += 1
                _close(client)
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._client = client
                self.record.connections += 1
            threading.Thread(target=self._read_replies, args=(client,), daemon=True, name="igt-replies").start()

    def connected(self) -> bool:
        with self._lock:
            return self._client is not None

    def wait_connected(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected():
                return True
            time.sleep(0.005)
        return False

    def restart(self, down_for: float = 0.3) -> None:
        """The server goes away (both sockets closed) and comes back on the same port."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            _close(client)
        old = self._listener
        _close(old)
        time.sleep(down_for)
        self._listener = self._listen(self.port)
        threading.Thread(target=self._accept_loop, daemon=True, name="igt-accept").start()

    def inject(self, raw: bytes) -> None:
        with self._lock:
            client = self._client
        if client is not None:
            client.sendall(raw)

    # -- streaming ----------------------------------------------------------
    def stream(self, first: int = 0, count: Optional[int] = None) -> None:
        """Send frames ``first`` .. ``first + count - 1`` on the rate's schedule."""
        count = self.frames - first if count is None else count
        period = 1.0 / self.fps
        start = time.perf_counter()
        for i, k in enumerate(range(first, first + count)):
            if self._stop.is_set():
                break
            due = start + i * period
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if self.send_frame(k):
                self.record.lag_ms[k] = round((self.record.sent[k] - due) * 1e3, 3)
            if self.lockstep:
                with self._answered:
                    self._answered.wait_for(lambda k=k: len(self.record.replies.get(k, ())) == 2,
                                            timeout=self.lockstep_timeout)

    def prepack(self, first: int = 0, count: Optional[int] = None) -> None:
        """Render and pack frames ahead of time.

        Rendering a 480x640 phantom and packing it (pyigtl computes the CRC
        byte by byte) take several ms with the interpreter lock held; done
        while streaming, that delays the thread that timestamps the replies
        and so inflates the measured latency. Prepacked, a frame costs a
        timestamp and a ``sendall``.
        """
        count = self.frames - first if count is None else count
        for k in range(first, first + count):
            image, centre = self.phantom.frame(k)
            self.truth[k] = centre
            self._packed[k] = image_message(image[None], FRAME_DEVICE, 0.0, frame_id=k)

    def render_in_process(self, first: int = 0, count: Optional[int] = None, ahead: int = 60) -> None:
        """Have frames ``first`` .. ``first + count - 1`` rendered and packed by
        a process of their own (:class:`Renderer`), ``ahead`` frames at most
        waiting: bounded memory, and no render in this process."""
        count = self.frames - first if count is None else count
        self.renderer = Renderer((self.phantom.height, self.phantom.width), self.seed, first, count, ahead)

    def send_frame(self, k: int) -> bool:
        now = time.time()
        if k in self._packed:
            raw = restamp(self._packed.pop(k), now)
        elif self.renderer is not None:
            raw = restamp(self.renderer.take(k), now)
            self.truth[k] = self.phantom.centre(k)
        else:
            image, centre = self.phantom.frame(k)
            self.truth[k] = centre
            raw = image_message(image[None], FRAME_DEVICE, now, frame_id=k)
        with self._lock:
            client = self._client
            if client is None:
                self.record.unsent.append(k)
                return False
            self.record.sent[k] = time.perf_counter()
        try:
            client.sendall(raw)
            return True
        except OSError:
            with self._lock:
                self.record.sent.pop(k, None)
                self.record.unsent.append(k)
            return False

    def _read_replies(self, client: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                message = read_message(client)
            except BadMessage:
                continue
            except (LinkBroken, OSError):
                with self._lock:
                    if self._client is client:
                        self._client = None
                return
            if message is None:
                continue
            try:
                k = int(message.metadata.get("frame_id", -1))
            except (TypeError, ValueError):
                continue
            now = time.perf_counter()
            with self._answered:
                self.record.replies.setdefault(k, {})[message._message_type] = now
                if message._message_type == "STRING":
                    try:
                        self.record.packets[k] = json.loads(message.string)
                    except ValueError:
                        pass
                self._answered.notify_all()

    def wait_answers(self, timeout: float = 5.0) -> None:
        """Wait until every sent frame is answered, or ``timeout`` without progress."""
        last, since = -1, time.monotonic()
        while time.monotonic() - since < timeout:
            with self._lock:
                done = len(self.record.answered())
                pending = set(self.record.sent) - set(self.record.answered())
            if not pending:
                return
            if done != last:
                last, since = done, time.monotonic()
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        if self.renderer is not None:
            self.renderer.close()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            _close(client)
        _close(self._listener)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--allow", nargs="*", metavar="ADDRESS",
                        help="accept connections only from these peer addresses")
    parser.add_argument("--port", type=int, default=18944)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--first", type=int, default=0, help="id of the first frame (default 0)")
    parser.add_argument("--wait-s", type=float, default=5.0,
                        help="after the last frame, wait this long without a new answer (default 5)")
    parser.add_argument("--size", default="192x256", help="HEIGHTxWIDTH")
    parser.add_argument("--json", help="save the per-frame latencies and packets here")
    parser.add_argument("--print-port", action="store_true", help="first line of output: 'port N'")
    parser.add_argument("--live", action="store_true",
                        help="render and pack each frame when it is sent (default: all ahead of time)")
    parser.add_argument("--render-process", action="store_true",
                        help="render and pack in a process of its own, a few frames ahead (long runs)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    server = FrameServer(args.port, args.fps, args.frames, size, host=args.host,  # type: ignore[arg-type]
                         allowed_peers=tuple(args.allow) if args.allow else None)
    if args.print_port:
        print(f"port {server.port}", flush=True)
    else:
        print(f"listening on {args.host}:{server.port}; waiting for a client", flush=True)
    if args.render_process:
        server.render_in_process(args.first, args.frames)
    elif not args.live:  # while the client gets ready
        server.prepack(args.first, args.frames)
    server.wait_connected(timeout=3600)
    server.stream(args.first, args.frames)
    server.wait_answers(timeout=args.wait_s)
    latencies = server.record.answered()
    print(f"sent {len(server.record.sent)}, answered {len(latencies)}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"latency_ms": latencies, "packets": server.record.packets,
                       "unsent": server.record.unsent, "sent": sorted(server.record.sent),
                       "send_lag_ms": server.record.lag_ms}, fh)
    server.close()


if __name__ == "__main__":
    main()
