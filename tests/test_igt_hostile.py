"""Hostile bytes and faults on the OpenIGTLink loop (examples/igt): the reader's
bounds through real sockets, the loop's accounting when the model raises, a
peer that stops reading, what the example listens on. tox factor ``igt``.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

pyigtl = pytest.importorskip("pyigtl", reason="pyigtl is not installed (tox factor igt)")

HERE = Path(__file__).resolve().parent
IGT = HERE.parent / "examples" / "igt"
sys.path.insert(0, str(IGT))

import link  # noqa: E402
from faults import inject_fault  # noqa: E402
from link import BadMessage, FramingLost, Limits, LinkBroken, image_message, read_message, string_message  # noqa: E402
from orchestrator import Orchestrator  # noqa: E402
from segment_anything import SamPredictor  # noqa: E402
from source import FRAME_DEVICE, FrameServer  # noqa: E402

from samgpu_shim.tools.models import build_sam  # noqa: E402

SIZE = (192, 256)
SEED = (128.0, 96.0)
MB = 1 << 20


# -- the reader, byte by byte ----------------------------------------------------


@pytest.fixture()
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def _frame(shape=(1, 16, 16), dtype=np.uint8, **metadata):
    return image_message(np.zeros(shape, dtype), FRAME_DEVICE, 1.0, **metadata)


def _with_header(raw, **changes):
    """``raw`` with header fields replaced (body_size, header_version, type)."""
    header = bytearray(raw[:link.HEADER_SIZE])
    if "version" in changes:
        struct.pack_into(">H", header, 0, changes["version"])
    if "kind" in changes:
        header[2:14] = changes["kind"].ljust(12, b"\0")
    if "body_size" in changes:
        struct.pack_into(">Q", header, 42, changes["body_size"])
    return bytes(header) + raw[link.HEADER_SIZE:]


def _image_fields(raw, **fields):
    """An IMAGE (header version 1) with its image header fields replaced; the
    body keeps its bytes, the message header its size."""
    body = bytearray(raw[link.HEADER_SIZE:])
    names = {"components": (2, "B"), "scalar": (3, "B"), "endian": (4, "B")}
    for name, value in fields.items():
        if name in names:
            offset, fmt = names[name]
            struct.pack_into(">" + fmt, body, offset, value)
        elif name == "size":  # (i, j, k), and the subvolume with it
            struct.pack_into(">HHH", body, 6, *value)
            struct.pack_into(">HHH", body, 66, *value)
        elif name == "subvolume_start":
            struct.pack_into(">HHH", body, 60, *value)
    return raw[:link.HEADER_SIZE] + bytes(body)


def _resized(raw, body):
    return _with_header(raw[:link.HEADER_SIZE] + body, body_size=len(body))


def _read(sock_pair, raw, limits=link.DEFAULT_LIMITS):
    a, b = sock_pair
    a.sendall(raw)
    return read_message(b, limits)


def _in_step(sock_pair):
    """The stream is still in step: the next message reads whole."""
    message = _read(sock_pair, string_message("still here", "Probe", 1.0))
    assert message.string == "still here"


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_header_announcing_4_gb_breaks_the_link_without_allocating(pair):
    raw = _with_header(_frame(), body_size=4 << 30)

    def read():
        with pytest.raises(FramingLost, match="over the .* limit"):
            _read(pair, raw)

    assert _peak(read) < MB


def test_an_image_claiming_65535x65535_pixels_is_skipped_without_allocating(pair):
    raw = _image_fields(_frame(), size=(65535, 65535, 1))

    def read():
        with pytest.raises(BadMessage, match="65535x65535x1 pixels is over the"):
            _read(pair, raw)

    assert _peak(read) < MB
    _in_step(pair)


@pytest.mark.parametrize("fields, words", [
    ({"scalar": 9}, "unknown scalar type 9"),
    ({"scalar": 0}, "unknown scalar type 0"),
    ({"components": 0}, "0 components"),
    ({"components": 200}, "200 components"),
    ({"endian": 7}, "unknown endianness"),
    ({"size": (16, 16, 0)}, "empty axis"),
    ({"size": (17, 16, 1)}, "bytes of pixels"),  # more pixels announced than sent
    ({"size": (8, 16, 1)}, "bytes of pixels"),  # fewer
    ({"subvolume_start": (1, 0, 0)}, "subvolume"),
])
def test_image_header_fields_that_do_not_add_up_are_skipped(pair, fields, words):
    with pytest.raises(BadMessage, match=words):
        _read(pair, _image_fields(_frame(), **fields))
    _in_step(pair)


def test_truncated_and_oversized_bodies_are_skipped(pair):
    raw = _frame()
    body = raw[link.HEADER_SIZE:]
    for changed in (body[:-1], body + b"\0", body[:40], b""):
        with pytest.raises(BadMessage):
            _read(pair, _resized(raw, changed))
        _in_step(pair)


def test_extended_header_and_metadata_sizes_beyond_the_body_are_skipped(pair):
    raw = _frame(frame_id=7)  # header version 2: extended header and metadata
    body = bytearray(raw[link.HEADER_SIZE:])
    for offset, value, fmt in ((0, 60000, ">H"), (2, 60000, ">H"), (4, 1 << 30, ">I"), (0, 3, ">H")):
        changed = bytearray(body)
        struct.pack_into(fmt, changed, offset, value)
        with pytest.raises(BadMessage, match="extended header"):
            _read(pair, raw[:link.HEADER_SIZE] + bytes(changed))
        _in_step(pair)
    with pytest.raises(BadMessage, match="shorter than the extended header"):
        _read(pair, _resized(raw, bytes(body[:5])))
    _in_step(pair)


@pytest.mark.parametrize("changes", [{"version": 0}, {"version": 3}, {"version": 0xFFFF},
                                     {"kind": b"IMA GE"}, {"kind": b"\xff\xfe"}, {"kind": b""}])
def test_bytes_that_are_not_a_header_break_the_link(pair, changes):
    with pytest.raises(FramingLost, match="not an OpenIGTLink header"):
        _read(pair, _with_header(_frame(), **changes))


def test_types_not_accepted_are_read_past_not_unpacked(pair):
    only_images = Limits(accept=frozenset({"IMAGE"}))
    transform = pyigtl.TransformMessage(np.eye(4), device_name="Probe").pack()
    point = pyigtl.PointMessage(positions=[[1, 2, 3]], device_name="Probe").pack()
    unknown = _with_header(string_message("x", "Other", 1.0), kind=b"FOOBAR")
    for raw in (transform, point, unknown, string_message("x" * 5000, "Other", 1.0)):
        assert _read(pair, raw, only_images) is None
    # A TRANSFORM announcing 60 MB of body: read past a chunk at a time, not held.
    a, b = pair
    big = _with_header(transform, body_size=60 * MB)
    rest = bytes(60 * MB - 48)  # made before the measurement starts

    def skip():
        threading.Thread(target=lambda: (a.sendall(big), a.sendall(rest)), daemon=True).start()
        assert read_message(b, only_images) is None

    assert _peak(skip) < MB
    _in_step(pair)


def test_undecodable_device_names_cost_nothing(pair):
    raw = bytearray(_frame())
    raw[14:34] = b"\xff\xfe\xfd".ljust(20, b"\0")
    message = _read(pair, bytes(raw))
    assert message.image.shape == (1, 16, 16) and "\ufffd" in message.device_name


def test_a_body_that_stalls_breaks_the_link_within_its_deadline(pair):
    a, b = pair
    raw = _frame()
    a.sendall(raw[:link.HEADER_SIZE + 10])
    started = time.monotonic()
    with pytest.raises(FramingLost, match="stalled"):
        read_message(b, Limits(body_timeout_s=0.3))
    assert time.monotonic() - started < 5.0


def test_memory_follows_the_bytes_received_not_the_bytes_announced(pair):
    a, b = pair
    announced = _with_header(_frame(), body_size=60 * MB)  # under the 64 MB limit

    def read():
        threading.Thread(target=lambda: (a.sendall(announced + b"\0" * 100_000), a.shutdown(socket.SHUT_WR)),
                         daemon=True).start()
        with pytest.raises(LinkBroken, match="closed"):
            read_message(b)

    assert _peak(read) < 3 * MB


def test_crc_is_checked_when_asked(pair):
    raw = bytearray(_frame())
    raw[-1] ^= 0xFF  # one pixel changed, CRC left as it was
    with pytest.raises(BadMessage, match="CRC"):
        _read(pair, bytes(raw), Limits(verify_crc=True))
    assert _read(pair, bytes(raw)).image[0, -1, -1] == 0xFF  # not checked by default
    assert _read(pair, _frame(), Limits(verify_crc=True)).image.shape == (1, 16, 16)


def test_limits_explicit_then_environment_then_default():
    env = {link.ENV_MAX_BODY: "1000", link.ENV_MAX_PIXELS: "64", link.ENV_BODY_TIMEOUT: "0.5",
           link.ENV_VERIFY_CRC: "1"}
    limits = Limits.from_env(env, max_pixels=128)
    assert (limits.max_body, limits.max_pixels, limits.body_timeout_s, limits.verify_crc) == (1000, 128, 0.5, True)
    assert Limits.from_env({}) == Limits()
    with pytest.raises(ValueError, match=link.ENV_MAX_BODY):
        Limits.from_env({link.ENV_MAX_BODY: "lots"})
    with pytest.raises(ValueError, match="max_body"):
        Limits(max_body=0)
    with pytest.raises(ValueError, match="cannot unpack"):
        Limits(accept=frozenset({"POLYDATA"}))


def test_the_pixel_limit_applies(pair):
    with pytest.raises(BadMessage, match="over the 255 limit"):
        _read(pair, _frame(), Limits(max_pixels=255))
    assert _read(pair, _frame(), Limits(max_pixels=256)).image.shape == (1, 16, 16)


# -- the loop ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor():
    return SamPredictor(build_sam("tiny", image_size=256))


def _run(predictor, server, stream, **options):
    loop = Orchestrator(predictor, port=server.port, seed_point=SEED, **options).start()
    try:
        assert server.wait_connected(10), "the orchestrator did not connect"
        stream()
        server.wait_answers(timeout=3)
    finally:
        loop.stop()
        server.close()
    return loop


def test_a_frame_whose_model_raises_out_of_memory_is_an_error_and_the_loop_goes_on(predictor, caplog):
    # The faults come from the real model's forward (image encoder, mask decoder).
    import logging

    import torch

    server = FrameServer(fps=30, frames=15, size=SIZE, lockstep=True, lockstep_timeout=2.0)

    def stream():
        server.stream(0, 5)
        inject_fault(predictor, "set_image", "oom", count=2)
        server.stream(5, 5)
        inject_fault(predictor, "predict", "oom", count=1)
        server.stream(10, 5)

    with caplog.at_level(logging.ERROR, logger="igt.orchestrator"):
        loop = _run(predictor, server, stream)
    c = loop.counters
    assert c.error_ids == [5, 6, 10] and c.errors_by_type == {"OutOfMemoryError": 3}
    # The log records keep their tracebacks, but not what the failed frames held
    # (on a GPU: their uploads), so the memory is free for the next frame.
    failures = [r for r in caplog.records if r.exc_info and "failed; the loop goes on" in r.getMessage()]
    assert len(failures) == 3
    for record in failures:
        tb = record.exc_info[2].tb_next  # the frames below the loop's own
        while tb is not None:
            assert not any(isinstance(v, torch.Tensor) for v in tb.tb_frame.f_locals.values()), tb.tb_frame
            tb = tb.tb_next
    answered = set(server.record.answered())
    # (a frame slower than the lockstep timeout may be dropped for a newer one: counted)
    assert answered | set(c.dropped_ids) == set(range(15)) - {5, 6, 10}
    assert answered & {7, 8, 9} and answered & {11, 12, 13, 14}  # answers after each fault
    # every frame sent is accounted for, once
    assert sorted([*answered, *c.error_ids, *c.dropped_ids, *c.stale_ids]) == sorted(server.record.sent)


def test_hostile_messages_cost_the_loop_only_what_they_must(predictor):
    server = FrameServer(fps=30, frames=30, size=SIZE, lockstep=True)

    def stream():
        server.stream(0, 10)
        server.inject(_image_fields(_frame(), size=(65535, 65535, 1)))  # skipped, in step
        server.inject(_frame((1, 32, 32)))  # not the loop's frame size
        server.inject(pyigtl.StringMessage("hello", device_name="Probe").pack())  # not unpacked
        server.stream(10, 10)
        server.inject(_with_header(_frame(), body_size=4 << 30))  # framing lost: reconnect
        assert server.wait_connected(10)
        time.sleep(0.5)
        assert server.wait_connected(10)
        server.stream(20, 10)

    loop = _run(predictor, server, stream, frame_size=SIZE)
    c = loop.counters
    assert (c.bad_messages, c.bad_frames, c.ignored, c.framing_lost, c.reconnects, c.errors) == (1, 1, 1, 1, 1, 0)
    answered = set(server.record.answered())
    assert set(range(20)) <= answered and len(answered & set(range(20, 30))) >= 8


def test_a_peer_that_stops_reading_costs_the_connection_not_the_loop(predictor):
    # The peer sends large frames and never reads the replies: once the socket
    # buffers are full, a reply times out (send_timeout_s) and the loop drops
    # the connection and makes a new one, instead of blocking for ever.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2)
    port = listener.getsockname()[1]
    connections = []
    stop = threading.Event()

    def serve():
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                peer, _ = listener.accept()
            except OSError:
                continue
            connections.append(peer)
            threading.Thread(target=flood, args=(peer,), daemon=True).start()

    def flood(peer):
        raw = image_message(np.full((1, 512, 512), 90, np.uint8), FRAME_DEVICE, 1.0, frame_id=1)
        while not stop.is_set():
            try:
                peer.sendall(raw)
            except OSError:
                return
            time.sleep(0.02)

    threading.Thread(target=serve, daemon=True).start()
    loop = Orchestrator(predictor, port=port, seed_point=SEED, send_timeout_s=0.3).start()
    try:
        deadline = time.monotonic() + 120
        while len(connections) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(connections) >= 2, f"no reconnection; counters {loop.counters}"
        assert loop.counters.stale >= 1
    finally:
        stop.set()
        loop.stop()
        for peer in connections:
            peer.close()
        listener.close()


def test_the_frame_server_listens_where_told_and_refuses_other_peers():
    server = FrameServer(fps=30, frames=1, size=SIZE)
    try:
        assert server._listener.getsockname()[0] == "127.0.0.1"  # this machine only, by default
    finally:
        server.close()
    server = FrameServer(fps=30, frames=1, size=SIZE, allowed_peers=("192.0.2.1",))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.settimeout(5)
            assert sock.recv(1) == b""  # closed at once
        assert server.record.refused == 1 and not server.connected()
    finally:
        server.close()


def test_the_loop_connects_out_and_listens_nowhere(predictor):
    # The orchestrator is a client: it opens no listening socket of its own.
    before = _listening_ports()
    server = FrameServer(fps=30, frames=1, size=SIZE)
    loop = Orchestrator(predictor, port=server.port, seed_point=SEED).start()
    try:
        assert server.wait_connected(10)
        assert _listening_ports() - before == {server.port}
    finally:
        loop.stop()
        server.close()


def _listening_ports():
    """Ports this process listens on (Linux /proc/net/tcp, state 0A)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].split(":")[1], 16))
    return ports


