"""``audit --fix`` on wrapper-shaped code, and the fixed code run for real
(a tiny SAM with random weights) in numpy mode, GPU mode and with the shim
disabled."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import samgpu_shim
from samgpu_shim.migrate import command, pins
from samgpu_shim.migrate.fix import pin_text
from samgpu_shim.tools.models import build_sam, synthetic_image

from conftest import run_python

# (one comment ends with spaces: the fix must keep them)
WRAPPERS = '''\
"""The lab's SAM wrappers (their own predict takes no as_numpy)."""
import torch
from segment_anything import SamPredictor


class SamObj:
    def __init__(self, sam):
        self.predictor = SamPredictor(sam)

    def set_image(self, image):
        self.predictor.set_image(image)

    def predict(self, points, labels):
        masks, scores, logits = self.predictor.predict(
            point_coords=points,  # the clicks
            point_labels=labels,  # 1 foreground, 0 background\x20\x20
            multimask_output=True,
        )
        return masks, scores


class Forwarding:
    def __init__(self, sam):
        self.predictor = SamPredictor(sam)

    def predict(self, image, **kwargs):
        self.predictor.set_image(image)
        return self.predictor.predict(**kwargs)


class Head(torch.nn.Module):
    def __init__(self, sam):
        super().__init__()
        self.predictor = SamPredictor(sam)

    def forward(self, image, box):
        self.predictor.set_image(image)
        masks, scores, _ = self.predictor.predict(box=box,
                                                  multimask_output=False)
        return masks[0], scores[0]
'''

APP = '''\
import numpy as np
from labvendor.wrappers import SamObj as VendorObj

from .wrappers import Forwarding, Head, SamObj


def clicks(sam, image, points, labels):
    sam_obj = SamObj(sam)
    sam_obj.set_image(image)
    masks, scores = sam_obj.predict(points, labels)
    best = int(np.argmax(scores))
    return int(masks[best].astype(np.uint8).sum()), best


def boxed(sam, image, box):
    head = Head(sam).eval()
    mask, score = head(image, box)
    return int(mask.astype(np.uint8).sum()), round(float(score), 3)


def forwarded(sam, image, points, labels):
    masks, scores, _ = Forwarding(sam).predict(image, point_coords=points, point_labels=labels)
    return int(masks[int(np.argmax(scores))].astype(np.uint8).sum())


def vendored(sam, image, points, labels):
    sam_obj = VendorObj(sam)
    sam_obj.set_image(image)
    masks, scores = sam_obj.predict(points, labels)
    return int(masks[int(np.argmax(scores))].astype(np.uint8).sum())
