"""The Ray Serve application (examples/serve): a local Ray, two CPU replicas,
real HTTP. tox factor ``serve``.

Order matters and the tests share one fleet: answers first, bad input
second, an injected out-of-memory third, the fleet-wide rollback, and last a
replica killed under load (the fleet is whole again when it ends).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

serve = pytest.importorskip("ray.serve", reason="ray[serve] is not installed (tox factor serve)")

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "examples" / "serve"
sys.path.insert(0, str(SERVE))

import app as serving  # noqa: E402
import client  # noqa: E402
import ray  # noqa: E402
import segment  # noqa: E402
from PIL import Image  # noqa: E402

from samgpu_shim.tools.models import build_sam, synthetic_image  # noqa: E402

SIZE = (192, 256)  # the tiny model's own input size: the device resize is the identity
ENV = {"SAMGPU_SERVE_TORCH_THREADS": "1", "SAMGPU_SERVE_FAULT_INJECTION": "1"}
COMPARED = ("mask_index", "score", "area_px", "bbox_xyxy", "mask_rle")


def _png(frame):
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _cases():
    """Eight frames, each with two prompt mixes: 16 distinct requests."""
    out = []
    for seed in range(8):
        frame = synthetic_image(*SIZE, seed=seed)
        image = _png(frame)
        out.append((frame, {"image": image, "point_coords": [[60 + 10 * seed, 50]], "point_labels": [1]}))
        out.append((frame, {"image": image, "point_coords": [[100, 90], [30, 40]], "point_labels": [1, 0],
                            "box": [20, 20, 200, 170], "multimask_output": False}))
    return out


CASES = _cases()


@pytest.fixture(scope="module")
def expected():
    """Each case answered by the numpy path, in this process."""
    from segment_anything import SamPredictor

    import samgpu_shim

    predictor = SamPredictor(build_sam("tiny", image_size=256))
    set_image = samgpu_shim.get_original(SamPredictor, "set_image")
    answers = []
    threads = torch.get_num_threads()
    torch.set_num_threads(int(ENV["SAMGPU_SERVE_TORCH_THREADS"]))  # the replicas' reduction order
    try:
        _answer_all(predictor, set_image, answers)
    finally:
        torch.set_num_threads(threads)
    return answers


def _answer_all(predictor, set_image, answers):
    for frame, request in CASES:
        set_image(predictor, frame)
        prompts = {k: np.asarray(v) for k, v in request.items() if k not in ("image", "multimask_output")}
        masks, scores, _ = predictor.predict(**prompts, multimask_output=request.get("multimask_output", True),
                                             as_numpy=True)
        answers.append({k: segment.answer(masks, scores)[k] for k in COMPARED})


@pytest.fixture(scope="module")
def fleet():
    os.environ["PYTHONPATH"] = os.pathsep.join([str(SERVE), str(ROOT), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(serving.app(model="tiny", image_size=256, replicas=2, env=ENV), name="sam", route_prefix="/segment")
    yield f"http://127.0.0.1:{port}/segment"
    serve.shutdown()
    ray.shutdown()


def _post(url, body, timeout=120):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _traffic(url, count, clients=16):
    def one(i):
        status, body = _post(url, CASES[i % len(CASES)][1])
        return i % len(CASES), status, body

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(count)))


def test_200_requests_from_16_clients_equal_the_numpy_path(fleet, expected):
    results = _traffic(fleet, 200)
    failures = [(i, s, b) for i, s, b in results if s != 200]
    assert not failures, failures[:3]
    for case, _, body in results:
        assert body["mode"] == "gpu" and body["kpi"]["as_numpy"] == 0
        assert {k: body[k] for k in COMPARED} == expected[case]
    assert len({body["replica"] for _, _, body in results}) == 2  # both replicas served


def png_header_only(width, height):
    """A PNG whose header announces width x height, with almost no pixels behind it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _bad_requests():
    good = CASES[0][1]
    huge = Image.new("L", (5000, 5000))  # compresses to little: the size is in the header
    buffer = io.BytesIO()
    huge.save(buffer, "PNG")
    gif = io.BytesIO()
    Image.new("L", (16, 16)).save(gif, "GIF")

    def b64(raw):
        return base64.b64encode(raw).decode()

    return {
        "a million points": ({**good, "point_coords": [[1, 2]] * 1_000_000, "point_labels": [1] * 1_000_000},
                             413, "limit"),
        "65 points": ({**good, "point_coords": [[1, 2]] * 65, "point_labels": [1] * 65}, 413, "65 points"),
        "deep nesting": (b'{"image": "", "box": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 413, "JSON items"),
        "image not a string": ({**good, "image": [1, 2]}, 400, "base64 string"),
        "a GIF": ({**good, "image": b64(gif.getvalue())}, 400, "PNG or JPEG"),
        "PNG header of 100000x100000": ({**good, "image": b64(png_header_only(100_000, 100_000))}, 413, "limit"),
        "PNG header of 5000x4000": ({**good, "image": b64(png_header_only(5000, 4000))}, 413, "pixel limit"),
        "not JSON": (b"{not json", 400, "not JSON"),
        "no image": ({"point_coords": [[1, 2]], "point_labels": [1]}, 400, "'image'"),
        "not base64": ({**good, "image": "***"}, 400, "base64"),
        "not an image": ({**good, "image": base64.b64encode(b"GIF89a-not-really").decode()}, 400, "PNG or JPEG"),
        "truncated PNG": ({**good, "image": good["image"][:200]}, 400, "image"),
        "no prompt": ({"image": good["image"]}, 400, "point_coords"),
        "coords (N, 3)": ({**good, "point_coords": [[1, 2, 3]]}, 400, "point_coords"),
        "labels mismatch": ({**good, "point_labels": [1, 1]}, 400, "point_labels"),
        "ragged coords": ({**good, "point_coords": [[1, 2], [3]], "point_labels": [1, 1]}, 400, "point_coords"),
        "box of 3": ({**good, "box": [1, 2, 3]}, 400, "box"),
        "unknown field": ({**good, "colour": "red"}, 400, "unknown field"),
        "huge frame": ({**good, "image": base64.b64encode(buffer.getvalue()).decode()}, 413, "pixel limit"),
        "huge body": (b"x" * (segment.MAX_BODY_BYTES + 1), 413, "limit"),
    }


def test_bad_requests_get_4xx_and_the_replicas_keep_serving(fleet, expected):
    for name, (body, status, words) in _bad_requests().items():
        got, answer = _post(fleet, body)
        assert got == status, (name, got, answer)
        assert words in answer.get("error", ""), (name, answer)
    results = _traffic(fleet, 32)
    assert all(status == 200 for _, status, _ in results)
    for case, _, body in results:
        assert {k: body[k] for k in COMPARED} == expected[case]


def _handle():
    return serve.get_app_handle("sam")


def test_out_of_memory_in_a_replica_is_a_503_and_it_keeps_serving(fleet, expected):
    # The next image encoder forward in one replica raises torch.OutOfMemoryError
    # (from the real model's forward: segment.inject_fault).
    victim = _handle().inject_fault.remote("set_image", "oom", 1).result()
    seen, failures = [], []
    for _ in range(8):  # until the victim has had a request
        seen += _traffic(fleet, 16)
        failures = [(case, status, answer) for case, status, answer in seen if status != 200]
        if failures:
            break
    assert len(failures) == 1, failures
    _, status, answer = failures[0]
    assert status == 503 and answer["replica"] == victim and answer["retry"] is True
    assert "out of device memory in set_image" in answer["error"]
    for case, status, answer in seen:
        if status == 200:
            assert {k: answer[k] for k in COMPARED} == expected[case]
    # The same replica answers again, correctly.
    after = []
    for _ in range(8):
        after += _traffic(fleet, 16)
        if any(a["replica"] == victim for _, s, a in after if s == 200):
            break
    assert all(status == 200 for _, status, _ in after)
    assert any(answer["replica"] == victim for _, _, answer in after)
    # Through the retrying client, the same fault costs one more attempt, not an error.
    _handle().inject_fault.remote("set_image", "oom", 1).result()
    outcomes = []
    with ThreadPoolExecutor(16) as pool:
        for _ in range(8):
            outcomes += pool.map(lambda i: client.segment(fleet, CASES[i % len(CASES)][1]), range(16))
            if any(o.attempts > 1 for o in outcomes):
                break
    assert all(o.status == 200 for o in outcomes)
    assert [o.history for o in outcomes if o.attempts > 1] == [[503, 200]]


def test_rollback_is_a_redeploy_of_configuration(fleet, expected):
    stop = threading.Event()
    seen = []

    def clients():
        with ThreadPoolExecutor(16) as pool:
            while not stop.is_set():
                seen.extend(pool.map(lambda i: (i % len(CASES), *_post(fleet, CASES[i % len(CASES)][1])),
                                     range(16)))

    traffic = threading.Thread(target=clients)
    traffic.start()
    time.sleep(2)
    try:
        # The rollout: same code, the environment switch in the runtime env.
        serve.run(serving.app(model="tiny", image_size=256, replicas=2, env={**ENV, "SAMGPU_AS_NUMPY": "1"}),
                  name="sam", route_prefix="/segment")
        time.sleep(2)
    finally:
        stop.set()
        traffic.join()
    failures = [(i, s, b) for i, s, b in seen if s != 200]
    assert not failures, failures[:3]
    assert len(seen) >= 32
    after = _traffic(fleet, 48)
    assert all(status == 200 for _, status, _ in after)
    for case, _, body in after:
        assert body["mode"] == "numpy" and body["kpi"]["as_numpy"] == 1
        assert body["kpi"]["as_numpy_source"] == "env"
        assert {k: body[k] for k in COMPARED} == expected[case]
    for case, _, body in seen:
        assert {k: body[k] for k in COMPARED} == expected[case]


def _replica_pids(handle, want=2, timeout=180.0):
    """{replica name: pid} of ``want`` live replicas, polled until Serve has them."""
    deadline = time.monotonic() + timeout
    pids = {}
    while time.monotonic() < deadline:
        try:
            found = handle.check.remote().result(timeout_s=10)
        except Exception:  # a dead replica still routed to: try again
            time.sleep(0.5)
            continue
        pids[found["replica"]] = found["pid"]
        alive = {name: pid for name, pid in pids.items() if _alive(pid)}
        if len(alive) >= want:
            return alive
        pids = alive
    raise AssertionError(f"fewer than {want} live replicas after {timeout} s: {pids}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_replica_killed_under_load_every_request_ends(fleet, expected):
    # 200 requests from 16 clients through client.segment (retries what can be
    # retried, 60 s deadline a request); one replica's process is killed
    # (SIGKILL) when half of them have been answered.
    handle = _handle()
    pids = _replica_pids(handle)
    victim, victim_pid = sorted(pids.items())[0]
    lock = threading.Lock()
    finished = [0]

    def one(i):
        case = i % len(CASES)
        outcome = client.segment(fleet, CASES[case][1], attempts=6, deadline_s=60.0)
        with lock:
            finished[0] += 1
            if finished[0] == 100:
                os.kill(victim_pid, signal.SIGKILL)
        return case, outcome

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(200)))
    first = Counter(str(o.history[0]) for _, o in results)
    final = Counter(str(o.status) for _, o in results)
    retried = sum(o.attempts > 1 for _, o in results)
    print(f"\nreplica {victim} killed: first attempts {dict(first)}, final {dict(final)}, "
          f"{retried} retried, slowest {max(o.seconds for _, o in results):.2f} s")
    assert not _alive(victim_pid)
    # Every request ended, within its deadline, with an answer; what failed
    # first was retriable (the killed replica's requests: Ray's plain 500).
    assert all(o.seconds < 60.0 for _, o in results)
    assert set(first) <= {"200", "500", "502", "503", "504", "no answer"}, first
    assert final == {"200": 200}, final
    for case, outcome in results:
        assert {k: outcome.body[k] for k in COMPARED} == expected[case]
    # The fleet recovers: Serve starts a replacement, and both replicas answer.
    replaced = _replica_pids(handle)
    assert victim_pid not in replaced.values()
    after = _traffic(fleet, 32)
    assert all(status == 200 for _, status, _ in after)