# -- the soak, briefly ---------------------------------------------------------------


def test_the_soak_runs_detached_and_accounts_for_every_frame(tmp_path):
    import json
    import subprocess

    out = tmp_path / "soak.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    # Detached as on the GPU machine: its own session, output to a file, nothing waits on it.
    with open(tmp_path / "soak.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(IGT / "soak.py"), "--model", "tiny", "--size", "96x128", "--fps", "15",
             "--minutes", "0.12", "--restart-every", "2.5", "--shape-every", "4", "--sample-s", "0.5",
             "--warmup-s", "0", "--instrument", "--out", str(out)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        # Progress can be read while it runs.
        deadline = time.monotonic() + 240
        running = None
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists():
                running = json.loads(out.read_text())
                if running["status"] == "running" and len(running["samples"]) >= 2:
                    break
            time.sleep(0.2)
        assert running is not None and running["status"] == "running", (tmp_path / "soak.log").read_text()[-3000:]
        assert proc.wait(timeout=240) == 0, (tmp_path / "soak.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads(out.read_text())
    s = result["summary"]
    assert result["status"] == "done" and all(s["checks"].values()), s
    assert s["frames_sent"] >= 90 and s["unaccounted"] == 0 and s["counted_twice"] == 0
    assert s["answered"] + s["dropped"] + s["errors"] + s["stale"] == s["frames_sent"]
    assert s["source_restarts"] >= 2 and s["reconnects"] >= 2
    assert s["signatures_used"] >= 10
    assert len(result["samples"]) >= 10 and {"rss_mb", "loop_p99_ms", "cached_graphs"} <= set(result["samples"][0])
    assert {"cuda_allocated_mb_per_hour", "cuda_reserved_mb_per_hour", "rss_mb_per_hour", "loop_p50_ms_per_hour",
            "loop_p99_ms_per_hour", "steady_loop_p50_ms_per_hour"} <= set(s["slopes"])
    # Instrumented: each sample has the stages of its frames, frames next to a shape change apart.
    assert {"stages_set_image_p50_ms_per_hour",
            "stages_predict_p50_ms_per_hour", "stages_send_p50_ms_per_hour"} <= set(s["slopes"])
    stages = [x for x in result["samples"] if x.get("stages_p50_ms")]
    assert len(stages) >= 5 and {"queue", "upload", "set_image", "predict", "packet", "send"} <= set(
        stages[0]["stages_p50_ms"])
    assert sum(x["switch_frames"] for x in result["samples"]) >= 10
    assert result["environment"]["gc"] == "freeze" and result["environment"]["source"] == "process"
