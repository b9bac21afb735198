"""fast-compile's ahead-of-time packages: the manifest decides, a stale package is never used.

Building a real AOTInductor package takes minutes, so the builder and the
loader are replaced by stand-ins that record their calls; what is under test
is the key, its comparison and the rebuild."""

from __future__ import annotations

import json

import pytest
import torch

from samgpu_shim.gpu import aot


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.LayerNorm(4)

    def forward(self, x):
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


@pytest.fixture
def fake(monkeypatch):
    calls = {"build": 0, "load": 0}

    def build(module, example, package):
        calls["build"] += 1
        package.write_bytes(b"package %d" % calls["build"])

    def load(package):
        calls["load"] += 1
        content = package.read_bytes()
        return lambda x: (content, x)

    monkeypatch.setattr(aot, "_build", build)
    monkeypatch.setattr(aot, "_load", load)
    return calls


def _example():
    return torch.zeros(1, 3, 8, 8)


def test_key_follows_the_weights_and_the_structure():
    torch.manual_seed(0)
    module = Encoder()
    key = aot.manifest_key(module, _example())
    assert key == aot.manifest_key(module, _example())
    assert set(aot.KEY_FIELDS) <= set(key)
    with torch.no_grad():
        module.conv.weight[0, 0, 0, 0] += 1e-6  # one weight, by a hair
    changed = aot.manifest_key(module, _example())
    assert aot.differences(key, changed) == [f"weights: {key['weights']!r} != {changed['weights']!r}"]
    with torch.no_grad():  # the same values in another order
        module.conv.bias.copy_(module.conv.bias.flip(0))
    assert aot.manifest_key(module, _example())["weights"] != changed["weights"]
    other = aot.manifest_key(module.double(), _example().double())
    assert {d.split(":")[0] for d in aot.differences(changed, other)} >= {"structure", "weights", "input"}


def test_built_once_then_loaded(tmp_path, fake):
    module = Encoder()
    runner, report = aot.obtain(module, _example(), tmp_path)
    assert report["built"] and report["why"] == ["no manifest"] and fake == {"build": 1, "load": 1}
    runner, report = aot.obtain(module, _example(), tmp_path)
    assert not report["built"] and fake == {"build": 1, "load": 2}
    assert runner(1)[0] == b"package 1"
    manifest = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert manifest["device"] == "cpu" and manifest["torch"] == torch.__version__


@pytest.mark.parametrize("field, value", [("torch", "2.0.0"), ("device", "NVIDIA H100 (sm_90)"), ("cuda", "11.8"),
                                          ("shim", "0.0.1"), ("format", 0)])
def test_a_manifest_that_does_not_match_is_rebuilt(tmp_path, fake, field, value):
    module = Encoder()
    aot.obtain(module, _example(), tmp_path)
    path = next(tmp_path.glob("*.json"))
    manifest = json.loads(path.read_text())
    manifest[field] = value  # as if built by another torch, on another GPU...
    path.write_text(json.dumps(manifest))
    runner, report = aot.obtain(module, _example(), tmp_path)
    assert report["built"] and report["why"][0].startswith(f"{field}:")
    assert fake["build"] == 2 and runner(1)[0] == b"package 2"
    assert json.loads(path.read_text())[field] != value


def test_new_weights_rebuild_and_the_old_package_is_not_loaded(tmp_path, fake):
    module = Encoder()
    aot.obtain(module, _example(), tmp_path)
    with torch.no_grad():
        module.norm.weight.mul_(2)
    runner, report = aot.obtain(module, _example(), tmp_path)
    assert report["built"] and report["why"][0].startswith("weights:")
    assert runner(1)[0] == b"package 2"


def test_a_package_swapped_behind_the_manifest_is_rebuilt(tmp_path, fake):
    module = Encoder()
    aot.obtain(module, _example(), tmp_path)
    package = next(tmp_path.glob("*.pt2"))
    package.write_bytes(b"something else entirely")
    _, report = aot.obtain(module, _example(), tmp_path)
    assert report["built"] and "not the one the manifest describes" in report["why"][0]
    package.unlink()
    _, report = aot.obtain(module, _example(), tmp_path)
    assert report["built"] and report["why"] == ["no package"]


def test_a_failed_build_leaves_no_usable_slot(tmp_path, fake, monkeypatch):
    module = Encoder()
    aot.obtain(module, _example(), tmp_path)

    def broken(module, example, package):
        raise RuntimeError("compiler crashed")

    monkeypatch.setattr(aot, "_build", broken)
    with torch.no_grad():
        module.conv.weight.zero_()
    with pytest.raises(RuntimeError, match="crashed"):
        aot.obtain(module, _example(), tmp_path)
    assert not list(tmp_path.glob("*.json"))  # the old manifest went first: nothing stale to load
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp")]


def test_stand_in_obtains_once_per_input_shape(tmp_path, fake):
    module = Encoder()
    stand = aot.packaged(module, None, str(tmp_path))
    assert aot.packaged(module, None, str(tmp_path)) is stand
    stand(_example())
    stand(_example())
    stand(torch.zeros(1, 3, 10, 10))
    assert fake == {"build": 2, "load": 2} and len(stand.reports) == 2
    assert stand.conv is module.conv  # attributes are the module's
