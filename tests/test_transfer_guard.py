"""The transfer guard on a CPU predictor: every row of the operation table, both directions.

GPU-mode results on a CPU device are CPU tensors; the guard treats them as
it treats CUDA ones (disallow refuses what CUDA refuses), so this suite
shows on any machine what a CUDA run would. The CUDA column of the table
itself is checked by tests/gpu/test_guard_gpu.py.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from guard_cases import RUNNABLE, classify, outcome_equals_numpy, run
from PIL import Image

import samgpu_shim
from samgpu_shim import ops
from samgpu_shim.gpu.guard import GuardedTensor, TransferGuardError

from conftest import assert_equal_to_upstream, run_python, upstream

POINTS = np.array([[40.0, 50.0], [90.0, 70.0]])
LABELS = np.array([1, 0])
IDS = [op.name for op in RUNNABLE]


@pytest.fixture(scope="module")
def shared(tiny_sam, image):
    from segment_anything import SamPredictor

    p = SamPredictor(tiny_sam)
    p.set_image(image)
    return p


def _predict(p, **kw):
    return p.predict(point_coords=POINTS, point_labels=LABELS, **kw)


@pytest.fixture(scope="module")
def reference(shared):
    return _predict(shared, as_numpy=True)


@pytest.mark.parametrize("op", RUNNABLE, ids=IDS)
def test_cpu_column_matches_plain_tensors(shared, reference, op):
    samgpu_shim.configure(transfer_guard="off")
    plain = _predict(shared)
    assert all(type(t) is torch.Tensor for t in plain)
    numpy1 = int(np.__version__.split(".")[0]) < 2
    assert classify(op, plain, reference) == (op.cpu_numpy1 if numpy1 and op.cpu_numpy1 else op.cpu)


@pytest.mark.parametrize("how", ["allow", "log"])
@pytest.mark.parametrize("op", RUNNABLE, ids=IDS)
def test_guard_column_allow_and_log(shared, reference, op, how):
    samgpu_shim.configure(transfer_guard=how)
    guarded = _predict(shared)
    assert all(isinstance(t, GuardedTensor) for t in guarded)
    before = samgpu_shim.stats()["implicit_copies"]["total"]
    if op.guard == ops.COPIES:
        assert outcome_equals_numpy(op, guarded, reference) is None
        assert samgpu_shim.stats()["implicit_copies"]["total"] > before
        return
    samgpu_shim.configure(transfer_guard="off")
    plain = _predict(shared)
    samgpu_shim.configure(transfer_guard=how)
    got, value = run(op, guarded)
    want, expected = run(op, plain)
    assert got == want, (value, expected)
    assert samgpu_shim.stats()["implicit_copies"]["total"] == before, "counted a copy the table says is none"
    if op.guard == ops.DEVICE and got == "works" and isinstance(value[0], torch.Tensor):
        assert isinstance(value[0], GuardedTensor)


@pytest.mark.parametrize("op", RUNNABLE, ids=IDS)
def test_guard_column_disallow(shared, op):
    samgpu_shim.configure(transfer_guard="disallow")
    guarded = _predict(shared)
    got, value = run(op, guarded)
    if op.guard == ops.COPIES:
        assert got == "raises" and isinstance(value, TransferGuardError), value
        assert "predict call at" in str(value) and "to_numpy" in str(value)
    else:
        assert not isinstance(value, TransferGuardError), value
    assert _predict(shared)[0].shape[0] == 3  # still usable


def legacy_postprocess(masks, scores, logits):
    """What code written for upstream's numpy results does (one line of each kind)."""
    best = np.argmax(scores)
    mask = masks[best]
    mask_u8 = mask.astype(np.uint8) * 255
    ys, xs = np.where(mask)
    overlay = np.zeros(mask.shape + (3,), dtype=np.uint8)
    overlay[mask] = (255, 0, 0)
    volume = np.zeros((2,) + mask.shape, dtype=bool)
    volume[1] = mask
    image = Image.fromarray(mask_u8)
    weighted = logits[best] * np.ones(logits.shape[-2:], dtype=np.float32)
    ramp = np.linspace(0, 1, mask.shape[-1]) * mask
    return {
        "best": best,
        "area": np.sum(mask),
        "fraction": np.mean(mask),
        "bbox": (xs.min(), ys.min(), xs.max(), ys.max()) if xs.size else None,
        "overlay": overlay,
        "volume": volume,
        "png": image.tobytes(),
        "weighted": weighted,
        "ramp": ramp,
        "stack": np.stack([masks[0], masks[1]]),
        "scores": np.round(scores, 3),
        "copy": logits.copy(),
        "order": np.argsort(scores)[::-1],
    }


def _assert_same_packet(got, want):
    from guard_cases import same

    assert got.keys() == want.keys()
    for key in want:
        assert same(got[key], want[key]), key


@pytest.mark.parametrize("how", ["allow", "log"])
def test_legacy_chain_equals_numpy_mode(shared, reference, how):
    samgpu_shim.configure(transfer_guard=how)
    _assert_same_packet(legacy_postprocess(*_predict(shared)), legacy_postprocess(*reference))


