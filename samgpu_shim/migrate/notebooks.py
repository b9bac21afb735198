"""Notebooks: their code cells, scanned as one program."""

from __future__ import annotations

import json
from typing import Iterator, Tuple


def code_cells(path: str) -> Iterator[Tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    index = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        index += 1
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else source
        # IPython magics and shell lines are not Python: blank them, keep line numbers.
        lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in text.splitlines()]
        yield index, "\n".join(lines)


