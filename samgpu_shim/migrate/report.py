"""Findings, and the report in its two forms: text for people, JSON for tools.

The JSON form is versioned (``"version"``); fields are only ever added within
a version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .operations import CUDA, WHAT

JSON_VERSION = 2


@dataclass
class Finding:
    """One line that breaks (or changes meaning) when predict returns tensors."""

    path: str
    line: int
    operation: str
    why: str
    fix: str
    cell: Optional[int] = None
    effect: str = CUDA
    # the predict calls whose results reach this line: "path:line:col"
    # (notebooks: "path:cell N:line:col")
    sources: List[str] = field(default_factory=list)

    def format(self) -> str:
        where = f"{self.path}:{self.line}" if self.cell is None else f"{self.path}:cell {self.cell}:{self.line}"
        return f"{where}: {self.operation} ({WHAT[self.effect]}): {self.why}. Fix: {self.fix}."


@dataclass(frozen=True)
class SourceCall:
    path: str
    line: int  # in the scanned text (notebooks: the cells joined)
    col: int


def json_report(findings: Sequence[Finding], files: int, errors: Sequence[Tuple[str, str]],
            sources: Sequence[Tuple[str, Optional[str]]], unscanned: Dict[str, List[str]]) -> str:
    """The report as JSON (version 2)."""
    return json.dumps({
        "version": JSON_VERSION,
        "files": files,
        "findings": [asdict(f) for f in findings],
        # every source of a finding: whether --fix pins it, or why not
        "sources": [{"at": at, "fix": "pin" if why is None else "hand", "why": why} for at, why in sources],
        # modules the scan did not read that results reach: module -> ["path:line", ...]
        "unscanned_modules": unscanned,
        "errors": [{"path": p, "error": e} for p, e in errors],
    }, indent=1)


def text_report(findings: Sequence[Finding], files: int, errors: Sequence[Tuple[str, str]],
            sources: Sequence[Tuple[str, Optional[str]]], unscanned: Dict[str, List[str]]) -> str:
    lines = [f.format() for f in findings]
    if unscanned:
        lines.append(f"results reach {len(unscanned)} module(s) the audit did not read (scan them too for a "
                     "precise answer):")
        lines += [f"  {module}: {', '.join(calls)}" for module, calls in unscanned.items()]
    if sources:
        hand = sum(1 for _, why in sources if why is not None)
        lines.append(f"{len(sources)} predict call(s) feed these lines: audit --fix pins {len(sources) - hand}, "
                     f"{hand} need(s) a hand fix")
    summary = f"{len(findings)} finding(s) in {files} file(s)"
    if errors:
        summary += f"; {len(errors)} path(s) could not be scanned (see above)"
    return "\n".join(lines + [summary])
