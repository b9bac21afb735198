"""Patch lifecycle, import order and environment, in fresh interpreters."""

from __future__ import annotations

import inspect
import logging

import pytest
from segment_anything import SamPredictor
from segment_anything.modeling.prompt_encoder import PromptEncoder

import samgpu_shim

from conftest import run_python

ORDERS = {
    "shim_then_sam": "import samgpu_shim\nimport segment_anything\n",
    "sam_then_shim": "import segment_anything\nimport samgpu_shim\n",
    "submodule_first": "from segment_anything.predictor import SamPredictor\nimport samgpu_shim\n",
    "shim_then_submodule": "import samgpu_shim\nfrom segment_anything.predictor import SamPredictor\n",
}

PROBE = """
import inspect, sys
import segment_anything
from segment_anything.predictor import SamPredictor
print("patched", samgpu_shim.is_patched(), "as_numpy" in inspect.signature(SamPredictor.predict).parameters)
print("same", segment_anything.SamPredictor is SamPredictor)
"""


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_import_order(order):
    out = run_python(ORDERS[order] + PROBE).stdout
    assert "patched True True" in out
    assert "same True" in out


def test_shim_import_does_not_import_sam_or_torch():
    out = run_python(
        "import sys, samgpu_shim\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('segment_anything', 'torch', 'numpy')))"
    ).stdout
    assert out.strip() == "[]"


LIFECYCLE = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="LOG %(message)s")
import segment_anything.predictor as sp
import segment_anything.modeling.prompt_encoder as pe
ORIG_P = sp.SamPredictor.__dict__["predict"]
ORIG_E = pe.PromptEncoder.__dict__["_embed_points"]
import samgpu_shim
def state():
    p = sp.SamPredictor.__dict__["predict"]
    e = pe.PromptEncoder.__dict__["_embed_points"]
    depth = 0
    while hasattr(p, "__wrapped__"):
        p = p.__wrapped__
        depth += 1
    return depth, sp.SamPredictor.__dict__["predict"] is ORIG_P, e is ORIG_E
"""


def test_lifecycle_every_order():
    out = run_python(
        LIFECYCLE
        + """
print("A", state(), samgpu_shim.is_patched())
samgpu_shim.patch()
print("B", state())
samgpu_shim.unpatch()
print("C", state(), samgpu_shim.is_patched())
samgpu_shim.unpatch()
print("D", state())
samgpu_shim.patch()
print("E", state(), samgpu_shim.is_patched())
samgpu_shim.unpatch(); samgpu_shim.patch(); samgpu_shim.unpatch()
print("F", state())
"""
    ).stdout
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line[:2] in ("A ", "B ", "C ", "D ", "E ", "F "))
    assert lines["A"] == "(1, False, False) True"
    assert lines["B"] == "(1, False, False)"  # a second patch never wraps twice
    assert lines["C"] == "(0, True, True) False"  # exact originals back
    assert lines["D"] == "(0, True, True)"
    assert lines["E"] == "(1, False, False) True"
    assert lines["F"] == "(0, True, True)"
    assert "LOG samgpu_shim: segment-anything is already patched; not wrapping twice" in out
    assert "LOG samgpu_shim: unpatch() called but nothing is patched" in out


def test_unpatch_before_sam_import_keeps_upstream():
    out = run_python(
        """
import samgpu_shim
samgpu_shim.unpatch()
import segment_anything.predictor as sp
print(hasattr(sp.SamPredictor.__dict__["predict"], "__wrapped__"), samgpu_shim.is_patched())
"""
    ).stdout
    assert out.strip() == "False False"


def test_in_process_unpatch_restores_and_repatch(predictor):
    original = samgpu_shim.get_original(SamPredictor, "predict")
    original_embed = samgpu_shim.get_original(PromptEncoder, "_embed_points")
    assert SamPredictor.__dict__["predict"] is not original
    samgpu_shim.unpatch()
    try:
        assert SamPredictor.__dict__["predict"] is original
        assert PromptEncoder.__dict__["_embed_points"] is original_embed
        assert "as_numpy" not in inspect.signature(SamPredictor.predict).parameters
        assert samgpu_shim.get_original(SamPredictor, "predict") is original
        masks = predictor.predict()[0]
        assert type(masks).__module__ == "numpy"
    finally:
        samgpu_shim.patch()
    assert SamPredictor.__dict__["predict"].__wrapped__ is original


def test_kill_switch_installs_nothing():
    out = run_python(
        "import samgpu_shim, segment_anything.predictor as sp\n"
        "print(hasattr(sp.SamPredictor.__dict__['predict'], '__wrapped__'), samgpu_shim.is_patched())",
        env={"SAMGPU_DISABLE": "1"},
    )
    assert out.stdout.strip() == "False False"
    assert "SAMGPU_DISABLE is set; not patching" in out.stderr


def test_unsupported_upstream_is_left_untouched(tmp_path):
    pkg = tmp_path / "segment_anything"
    (pkg / "modeling").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .predictor import SamPredictor\n")
    (pkg / "modeling" / "__init__.py").write_text("")
    (pkg / "modeling" / "prompt_encoder.py").write_text(
        "class PromptEncoder:\n    def _embed_points(self, points, labels, pad):\n        return points\n"
    )
    (pkg / "predictor.py").write_text(
        "from .modeling import prompt_encoder\n"
        "class SamPredictor:\n    def predict(self, prompts, multimask_output=True):\n        return prompts\n"
    )
    proc = run_python(
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "import samgpu_shim, segment_anything\n"
        "from segment_anything.modeling.prompt_encoder import PromptEncoder\n"
        "print(hasattr(segment_anything.SamPredictor.__dict__['predict'], '__wrapped__'),"
        " hasattr(PromptEncoder.__dict__['_embed_points'], '__wrapped__'),"
        " samgpu_shim.is_patched('segment-anything'))"
    )
    assert proc.stdout.strip() == "False False False"  # whole family or nothing
    assert "segment-anything left untouched" in proc.stderr
    assert "its parameters are ('self', 'prompts', 'multimask_output')" in proc.stderr


def test_missing_sam_warns_and_imports():
    from samgpu_shim.families import FAMILIES

    packages = sorted({family.hook_module.split(".")[0] for family in FAMILIES})
    code = (
        "import sys\n"
        f"for name in {packages!r}:\n"
        "    sys.modules[name] = None\n"
        "import samgpu_shim\nprint('imported', samgpu_shim.is_patched())"
    )
    quiet = run_python(code)
    assert "imported True" in quiet.stdout and quiet.stderr == ""  # nothing alarming by default
    told = run_python("import logging; logging.basicConfig(level=logging.INFO)\n" + code)
    assert "none of the supported SAM packages" in told.stderr


def test_missing_wrapt_warns_and_imports():
    proc = run_python(
        "import sys; sys.modules['wrapt'] = None\n"
        "import samgpu_shim, segment_anything.predictor as sp\n"
        "print('imported', samgpu_shim.is_patched(), hasattr(sp.SamPredictor.__dict__['predict'], '__wrapped__'))"
    )
    assert proc.stdout.strip() == "imported False False"
    assert "wrapt is not installed" in proc.stderr


def test_hook_failure_never_breaks_the_application_import():
    proc = run_python(
        """