def test_legacy_chain_raises_under_disallow(shared):
    samgpu_shim.configure(transfer_guard="disallow")
    with pytest.raises(TransferGuardError, match=r"test_transfer_guard.py:\d+ \(best = np.argmax\(scores\)\)"):
        legacy_postprocess(*_predict(shared))


def test_values_types_and_shapes_unchanged(shared):
    expected = upstream(shared, point_coords=POINTS, point_labels=LABELS)
    for how in ("allow", "log", "disallow"):
        samgpu_shim.configure(transfer_guard=how)
        got = _predict(shared)
        assert all(isinstance(t, GuardedTensor) and isinstance(t, torch.Tensor) for t in got)
        assert_equal_to_upstream(expected, got, torch.device("cpu"))
    samgpu_shim.configure(transfer_guard="off")
    assert all(type(t) is torch.Tensor for t in _predict(shared))


def test_derived_tensors_stay_guarded_and_exits_are_plain(shared):
    samgpu_shim.configure(transfer_guard="log")
    masks, scores, logits = _predict(shared)
    for derived in (masks[scores.argmax()], masks.float() * 2, logits.sigmoid(), torch.where(masks, 1, 0),
                    masks.to(torch.uint8), torch.stack([masks[0], masks[1]]), logits.max(dim=0).values):
        assert isinstance(derived, GuardedTensor)
    for exit_ in (masks.cpu(), masks.to("cpu"), masks.detach().cpu()):
        assert type(exit_) is torch.Tensor
    before = samgpu_shim.stats()["implicit_copies"]["total"]
    scores.tolist(), scores[0].item(), float(scores[0]), samgpu_shim.to_numpy((masks, scores, logits))
    json.dumps({"s": scores}, default=samgpu_shim.json_default)
    assert samgpu_shim.stats()["implicit_copies"]["total"] == before, "an explicit exit was counted"


def test_numpy_mode_is_untouched(shared):
    samgpu_shim.configure(transfer_guard="disallow")
    out = _predict(shared, as_numpy=True)
    assert all(type(a) is np.ndarray for a in out)
    samgpu_shim.configure(transfer_guard=None, as_numpy=True)
    assert all(type(a) is np.ndarray for a in _predict(shared))


def test_log_warns_once_per_line_and_counts_every_copy(shared, caplog):
    samgpu_shim.reset_stats()
    samgpu_shim.configure(transfer_guard="log")
    masks, scores, _ = _predict(shared)
    caplog.set_level(logging.WARNING, logger="samgpu_shim.guard")
    for _ in range(3):
        np.asarray(masks)  # one line, three copies
    masks[0].astype(np.uint8)
    warned = [r for r in caplog.records if r.name == "samgpu_shim.guard"]
    assert len(warned) == 2
    assert "test_transfer_guard.py" in warned[0].getMessage() and "np.asarray(masks)" in warned[0].getMessage()
    assert "in _predict()" in warned[0].getMessage()  # the predict call the value came from
    copies = samgpu_shim.stats()["implicit_copies"]
    assert copies["total"] == 4
    counts = sorted(r["count"] for r in copies["sites"])
    assert counts == [1, 3]
    assert {r["operation"] for r in copies["sites"]} == {"numpy conversion (__array__)", ".astype()"}
    samgpu_shim.reset_stats()
    assert samgpu_shim.stats()["implicit_copies"]["total"] == 0


def test_allow_is_silent_but_counts(shared, caplog):
    samgpu_shim.reset_stats()
    samgpu_shim.configure(transfer_guard="allow")
    masks, _, _ = _predict(shared)
    caplog.set_level(logging.WARNING, logger="samgpu_shim.guard")
    np.asarray(masks)
    assert not [r for r in caplog.records if r.name == "samgpu_shim.guard"]
    assert samgpu_shim.stats()["implicit_copies"]["total"] == 1


def test_scope_wins_and_ends(shared):
    samgpu_shim.configure(transfer_guard="allow")
    masks, _, _ = _predict(shared)
    with samgpu_shim.transfer_guard("disallow"):
        with pytest.raises(TransferGuardError):
            np.asarray(masks)
        inside = _predict(shared)
    assert np.asarray(inside[0]).shape == masks.shape  # the scope is over: allowed again
    with samgpu_shim.transfer_guard("off"):
        assert type(_predict(shared)[0]) is torch.Tensor
    with pytest.raises(ValueError, match="transfer_guard"):
        samgpu_shim.transfer_guard("sometimes").__enter__()


def test_configure_validates():
    with pytest.raises(ValueError, match="off, allow, log, disallow"):
        samgpu_shim.configure(transfer_guard="strict")
    samgpu_shim.configure(transfer_guard="DISALLOW")
    from samgpu_shim import _config

    assert _config.transfer_guard() == "disallow"


