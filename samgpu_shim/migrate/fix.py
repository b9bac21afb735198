"""``samgpu-shim audit --fix``: pin the predict calls that feed numpy code.

The safe first step of a migration, done by a tool: every predict call whose
results reach a numpy-only use (the ``sources`` of the audit's findings, and
only those) gets ``as_numpy=True``. The edit is made on a concrete syntax tree
(libcst), so formatting and comments stay as they were; notebooks keep their
outputs and metadata, only the code of the cells that change is rewritten.
A call that already passes ``as_numpy=`` is never a source, so a second run
changes nothing.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..families.signatures import PATCHED_METHODS

_MAGIC = "#__samgpu_magic__"


def _transform(source: str, targets: Set[Tuple[int, int]]) -> Tuple[str, int]:
    """Add ``as_numpy=True`` to the calls that start at ``targets`` (line, column)."""
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider


    # ast columns are UTF-8 byte offsets; libcst's are characters.
    lines = source.splitlines()

    def char_col(line: int, col: int) -> int:
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        return len(text.encode("utf-8")[:col].decode("utf-8", errors="ignore"))

    wanted = {(line, char_col(line, col)) for line, col in targets}
    done: List[int] = []

    class AddKeyword(cst.CSTTransformer):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
            func = original.func
            if not (isinstance(func, cst.Attribute) and func.attr.value in PATCHED_METHODS):
                return updated
            start = self.get_metadata(PositionProvider, original).start
            if (start.line, start.column) not in wanted:
                return updated
            if any(a.keyword is not None and a.keyword.value == "as_numpy" for a in updated.args):
                return updated
            args = list(updated.args)
            new = cst.Arg(
                keyword=cst.Name("as_numpy"),
                value=cst.Name("True"),
                equal=cst.AssignEqual(
                    whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
                ),
            )
            if args:
                last = args[-1]
                # the new argument takes the last one's comma (a trailing comma
                # and its line break stay at the end); the last one takes the
                # separator its neighbours use
                if len(args) > 1 and isinstance(args[-2].comma, cst.Comma):
                    sep = args[-2].comma
                elif isinstance(updated.whitespace_before_args, cst.ParenthesizedWhitespace):
                    sep = cst.Comma(whitespace_after=updated.whitespace_before_args)
                else:
                    sep = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
                new = new.with_changes(comma=last.comma)
                args[-1] = last.with_changes(comma=sep)
            args.append(new)
            done.append(start.line)
            return updated.with_changes(args=args)

    module = cst.parse_module(source)
    out = MetadataWrapper(module).visit(AddKeyword())
    return out.code, len(done)


def _mask_magics(code: str) -> str:
    return "\n".join(
        re.sub(r"^(\s*)([%!])", lambda m: m.group(1) + _MAGIC + m.group(2), line) for line in code.split("\n")
    )


def _unmask_magics(code: str) -> str:
    return code.replace(_MAGIC, "")


def _diff(path: str, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), fromfile=path, tofile=path
        )
    )


def _fix_python(path: str, targets: Set[Tuple[int, int]], write: bool, show_diff: bool) -> int:
    with open(path, encoding="utf-8", newline="") as f:
        before = f.read()
    after, count = _transform(before, targets)
    if count and after != before:
        if show_diff:
            sys.stdout.write(_diff(path, before, after))
        if write:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(after)
    return count


def _fix_notebook(path: str, targets: Dict[int, Set[Tuple[int, int]]], write: bool, show_diff: bool) -> int:
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    nb = json.loads(raw)
    total = 0
    index = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        index += 1
        if index not in targets:
            continue
        source = cell.get("source", "")
        before = "".join(source) if isinstance(source, list) else source
        after, count = _transform(_mask_magics(before), targets[index])
        after = _unmask_magics(after)
        if not count or after == before:
            continue
        total += count
        if show_diff:
            sys.stdout.write(_diff(f"{path} (cell {index})", before, after))
        cell["source"] = after.splitlines(keepends=True) if isinstance(source, list) else after
    if total and write:
        match = re.search(r"\n( +)\"", raw)
        indent = len(match.group(1)) if match else 1
        text = json.dumps(nb, indent=indent, ensure_ascii=False)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + ("\n" if raw.endswith("\n") else ""))
    return total


def apply_fixes(project: Any, write: bool = True, show_diff: bool = False) -> int:
    """Pin every source of every finding of an audit ``Project``.

    Returns how many calls were (or would be) changed.
    """
    py: Dict[str, Set[Tuple[int, int]]] = {}
    notebooks: Dict[str, Dict[int, Set[Tuple[int, int]]]] = {}
    wanted = set()
    for taint in project.finding_taint.values():
        wanted |= taint
    modules = {m.path: m for m in project.modules}
    for sid in sorted(wanted):
        src = project.sources[sid]
        module = modules[src.path]
        cell, line = module.where(src.line)
        if cell is None:
            py.setdefault(src.path, set()).add((line, src.col))
        else:
            notebooks.setdefault(src.path, {}).setdefault(cell, set()).add((line, src.col))
    changed = 0
    jobs: List[Tuple[str, Callable[[], int]]] = []
    for path, targets in sorted(py.items()):
        jobs.append((path, functools.partial(_fix_python, path, targets, write, show_diff)))
    for path, cells in sorted(notebooks.items()):
        jobs.append((path, functools.partial(_fix_notebook, path, cells, write, show_diff)))
    for path, job in jobs:
        try:
            changed += job()
        except Exception as exc:  # a file the tool cannot rewrite is reported, never damaged
            print(f"{path}: not fixed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return changed


def available() -> Optional[str]:
    """None when libcst can be imported, else why not."""
    try:
        import libcst  # noqa: F401
    except ImportError:
        return "audit --fix needs libcst: pip install 'samgpu-shim[migrate]'"
    return None
