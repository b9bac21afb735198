"""``samgpu-shim audit --fix``: pin the predict calls that feed numpy code,
without ever making working code fail.

A source of a finding is pinned (``as_numpy=True`` added) only when its
receiver is known to be a patched predictor (its class through imports,
constructors, ``from_pretrained``, builders, attributes or annotations), on
every path the analysis saw. An in-house wrapper in the scanned code is not a
source itself: the predictor call inside it is, and that is the call pinned.
Every other source is left alone and reported as needing a hand fix, with the
reason. After writing, the project is analysed again and each pinned call must
still resolve to a patched method; one that does not is undone and reported.

The edit is an insertion of text at positions ``ast`` gives (the call's last
argument, its closing parenthesis): nothing else in the file is rewritten, so
formatting, comments, quoting and trailing spaces stay byte for byte, and the
edited file's syntax tree must equal the original's plus the keywords, or the
file is not written.
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set, Tuple

from .notebooks import parsable, read_cells, with_cells

KEYWORD = "as_numpy"
# (path, cell or None, line, column in UTF-8 bytes as ast gives it)
Where = Tuple[str, Optional[int], int, int]


@dataclass
class HandFix:
    """A source --fix leaves alone, and why."""

    label: str
    reason: str

    def format(self) -> str:
        return f"{self.label}: needs a hand fix: {self.reason}"


def decide(hows: Set[str], receiver: str, method: str) -> Optional[str]:
    """None when a call with these receiver resolutions can be pinned, else why not."""
    forwards = sorted(h[len("forwards:"):] for h in hows if h.startswith("forwards:"))
    patched = sorted(h[len("patched:"):] for h in hows if h.startswith("patched:"))
    external = sorted(h[len("external:"):] for h in hows if h.startswith("external:"))
    wrapper = sorted(h[len("wrapper:"):] for h in hows if h.startswith("wrapper:"))
    if forwards:
        return f"the call forwards **{forwards[0]}, which may already hold {KEYWORD}"
    if patched and not external and not wrapper:
        return None
    if external:
        return (f"`{receiver}` is a {external[0]}, from a module the audit did not read: whether its {method}() "
                f"takes {KEYWORD} is unknown (scan that module too, or convert its results with "
                "samgpu_shim.to_numpy)")
    if wrapper:
        return (f"`{receiver}` is a {wrapper[0]} of the scanned code, not a SAM predictor: pin the predictor "
                "call inside it, or convert its results with samgpu_shim.to_numpy")
    return (f"nothing in the scanned code says what `{receiver}` is (its name or its SAM keywords only): "
            f"annotate it (`{receiver}: SamPredictor`) or build it in the scanned code and run --fix again, "
            "or pin it by hand")


# -- one text ------------------------------------------------------------------


def _line_starts(text: str) -> List[int]:
    return [0] + [m.end() for m in re.finditer("\n", text)]


def _offset(text: str, starts: List[int], line: int, col: int) -> int:
    begin = starts[line - 1]
    end = starts[line] if line < len(starts) else len(text)
    return begin + len(text[begin:end].encode("utf-8")[:col].decode("utf-8", errors="ignore"))


def _position(text: str, starts: List[int], offset: int) -> Tuple[int, int]:
    line = max(i for i, s in enumerate(starts) if s <= offset) + 1
    return line, len(text[starts[line - 1]:offset].encode("utf-8"))


def _insertions(text: str, starts: List[int], call: ast.Call) -> Optional[List[Tuple[int, str]]]:
    """Where ``as_numpy=True`` goes in one call, as (offset, text) insertions."""
    newline = "\r\n" if "\r\n" in text else "\n"
    close = _offset(text, starts, call.end_lineno, call.end_col_offset) - 1  # type: ignore[arg-type]
    if text[close:close + 1] != ")":
        return None
    parts: List[ast.AST] = [*call.args, *call.keywords]
    if not parts:
        return [(close, f"{KEYWORD}=True")]
    if len(parts) == 1 and isinstance(parts[0], ast.GeneratorExp):
        return None  # f(x for x in y) takes no second argument
    last = max(parts, key=lambda n: (n.end_lineno, n.end_col_offset))  # type: ignore[attr-defined]
    end = _offset(text, starts, last.end_lineno, last.end_col_offset)  # type: ignore[attr-defined]
    after, comma, i = end, None, end
    while i < close:
        c = text[i]
        if c == "#":
            i = text.find("\n", i)
            if i < 0 or i > close:
                return None
            continue
        if c == ")" and comma is None:
            after = i + 1  # the last argument's own parentheses
        elif c == "," and comma is None:
            comma = i
        elif c not in " \t\r\n\\":
            return None
        i += 1
    close_line = text.rfind("\n", 0, close) + 1
    last_start = _offset(text, starts, last.lineno, last.col_offset)  # type: ignore[attr-defined]
    last_line = text.rfind("\n", 0, last_start) + 1
    indent = text[last_line:last_start]
    own_lines = not text[close_line:close].strip() and not indent.strip() and close_line > after
    if comma is not None:
        if own_lines:
            return [(close_line, f"{indent}{KEYWORD}=True,{newline}")]
        return [(comma + 1, f" {KEYWORD}=True,")]
    if own_lines:
        return [(after, ","), (close_line, f"{indent}{KEYWORD}=True{newline}")]
    return [(after, f", {KEYWORD}=True")]


def _calls_at(tree: ast.AST, wanted: Iterable[Tuple[int, int]]) -> Dict[Tuple[int, int], ast.Call]:
    keys = set(wanted)
    return {(n.lineno, n.col_offset): n for n in ast.walk(tree)
            if isinstance(n, ast.Call) and (n.lineno, n.col_offset) in keys}


def _without_pins(tree: ast.AST, pinned: Set[Tuple[int, int]]) -> str:
    for call in _calls_at(tree, pinned).values():
        call.keywords = [k for k in call.keywords if k.arg != KEYWORD]
    return ast.dump(tree)


def pin_text(text: str, targets: Iterable[Tuple[int, int]]) -> Tuple[str, Dict[Tuple[int, int], Tuple[int, int]]]:
    """``text`` with ``as_numpy=True`` added to the calls starting at ``targets``
    ((line, column) as ast gives them), and where each of those calls starts now.
    Raises ValueError when a call cannot be edited safely."""
    code = parsable(text)
    tree = ast.parse(code)
    starts = _line_starts(text)
    calls = _calls_at(tree, targets)
    edits: List[Tuple[int, str]] = []
    for key in sorted(set(targets)):
        call = calls.get(key)
        found = _insertions(text, starts, call) if call is not None else None
        if found is None:
            raise ValueError(f"line {key[0]}: the call cannot be edited safely")
        edits.extend(found)
    out = text
    for offset, piece in sorted(edits, key=lambda e: e[0], reverse=True):
        out = out[:offset] + piece + out[offset:]
    new_starts = _line_starts(out)
    moved = {}
    for line, col in set(targets):
        old = _offset(text, starts, line, col)
        moved[(line, col)] = _position(out, new_starts, old + sum(len(p) for o, p in edits if o <= old))
    after = ast.parse(parsable(out))
    pinned = _calls_at(after, moved.values())
    if len(pinned) != len(moved) or any([k.arg for k in c.keywords].count(KEYWORD) != 1 for c in pinned.values()) \
            or _without_pins(after, set(moved.values())) != ast.dump(ast.parse(code)):
        raise ValueError("the edited file would not be the same program plus the pins")
    return out, moved


# -- files ---------------------------------------------------------------------


def render(path: str, cells: Dict[Optional[int], Set[Tuple[int, int]]], original: Optional[str] = None
           ) -> Tuple[str, str, Dict[Where, Where], str]:
    """(text before, text after, old position -> new, a unified diff) for one
    file (its ``original`` text, or what is on disk); ``cells`` maps a
    notebook's cell (None for a .py file) to its targets."""
    moved: Dict[Where, Where] = {}
    if path.endswith(".ipynb"):
        raw, sources = read_cells(path, original)
        new_sources = {}
        shown = []
        for cell, targets in sorted(cells.items(), key=lambda c: c[0] or 0):
            text, where = pin_text(sources[cell], targets)  # type: ignore[index]
            new_sources[cell] = text
            moved.update({(path, cell, *old): (path, cell, *new) for old, new in where.items()})
            shown.append(_diff(f"{path} (cell {cell})", sources[cell], text))  # type: ignore[index]
        return raw, with_cells(raw, new_sources) if new_sources else raw, moved, "".join(shown)
    if original is None:
        with open(path, encoding="utf-8", newline="") as f:
            original = f.read()
    before = original
    after, where = pin_text(before, cells.get(None, set()))
    moved.update({(path, None, *old): (path, None, *new) for old, new in where.items()})
    return before, after, moved, _diff(path, before, after)


def write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _diff(name: str, before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                        fromfile=name, tofile=name))
