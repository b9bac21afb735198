"""The command line as a newcomer meets it: clear one-line errors, help, version, docs in step."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

import samgpu_shim
from samgpu_shim.tools import bench, cli

DOCS = pathlib.Path(__file__).parent.parent / "docs" / "usage.rst"
README = pathlib.Path(__file__).parent.parent / "README.md"


@pytest.fixture()
def no_work(monkeypatch):
    """Any benchmark work at all fails the test: errors must come first."""

    def boom(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(bench, "run", boom)
    monkeypatch.setattr(bench, "run_model", boom)


def _error(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and "Traceback" not in err, err
    return err


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
    ],
)
def test_bad_arguments_are_one_line_errors(argv, words, capsys, no_work):
    assert words in _error(argv, capsys)


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
