"""Your own checkpoint and your own image: the loader, ``segment``, ``bench`` on
a file, and the README's snippet, with small checkpoints saved here in the
official formats (real segment-anything, SAM 2 and SAM 3 modules, random weights)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from samgpu_shim.tools import checkpoints, cli
from samgpu_shim.tools.models import SAM1_ARCHS, build_sam, build_sam_arch, synthetic_image

ROOT = pathlib.Path(__file__).parent.parent
IMAGE_HW = (96, 128)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A photo and a segment-anything checkpoint (the tiny architecture, seed 3,
    a 256-pixel input: the loader reads the size from the weights, and a CPU runs it in a blink)."""
    folder = tmp_path_factory.mktemp("own")
    photo = folder / "photo.png"
    Image.fromarray(synthetic_image(*IMAGE_HW, seed=2)).save(photo)
    ckpt = folder / "sam_tiny.pth"
    torch.save(build_sam("tiny", seed=3, image_size=256).state_dict(), ckpt)
    return {"photo": str(photo), "sam": str(ckpt), "folder": folder}


def _same_weights(a, b, prefixes=("",)):
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sb if k.startswith(tuple(prefixes))]
    return bool(keys) and all(torch.equal(sa[k], sb[k]) for k in keys)


def test_segment_anything_checkpoint_loads_with_its_architecture_read_from_it(files, tmp_path):
    loaded = checkpoints.load(files["sam"])
    assert (loaded.family, loaded.model) == ("sam", "tiny")
    assert _same_weights(loaded.module, build_sam("tiny", seed=3, image_size=256))
    assert loaded.module.image_encoder.img_size == 256
    # a size no registry knows: 3 blocks, 48 wide, 512-pixel input, decoder heads SAM's 8
    arch = SAM1_ARCHS["tiny"]._replace(embed=48, heads=3, depth=3, global_attn=(0, 2), dec_heads=8)
    path = tmp_path / "odd.pth"
    torch.save(build_sam_arch(arch, seed=4, image_size=512).state_dict(), path)
    odd = checkpoints.load(str(path))
    assert "read from the weights' shapes" in odd.how and odd.module.image_encoder.img_size == 512
    assert _same_weights(odd.module, build_sam_arch(arch, seed=4, image_size=512))


def _shapes(arch, image_size=1024):
    """The tensors the architecture reader looks at, as shapes only (no memory)."""
    grid = image_size // 16
    head = arch.embed // arch.heads
    state = {
        "image_encoder.patch_embed.proj.weight": (arch.embed, 3, 16, 16),
        "image_encoder.pos_embed": (1, grid, grid, arch.embed),
        "image_encoder.neck.0.weight": (arch.prompt_dim, arch.embed, 1, 1),
        "mask_decoder.transformer.layers.0.mlp.lin1.weight": (arch.mlp_dim, arch.prompt_dim),
        "mask_decoder.iou_prediction_head.layers.0.weight": (arch.iou_hidden, arch.prompt_dim),
    }
    for i in range(arch.depth):
        size = grid if i in arch.global_attn else arch.window
        state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] = (2 * size - 1, head)
    return {k: torch.empty(v, device="meta") for k, v in state.items()}


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_official_sizes_are_recognised(name):
    assert checkpoints.sam1_arch(_shapes(SAM1_ARCHS[name]))[0] == name


def test_sam2_checkpoint(tmp_path):
    pytest.importorskip("sam2")
    from samgpu_shim.tools.models import build_sam2

    path = tmp_path / "sam2.1_tiny.pt"
    torch.save({"model": build_sam2("tiny", seed=3).state_dict()}, path)
    loaded = checkpoints.load(str(path))
    assert (loaded.family, loaded.model) == ("sam2", "tiny")
    assert _same_weights(loaded.module, build_sam2("tiny", seed=3))


def _sam3_file(path, seed=3):
    from samgpu_shim.tools.models import build_sam3

    model = build_sam3("tiny", seed=seed)
    # sam3.pt's names: the detector's vision backbone, the tracker beside it
    state = {("detector." if k.startswith("backbone.") else "tracker.") + k: v for k, v in model.state_dict().items()}
    state["detector.transformer.decoder.norm.weight"] = torch.ones(4)  # detector parts images do not use
    torch.save({"model": state}, path)
    return model


def test_sam3_checkpoint_and_segment_through_it(tmp_path, files, capsys):
    pytest.importorskip("sam3")
    path = tmp_path / "sam3.pt"
    model = _sam3_file(path)
    loaded = checkpoints.load(str(path))
    assert (loaded.family, loaded.model) == ("sam3", "tiny")
    assert _same_weights(loaded.module, model, checkpoints._SAM3_IMAGE_PARTS)
    out = tmp_path / "sam3.png"
    argv = ["segment", files["photo"], "--point", "40,30", "--checkpoint", str(path), "--device", "cpu",
            "--calls", "1", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "model: sam3 tiny" in capsys.readouterr().out and out.exists()


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda p: p.write_text("not a checkpoint"), "not a PyTorch checkpoint"),
        (lambda p: torch.save({"weights": torch.zeros(1)}, p), "not a segment-anything, SAM 2.1 or SAM 3"),
        (lambda p: torch.save([1, 2], p), "not a state dict"),
    ],
)
def test_files_that_are_not_checkpoints(tmp_path, make, words):
    path = tmp_path / "x.pth"
    make(path)
    with pytest.raises(checkpoints.CheckpointError, match=words):
        checkpoints.load(str(path))


