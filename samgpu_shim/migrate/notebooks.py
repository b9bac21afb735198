"""Notebooks: their code cells, scanned as one program and edited in place.

Only the ``source`` of the code cells that change is rewritten; outputs,
metadata, the other cells and the file's JSON indentation stay as they were.
IPython magics and shell lines (``%time``, ``!ls``) are not Python: they are
blanked for parsing, which keeps every other line where it was.
"""

from __future__ import annotations

import json
import re
from typing import Dict, Iterator, Optional, Tuple


def _code(source: object) -> str:
    return "".join(source) if isinstance(source, list) else str(source or "")


def parsable(text: str) -> str:
    """The cell's text with magics and shell lines blanked (same line numbers)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in text.split("\n"))


def code_cells(path: str) -> Iterator[Tuple[int, str]]:
    """(index among code cells, from 1; parsable text) of each code cell."""
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    index = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        index += 1
        lines = ["" if line.lstrip().startswith(("%", "!")) else line
                 for line in _code(cell.get("source", "")).splitlines()]
        yield index, "\n".join(lines)


def read_cells(path: str, raw: Optional[str] = None) -> Tuple[str, Dict[int, str]]:
    """The file's raw text (read unless given) and the source of each code cell, by index."""
    if raw is None:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    nb = json.loads(raw)
    cells: Dict[int, str] = {}
    index = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            index += 1
            cells[index] = _code(cell.get("source", ""))
    return raw, cells


def with_cells(raw: str, new_sources: Dict[int, str]) -> str:
    """The notebook ``raw`` with some code cells' sources replaced."""
    nb = json.loads(raw)
    index = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        index += 1
        if index in new_sources:
            source = cell.get("source", "")
            text = new_sources[index]
            cell["source"] = text.splitlines(keepends=True) if isinstance(source, list) else text
    match = re.search(r"\n( +)\"", raw)
    indent = len(match.group(1)) if match else 1
    return json.dumps(nb, indent=indent, ensure_ascii=False) + ("\n" if raw.endswith("\n") else "")
