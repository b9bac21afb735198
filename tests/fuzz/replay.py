"""Replay a corpus through a harness and report the line coverage of the
functions it targets (the standard library's ``trace``; no coverage package
needed). A function's lines are those of its body (nested code included),
its ``def`` line excluded."""

from __future__ import annotations

import dis
import json
import sys
import trace
import types
from pathlib import Path
from typing import Callable, Dict, Iterable, Set, Tuple


def _lines(code: types.CodeType) -> Set[int]:
    lines: Set[int] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        lines.update(line for _, line in dis.findlinestarts(current) if line)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return lines - {code.co_firstlineno}


def function_lines(path: Path, names: Iterable[str]) -> Dict[str, Set[int]]:
    """{function name: its executable lines} for the functions (or methods) named."""
    wanted = set(names)
    found: Dict[str, Set[int]] = {}
    stack = [compile(path.read_text(), str(path), "exec")]
    while stack:
        current = stack.pop()
        for const in current.co_consts:
            if isinstance(const, types.CodeType):
                if const.co_name in wanted:
                    found[const.co_name] = _lines(const)
                else:
                    stack.append(const)
    return found


def replay(one_input: Callable[[bytes], None], corpus: str, targets: Iterable[Tuple[Path, Tuple[str, ...]]]) -> None:
    files = sorted(p for p in Path(corpus).iterdir() if p.is_file())
    tracer = trace.Trace(count=1, trace=0)
    failures = 0
    for path in files:
        try:
            tracer.runfunc(one_input, path.read_bytes())
        except Exception as exc:  # a crash found by the fuzzer and kept: count it
            failures += 1
            print(f"{path.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    counts = tracer.results().counts
    report = {"inputs": len(files), "raised": failures, "targets": {}}
    for path, names in targets:
        executed = {line for (name, line) in counts if Path(name).resolve() == path.resolve()}
        functions = function_lines(path, names)
        lines = set().union(*functions.values())
        hit = lines & executed
        report["targets"][path.name] = {
            "functions": sorted(functions), "lines": len(lines), "executed": len(hit),
            "percent": round(100 * len(hit) / len(lines), 1), "not_executed": sorted(lines - hit)}
    print(json.dumps(report))
