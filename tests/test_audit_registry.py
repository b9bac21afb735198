"""The audit's sources come from the family registry, and the registry's entry
points are the real ones: a family added without them cannot be forgotten."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util

import pytest

from samgpu_shim.families import FAMILIES, Family, fork_family
from samgpu_shim.migrate import audit_source
from samgpu_shim.migrate.entry_points import PREDICT_METHODS, REGISTRY, EntryPoints


def _resolve(module: str, attribute: str):
    obj = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_entry_points_exist_and_cover_every_patched_predict(family):
    if importlib.util.find_spec(family.hook_module.split(".")[0]) is None:
        pytest.skip(f"{family.distribution} is not installed")
    try:
        importlib.import_module(family.hook_module)
    except ImportError as exc:  # a family package whose own imports are missing here
        pytest.skip(f"{family.hook_module} does not import: {exc}")
    for entry in family.entry_points:
        module, _, attribute = entry.partition(":")
        assert callable(_resolve(module, attribute)), entry
    patched = {f"{t.module}:{t.attribute}" for t in family.targets() if t.adds_as_numpy}
    assert patched and patched <= set(family.entry_points), patched - set(family.entry_points)
    for function, returned in family.builders:
        assert callable(_resolve(*function.split(":"))) and isinstance(_resolve(*returned.split(":")), type)


def test_a_row_cannot_leave_its_entry_points_out():
    field = next(f for f in dataclasses.fields(Family) if f.name == "entry_points")
    assert field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    with pytest.raises(TypeError):
        Family("x", "x", "x", "sam1")  # type: ignore[call-arg]


def test_the_audit_sources_are_the_registry_entry_points():
    assert PREDICT_METHODS == {e.rsplit(".", 1)[1] for f in FAMILIES for e in f.entry_points}
    assert {"predict", "predict_batch", "predict_inst", "predict_inst_batch"} <= PREDICT_METHODS
    assert REGISTRY.patched_class("sam3.model.sam3_image.Sam3Image") == "sam3.model.sam3_image.Sam3Image"
    assert REGISTRY.patched_class("segment_anything.SamPredictor") == "segment_anything.predictor.SamPredictor"
    assert REGISTRY.builder("sam3.build_sam3_image_model") == "sam3.model.sam3_image.Sam3Image"
    # a new row is a source without a change to the audit
    new = Family("newsam", "newsam", "newsam.predictor", "sam1", ("newsam.predictor:NewPredictor.segment",))
    grown = EntryPoints(FAMILIES + (new,))
    assert "segment" in grown.methods and "segment" not in PREDICT_METHODS
    assert grown.patched_class("newsam.NewPredictor") == "newsam.predictor.NewPredictor"
    assert fork_family("lab.sam_copy:LabPredictor").entry_points == ("lab.sam_copy:LabPredictor.predict",)


def test_a_fork_patched_by_name_is_a_known_predictor():
    findings = audit_source(
        "import numpy as np\n"
        "import samgpu_shim\n"
        "from lab.sam_copy import LabPredictor\n"
        "samgpu_shim.patch('lab.sam_copy:LabPredictor')\n"
        "def f(model, box):\n"
        "    engine = LabPredictor(model)\n"
        "    masks, scores, _ = engine.predict(box=box)\n"
        "    return np.argmax(scores)\n"
    )
    assert [(f.line, f.operation) for f in findings] == [(8, "np.argmax()")]