'''

POINTS = np.array([[60.0, 40.0], [100.0, 80.0]])
LABELS = np.array([1, 0])
BOX = np.array([30.0, 20.0, 120.0, 100.0])


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """labsam_orig (as written) and labsam_fixed (after --fix), plus labvendor (not scanned)."""
    root = tmp_path_factory.mktemp("fix")
    for name in ("labsam_orig", "labsam_fixed"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text("")
        (root / name / "wrappers.py").write_text(WRAPPERS)
        (root / name / "app.py").write_text(APP)
    (root / "labvendor").mkdir()
    (root / "labvendor" / "__init__.py").write_text("")
    (root / "labvendor" / "wrappers.py").write_text(WRAPPERS)
    out = subprocess.run([sys.executable, "-m", "samgpu_shim", "audit", "--fix", str(root / "labsam_fixed")],
                         capture_output=True, text=True)
    return root, out


def test_fix_pins_the_predictor_calls_inside_wrappers_only(projects):
    root, out = projects
    assert out.returncode == 1, out.stdout + out.stderr  # the hand fixes remain findings
    assert "pinned 2 predict call(s)" in out.stdout and "pin undone" not in out.stdout
    fixed, orig = root / "labsam_fixed", root / "labsam_orig"
    assert (fixed / "app.py").read_text() == APP  # the wrappers' own calls are never pinned
    wrappers = (fixed / "wrappers.py").read_text()
    assert wrappers == WRAPPERS.replace(
        "            multimask_output=True,\n        )",
        "            multimask_output=True,\n            as_numpy=True,\n        )",
    ).replace("multimask_output=False)", "multimask_output=False, as_numpy=True)")
    assert "# 1 foreground, 0 background  \n" in wrappers  # trailing spaces kept
    assert (orig / "wrappers.py").read_text() == WRAPPERS
    hand = [line for line in out.stdout.splitlines() if "needs a hand fix" in line]
    assert len(hand) == 2
    assert any("wrappers.py:28:" in line and "forwards **kwargs" in line for line in hand)
    assert any("app.py:29:" in line and "labvendor.wrappers.SamObj" in line and "did not read" in line
               for line in hand)


@pytest.fixture()
def imported(projects, monkeypatch):
    root, _ = projects
    monkeypatch.syspath_prepend(str(root))
    yield lambda name: importlib.import_module(name)
    for name in [m for m in sys.modules if m.split(".")[0] in ("labsam_orig", "labsam_fixed", "labvendor")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def small():
    """A real SAM with random weights on a 256-pixel input: the same code, a fast encoder."""
    return build_sam("tiny", seed=0, image_size=256), synthetic_image(120, 160, seed=1)


def _run(app, sam, image):
    return app.clicks(sam, image, POINTS, LABELS), app.boxed(sam, image, BOX)


def test_fixed_code_runs_in_numpy_and_gpu_modes(imported, small):
    sam, image = small
    orig, fixed = imported("labsam_orig.app"), imported("labsam_fixed.app")
    try:
        samgpu_shim.configure(as_numpy=True)
        reference = _run(orig, sam, image)
        assert _run(fixed, sam, image) == reference
        assert fixed.forwarded(sam, image, POINTS, LABELS) == orig.forwarded(sam, image, POINTS, LABELS)
        # GPU mode (CPU tensors here), plain tensors: no transfer guard to copy for the code
        samgpu_shim.configure(as_numpy=None, transfer_guard="off")
        assert _run(fixed, sam, image) == reference
        with pytest.raises(AttributeError, match="astype"):
            orig.clicks(sam, image, POINTS, LABELS)  # what the pins are for
    finally:
        samgpu_shim.configure(as_numpy=None, transfer_guard=None)


def test_fixed_code_with_the_shim_disabled(projects):
    """SAMGPU_DISABLE=1 installs no patch, so predict is upstream's and refuses
    as_numpy= (docs/migration.rst, rollback runbook): every pinned call does,
    whether a person or --fix wrote it. The fixed code fails there and only
    there; what --fix left alone runs as it did."""
    root, _ = projects
    proc = run_python(
        f"""
        import sys, traceback
        import numpy as np
        sys.path.insert(0, {str(root)!r})
        import samgpu_shim
        from samgpu_shim.tools.models import build_sam, synthetic_image
        from labsam_orig import app as orig
        from labsam_fixed import app as fixed
        sam, image = build_sam("tiny", seed=0, image_size=256), synthetic_image(120, 160, seed=1)
        points, labels = np.array({POINTS.tolist()}), np.array({LABELS.tolist()})
        print("patched", samgpu_shim.is_patched())
        print("orig", orig.clicks(sam, image, points, labels))
        print("untouched", fixed.forwarded(sam, image, points, labels) == orig.forwarded(sam, image, points, labels))
        try:
            fixed.clicks(sam, image, points, labels)
        except TypeError as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            print("fixed", type(exc).__name__, "as_numpy" in str(exc), frame.filename.endswith("wrappers.py"))
        """,
        env={"SAMGPU_DISABLE": "1"},
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "patched False"
    assert lines[1].startswith("orig (")
    assert lines[2] == "untouched True"
    assert lines[3] == "fixed TypeError True True"


CASES = {
    "one line": ("m = p.predict(box=b)\n", "m = p.predict(box=b, as_numpy=True)\n"),
    "no arguments": ("m = p.predict()\n", "m = p.predict(as_numpy=True)\n"),
    "trailing comma, comments": (
        "m = p.predict(\n    box=b,  # the box\n    multimask_output=False,  # one mask  \n)\n",
        "m = p.predict(\n    box=b,  # the box\n    multimask_output=False,  # one mask  \n    as_numpy=True,\n)\n",
    ),
    "closing line, no trailing comma": (
        "m = p.predict(\n    box=b,\n    multimask_output=False  # one mask\n)\n",
        "m = p.predict(\n    box=b,\n    multimask_output=False,  # one mask\n    as_numpy=True\n)\n",
    ),
    "hanging arguments": (
        "m = p.predict(box=b,\n              multimask_output=False)\n",
        "m = p.predict(box=b,\n              multimask_output=False, as_numpy=True)\n",
    ),
    "parenthesised last argument": ("m = p.predict(box=(b))  \n", "m = p.predict(box=(b), as_numpy=True)  \n"),
    "keywords forwarded last": ("m = p.predict(box=b, **extra)\n", "m = p.predict(box=b, **extra, as_numpy=True)\n"),
    "two calls on a line": (
        "a = p.predict(box=b); c = p.predict(box=d)\n",
        "a = p.predict(box=b, as_numpy=True); c = p.predict(box=d, as_numpy=True)\n",
    ),
    "CRLF": ("m = p.predict(\r\n    box=b,\r\n)\r\n", "m = p.predict(\r\n    box=b,\r\n    as_numpy=True,\r\n)\r\n"),
    "non-ASCII before": ("t = 'é'; m = p.predict(box=b)\n", "t = 'é'; m = p.predict(box=b, as_numpy=True)\n"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_pin_is_an_insertion_and_nothing_else(case):
    import ast

    before, want = CASES[case]
    calls = [(n.lineno, n.col_offset) for n in ast.walk(ast.parse(before))
             if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "predict"]
    after, moved = pin_text(before, calls)
    assert after == want
    again = {(n.lineno, n.col_offset) for n in ast.walk(ast.parse(after)) if isinstance(n, ast.Call)}
    assert set(moved.values()) <= again


def test_a_pin_that_no_longer_resolves_is_undone(tmp_path, monkeypatch, capsys):
    app = tmp_path / "app.py"
    text = textwrap.dedent(
        """\
        import numpy as np
        from segment_anything import SamPredictor
        def f(sam, a, b):
            predictor = SamPredictor(sam)
            m, s, _ = predictor.predict(box=a)
            n, t, _ = predictor.predict(box=b)
            return np.argmax(s), np.argmax(t)
        """
    )
    app.write_text(text)
    real = pins.recheck

    def first_pin_lost(project, pinned):
        found = real(project, pinned)
        assert found == {}  # the real check agrees with the plan
        first = min(pinned)
        return {first: "simulated: the receiver changed"}

    monkeypatch.setattr(command, "recheck", first_pin_lost)
    status = command.main([str(app)], fix=True)
    out = capsys.readouterr().out
    assert status == 1 and "pin undone: simulated: the receiver changed" in out and "pinned 1 predict" in out
    assert app.read_text() == text.replace("predict(box=b)", "predict(box=b, as_numpy=True)")


def test_fix_without_libcst(tmp_path):
    """The fix needs nothing beyond the standard library (libcst hidden)."""
    src = tmp_path / "app.py"
    src.write_text("import numpy as np\nfrom segment_anything import SamPredictor\n"
                   "predictor = SamPredictor(sam)\nm, s, _ = predictor.predict(box=b)\nprint(np.argmax(s))\n")
    proc = run_python(
        f"""
        import sys
        sys.modules["libcst"] = None
        from samgpu_shim.migrate import main
        print("status", main([{str(src)!r}], fix=True))
        """
    )
    assert "status 0" in proc.stdout
    assert "predictor.predict(box=b, as_numpy=True)" in src.read_text()
    shutil.rmtree(tmp_path)


def test_predict_handed_over_as_a_value_is_left_for_a_hand_fix(tmp_path, capsys):
    """run_in_threadpool(p.predict, ...) and functools.partial(p.predict, ...) are sources the audit
    follows, but --fix edits only a call of predict itself: these are reported, the file is untouched."""
    source = textwrap.dedent(
        """
        import functools
        import numpy as np
        from fastapi.concurrency import run_in_threadpool
        from segment_anything import SamPredictor

        async def endpoint(predictor: SamPredictor, box):
            masks, scores, _ = await run_in_threadpool(predictor.predict, box=box)
            ask = functools.partial(predictor.predict, multimask_output=True)
            m2, s2, _ = ask(box=box)
            return np.argmax(scores), np.argsort(s2)
        """
    )
    path = tmp_path / "app.py"
    path.write_text(source, encoding="utf-8")
    status = command.main([str(tmp_path)], fix=True)
    out = capsys.readouterr().out
    assert path.read_text(encoding="utf-8") == source
    assert out.count("needs a hand fix") == 2 and "pinned 0 predict call(s)" in out
    assert status == 1  # the findings remain
