"""The labels of the audit corpus: a line that must be reported ends with
``# expect: <operation>[, <operation>...]``; every other line must not be.

A line is labelled where the value first breaks, given every earlier line
fixed by converting there (what a person fixing the code one crash at a time
would mark): a line that raises ends the chain, so ``cv2.findContours`` after
``mask.astype(np.uint8)`` is not labelled, while a use that works on a tensor
(``np.squeeze``, ``masks[i]``, ``len``) passes it on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Set, Tuple

Label = Tuple[str, Optional[int], int, str]
_EXPECT = re.compile(r"# expect: (.+)$")


def _line_labels(path: Path, cell: Optional[int], text: str) -> Set[Label]:
    out: Set[Label] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        match = _EXPECT.search(line)
        if match:
            for op in match.group(1).split(", "):
                out.add((str(path), cell, number, op.strip()))
    return out


def expected(root: Path) -> Set[Label]:
    out: Set[Label] = set()
    for path in sorted(root.rglob("*")):
        if path.suffix == ".py":
            out |= _line_labels(path, None, path.read_text(encoding="utf-8"))
        elif path.suffix == ".ipynb":
            cell = 0
            for c in json.loads(path.read_text(encoding="utf-8"))["cells"]:
                if c["cell_type"] == "code":
                    cell += 1
                    out |= _line_labels(path, cell, "".join(c["source"]))
    return out