def test_weights_that_do_not_fit(files, tmp_path):
    state = torch.load(files["sam"], weights_only=True)
    del state["mask_decoder.iou_token.weight"]
    path = tmp_path / "cut.pth"
    torch.save(state, path)
    with pytest.raises(checkpoints.CheckpointError, match="1 weight.s. missing, e.g. mask_decoder.iou_token"):
        checkpoints.load(str(path))
    with pytest.raises(checkpoints.CheckpointError, match="holds tiny, not vit_b"):
        checkpoints.load(files["sam"], model="vit_b")
    odd = {k: v for k, v in state.items() if k != "image_encoder.blocks.1.attn.rel_pos_h"}  # no size to name
    odd["mask_decoder.iou_token.weight"] = torch.zeros(1, 32)
    path = tmp_path / "odd.pth"
    torch.save(odd, path)
    with pytest.raises(checkpoints.CheckpointError, match="does not fit segment-anything tiny: 1 weight.s. missing"):
        checkpoints.load(str(path), model="tiny")
    with pytest.raises(checkpoints.CheckpointError, match="holds a sam model, not sam2"):
        checkpoints.load(files["sam"], family="sam2")


def test_a_model_the_checkpoint_does_not_hold_is_one_line(files, capsys):
    assert cli.main(["segment", files["photo"], "--checkpoint", files["sam"], "--model", "hiera_t"]) == 2
    assert "sam_tiny.pth: holds a sam model; --model hiera_t is not one of its (tiny, vit_b" in capsys.readouterr().err
    assert cli.main(["segment", files["photo"], "--checkpoint", files["sam"], "--model", "vit_x"]) == 2
    assert "a checkpoint's family has no model vit_x" in capsys.readouterr().err


def test_segment_end_to_end(files, tmp_path, capsys):
    """The command as a user runs it: a checkpoint, a photo, one point; an overlay and both timings."""
    out, report = tmp_path / "overlay.png", tmp_path / "r.json"
    argv = ["segment", files["photo"], "--point", "64,48", "--checkpoint", files["sam"], "--device", "cpu",
            "--calls", "2", "--out", str(out), "--json", str(report)]
    assert cli.main(argv) == 0
    proc = capsys.readouterr()
    assert proc.err.startswith("samgpu-shim segment: ") and "Traceback" not in proc.err
    assert "RANDOM WEIGHTS" not in proc.out and "identical to upstream" in proc.out
    data = json.loads(report.read_text())
    assert data["identical_to_upstream"] is True and data["model"] == "tiny"
    rows = {r["path"]: r for r in data["rows"]}
    assert rows["upstream predict (numpy out)"]["syncs_per_call"] == 9
    assert rows["shim predict (tensors out)"]["syncs_per_call"] == 0
    with Image.open(out) as png:  # one point alone: three masks, one panel each
        assert png.format == "PNG" and png.size == (3 * IMAGE_HW[1], IMAGE_HW[0] + 22)
    assert len(data["scores"]) == 3


def test_segment_random_weights_box_and_background_point(files, tmp_path, capsys):
    out = tmp_path / "o.png"
    argv = ["segment", files["photo"], "--point", "60,40", "--bg-point", "5,5", "--box", "10,10,100,80",
            "--device", "cpu", "--calls", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in text and "random weights" in text
    with Image.open(out) as png:  # prompts that are not ambiguous: one mask
        assert png.size == (IMAGE_HW[1], IMAGE_HW[0] + 22)
        pixels = np.asarray(png.convert("RGB"))
    assert (pixels[22 + 40, 60] == (0, 200, 0)).all()  # the foreground point is drawn where it is


def test_bench_on_an_image_file_with_a_checkpoint(files, tmp_path, capsys):
    out = tmp_path / "b.json"
    argv = ["bench", "--image", files["photo"], "--checkpoint", files["sam"], "--calls", "2", "--warmup", "0",
            "--no-pipeline", "--device", "cpu", "--json", str(out)]
    assert cli.main(argv) == 0
    result = json.loads(out.read_text())["results"][0]
    assert result["weights"] == files["sam"] and result["image_source"] == files["photo"]
    assert result["image_hw"] == list(IMAGE_HW) and result["identical_to_upstream"] is True
    assert f"from {files['photo']}" in capsys.readouterr().out


def _readme_snippet():
    text = (ROOT / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_readme_snippet_runs_as_pasted(tmp_path):
    snippet = _readme_snippet()
    names = sorted(set(re.findall(r'"([\w.]+\.(?:pth|pt|jpg|png))"', snippet)))
    assert len(names) == 2, names  # a checkpoint and a photo, by path
    checkpoint, photo = sorted(names, key=lambda n: not n.endswith((".pth", ".pt")))
    torch.save(build_sam("tiny", seed=5, image_size=256).state_dict(), tmp_path / checkpoint)
    Image.fromarray(synthetic_image(480, 640, seed=6)).save(tmp_path / photo)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "torch.Size([3, 480, 640])" in proc.stdout, proc.stdout
