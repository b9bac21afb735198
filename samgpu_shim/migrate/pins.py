"""Which sources ``--fix`` pins, and the check after writing (see fix.py)."""

from __future__ import annotations

import ast
from typing import Dict, List, Optional, Set, Tuple

from .analysis import source_label
from .fix import HandFix, Where, decide
from .project import Project

# path -> cell (None for a .py file) -> {(line, column)}
Targets = Dict[str, Dict[Optional[int], Set[Tuple[int, int]]]]


def _call_at(project: Project, path: str, line: int, col: int) -> Optional[ast.Call]:
    module = next(m for m in project.modules if m.path == path)
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call) and node.lineno == line and node.col_offset == col:
            return node
    return None


def _decision(hows: Set[str], call: Optional[ast.Call], pinned: bool = False) -> Optional[str]:
    func = call.func if call is not None else None
    if not isinstance(func, ast.Attribute):
        return "the call's form is not one --fix edits"
    if not pinned and any(k.arg == "as_numpy" for k in call.keywords):  # type: ignore[union-attr]
        return "the call asks for tensors (as_numpy=False) and is left as it is"
    return decide(hows, ast.unparse(func.value), func.attr)


def decisions(project: Project) -> List[Tuple[int, Optional[str]]]:
    """(source id, None if --fix pins it else why not) for every source of a finding."""
    wanted: Set[int] = set()
    for taint in project.finding_taint.values():
        wanted |= taint
    out = []
    for sid in sorted(wanted):
        src = project.sources[sid]
        hows = project.receivers.get((src.path, src.line, src.col), set())
        out.append((sid, _decision(hows, _call_at(project, src.path, src.line, src.col))))
    return out


def plan(project: Project) -> Tuple[Targets, List[HandFix]]:
    """The calls to pin (every source of a finding whose receiver is known to be a
    patched predictor) and the sources left for a hand fix."""
    targets: Targets = {}
    hand: List[HandFix] = []
    for sid, reason in decisions(project):
        src = project.sources[sid]
        if reason is not None:
            hand.append(HandFix(source_label(project, sid), reason))
            continue
        module = next(m for m in project.modules if m.path == src.path)
        cell, line = module.where(src.line)
        targets.setdefault(src.path, {}).setdefault(cell, set()).add((line, src.col))
    return targets, hand


def recheck(project: Project, pinned: Dict[Where, Where]) -> Dict[Where, str]:
    """The pins (by their original position) whose call, in the edited project,
    no longer resolves to a patched method, and why."""
    joined: Dict[Tuple[str, Optional[int], int], int] = {}
    for module in project.modules:
        if module.cells is not None:
            for number, (cell, line) in enumerate(module.cells, start=1):
                joined[(module.path, cell, line)] = number
    out = {}
    for old, (path, cell, line, col) in pinned.items():
        scanned = line if cell is None else joined.get((path, cell, line), -1)
        hows = project.receivers.get((path, scanned, col), set())
        reason = _decision(hows, _call_at(project, path, scanned, col), pinned=True)
        if reason is not None:
            out[old] = reason
    return out
