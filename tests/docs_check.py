"""Reading the docs against docs/results/: the helpers of the docs checks.

A *quote* is a piece of a page with placeholders for its figures, each
figure computed from a results file; it holds when the page contains the
piece with exactly those figures (line breaks and indentation aside). Table
checks read every numeric cell of a table. Both report the spans of the
page they verified, so that ``figures_without_source`` can list every figure
of a page that no check reads and no estimate marker covers.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
PAGE_NAMES = tuple(sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.rst"))) + ("README.md",)

Span = Tuple[int, int]


# --- pages and results -------------------------------------------------------


@functools.cache
def page(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


@functools.cache
def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


@functools.cache
def log(name: str) -> str:
    return (RESULTS / name).read_text(encoding="utf-8", errors="replace")


def bench_rows(name: str) -> Dict[Tuple[str, str], dict]:
    """``samgpu-shim bench`` JSON: (model, path) -> row."""
    return {(r["model"], row["path"]): row for r in load(name)["results"] for row in r["rows"]}


def bench_result(name: str, model: str) -> dict:
    return next(r for r in load(name)["results"] if r["model"] == model)


def frame_rows(name: str) -> Dict[str, dict]:
    """``samgpu-shim bench --frames`` JSON of one model: path -> row."""
    return {row["path"]: row for row in load(name)["results"][0]["rows"]}


def f(x: float, decimals: int) -> str:
    """A figure as the docs print it."""
    return f"{x:.{decimals}f}"


def pct(ratio: float, decimals: int = 1) -> str:
    """``1.188`` -> ``+18.8%``."""
    return f"{(ratio - 1) * 100:+.{decimals}f}%"


# --- quotes ------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    page: str
    template: str  # the page's words, "{}" where a figure goes
    values: Tuple[str, ...]
    source: str  # where the figures come from, for the failure message


class Fig(str):
    """A figure as shown, with the measurement it shows (``key``) and its unrounded value."""

    key: str
    raw: float


def fig(key: str, raw: float, decimals: int = 0, shown: Optional[str] = None) -> Fig:
    """A named measurement, shown with ``decimals`` decimals (or as ``shown``)."""
    out = Fig(shown if shown is not None else f(raw, decimals) if decimals > 0 else str(round(raw)))
    out.key, out.raw = key, raw
    return out


def quote(page_name: str, template: str, *values: object, source: str) -> Quote:
    return Quote(page_name, template, tuple(v if isinstance(v, str) else str(v) for v in values), source)


def _literal(text: str) -> str:
    words = text.split()
    body = r"\s+".join(re.escape(w) for w in words)
    if not words:
        return r"\s*" if text else ""
    return (r"\s+" if text[0].isspace() else "") + body + (r"\s+" if text[-1].isspace() else "")


def _pattern(template: str, values: Optional[Sequence[str]]) -> str:
    parts = template.split("{}")
    out = []
    for i, part in enumerate(parts):
        out.append(_literal(part))
        if i < len(parts) - 1:
            out.append(f"({re.escape(values[i])})" if values is not None else r"([-+]?\d[\d.,]*%?)")
    return "".join(out)


def check_quote(q: Quote, text: Optional[str] = None) -> Tuple[Optional[str], List[Span]]:
    """(None, spans of the figures) when the page holds the quote, else (why, [])."""
    text = page(q.page) if text is None else text
    assert q.template.count("{}") == len(q.values), q
    match = re.search(_pattern(q.template, q.values), text)
    if match:
        return None, [match.span(i + 1) for i in range(len(q.values))]
    loose = re.search(_pattern(q.template, None), text)
    if loose:
        said = ", ".join(loose.groups())
        return f"{q.page}: {q.template!r} says {said}; {q.source} gives {', '.join(q.values)}", []
    return f"{q.page}: no {q.template!r} with {', '.join(q.values)} ({q.source}); reworded or removed?", []


# --- the parts of a page -----------------------------------------------------


def without_code(name: str, text: Optional[str] = None) -> str:
    """The page with code blocks and inline literals blanked (offsets kept)."""
    text = page(name) if text is None else text

    def blank(m: re.Match) -> str:
        return re.sub(r"[^\n]", " ", m.group(0))

    if name.endswith(".md"):
        text = re.sub(r"```.*?```", blank, text, flags=re.S)
        return re.sub(r"`[^`\n]*`", blank, text)
    lines = text.split("\n")
    out, indent = [], None
    for line in lines:
        if indent is not None:
            if not line.strip() or len(line) - len(line.lstrip()) > indent:
                out.append(" " * len(line))
                continue
            indent = None
        out.append(line)
        if line.rstrip().endswith("::") and not line.lstrip().startswith(".. "):
            indent = len(line) - len(line.lstrip())
    text = "\n".join(out)
    return re.sub(r"``.+?``", blank, text, flags=re.S)


def units(name: str, text: Optional[str] = None) -> Iterator[Tuple[Span, str]]:
    """Table rows and sentences: the pieces a caveat must share with its figure."""
    text = page(name) if text is None else text
    for para in re.finditer(r"(?:[^\n]+\n?)+", text):
        start, body = para.start(), para.group(0)
        lines = body.split("\n")
        if all(ln.startswith("|") for ln in lines if ln.strip()) or re.match(r"=+\s", body):
            offset = start
            for ln in lines:  # markdown and simple tables: a line is a row
                yield (offset, offset + len(ln)), ln
                offset += len(ln) + 1
            continue
        rows = list(re.finditer(r"^\s*\* - ", body, flags=re.M))
        if rows and body.lstrip().startswith("* - "):
            bounds = [m.start() for m in rows] + [len(body)]
            for a, b in zip(bounds, bounds[1:]):
                yield (start + a, start + b), body[a:b]
            continue
        pieces = re.split(r"(?<=[.!?;])\s+(?=[A-Z(*`])", body)
        offset = start
        for piece in pieces:
            at = text.index(piece, offset)
            yield (at, at + len(piece)), piece
            offset = at + len(piece)


def unit_at(name: str, position: int, text: Optional[str] = None) -> str:
    for (a, b), piece in units(name, text):
        if a <= position < b:
            return piece
    return ""


# A figure: a decimal number, or an integer with a unit of time, size or ratio.
FIGURE = re.compile(
    r"(?<![\w.\-/:])(\d+\.\d+(?!\.?\d)|\d+(?=\s?(?:ms|s|us|MB|GB|KB|MiB|px|%|x|minutes?|frames/s)\b|%|x\b))"
)


def figures(name: str, text: Optional[str] = None) -> Iterator[Tuple[int, str]]:
    for m in FIGURE.finditer(without_code(name, text)):
        yield m.start(), m.group(1)


def covered(spans: Iterable[Span], position: int) -> bool:
    return any(a <= position < b for a, b in spans)


def section(name: str, title: str, text: Optional[str] = None) -> Tuple[int, str]:
    """(offset, text) of the section under ``title``, up to the next title."""
    text = page(name) if text is None else text
    m = re.search(r"^" + re.escape(title) + r"\n[-=~^]+\n", text, flags=re.M)
    assert m, f"{name}: no section {title!r}"
    rest = text[m.end() :]
    nxt = re.search(r"^[^\n]+\n[-=~^]{3,}\n", rest, flags=re.M)
    return m.end(), rest[: nxt.start()] if nxt else rest


def list_table(name: str, title: str, text: Optional[str] = None) -> Tuple[Span, List[List[str]]]:
    """The first list-table of a section: its span and its rows of cells (header first)."""
    offset, body = section(name, title, text)
    m = re.search(r"\.\. list-table::\n(?:[ \t]+:[^\n]+\n)*\n((?:(?:[ \t]+[^\n]*)?\n)+)", body)
    assert m, f"{name}: no list-table under {title!r}"
    rows: List[List[str]] = []
    for line in m.group(1).split("\n"):
        stripped = line.strip()
        if stripped.startswith("* - "):
            rows.append([stripped[4:]])
        elif stripped.startswith("- "):
            rows[-1].append(stripped[2:])
        elif stripped and rows:
            rows[-1][-1] += " " + stripped
    return (offset + m.start(), offset + m.end()), rows


def simple_table(name: str, header: str, text: Optional[str] = None) -> Tuple[Span, List[List[str]]]:
    """The reST simple table whose header line starts with ``header``: span and rows."""
    text = page(name) if text is None else text
    m = re.search(r"^(=[= ]+)\n" + re.escape(header) + r"[^\n]*\n=[= ]+\n((?:[^\n]+\n)+?)=[= ]+\n", text, flags=re.M)
    assert m, f"{name}: no simple table headed {header!r}"
    cols = [c.span() for c in re.finditer(r"=+", m.group(1))]
    rows = []
    for line in m.group(2).splitlines():
        cells = []
        for i, (a, _) in enumerate(cols):
            b = cols[i + 1][0] if i + 1 < len(cols) else len(line) + 1
            cells.append(line[a:b].strip())
        rows.append(cells)
    return m.span(), rows


NUMBER = re.compile(r"\d+(?:\.\d+)?")


def numeric_cells(rows: List[List[str]]) -> Iterator[Tuple[int, int, str]]:
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if NUMBER.search(cell):
                yield r, c, cell


# --- estimates and caveats ----------------------------------------------------

# A figure that comes from no results file says so in its sentence: what it is
# and what it was measured on.
ESTIMATE = re.compile(r"estimate|not from a results file|on paper|by arithmetic", re.I)

Check = Callable[[], Tuple[List[str], List[Span]]]
