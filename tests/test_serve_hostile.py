"""Hostile requests and faults in one Serve replica's request path, without Ray
(examples/serve/segment.py, client.py): bounds checked before allocating,
decoders that must not take the process down, out-of-memory and device
errors from a real model's forward, the client's retry policy.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import logging
import struct
import subprocess
import sys
import threading
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "examples" / "serve"
sys.path.insert(0, str(SERVE))

import client  # noqa: E402
import segment  # noqa: E402
from faults import inject_fault  # noqa: E402
from segment import BadRequest, Limits  # noqa: E402

import samgpu_shim  # noqa: E402
from samgpu_shim.tools.models import build_sam, synthetic_image  # noqa: E402

SIZE = (192, 256)
CPU = torch.device("cpu")
MB = 1 << 20


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _body(image, **fields):
    payload = {"image": base64.b64encode(image).decode(), "point_coords": [[60, 50]], "point_labels": [1]}
    payload.update(fields)
    return json.dumps(payload).encode()


def png_header_only(width, height, depth=8, colour=2):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (segment.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def jpeg_claiming(width, height):
    """A real JPEG whose frame header (SOF0) is edited to announce width x height."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _status(fn, *args):
    try:
        fn(*args)
    except BadRequest as exc:
        return exc.status, str(exc)
    return 200, ""


FRAME = _png(synthetic_image(*SIZE, seed=1))


