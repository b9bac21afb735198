"""What ``samgpu-shim audit`` costs on large trees, and what a libcst front end would cost.

For each tree: the Python files and lines, the CPU time of parsing them with
``ast`` alone, and the CPU and wall time of the whole audit (one process);
with ``--libcst N``, the first N files of the first tree are also parsed with
libcst, bare and with its qualified-name metadata (the choice that
docs/architecture.rst explains). Writes JSON::

    python -m samgpu_shim.tools.audit_bench <site-packages>/matplotlib <site-packages>/torch \\
        --libcst 20 --out docs/results/audit-speed-cpu2-run2.json
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List


def _files(root: str) -> List[Path]:
    return sorted(p for p in Path(root).rglob("*.py") if p.is_file())


def _version(root: str) -> str:
    name = Path(root).name
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a tree that is no installed distribution
        return ""


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def measure_tree(root: str) -> Dict[str, Any]:
    from samgpu_shim.migrate import scan

    files = _files(root)
    texts = [f.read_bytes() for f in files]
    lines = sum(t.count(b"\n") for t in texts)
    start = _cpu()
    for text in texts:
        try:
            ast.parse(text)
        except (SyntaxError, ValueError):
            pass
    parse_s = _cpu() - start
    del texts
    start, wall = _cpu(), time.perf_counter()
    project, errors = scan([root])
    audit_s, wall_s = _cpu() - start, time.perf_counter() - wall
    return {"tree": Path(root).name, "version": _version(root), "py_files": len(files), "lines": lines,
            "parse_cpu_s": round(parse_s, 1), "audit_cpu_s": round(audit_s, 1), "audit_wall_s": round(wall_s, 1),
            "files_per_cpu_s": round(len(files) / audit_s, 1) if audit_s else None,
            "findings": len(project.findings), "errors": len(errors)}


def measure_libcst(root: str, count: int) -> Dict[str, Any]:
    import libcst
    from libcst.metadata import MetadataWrapper, QualifiedNameProvider

    files = _files(root)[:count]
    texts = [f.read_text(encoding="utf-8") for f in files]
    out: Dict[str, Any] = {"tree": Path(root).name, "files": len(files), "lines": sum(t.count("\n") for t in texts),
                           "libcst": libcst.__version__ if hasattr(libcst, "__version__") else ""}
    start = _cpu()
    for t in texts:
        ast.parse(t)
    out["ast_parse_cpu_s"] = round(_cpu() - start, 2)
    start = _cpu()
    modules = [libcst.parse_module(t) for t in texts]
    out["libcst_parse_cpu_s"] = round(_cpu() - start, 2)
    start = _cpu()
    for m in modules:
        MetadataWrapper(m).resolve(QualifiedNameProvider)
    out["libcst_qualified_names_cpu_s"] = round(_cpu() - start + out["libcst_parse_cpu_s"], 2)
    return out


def _commit() -> str:
    try:
        here = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "-C", str(here), "log", "-1", "--format=%h"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - not a checkout
        return ""


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return ""


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+")
    parser.add_argument("--libcst", type=int, default=0, help="also parse the first N files with libcst")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    result: Dict[str, Any] = {"command": "python -m samgpu_shim.tools.audit_bench " + " ".join(
        sys.argv[1:] if argv is None else argv), "samgpu_shim_commit": _commit(), "load_before": _load()}
    result["trees"] = []
    for tree in args.trees:
        row = measure_tree(tree)
        print(json.dumps(row), flush=True)
        result["trees"].append(row)
    if args.libcst:
        result["libcst"] = measure_libcst(args.trees[0], args.libcst)
        print(json.dumps(result["libcst"]), flush=True)
    result["load_after"] = _load()
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    result["machine"] = {"cpu": cpu or platform.processor(), "cores": os.cpu_count(),
                         "python": platform.python_version()}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