def test_kpi_events_carry_the_copies(shared, caplog):
    samgpu_shim.reset_stats()
    samgpu_shim.configure(transfer_guard="log")
    caplog.set_level(logging.INFO, logger="samgpu_shim.kpi")
    masks, _, _ = _predict(shared)
    np.asarray(masks)
    _predict(shared)
    events = [r.samgpu_kpi for r in caplog.records if hasattr(r, "samgpu_kpi")]
    copy = [e for e in events if e["event"] == "sam_implicit_copy"]
    assert len(copy) == 1 and copy[0]["count"] == 1 and "test_transfer_guard.py" in copy[0]["site"]
    predict_events = [e for e in events if e["event"] == "sam_predict_output"]
    assert predict_events[-1]["implicit_copies"] == 1


def test_environment_and_strict_alias():
    code = """
        import numpy as np
        import samgpu_shim
        from samgpu_shim import _config
        from samgpu_shim.tools.models import build_sam, synthetic_image
        from segment_anything import SamPredictor
        p = SamPredictor(build_sam("tiny", seed=0)); p.set_image(synthetic_image(64, 64, seed=1))
        m, s, l = p.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]))
        try:
            print("mode", _config.transfer_guard(), "best", int(np.argmax(s)), type(m).__name__)
        except TypeError as exc:
            print("mode", _config.transfer_guard(), "refused", type(exc).__name__)
        """
    cases = {
        (("SAMGPU_TRANSFER_GUARD", ""),): "mode log best 0 GuardedTensor",
        (("SAMGPU_TRANSFER_GUARD", "disallow"),): "mode disallow refused TransferGuardError",
        (("SAMGPU_STRICT", "1"),): "mode disallow refused TransferGuardError",
        (("SAMGPU_STRICT", "1"), ("SAMGPU_TRANSFER_GUARD", "allow")): "mode allow best 0 GuardedTensor",
        (("SAMGPU_TRANSFER_GUARD", "off"),): "mode off best 0 Tensor",
    }
    for env, want in cases.items():
        out = run_python(code, env=dict(env)).stdout.strip()
        assert out == want, (env, out)


def test_table_is_consistent_and_documented():
    assert {op.guard for op in ops.OPS} <= {ops.COPIES, ops.DEVICE, ops.EXPLICIT, ops.UNCAUGHT}
    for op in ops.OPS:
        assert {op.cpu, op.cuda} <= {ops.WORKS, ops.RAISES, ops.DIFFERS}, op.name
        # what the guard copies is exactly what breaks on CUDA and numpy can serve
        if op.guard == ops.COPIES:
            assert op.cuda == ops.RAISES, op.name
    assert ops.lookup("call", "cv2.findContours").name == "cv2.*()"
    assert ops.lookup("numpy", "where").name == "np.where()"
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "migration.rst").read_text(encoding="utf-8")
    assert ops.rst_table() in page, "docs/migration.rst's operation table is not the generated one"


def test_migration_page_quotes_the_cost_run():
    """The default's cost table in docs/migration.rst is run 31's JSON, figure by figure."""
    from pathlib import Path

    root = Path(__file__).parents[1]
    data = json.loads((root / "docs/results/guard-bench-h200-run31-vit_h.json").read_text(encoding="utf-8"))
    assert not data["noisy"]
    page = (root / "docs" / "migration.rst").read_text(encoding="utf-8")
    frame, chain = data["summary"]["frame"], data["summary"]["chain"]
    for mode in ("off", "allow", "log", "disallow"):
        cells = [f"{frame[mode]['p50_ms']:.3f} ms", f"{chain[mode]['p50_ms']:.3f} ms"]
        if mode != "off":
            cells += [f"{frame[mode]['p50_vs_off_pct']:+.2f}%", f"{chain[mode]['p50_vs_off_pct']:+.2f}%"]
        line = next(x for x in page.splitlines() if x.startswith(f"{mode} ") and "ms" in x)
        for cell in cells:
            assert cell in line, (mode, cell, line)
    assert frame["log"]["p50_vs_off_pct"] <= 2.0  # the criterion the default was chosen by
    from samgpu_shim import _config

    assert _config.DEFAULT_GUARD == "log"


def test_kpi_report_lists_the_lines_that_copy(shared, tmp_path):
    from samgpu_shim import _telemetry
    from samgpu_shim.tools import kpi

    samgpu_shim.reset_stats()
    samgpu_shim.configure(transfer_guard="allow")
    path = tmp_path / "kpi.jsonl"
    _telemetry.install_file_handler(str(path))
    try:
        masks, _, _ = _predict(shared)
        for _ in range(2):
            masks[0].astype(np.uint8)  # one line, two copies
        _predict(shared)
    finally:
        _telemetry.remove_file_handler()
    data = kpi.to_dict(kpi.build([str(path)]))
    assert data["implicit_copies"]["total"] == 2
    (line,) = data["implicit_copies"]["lines"]
    assert line["operation"] == ".astype()" and "test_transfer_guard.py" in line["site"]
    assert "implicit host copies by the transfer guard: 2 counted" in kpi.format_table(data)
