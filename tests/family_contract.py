"""The contract every family keeps, written once.

A family's test class subclasses :class:`FamilyContract` and says how to get
its predictor class and a model; every test below then runs for it:

* GPU mode: tensors on the predictor's device, equal to upstream's numpy
  results (values, dtypes, shapes), for every prompt mix;
* ``as_numpy=True``, ``configure(as_numpy=True)``, ``SAMGPU_AS_NUMPY=1`` and
  a ``SAMGPU_AS_NUMPY_MODULES`` rule: upstream's own bytes;
* a KPI event naming the family; status; unpatch restores the very function
  and patch re-wraps it;
* property-based: random valid prompts (0-16 points, labels in {-1, 0, 1},
  coordinates inside and outside the frame, float16/float64/int, lists,
  arrays and tensors, boxes, mask inputs) give GPU results equal to numpy
  mode; random invalid prompts raise in both modes (GPU mode a
  ``PromptError`` naming the argument, or upstream's own exception) and
  leave the predictor usable.

Hypothesis runs 25 examples per property by default (profile ``ci``);
``HYPOTHESIS_PROFILE=long`` runs 400. The properties are shared by every
family's class (the differing-executors health check is off for that: they
keep no state on the instance).
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, ClassVar, Tuple

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import samgpu_shim
from samgpu_shim import _config
from samgpu_shim.gpu.prompts import PromptError
from samgpu_shim.syncs import SyncProneOps
from samgpu_shim.tools.models import synthetic_image

from conftest import assert_equal_to_upstream, assert_same_arrays
from prompts import PROMPT_MIXES

_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.differing_executors]
settings.register_profile("ci", max_examples=25, deadline=None, suppress_health_check=_QUIET)
settings.register_profile("long", max_examples=400, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

IMAGE_HW = (120, 160)


@st.composite
def valid_prompts(draw: Any) -> Tuple[dict, dict]:
    """(reference kwargs as numpy, the same prompts as the caller passes them)."""
    h, w = IMAGE_HW
    ref: dict = {}
    n = draw(st.integers(0, 16))
    if n:
        coord = st.floats(-50, max(h, w) + 50, allow_nan=False, width=32)
        coords = np.array(draw(st.lists(st.tuples(coord, coord), min_size=n, max_size=n)), dtype=np.float64)
        dtype = draw(st.sampled_from([np.float64, np.float32, np.float16, np.int64]))
        coords = coords.astype(dtype)
        labels = np.array(draw(st.lists(st.sampled_from([-1, 0, 1]), min_size=n, max_size=n)), dtype=np.int64)
        ref["point_coords"], ref["point_labels"] = coords, labels
    if draw(st.booleans()):
        x0, x1 = sorted(draw(st.lists(st.integers(-20, w + 20), min_size=2, max_size=2)))
        y0, y1 = sorted(draw(st.lists(st.integers(-20, h + 20), min_size=2, max_size=2)))
        ref["box"] = np.array([x0, y0, x1, y1], dtype=draw(st.sampled_from([np.float32, np.int64])))
    if draw(st.booleans()):
        seed = draw(st.integers(0, 2**16))
        ref["mask_input"] = np.random.default_rng(seed).normal(0, 4, (1, 256, 256)).astype(np.float32)
    ref["multimask_output"] = draw(st.booleans())
    container = draw(st.sampled_from(["numpy", "list", "tensor"]))
    given_kwargs = dict(ref)
    for key in ("point_coords", "point_labels", "box"):
        if key in ref:
            if container == "list":
                given_kwargs[key] = ref[key].tolist()
            elif container == "tensor":
                given_kwargs[key] = torch.from_numpy(np.ascontiguousarray(ref[key]))
    return ref, given_kwargs


INVALID = st.sampled_from(
    [
        ("point_coords", dict(point_coords=np.ones((2, 2)))),  # labels missing
        ("point_coords", dict(point_coords=np.ones((2, 3)), point_labels=np.ones(2))),
        ("point_labels", dict(point_coords=np.ones((2, 2)), point_labels=np.ones(3))),
        ("point_labels", dict(point_coords=np.ones((2, 2)), point_labels=np.ones((1, 2)))),
        ("box", dict(box=np.arange(5.0))),
        ("mask_input", dict(mask_input=np.zeros((1, 64, 64), np.float32))),
        ("mask_input", dict(mask_input=np.zeros((256, 256), np.float32))),
        ("point_coords", dict(point_coords=[[1.0, 2.0], [3.0]], point_labels=[1, 1])),
    ]
)


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class FamilyContract:
    """Subclass and set the four class attributes below."""

    family: ClassVar[str]  # the registry row's name
    package: ClassVar[str]  # skipped when it cannot be imported
    predictor_path: ClassVar[str]  # "module:PredictorClass"
    model_builder: ClassVar[str]  # "module:function" returning a small model, random weights
    mixes: ClassVar[Tuple[str, ...]] = tuple(sorted(PROMPT_MIXES))

    @classmethod
    def predictor_class(cls) -> Any:
        return _load(cls.predictor_path)

    @classmethod
    def build_model(cls) -> Any:
        build = _load(cls.model_builder)
        return build("tiny", seed=0) if cls.model_builder.endswith(":build_sam") else build()

    @classmethod
    def new_predictor(cls) -> Any:
        """A predictor over a fresh model (a family whose class needs more overrides this)."""
        return cls.predictor_class()(cls.build_model())

    # -- shared machinery -----------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def predictor(cls) -> Any:
        pytest.importorskip(cls.package, reason=f"{cls.package} is not installed")
        p = cls.new_predictor()
        p.set_image(synthetic_image(*IMAGE_HW, seed=7))
        return p

    def upstream(self, predictor: Any, *args: Any, **kwargs: Any) -> Any:
        return samgpu_shim.get_original(self.predictor_class(), "predict")(predictor, *args, **kwargs)

    # -- the contract ----------------------------------------------------
    @pytest.mark.parametrize("mix", sorted(PROMPT_MIXES))
    def test_gpu_mode_equals_upstream(self, predictor: Any, mix: str) -> None:
        if mix not in self.mixes:
            pytest.skip(f"{self.family} does not take the {mix} prompts")
        args, kwargs = PROMPT_MIXES[mix]
        expected = self.upstream(predictor, *args, **kwargs)
        with SyncProneOps() as ops:  # the operations that would wait on a GPU (a CPU proxy)
            got = predictor.predict(*args, **kwargs)
        assert ops.calls == []
        assert_equal_to_upstream(expected, got, torch.device(predictor.device))

    def test_every_numpy_route_is_upstream_byte_for_byte(self, predictor: Any, monkeypatch: Any) -> None:
        args, kwargs = PROMPT_MIXES["everything"]
        expected = self.upstream(predictor, *args, **kwargs)

        def check(out: Any) -> None:
            for exp, got in zip(expected, out):
                assert_same_arrays(exp, got)

        check(predictor.predict(*args, **kwargs, as_numpy=True))
        samgpu_shim.configure(as_numpy=True)
        check(predictor.predict(*args, **kwargs))
        samgpu_shim.configure(as_numpy=None)
        samgpu_shim.configure(as_numpy_modules=[__name__.split(".")[0], type(self).__module__])
        check(predictor.predict(*args, **kwargs))
        samgpu_shim.configure(as_numpy_modules=None)
        monkeypatch.setenv("SAMGPU_AS_NUMPY", "1")
        _config.load_env()
        try:
            check(predictor.predict(*args, **kwargs))
        finally:
            monkeypatch.delenv("SAMGPU_AS_NUMPY")
            _config.load_env()
        assert isinstance(predictor.predict(*args, **kwargs)[0], torch.Tensor)

    def test_numpy_mode_takes_tensor_prompts(self, predictor: Any) -> None:
        # Rolled back, code that feeds tensors back as prompts (a tracked
        # point, the last low-res logits) gets upstream's results for the
        # same values, instead of upstream's error on a tensor.
        args, kwargs = PROMPT_MIXES["everything"]
        expected = self.upstream(predictor, *args, **kwargs)
        tensors = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
        got = predictor.predict(*args, **tensors, as_numpy=True)
        for e, g in zip(expected, got):
            assert_same_arrays(e, g)

    def test_kpi_event_names_family(self, predictor: Any, caplog: Any) -> None:
        args, kwargs = PROMPT_MIXES["point_multimask"]
        with caplog.at_level(logging.INFO, logger=samgpu_shim.KPI_LOGGER_NAME):
            predictor.predict(*args, **kwargs)
        events = [r.samgpu_kpi for r in caplog.records if hasattr(r, "samgpu_kpi")]
        assert events and events[-1]["family"] == self.family and events[-1]["as_numpy"] == 0

    def test_status_and_unpatch_restores(self, predictor: Any) -> None:
        row = next(r for r in samgpu_shim.status() if r["family"] == self.family)
        assert row["installed"] == "yes" and row["status"] == "patched"
        cls = self.predictor_class()
        original = samgpu_shim.get_original(cls, "predict")
        samgpu_shim.unpatch()
        try:
            assert cls.__dict__["predict"] is original
            assert all(isinstance(a, np.ndarray) for a in predictor.predict(*PROMPT_MIXES["box_1d"][0],
                                                                              **PROMPT_MIXES["box_1d"][1]))
        finally:
            samgpu_shim.patch()
        module = importlib.import_module(cls.__module__)
        assert getattr(module, cls.__name__).__dict__["predict"] is not original

    @given(prompts=valid_prompts())
    def test_property_random_valid_prompts(self, predictor: Any, prompts: Tuple[dict, dict]) -> None:
        ref, given_kwargs = prompts
        expected = predictor.predict(**ref, as_numpy=True)
        got = predictor.predict(**given_kwargs)
        for exp, out in zip(expected, got):
            back = out.cpu().numpy()
            assert back.dtype == exp.dtype and back.shape == exp.shape
            assert np.array_equal(back, exp, equal_nan=True)

    @given(case=INVALID)
    def test_property_invalid_prompts(self, predictor: Any, case: Tuple[str, dict]) -> None:
        name, kwargs = case
        outcomes = []
        for as_numpy in (True, False):
            try:
                predictor.predict(**kwargs, as_numpy=as_numpy)
            except Exception as exc:  # the class is what is compared
                outcomes.append(exc)
            else:
                outcomes.append(None)
        up, gpu = outcomes
        assert up is not None and gpu is not None, f"{name}: numpy {up!r}, gpu {gpu!r}"
        assert isinstance(gpu, type(up)) or (isinstance(gpu, PromptError) and name in str(gpu)), (up, gpu)
        # still usable
        args, good = PROMPT_MIXES["point_multimask"]
        assert_equal_to_upstream(self.upstream(predictor, *args, **good), predictor.predict(*args, **good),
                                 torch.device(predictor.device))
