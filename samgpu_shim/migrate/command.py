"""The ``samgpu-shim audit`` command: scan, print, fix, and the exit status."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Sequence

from .analysis import scan, sorted_findings


def main(paths: Sequence[str], as_json: bool = False, fix: bool = False, diff: bool = False) -> int:
    """The ``audit`` command: 0 clean, 1 findings remain, 2 a path could not be scanned."""
    project, errors = scan(paths)
    for path, error in errors:
        print(f"{path}: cannot scan: {error}", file=sys.stderr)
    findings = sorted_findings(project.findings.values())
    if fix or diff:
        from .fix import apply_fixes, available

        missing = available()
        if missing:
            print(missing, file=sys.stderr)
            return 2
        changed = apply_fixes(project, write=not diff, show_diff=diff)
        if diff:
            print(f"{changed} predict call(s) would get as_numpy=True", file=sys.stderr)
            return 2 if errors else 0
        print(f"pinned {changed} predict call(s) to as_numpy=True")
        project, errors = scan(paths)
        findings = sorted_findings(project.findings.values())
        for finding in findings:
            print(finding.format())
        print(f"{len(findings)} finding(s) remain")
        return 2 if errors else (1 if findings else 0)
    if as_json:
        print(json.dumps([asdict(f) for f in findings], indent=1))
    else:
        for finding in findings:
            print(finding.format())
        summary = f"{len(findings)} finding(s) in {len(project.modules)} file(s)"
        if errors:
            summary += f"; {len(errors)} path(s) could not be scanned (see above)"
        print(summary)
    if errors:
        return 2
    return 1 if findings else 0