@pytest.mark.parametrize("body, status, words", [
    (_body(FRAME, point_coords=[[1, 2]] * 1_000_000, point_labels=[1] * 1_000_000), 413, "JSON items"),
    (_body(FRAME, point_coords=[[1, 2]] * 65, point_labels=[1] * 65), 413, "65 points"),
    (_body(FRAME, point_labels=[1] * 65), 413, "65 points"),
    (b'{"image": "", "box": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 413, "JSON items"),
    (b"x" * (32 * MB + 1), 413, "over the 33554432 limit"),
    (b"\xff\xfe{}", 400, "not JSON"),
    (b"[]", 400, "JSON object"),
    (json.dumps({"image": 5, "box": [1, 2, 3, 4]}).encode(), 400, "base64 string"),
    (json.dumps({"image": {"a": 1}, "box": [1, 2, 3, 4]}).encode(), 400, "base64 string"),
    (json.dumps({"image": "é", "box": [1, 2, 3, 4]}).encode(), 400, "not base64"),
    (json.dumps({"image": "", "box": [1, 2, 3, 4], 7: 1}).encode(), 400, "unknown field"),
])
def test_request_bodies_are_bounded_before_parsing(body, status, words):
    got, message = _status(segment.decode_request, body)
    assert got == status and words in message, message


def test_nesting_under_the_item_limit_is_a_400_not_a_crash():
    body = b'{"image": "", "box": ' + b"[" * 500 + b"1" + b"]" * 500 + b"}"
    _, prompts = segment.decode_request(body)
    assert _status(segment.as_arrays, prompts)[0] == 400


def test_a_million_points_is_refused_without_building_them():
    body = _body(FRAME, point_coords=[[1, 2]] * 1_000_000, point_labels=[1] * 1_000_000)
    tracemalloc.start()
    try:
        assert _status(segment.decode_request, body)[0] == 413
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MB  # json.loads of it would have built millions of objects


def test_the_limits_come_from_the_environment():
    limits = Limits.from_env({segment.ENV_MAX_POINTS: "2", segment.ENV_MAX_PIXELS: "100",
                              segment.ENV_MAX_BODY: "100000"})
    assert (limits.max_points, limits.max_pixels, limits.max_body_bytes) == (2, 100, 100000)
    assert _status(segment.decode_request, _body(b"", point_coords=[[1, 2]] * 3), limits)[0] == 413
    assert _status(segment.image_size, FRAME, limits)[0] == 413
    assert Limits.from_env({}) == Limits()
    with pytest.raises(ValueError, match=segment.ENV_MAX_POINTS):
        Limits.from_env({segment.ENV_MAX_POINTS: "many"})
    with pytest.raises(ValueError, match="max_points"):
        Limits(max_points=0)


@pytest.mark.parametrize("image, status, words", [
    (png_header_only(100_000, 100_000), 413, "pixel limit"),
    (png_header_only(5000, 4000), 413, "5000x4000"),
    (jpeg_claiming(60_000, 60_000), 413, "pixel limit"),
    (jpeg_claiming(4097, 4096), 413, "4097x4096"),
])
def test_decompression_bombs_are_refused_from_the_header(image, status, words):
    tracemalloc.start()
    try:
        got, message = _status(segment.image_size, image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == status and words in message, message
    assert peak < MB


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP", "ICO"])
def test_formats_other_than_png_and_jpeg_are_not_even_opened(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, fmt)
    got, message = _status(segment.image_size, buffer.getvalue())
    assert got == 400 and "PNG or JPEG" in message


def test_pixels_that_do_not_match_the_header_are_refused():
    assert _status(segment.decode_frame, FRAME, CPU, (SIZE[0], SIZE[1] + 1))[0] == 400
    assert tuple(segment.decode_frame(FRAME, CPU, SIZE).shape) == (*SIZE, 3)


def test_sixteen_bit_and_corrupt_pngs_are_400():
    sixteen = _png((np.arange(64, dtype=np.uint16) * 900).reshape(8, 8))
    status, message = _status(segment.decode_frame, sixteen, CPU, (8, 8))
    assert status == 400 and "8-bit images only" in message
    corrupt = bytearray(_png(synthetic_image(32, 32, seed=2)))
    corrupt[corrupt.index(b"IDAT") + 10] ^= 0x10
    assert _status(segment.decode_frame, bytes(corrupt), CPU, (32, 32))[0] == 400


# The fuzzer's first find (tests/fuzz/fuzz_serve.py, docs/results/fuzz-cpu-run1.log):
# an 8x8 16-bit PNG whose compressed data has one bit flipped. torchvision's
# decode_png died on it with SIGSEGV, which in a replica is the replica gone.
FUZZ_CRASH_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAIEAAAAACx9D0UAAAAk0lEQVR4nAGIAHf/Ad81em0S59gzv6pkNw5W+MYBCIQd+xuGH+7R"
    "KyU77v3WEQHNYcEVWAWn7gPFxRtnY7C+AvOX3wnHwg7czMfAD3rd+9cCr1LF4JD2sK8kZ/+cKdU4kgRVvQnpZrbObg3Gn7gXGGl/"
    "BNitVETwAHJz8w9LBK+geM4Eyeu5Q+2WBTEYMotboeoumuFxQ1mjBCBoAAAAAElFTkSuQmCC")


def test_the_fuzzers_crash_is_a_400_in_a_process_that_lives():
    code = (f"import sys, torch; sys.path.insert(0, {str(SERVE)!r}); import segment\n"
            f"data = {FUZZ_CRASH_PNG!r}\n"
            "try:\n    segment.decode_frame(data, torch.device('cpu'), (8, 8))\n"
            "except segment.BadRequest as exc:\n    print(exc.status)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the decoder killed the process (exit {proc.returncode}): {proc.stderr[-500:]}"
    assert proc.stdout.strip() == "400"


# -- faults in a replica: a real tiny SAM, exceptions from its forward -------------


@pytest.fixture()
def replica():
    from segment_anything import SamPredictor

    kpi = logging.getLogger(samgpu_shim.KPI_LOGGER_NAME)
    level = kpi.level
    core = segment.Replica(SamPredictor(build_sam("tiny", image_size=256)), CPU, "r0", Limits())
    yield core
    kpi.removeHandler(core.events)
    kpi.setLevel(level)


def _compared(result):
    return {k: result[k] for k in ("mask_index", "score", "area_px", "bbox_xyxy", "mask_rle")}


@pytest.mark.parametrize("step", ["set_image", "predict"])
def test_out_of_memory_is_a_503_for_that_request_and_the_replica_goes_on(replica, step):
    item = replica.parse(_body(FRAME))
    other = replica.parse(_body(_png(synthetic_image(*SIZE, seed=4)), box=[10, 10, 200, 150]))
    clean = [_compared(r) for r in replica.run([item, other])]
    inject_fault(replica.predictor, step, "oom", count=1)
    first, second = replica.run([item, item])  # one batch, one frame: the second recomputes what failed
    assert first == {"error": f"out of device memory in {step}; retry", "status": 503, "replica": "r0",
                     "retry": True}
    assert _compared(second) == clean[0]
    replica.check_health()
    assert [_compared(r) for r in replica.run([item, other])] == clean


def test_out_of_memory_keeps_nothing_of_the_request_even_when_its_log_record_is_kept(replica, caplog):
    # A handler that keeps records (here pytest's caplog; in production a
    # MemoryHandler or an error reporter) must not keep the failed request's
    # tensors through the exception's traceback: on the H200 that held the 4K
    # frame and its float copy after each out-of-memory 503 (run 36).
    import gc
    import weakref

    item = replica.parse(_body(FRAME))
    seen = []

    def remember(_module, inputs):
        seen.append(weakref.ref(inputs[0]))  # the encoder's input: made inside set_image

    handle = replica.predictor.model.image_encoder.register_forward_pre_hook(remember)
    inject_fault(replica.predictor, "set_image", "oom", count=1)  # registered after: raises after remember ran
    try:
        with caplog.at_level(logging.WARNING, logger="serve.segmenter"):
            failed = replica.run([item])[0]
    finally:
        handle.remove()
    assert failed["status"] == 503
    assert any("out of device memory in set_image" in r.getMessage() for r in caplog.records)
    assert not [a for r in caplog.records for a in (r.args or ()) if isinstance(a, BaseException)]
    gc.collect()
    assert len(seen) == 1 and seen[0]() is None, "the failed request's tensors are still referenced"


def test_a_device_error_makes_the_replica_ask_to_be_replaced(replica):
    item = replica.parse(_body(FRAME))
    inject_fault(replica.predictor, "predict", "device", count=1)
    results = replica.run([item])
    assert results[0]["status"] == 503 and "device error in predict" in results[0]["error"]
    with pytest.raises(RuntimeError, match="must be replaced"):
        replica.check_health()
    # Its context cannot be trusted any more: every request is a 503 until Serve replaces it.
    assert [r["status"] for r in replica.run([item, item])] == [503, 503]


def test_other_errors_are_500_and_do_not_stop_the_replica(replica):
    item = replica.parse(_body(FRAME))
    def fail(*_):
        raise RuntimeError("something else")

    handle = replica.predictor.model.mask_decoder.register_forward_pre_hook(fail)
    try:
        result = replica.run([item])[0]
    finally:
        handle.remove()
    assert result["status"] == 500 and "RuntimeError in predict: something else" in result["error"]
    replica.check_health()
    assert "error" not in replica.run([item])[0]


# -- the client's retry policy, against a scripted server -----------------------------


class _Scripted(http.server.BaseHTTPRequestHandler):
    script: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body, headers = self.script.pop(0) if self.script else (200, {"ok": True}, {})
        self.seen.append(status)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture()
def scripted():
    _Scripted.script, _Scripted.seen = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/segment", _Scripted
    server.shutdown()
    server.server_close()


OOM = (503, {"error": "out of device memory in set_image; retry", "replica": "a", "retry": True},
       {"Retry-After": "1"})
RAY_500 = (500, b"Internal Server Error", {"Content-Type": "text/plain"})
APP_500 = (500, {"error": "TypeError in predict: x", "replica": "a"}, {})


@pytest.mark.parametrize("script, history, slept_at_least", [
    ([OOM], [503, 200], [1.0]),  # Retry-After honoured
    ([RAY_500, RAY_500], [500, 500, 200], [0, 0]),  # the replica died with the request: retried
    ([(502, b"", {}), (504, b"", {}), (408, b"", {})], [502, 504, 408, 200], [0, 0, 0]),
    ([APP_500], [500], []),  # the application's own 500: a bug, not retried
    ([(400, {"error": "give 'point_coords'"}, {})], [400], []),
    ([(413, {"error": "over the limit"}, {})], [413], []),
    ([OOM] * 5, [503] * 5, [1.0] * 4),  # attempts are bounded
])
def test_the_client_retries_what_can_be_retried(scripted, script, history, slept_at_least):
    url, handler = scripted
    handler.script = list(script)
    slept = []
    outcome = client.segment(url, {"image": ""}, attempts=5, sleep=slept.append)
    assert outcome.history == history and handler.seen == history
    assert outcome.status == history[-1] and outcome.attempts == len(history)
    assert len(slept) == len(slept_at_least)
    assert all(low <= s <= 2.0 for low, s in zip(slept_at_least, slept))  # capped at cap_s
    assert outcome.ok == (history[-1] == 200)


def test_the_client_ends_within_its_deadline_when_nothing_answers():
    # A server that accepts and never answers, and then no server at all.
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/segment"
    started = time.monotonic()
    outcome = client.segment(url, {"image": ""}, attempts=3, deadline_s=1.5, base_s=0.05)
    assert time.monotonic() - started < 5.0
    assert outcome.status is None and outcome.retriable and not outcome.ok
    listener.close()
    outcome = client.segment(url, {"image": ""}, attempts=3, deadline_s=5, base_s=0.01)
    assert outcome.history == ["no answer"] * 3 and "Connection" in outcome.body


def test_the_body_is_read_no_further_than_the_limit():
    pytest.importorskip("ray.serve", reason="ray[serve] is not installed (tox factor serve)")
    import asyncio

    from app import read_body
    from starlette.requests import Request

    def request(chunks, declared=None):
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                    for i, c in enumerate(chunks)]
        received = []

        async def receive():
            message = messages.pop(0) if messages else {"type": "http.disconnect"}
            received.append(message)
            return message

        headers = [] if declared is None else [(b"content-length", str(declared).encode())]
        return Request({"type": "http", "method": "POST", "headers": headers}, receive), received

    async def read(req):
        try:
            return len(await read_body(req, 1000))
        except BadRequest as exc:
            return exc.status, str(exc)

    ok, _ = request([b"x" * 600, b"x" * 400], declared=1000)
    assert asyncio.run(read(ok)) == 1000
    # Declared over the limit, or sent over it without a declaration: 413, and
    # the rest read past (not kept), so that the client sees its answer.
    for declared in (5000, None):
        big, received = request([b"x" * 600] * 8, declared=declared)
        status, message = asyncio.run(read(big))
        assert status == 413 and "4800 bytes" in message and len(received) == 8
    bad, _ = request([b"{}"], declared="lots")
    assert asyncio.run(read(bad))[0] == 400
