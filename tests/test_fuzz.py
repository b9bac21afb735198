"""The parsers under fuzzing, briefly (the long run: tests/fuzz/campaign.py,
docs/results/fuzz-cpu-run1.log).

* Atheris, coverage-guided, each harness for a few thousand inputs from the
  seed corpus that ``tests/fuzz/corpus.py`` generates (Linux; skipped where
  Atheris is not installed).
* Hypothesis, structured: valid IMAGE messages read back exactly; the same
  messages with one field or the pixel count changed are skipped (or read
  exactly as announced) and the stream stays in step; request bodies built
  from JSON values end in an answer or a 400/413.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FUZZ = HERE / "fuzz"
sys.path[:0] = [str(FUZZ), str(ROOT / "examples" / "igt"), str(ROOT / "examples" / "serve")]

import corpus  # noqa: E402

FLAGS = ["-max_len=65536", "-rss_limit_mb=2560", "-timeout=30"]


def _fuzz(tmp_path, harness, seeds, runs):
    pytest.importorskip("atheris", reason="atheris is not installed (Linux only)")
    seed_dir = corpus.write(tmp_path / "corpus", seeds)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # Through a shell that forks: a child exec'd straight from this process
    # inherits its peak RSS (Linux keeps ru_maxrss across exec), and in a long
    # test session that peak alone is over -rss_limit_mb: libFuzzer would
    # report an out-of-memory before its first input.
    command = [sys.executable, str(FUZZ / harness), *FLAGS, f"-runs={runs}", "-seed=1",
               f"-artifact_prefix={tmp_path}/", str(seed_dir)]
    proc = subprocess.run(["sh", "-c", '"$@"; exit $?', "sh", *command],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "oom-", "timeout-"))]
    assert proc.returncode == 0 and not crashes, f"{crashes}\n{proc.stderr[-4000:]}"
    assert f"Done {runs} runs" in proc.stderr


def test_igt_reader_under_atheris(tmp_path):
    pytest.importorskip("pyigtl", reason="pyigtl is not installed (tox factor igt)")
    _fuzz(tmp_path, "fuzz_igt.py", corpus.igt_seeds(), runs=2000)


def test_serve_decoding_under_atheris(tmp_path):
    _fuzz(tmp_path, "fuzz_serve.py", corpus.serve_seeds(), runs=500)


# -- Hypothesis: the IGT reader -------------------------------------------------------

SCALARS = {2: np.int8, 3: np.uint8, 4: np.int16, 5: np.uint16, 6: np.int32, 7: np.uint32, 10: np.float32,
           11: np.float64}


@st.composite
def images(draw):
    dtype = SCALARS[draw(st.sampled_from(sorted(SCALARS)))]
    k, j, i = (draw(st.integers(1, 6)) for _ in range(3))
    components = draw(st.sampled_from([1, 3, 4]))
    shape = (k, j, i) if components == 1 else (k, j, i, components)
    values = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 100
    # (ASCII values: pyigtl 0.3.4 cannot pack others, an encode error it does not catch)
    ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6)
    metadata = draw(st.dictionaries(st.text("abc_", min_size=1, max_size=4), ascii_text, max_size=3))
    return values.astype(dtype), metadata


def _pack(image, metadata):
    import pyigtl

    message = pyigtl.ImageMessage(image, device_name="Fuzz", timestamp=2.0)
    if metadata:
        message.header_version = 2
        message.metadata = metadata
    return message.pack()


@pytest.fixture(scope="module")
def link():
    pytest.importorskip("pyigtl", reason="pyigtl is not installed (tox factor igt)")
    import link

    return link


def _read_then_sentinel(link, raw):
    """Read ``raw`` then a sentinel message from a socket: (outcome, sentinel read whole)."""
    import pyigtl

    a, b = socket.socketpair()
    try:
        a.sendall(raw + pyigtl.StringMessage("sentinel", device_name="S").pack())
        try:
            outcome = link.read_message(b)
        except link.BadMessage as exc:
            outcome = exc
        sentinel = link.read_message(b)
        return outcome, sentinel is not None and sentinel.string == "sentinel"
    finally:
        a.close()
        b.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=images())
def test_valid_images_read_back_exactly(link, spec):
    image, metadata = spec
    message, in_step = _read_then_sentinel(link, _pack(image, metadata))
    assert in_step
    assert message.image.dtype == image.dtype and message.image.shape == image.shape
    assert message.image.tobytes() == image.tobytes()
    assert message.metadata == metadata


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=images(), field=st.sampled_from(["i", "j", "k", "components", "scalar", "endian", "pixels"]),
       value=st.integers(0, 70000))
def test_images_with_one_field_changed_are_skipped_or_read_as_announced(link, spec, field, value):
    image, metadata = spec
    raw = bytearray(_pack(image, metadata))
    start = link.HEADER_SIZE + (12 if metadata else 0)  # the image header, after the extended header
    offsets = {"components": (2, ">B", 255), "scalar": (3, ">B", 255), "endian": (4, ">B", 255),
               "i": (6, ">H", 65535), "j": (8, ">H", 65535), "k": (10, ">H", 65535)}
    if field == "pixels":  # pixel bytes added or removed; the header's body size follows
        body = bytes(raw[link.HEADER_SIZE:])
        delta = value % 17 - 8
        cut = start - link.HEADER_SIZE + 72 + image.nbytes
        body = body[:cut + delta] + body[cut:] if delta < 0 else body[:cut] + b"\0" * delta + body[cut:]
        raw = bytearray(raw[:link.HEADER_SIZE] + body)
        struct.pack_into(">Q", raw, 42, len(body))
    else:
        offset, fmt, top = offsets[field]
        struct.pack_into(fmt, raw, start + offset, min(value, top))
        if field in "ijk":  # the subvolume size too, or it is a subvolume
            struct.pack_into(fmt, raw, start + offset + 60, min(value, top))
    outcome, in_step = _read_then_sentinel(link, bytes(raw))
    assert in_step
    if not isinstance(outcome, link.BadMessage):
        header = struct.unpack_from(">HBBBBHHH", raw, start)
        itemsize = np.dtype(SCALARS[header[2]]).itemsize
        assert outcome.image.nbytes == header[5] * header[6] * header[7] * header[1] * itemsize


# -- Hypothesis: the Serve request body ------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=30)


def _tiny_png():
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@settings(max_examples=150, deadline=None)
@given(image=st.one_of(st.just(_tiny_png()), st.text(max_size=20), JSON),
       fields=st.dictionaries(st.sampled_from(["point_coords", "point_labels", "box", "multimask_output", "other"]),
                              JSON, max_size=4))
def test_request_bodies_end_in_an_answer_or_a_4xx(image, fields):
    import segment

    body = json.dumps({"image": image, **fields}, allow_nan=True).encode()
    try:
        encoded, prompts = segment.decode_request(body)
        arrays = segment.as_arrays(prompts)
        size = segment.image_size(encoded)
    except segment.BadRequest as exc:
        assert exc.status in (400, 413)
        return
    assert size == (6, 8) and set(arrays) <= {"point_coords", "point_labels", "box", "multimask_output"}


def test_the_long_runs_figures_in_the_docs_match_its_json():
    data = json.loads((ROOT / "docs" / "results" / "fuzz-cpu-run1.json").read_text())
    text = (ROOT / "docs" / "reliability.rst").read_text()
    table = text.split("Run 1 (CPU")[1].split("* **Found and fixed**")[0]
    rows = [[cell.strip() for cell in row.split("\n     - ")]
            for row in table.split("   * - ")[2:]]
    assert [row[0] for row in rows] == ["OpenIGTLink reader", "Serve request decoding"]
    for row, key, target in zip(rows, ("igt", "serve"), ("link.py", "segment.py")):
        run = data[key]
        coverage = run["line_coverage"]["targets"][target]
        assert int(row[1]) == run["executions"] and int(row[2]) == run["exec_per_s"]
        assert int(row[3]) == run["edges_covered"]
        assert row[4] == f"{run['seed_inputs']} -> {run['corpus_final']}"
        assert row[5].startswith(f"{coverage['executed']} of {coverage['lines']} ({coverage['percent']}%)")
        assert run["crashes"] == [] and run["exit_code"] == 0
    assert [f["kind"] for f in data["findings"]] == ["SIGSEGV", "timeout (harness)"]
