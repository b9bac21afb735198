"""The ``samgpu-shim audit`` command: scan, report, fix; exit status 0 clean,
1 findings, 2 a path could not be read or parsed."""

from __future__ import annotations

import sys
from typing import Dict, List, Sequence, Tuple

from .analysis import scan, sorted_findings, source_label
from .fix import Where, render, write
from .pins import Targets, decisions, plan, recheck
from .report import json_report, text_report


def _status(findings: Sequence[object], errors: Sequence[object]) -> int:
    return 2 if errors else (1 if findings else 0)


def main(paths: Sequence[str], as_json: bool = False, fix: bool = False, diff: bool = False) -> int:
    """The ``audit`` command."""
    project, errors = scan(paths)
    for path, error in errors:
        print(f"{path}: cannot scan: {error}", file=sys.stderr)
    if fix or diff:
        return _fix(paths, project, errors, write_files=not diff)
    findings = sorted_findings(project.findings.values())
    sources = [(source_label(project, sid), why) for sid, why in decisions(project)]
    report = json_report if as_json else text_report
    print(report(findings, len(project.modules), errors, sources, project.unscanned()))
    return _status(findings, errors)


def _render_all(targets: Targets, originals: Dict[str, str]) -> Tuple[Dict[str, tuple], List[str]]:
    done, failed = {}, []
    for path, cells in sorted(targets.items()):
        try:
            done[path] = render(path, cells, originals.get(path))
        except (OSError, ValueError, SyntaxError, KeyError) as exc:  # a file --fix cannot edit is left alone
            print(f"{path}: not fixed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(path)
    return done, failed


def _fix(paths: Sequence[str], project: object, errors: List[Tuple[str, str]], write_files: bool) -> int:
    targets, hand = plan(project)  # type: ignore[arg-type]
    rendered, _ = _render_all(targets, {})
    count = sum(len(r[2]) for r in rendered.values())
    if not write_files:
        for path in sorted(rendered):
            sys.stdout.write(rendered[path][3])
        for item in hand:
            print(item.format(), file=sys.stderr)
        print(f"{count} predict call(s) would get as_numpy=True; {len(hand)} need(s) a hand fix", file=sys.stderr)
        return 2 if errors else 0
    originals = {path: r[0] for path, r in rendered.items()}
    pinned: Dict[Where, Where] = {}
    for path, (_, after, moved, _) in rendered.items():
        write(path, after)
        pinned.update(moved)
    # Each pin must still resolve to a patched method in the edited project.
    edited, errors = scan(paths)
    undone = recheck(edited, pinned)
    if undone:
        for path in {where[0] for where in undone}:
            keep: Targets = {path: {}}
            for (p, cell, line, col) in pinned:
                if p == path and (p, cell, line, col) not in undone:
                    keep[path].setdefault(cell, set()).add((line, col))
            redone, failed = _render_all(keep, {path: originals[path]})
            write(path, redone[path][1] if path in redone else originals[path])
        for (path, cell, line, _), reason in sorted(undone.items(), key=lambda u: (u[0][0], u[0][1] or 0, u[0][2])):
            where = f"{path}:{line}" if cell is None else f"{path}:cell {cell}:{line}"
            print(f"{where}: pin undone: {reason}")
        edited, errors = scan(paths)
    print(f"pinned {len(pinned) - len(undone)} predict call(s) to as_numpy=True")
    for item in hand:
        print(item.format())
    findings = sorted_findings(edited.findings.values())
    for finding in findings:
        print(finding.format())
    print(f"{len(findings)} finding(s) remain")
    return _status(findings, errors)
