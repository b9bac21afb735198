"""What is particular to the SAM 1 forks (SAM-HQ, MobileSAM, EfficientViT-SAM); the
contract every family keeps is tests/family_contract.py.

Each runs only where its package is installed; otherwise it is skipped with
the reason. Values come from each fork's own predictor, unpatched.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import samgpu_shim
from samgpu_shim.tools.models import synthetic_image

from conftest import assert_equal_to_upstream, run_python
from prompts import PROMPT_MIXES

# family -> (module holding the predictor, predictor class, prompt encoder module, builder)
FORKS = {
    "segment-anything-hq": (
        "segment_anything_hq", "SamPredictor", "segment_anything_hq.modeling.prompt_encoder", "tiny_sam_hq"
    ),
    "mobile-sam": ("mobile_sam", "SamPredictor", "mobile_sam.modeling.prompt_encoder", "mobile_sam_vit_t"),
    "mobilesam-lite": (
        "mobilesam_lite.mobile_sam",
        "SamPredictor",
        "mobilesam_lite.mobile_sam.modeling.prompt_encoder",
        "mobilesam_lite_vit_t",
    ),
    "efficientvit-sam": (
        "efficientsam.models.efficientvit.sam",
        "EfficientViTSamPredictor",
        "efficientsam.segment_anything.modeling.prompt_encoder",
        "efficientvit_sam_l0",
    ),
}
MIXES = ("point_multimask", "everything", "return_logits", "positional", "no_prompt")


def _needs(package):
    return pytest.mark.skipif(importlib.util.find_spec(package) is None, reason=f"{package} is not installed")


class _Fork:
    def __init__(self, name):
        module_name, cls_name, encoder_module, builder = FORKS[name]
        import family_models

        self.cls = getattr(importlib.import_module(module_name), cls_name)
        self.encoder = importlib.import_module(encoder_module).PromptEncoder
        self.predictor = self.cls(getattr(family_models, builder)())


def _fork_with_image(name):
    top = FORKS[name][0].split(".")[0]
    if importlib.util.find_spec(top) is None:
        pytest.skip(f"{top} is not installed")
    handle = _Fork(name)
    handle.predictor.set_image(synthetic_image(120, 160, seed=7))
    return name, handle, handle.predictor


@pytest.fixture(scope="module", params=sorted(FORKS))
def fork(request):
    return _fork_with_image(request.param)


@pytest.fixture(scope="module")
def sam_hq():
    return _fork_with_image("segment-anything-hq")


def _upstream(module, predictor, *args, **kwargs):
    return samgpu_shim.get_original(module.cls, "predict")(predictor, *args, **kwargs)


@pytest.mark.parametrize("hq_token_only", [False, True])
def test_sam_hq_token_only(sam_hq, hq_token_only):
    name, module, predictor = sam_hq
    args, kwargs = PROMPT_MIXES["points_and_box"]
    expected = _upstream(module, predictor, *args, **kwargs, hq_token_only=hq_token_only)
    assert_equal_to_upstream(expected, predictor.predict(*args, **kwargs, hq_token_only=hq_token_only),
                             predictor.device)
    # positional, as the 7th argument
    pc, pl = kwargs["point_coords"], kwargs["point_labels"]
    got = predictor.predict(pc, pl, kwargs["box"], None, True, False, hq_token_only)
    assert_equal_to_upstream(_upstream(module, predictor, pc, pl, kwargs["box"], None, True, False, hq_token_only),
                             got, predictor.device)


@_needs("mobile_sam")
def test_fork_import_order_and_rollback():
    code = """
import samgpu_shim, numpy as np
from mobile_sam import SamPredictor
import family_models
p = SamPredictor(family_models.mobile_sam_vit_t()); p.set_image(np.zeros((40, 60, 3), np.uint8))
print(type(p.predict(np.array([[5, 5]]), np.array([1]))[0]).__name__)
"""
    import pathlib

    here = str(pathlib.Path(__file__).parent)
    prelude = f"import sys; sys.path.insert(0, {here!r})\n"
    assert run_python(prelude + code).stdout.split()[-1] == "Tensor"
    assert run_python(prelude + code, env={"SAMGPU_AS_NUMPY": "1"}).stdout.split()[-1] == "ndarray"
    swapped = prelude + "from mobile_sam import SamPredictor as _first\n" + code
    assert run_python(swapped).stdout.split()[-1] == "Tensor"


def test_graph_mode_is_consulted_for_sam_hq(sam_hq):
    # SAM-HQ's graphs read static copies of its intermediate features too
    # (tests/gpu/test_graphs_families.py proves the replays on CUDA).
    name, module, predictor = sam_hq
    from samgpu_shim.gpu import graphs

    calls = []
    real = graphs.usable
    graphs.usable = lambda device: calls.append(device) or real(device)
    try:
        predictor.predict(*PROMPT_MIXES["point_multimask"][0], **PROMPT_MIXES["point_multimask"][1])
    finally:
        graphs.usable = real
    assert calls == [predictor.device]
    assert torch.is_tensor(predictor.predict()[0])


def test_fork_tensor_prompts(fork):
    name, module, predictor = fork
    args, kwargs = PROMPT_MIXES["points_and_box"]
    expected = _upstream(module, predictor, *args, **kwargs)
    as_tensors = {k: torch.as_tensor(v) for k, v in kwargs.items()}
    assert_equal_to_upstream(expected, predictor.predict(*args, **as_tensors), predictor.device)
