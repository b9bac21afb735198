"""Running the analysis: parse the paths, analyse every body until class
attributes, module globals and channels settle, and collect the findings."""

from __future__ import annotations

import ast
import gc
import os
from typing import Iterable, List, Sequence, Tuple

from .index import ModuleInfo, files_under, load, module_name
from .kinds import CLEAN
from .project import Project
from .relevance import relevant
from .report import Finding
from .statements import Scope

# Whole-project passes at most: each pass can carry taint one more step
# through class attributes, module globals and channels.
MAX_ROUNDS = 6


def analyse(modules: Sequence[ModuleInfo]) -> Project:
    """Run the analysis over parsed modules until what they share settles."""
    project = Project(list(modules))
    for module in project.modules:
        module.reset()
    wanted = relevant(project.modules)
    for _ in range(MAX_ROUNDS):
        project.rounds += 1
        project.changed = False
        project.summaries.clear()
        project.contexts.clear()
        project.findings.clear()
        project.finding_taint.clear()
        project.receivers.clear()
        project.unscanned_calls.clear()
        for module in project.modules:
            top = Scope(project, module, None, None)
            if id(module.tree) in wanted:
                top.run(module.tree.body)
            for name, t in top.env.items():
                if t - module.globals.get(name, CLEAN):
                    module.globals[name] = module.globals.get(name, CLEAN) | t
                    project.changed = True
            for name, k in top.kinds.items():
                if module.global_kinds.get(name) != k:
                    module.global_kinds[name] = k
                    project.changed = True
            # every function once on its own, parameters unknown: the sources
            # inside it and what it does with them. A method only its own class
            # calls is analysed quietly here: its findings come from its
            # callers' paths, each with what that path stored on self.
            for func in list(module.functions.values()) + [
                m for c in module.classes.values() for m in c.methods.values()
            ] + list(module.nested.values()):
                if id(func.node) not in wanted:
                    continue
                internal = func.cls is not None and func.is_method and func.cls.internal(func.name)
                project.summary(func, (), ("self",) if func.is_method else (), silent=internal)
        if not project.changed:
            break
    for key, finding in project.findings.items():
        finding.sources = sorted(source_label(project, sid) for sid in project.finding_taint[key])
    return project


def source_label(project: Project, sid: int) -> str:
    """``path:line:col`` of a source (notebooks: ``path:cell N:line:col``)."""
    src = project.sources[sid]
    module = next(m for m in project.modules if m.path == src.path)
    cell, line = module.where(src.line)
    if cell is None:
        return f"{src.path}:{line}:{src.col}"
    return f"{src.path}:cell {cell}:{line}:{src.col}"


def sorted_findings(findings: Iterable[Finding]) -> List[Finding]:
    return sorted(findings, key=lambda f: (f.path, f.cell or 0, f.line, f.operation))


def audit_source(source: str, path: str = "<string>") -> List[Finding]:
    """Findings for one Python source text."""
    module = ModuleInfo(path, ast.parse(source, filename=path), source=source)
    return sorted_findings(analyse([module]).findings.values())


def scan(paths: Sequence[str]) -> Tuple[Project, List[Tuple[str, str]]]:
    """Parse every file under ``paths`` and analyse them together; also the files that failed."""
    modules: List[ModuleInfo] = []
    errors: List[Tuple[str, str]] = []
    # The syntax trees stay alive to the end and hold no reference cycles:
    # the cyclic collector only walks them over and over (half the time of a
    # scan of thousands of files), so it is kept off them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for path in paths:
            try:
                files = files_under(path)
            except OSError as exc:
                errors.append((path, str(exc)))
                continue
            root = path if os.path.isdir(path) else os.path.dirname(path) or "."
            for file in files:
                try:
                    modules.append(load(file, module_name(file, root)))
                except (OSError, SyntaxError, ValueError, UnicodeDecodeError) as exc:
                    errors.append((file, f"{type(exc).__name__}: {exc}"))
    finally:
        if collecting:
            gc.enable()
    gc.freeze()
    try:
        project = analyse(modules)
    finally:
        gc.unfreeze()
    errors.extend((where, f"statement skipped, internal error ({why}); please report it")
                  for where, why in sorted(project.skipped.items()))
    return project, errors


def audit_path(path: str) -> List[Finding]:
    """Findings for a .py file, a .ipynb notebook, or every such file under a folder (one project)."""
    project, errors = scan([path])
    if errors:
        raise ValueError("; ".join(f"{p}: {e}" for p, e in errors))
    return sorted_findings(project.findings.values())
