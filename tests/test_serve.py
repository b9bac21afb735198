"""The Ray Serve application (examples/serve): a local Ray, two CPU replicas,
real HTTP. tox factor ``serve``.

Order matters and the tests share one fleet: answers first, bad input
second, the fleet-wide rollback last.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
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
import ray  # noqa: E402
import segment  # noqa: E402
from PIL import Image  # noqa: E402

from samgpu_shim.tools.models import build_sam, synthetic_image  # noqa: E402

SIZE = (192, 256)  # the tiny model's own input size: the device resize is the identity
ENV = {"SAMGPU_SERVE_TORCH_THREADS": "1"}
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


def _bad_requests():
    good = CASES[0][1]
    huge = Image.new("L", (5000, 5000))  # compresses to little: the size is in the header
    buffer = io.BytesIO()
    huge.save(buffer, "PNG")
    return {
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
