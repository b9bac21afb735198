"""The layout's promises (docs/architecture.rst), checked on the source."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import samgpu_shim
from samgpu_shim import _config

from conftest import run_python

PACKAGE = pathlib.Path(samgpu_shim.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: pathlib.Path, module_level_only: bool):
    """Package modules imported by one file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # imports under top-level if/try count too
        nodes = [n for top in tree.body for n in ast.walk(top) if not isinstance(top, (ast.FunctionDef, ast.ClassDef))]
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("samgpu_shim")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("samgpu_shim"):
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                exists = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                ).exists()
                out.add(candidate if exists else target)
    out.discard(name)
    return out


def _graph(module_level_only: bool):
    return {_module_name(p): _imports(p, module_level_only) for p in PACKAGE.rglob("*.py")}


def _find_cycle(graph):
    state: dict = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_no_import_cycle_anywhere():
    for module_level_only in (True, False):
        cycle = _find_cycle(_graph(module_level_only))
        assert cycle is None, f"import cycle: {' -> '.join(cycle)}"
    assert _find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # the check itself can fail


def test_runtime_never_imports_tools():
    for name, targets in _graph(False).items():
        if name.startswith(("samgpu_shim.gpu", "samgpu_shim.families")) or name.count(".") == 1:
            if name.startswith("samgpu_shim.tools") or name == "samgpu_shim.__main__":
                continue
            assert not any(t.startswith("samgpu_shim.tools") for t in targets), (name, targets)


def test_import_imports_neither_torch_nor_sam():
    proc = run_python(
        """
        import sys
        import samgpu_shim
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       {"torch", "numpy", "segment_anything", "sam2", "mobile_sam", "segment_anything_hq",
                        "efficientsam", "mobilesam_lite", "libcst"})
        print("HEAVY", heavy)
        """
    )
    assert "HEAVY []" in proc.stdout


def test_public_api_is_all():
    for name in samgpu_shim.__all__:
        assert getattr(samgpu_shim, name) is not None, name
    env_constants = {n for n in dir(_config) if n.startswith("ENV_")}
    assert env_constants <= set(samgpu_shim.__all__)
    assert {getattr(_config, n) for n in env_constants} == {s.env for s in _config.SETTINGS if s.env}
    for error in ("PromptError", "ImageError", "StrictConversionError"):
        assert issubclass(getattr(samgpu_shim, error), Exception)


def test_every_family_is_a_module_with_targets_and_a_contract():
    import test_family_contract

    from samgpu_shim.families import FAMILIES

    from family_contract import FamilyContract

    contracted = {c.family for c in vars(test_family_contract).values()
                  if isinstance(c, type) and issubclass(c, FamilyContract) and c is not FamilyContract}
    for family in FAMILIES:
        assert (PACKAGE / "families" / f"{family.module}.py").exists(), family
        assert family.name in contracted, family.name


def test_doctor_shows_every_setting_with_source():
    proc = subprocess.run(
        [sys.executable, "-m", "samgpu_shim", "doctor"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SAMGPU_KPI_SAMPLE": "0.5", "SAMGPU_STRICT": "bogus"},
    )
    assert proc.returncode == 0, proc.stderr
    for setting in _config.SETTINGS:
        if setting.env:
            assert setting.env in proc.stdout, setting.env
    line = next(line for line in proc.stdout.splitlines() if "SAMGPU_KPI_SAMPLE" in line)
    assert "(env;" in line and "2" in line
    assert proc.stderr.count("SAMGPU_STRICT='bogus'") == 1  # a bad value is reported once


def test_configure_refuses_unknown_settings_and_checks_before_applying():
    import pytest

    with pytest.raises(TypeError, match="unknown setting 'cuda_graph'.*cuda_graphs"):
        samgpu_shim.configure(cuda_graph=True)
    with pytest.raises(ValueError):
        samgpu_shim.configure(as_numpy=True, encoder_precision="fp8")
    assert _config.default_as_numpy()[1] != "runtime"  # nothing applied