import samgpu_shim, samgpu_shim._lifecycle as P
def boom(state):
    raise RuntimeError("planted")
P._apply = boom
import segment_anything
print("imported")
"""
    )
    assert "imported" in proc.stdout
    assert "planted" in proc.stderr


@pytest.mark.parametrize(
    "value, expected",
    [("1", "numpy"), ("TRUE", "numpy"), ("yes", "numpy"), ("On", "numpy"), ("0", "tensor"),
     ("", "tensor"), ("false", "tensor"), ("off", "tensor"), ("maybe", "numpy")],
)
def test_env_rollback(value, expected):
    proc = run_python(
        """
import samgpu_shim, numpy as np
from samgpu_shim.tools.models import build_sam
from segment_anything import SamPredictor
p = SamPredictor(build_sam("tiny"))
p.set_image(np.zeros((32, 48, 3), np.uint8))
m = p.predict(np.array([[5, 5]]), np.array([1]))[0]
print("numpy" if isinstance(m, np.ndarray) else "tensor")
m = p.predict(np.array([[5, 5]]), np.array([1]), as_numpy=False)[0]
print("keyword", "numpy" if isinstance(m, np.ndarray) else "tensor")
""",
        env={"SAMGPU_AS_NUMPY": value},
    )
    lines = proc.stdout.split()
    assert lines[0] == expected
    assert lines[1:] == ["keyword", "tensor"]  # the keyword beats the environment
    if value == "maybe":
        assert "SAMGPU_AS_NUMPY='maybe' is not one of" in proc.stderr


def test_env_read_once_at_patch(monkeypatch):
    from samgpu_shim import _config

    monkeypatch.setenv("SAMGPU_AS_NUMPY", "1")
    assert _config.default_as_numpy() == (False, "default")  # not re-read per call
    samgpu_shim.unpatch()
    samgpu_shim.patch()
    assert _config.default_as_numpy() == (True, "env")
    samgpu_shim.configure(as_numpy=False)
    assert _config.default_as_numpy() == (False, "runtime")
    monkeypatch.delenv("SAMGPU_AS_NUMPY")
    samgpu_shim.unpatch()
    samgpu_shim.patch()


def test_fork_target(tmp_path, caplog):
    (tmp_path / "my_fork").mkdir()
    (tmp_path / "my_fork" / "__init__.py").write_text("")
    (tmp_path / "my_fork" / "predictor.py").write_text(
        "from segment_anything import SamPredictor\n"
        "class ForkPredictor(SamPredictor):\n    pass\n"
    )
    proc = run_python(
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        """
import samgpu_shim, numpy as np, torch
samgpu_shim.unpatch()
samgpu_shim.patch("my_fork.predictor:ForkPredictor")
from my_fork.predictor import ForkPredictor
from segment_anything import SamPredictor
from samgpu_shim.tools.models import build_sam
p = ForkPredictor(build_sam("tiny")); p.set_image(np.zeros((32, 48, 3), np.uint8))
print(type(p.predict(np.array([[5, 5]]), np.array([1]))[0]).__name__, "predict" in vars(ForkPredictor))
samgpu_shim.unpatch("my_fork.predictor:ForkPredictor")
print("predict" in vars(ForkPredictor), hasattr(SamPredictor.__dict__["predict"], "__wrapped__"))
"""
    )
    assert proc.stdout.split() == ["Tensor", "True", "False", "False"]


def test_bad_fork_spec():
    with pytest.raises(ValueError, match="package.module:ClassName"):
        samgpu_shim.patch("no_colon_here")


def test_status_rows():
    rows = samgpu_shim.status()
    sam = next(r for r in rows if r["family"] == "segment-anything")
    assert sam["installed"] == "yes" and sam["status"] == "patched"
    assert "SamPredictor.predict" in sam["targets"]


def test_warnings_go_to_the_package_logger(caplog):
    with caplog.at_level(logging.WARNING, logger="samgpu_shim"):
        samgpu_shim.patch()
    assert any("already patched" in r.getMessage() for r in caplog.records)
