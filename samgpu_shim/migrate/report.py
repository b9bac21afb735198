"""Findings and how they read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from .operations import CUDA, WHAT


@dataclass
class Finding:
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
