"""The command line as a newcomer meets it: clear one-line errors, help, version, docs in step."""

from __future__ import annotations

import argparse
import configparser
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import samgpu_shim
from samgpu_shim.tools import bench, cli, doctor, segment

DOCS = pathlib.Path(__file__).parent.parent / "docs" / "usage.rst"
README = pathlib.Path(__file__).parent.parent / "README.md"


@pytest.fixture()
def no_work(monkeypatch):
    """Any benchmark work at all fails the test: errors must come first."""

    def boom(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(bench, "run", boom)
    monkeypatch.setattr(bench, "run_model", boom)
    monkeypatch.setattr(segment, "run", boom)


def _error(argv, capsys):
    """The one error line; progress lines may come before it (a command says at once what it starts)."""
    code = cli.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    errors = [line for line in lines if ": error: " in line]
    assert errors == lines[-1:] and "Traceback" not in "\n".join(lines), lines
    return errors[0]


@pytest.mark.parametrize(
    "argv,words",
    [
        (["bench", "--image", "10x"], "expected HEIGHTxWIDTH"),
        (["bench", "--image", "0x20"], "between 1 and 16384"),
        (["bench", "--calls", "0"], "--calls 0: must be at least 1"),
        (["bench", "--calls", "-1"], "--calls -1: must be at least 1"),
        (["bench", "--warmup", "-2"], "--warmup -2"),
        (["bench", "--model", "vit_x"], "has no model vit_x"),
        (["bench", "--device", "tpu"], "--device tpu"),
        (["bench", "--json", "/nonexistent-folder/x.json"], "does not exist"),
        (["bench", "--compile", "--family", "sam2"], "--compile"),
        (["soak", "--calls", "0"], "--calls 0"),
        (["bench", "--image", "no-such-photo.jpg"], "no file of that name"),
        (["bench", "--checkpoint", "/nonexistent/sam.pth"], "--checkpoint /nonexistent/sam.pth: no such file"),
        (["bench", "--checkpoint", "{photo}", "--family", "hq"], "checkpoints are read for --family sam, sam2"),
        (["bench", "--checkpoint", "{photo}", "--model", "tiny", "vit_b"], "at most one --model"),
        (["segment", "no-such-photo.jpg"], "no-such-photo.jpg: no such file"),
        (["segment", "{text}"], "not an image file"),
        (["segment", "{photo}", "--point", "5"], "--point '5': expected X,Y"),
        (["segment", "{photo}", "--point", "a,b"], "expected X,Y"),
        (["segment", "{photo}", "--point", "40,30", "--point", "500,10"], "--point 500,10: outside the image (64x48"),
        (["segment", "{photo}", "--bg-point", "10,48"], "--bg-point 10,48: outside the image"),
        (["segment", "{photo}", "--box", "30,10,20,40"], "needs X0 < X1 and Y0 < Y1"),
        (["segment", "{photo}", "--box", "1,2,3"], "expected X0,Y0,X1,Y1"),
        (["segment", "{photo}", "--box", "10,10,65,40"], "--box 10,10,65,40: outside the image (64x48"),
        (["segment", "{photo}", "--out", "overlay.jpg"], "give a name ending in .png"),
        (["segment", "{photo}", "--calls", "0"], "--calls 0"),
        (["segment", "{photo}", "--device", "gpu"], "--device gpu: not a device"),
        (["segment", "{photo}", "--family", "sam", "--model", "hiera_t"], "--family sam has no model hiera_t"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, words, capsys, no_work, inputs):
    assert words in _error([a.format(**inputs) for a in argv], capsys)


@pytest.fixture()
def inputs(tmp_path):
    """A 64x48 photo and a text file that is no image."""
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), "gray").save(photo)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    return {"photo": str(photo), "text": str(text)}


def test_bad_values_are_reported_before_torch_is_imported(inputs):
    """The checks that need no torch run first: a mistake costs no torch import."""
    cases = [
        ["bench", "--calls", "0"], ["bench", "--image", "10x"], ["bench", "--device", "tpu"],
        ["bench", "--warmup", "-1"], ["bench", "--model", "vit_x"], ["soak", "--calls", "0"],
        ["segment", inputs["photo"], "--point", "900,1"], ["segment", inputs["text"]],
        ["segment", inputs["photo"], "--checkpoint", "/nonexistent.pth"],
    ]
    code = (
        "import json, sys\n"
        "from samgpu_shim.tools import cli\n"
        "out = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    out.append([cli.main(argv), 'torch' in sys.modules])\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [[2, False]] * len(cases), proc.stderr
    assert proc.stderr.count(": error: ") == len(cases) and "Traceback" not in proc.stderr


def test_cuda_without_a_gpu(capsys, no_work, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA device is available" in _error(["bench", "--device", "cuda"], capsys)


def test_missing_family_and_plot_library(capsys, no_work, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("sam2", "matplotlib") else real(name, *a)
    )
    assert "sam2 is not installed" in _error(["bench", "--family", "sam2"], capsys)
    assert "--plot needs matplotlib" in _error(["bench", "--plot", "x.png"], capsys)


def test_unwritable_json_path(tmp_path, capsys, no_work):
    folder = tmp_path / "ro"
    folder.mkdir()
    assert "is a folder" in _error(["bench", "--json", str(folder)], capsys)


def test_version_and_help_show_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"samgpu-shim {samgpu_shim.__version__}"
    proc = subprocess.run([sys.executable, "-m", "samgpu_shim", "bench", "--help"], capture_output=True, text=True)
    assert "(default: 10)" in proc.stdout and "(default: 1080x1920)" in proc.stdout
    top = subprocess.run([sys.executable, "-m", "samgpu_shim", "--help"], capture_output=True, text=True).stdout
    for command in ("bench", "soak", "audit", "doctor"):
        assert command in top


def _flags():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, p in sub.choices.items():
        for action in p._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    out.setdefault(name, set()).add(flag)
                    assert action.help, f"{name} {flag} has no help text"
    return out


def test_every_flag_is_documented_and_every_documented_flag_exists():
    flags = _flags()
    usage = DOCS.read_text()
    every = set().union(*flags.values())
    for flag in every:
        assert f"``{flag}" in usage, f"{flag} is not in docs/usage.rst"
    readme = README.read_text()
    documented = set(re.findall(r"``(--[a-z][a-z-]*)", usage)) | set(re.findall(r"`(--[a-z][a-z-]*)", readme))
    assert documented <= every | {"--version", "--help", "--no-deps", "--no-build-isolation", "--index-url"}, (
        documented - every
    )


# Buffered, the write fails when stdout is flushed after the report; unbuffered, in the report's print.
@pytest.mark.parametrize("unbuffered", [None, "1"])
def test_output_cut_short_by_a_closed_pipe_is_no_traceback(tmp_path, unbuffered):
    """samgpu-shim kpi --json FILE | head: the reader goes away; the command ends quietly."""
    events = tmp_path / "kpi.jsonl"
    line = {"ts": 1700000000.0, "event": "sam_predict_output", "as_numpy": 0, "as_numpy_source": "default",
            "mask_device": "cpu", "family": "segment-anything", "latency_ms": 1.0, "module": "app",
            "function": "f", "line": 1}
    events.write_text("".join(json.dumps({**line, "line": i}) + "\n" for i in range(50)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    read, write = os.pipe()
    os.close(read)  # nobody will read: the first write fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "samgpu_shim", "kpi", "--json", str(events)],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, env=env)
    finally:
        os.close(write)
    assert proc.returncode == 141
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr


def test_audit_of_files_it_cannot_read_is_one_line(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(bytes(range(256)) * 8)
    assert "photo.png: not a text file (binary, or not UTF-8)" in _error(["audit", str(photo)], capsys)
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "ok.py").write_text("x = 1\n")
    (folder / "odd.ipynb").write_text('{"cells": 5}')
    assert "odd.ipynb: not a notebook (no list of cells)" in _error(["audit", str(folder)], capsys)
    (folder / "odd.ipynb").write_text('{"cells": [')
    assert "odd.ipynb: not JSON" in _error(["audit", str(folder / "odd.ipynb")], capsys)
    (folder / "odd.ipynb").write_text('{"cells": [{"cell_type": "code", "source": "x = 2"}]}')
    assert cli.main(["audit", str(folder)]) == 0


def test_an_unexpected_failure_is_one_line(monkeypatch, capsys):
    def broken():
        raise RuntimeError("something inside\nwith a second line")

    monkeypatch.setattr(doctor, "main", broken)
    assert cli.main(["doctor"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("samgpu-shim doctor: internal error: RuntimeError: something inside (at ")
    assert "\n" not in err and "please report it" in err


def test_doctor_pairs_torch_and_torchvision_and_names_the_fix():
    ok = {"torch": "2.14.1", "torchvision": "0.29.1", "numpy": "2.3.5", "wrapt": "2.0.1"}
    assert doctor.problems(ok, {}, "2.14.1+cpu") == []
    (problem, fix), = doctor.problems({**ok, "torchvision": "0.24.0"}, {}, "2.14.1+cpu")
    assert "torchvision 0.24.0 does not pair with torch 2.14.1" in problem and "torchvision 0.29" in problem
    assert fix == "pip install 'torchvision==0.29.*' --index-url https://download.pytorch.org/whl/cpu"
    nms = "RuntimeError: operator torchvision::nms does not exist"
    found = doctor.problems(ok, {"torchvision": nms, "segment-anything": nms, "sam3": "ModuleNotFoundError: "
                                 "No module named 'psutil'"}, "2.14.1")
    assert [p for p, _ in found] == [f"torchvision does not import: {nms}",
                                     "sam3 does not import: ModuleNotFoundError: No module named 'psutil'",
                                     "segment-anything: does not import, for the same reason"]
    first, pypi = found[0][1].splitlines()
    assert first.endswith("pip install --force-reinstall --no-deps 'torchvision==0.29.*'")  # torch's own build
    assert pypi.endswith("pip install --force-reinstall 'torch==2.14.*' 'torchvision==0.29.*'")
    assert found[1][1] == "pip install psutil"
    (problem, fix), = doctor.problems({**ok, "numpy": "1.24.4"}, {})
    assert "numpy 1.24.4 is outside" in problem and fix == "pip install 'numpy>=1.26,<3'"


def test_doctor_families_section():
    rows = [
        {"family": "segment-anything", "distribution": "segment-anything", "installed": "yes",
         "status": "patched", "targets": "segment_anything.predictor.SamPredictor.predict"},
        {"family": "sam3", "distribution": "sam3", "installed": "no", "status": "waiting for import",
         "targets": "(listed once sam3 is imported)"},
        {"family": "sam2", "distribution": "sam2", "installed": "yes", "status": "waiting for import",
         "targets": "x"},
    ]
    assert doctor.family_lines(rows, {"sam2": "RuntimeError: boom"}) == [
        "  segment-anything: installed, patched",
        "    targets: segment_anything.predictor.SamPredictor.predict",
        "  sam3: not installed",
        "  sam2: installed, does not import (see the problems below)",
    ]


def test_doctor_with_a_torchvision_that_does_not_import(tmp_path):
    """What a mirror that mixes releases leaves behind: the exact import failure."""
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    root = pathlib.Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    proc = subprocess.run([sys.executable, "-m", "samgpu_shim", "doctor"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 1
    assert "torchvision does not import: RuntimeError: operator torchvision::nms does not exist" in proc.stdout
    assert "fix: torchvision from the index torch came from: pip install --force-reinstall" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr



def test_commands_that_need_torchvision_say_when_it_does_not_import(monkeypatch, capsys, no_work):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # what an import that fails leaves to the next one
    for argv in (["bench", "--calls", "1"], ["soak", "--calls", "1"]):
        assert _error(argv, capsys).endswith(
            ": error: torchvision does not import (import of torchvision halted; None in sys.modules); "
            "'samgpu-shim doctor' names the fix")


def _report(up, shim, pipe_up, pipe_shim, spread=0.05):
    def row(path, p50, syncs):
        return {"path": path, "calls": 5, "syncs_per_call": syncs, "sync_measure": "sync-prone ops (CPU proxy)",
                "p50_ms": p50, "p99_ms": p50 * 1.2, "max_ms": p50 * 1.3, "p50_spread_between_rounds": spread}

    return {
        "environment": {"device": "cpu", "device_name": "x86_64", "torch": "2.x", "numpy": "2.x", "cpu_threads": 2},
        "wrapper_overhead": {"attribution_and_resolution_us": 4.7, "counters_us": 2.4},
        "results": [{
            "family": "sam", "model": "tiny", "image_hw": [120, 160], "set_image_ms": 10.0,
            "identical_to_upstream": True, "shim_outputs": ["Tensor@cpu"] * 3, "graph_capture_ms": None,
            "rows": [row(bench.UPSTREAM, up, 9.0), row(bench.SHIM, shim, 0.0),
                     row(bench.PIPELINE_UPSTREAM, pipe_up, 9.0), row(bench.PIPELINE_SHIM, pipe_shim, 1.0)],
        }],
    }


def test_bench_output_reads_once():
    """One direction for every ratio, each column explained, a verdict of a few short lines."""
    text = bench.format_table(_report(10.0, 12.8, 20.0, 5.0))
    assert "the shim took 1.28x upstream's time" in text and "frame pipeline 0.25x" in text
    assert "faster" not in text.split("Columns:")[0] and " = " not in text
    table = [line for line in text.splitlines() if line.startswith(bench.SHIM)]
    assert table[0].split()[-1] == "1.28"
    header = next(line for line in text.splitlines() if line.startswith("path "))
    legend = text.split("Columns:")[1]
    for column in ("calls", "syncs/call", "p50", "p99", "max", "x upstream"):
        assert column in header and column in legend
    assert "wrapper bookkeeping" not in text and "find the caller" in legend
    verdict = bench.verdict(_report(10.0, 12.8, 20.0, 5.0, spread=0.5))
    lines = verdict.splitlines()
    assert len(lines) <= 7 and max(len(line) for line in lines) <= 100, verdict
    assert any(line.strip().startswith("noisy:") for line in lines)


def test_a_quiet_test_run():
    """pytest prints a one-line summary of skips, not one line per skipped test."""
    config = configparser.ConfigParser()
    config.read(pathlib.Path(__file__).parent.parent / "setup.cfg")
    opts = config["tool:pytest"]["addopts"].split()
    assert "-q" in opts
    report = [o for o in opts if o.startswith("-r")]
    assert report and not set(report[0][2:]) & set("sSaA"), report
