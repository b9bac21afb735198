"""The whole-project analysis: summaries of functions, rounds to a fixed point."""

from __future__ import annotations

import ast
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .index import ClassInfo, FuncInfo, ModuleInfo, files_under, load
from .names import CLEAN, Taint
from .operations import CONTAINER_ADDERS
from .report import Finding, SourceCall
from .statements import Scope

# Whole-project passes at most: each pass can carry taint one more step
# through class attributes, module globals and channels.
MAX_ROUNDS = 6


class Summary:
    """What a function does with tainted parameters: its return, its findings."""

    def __init__(self) -> None:
        self.ret: Taint = CLEAN
        self.ret_kind: Optional[str] = None


class Project:
    def __init__(self) -> None:
        self.modules: List[ModuleInfo] = []
        self.sources: List[SourceCall] = []
        self.source_ids: Dict[SourceCall, int] = {}
        self.findings: Dict[Tuple[str, int, str], Finding] = {}
        self.finding_taint: Dict[Tuple[str, int, str], Set[int]] = {}
        self.summaries: Dict[Tuple[int, Tuple[Taint, ...]], Summary] = {}
        self.in_progress: Set[Tuple[int, Tuple[Taint, ...]]] = set()
        self.changed = False
        self.rounds = 0
        # statements the analysis could not follow: "path:line" -> why
        self.skipped: Dict[str, str] = {}
        # queues and pipes by name: what one thread puts, another gets
        self.channels: Dict[str, Taint] = {}
        self.channel_kinds: Dict[str, object] = {}

    # -- lookups -----------------------------------------------------------
    def source_id(self, path: str, node: ast.Call) -> int:
        key = SourceCall(path, node.lineno, node.col_offset)
        sid = self.source_ids.get(key)
        if sid is None:
            sid = len(self.sources)
            self.sources.append(key)
            self.source_ids[key] = sid
        return sid

    def index(self) -> None:
        """Lookup tables over every module (built once per analysis)."""
        self.by_stem: Dict[str, ModuleInfo] = {}
        self.by_class: Dict[str, ClassInfo] = {}
        self.by_method: Dict[str, List[FuncInfo]] = {}
        for m in self.modules:
            self.by_stem.setdefault(m.stem, m)
            for name, c in m.classes.items():
                self.by_class.setdefault(name, c)
                for method_name, f in c.methods.items():
                    self.by_method.setdefault(method_name, []).append(f)

    def module_named(self, dotted: str) -> Optional[ModuleInfo]:
        return self.by_stem.get(dotted.split(".")[-1])

    def _defined(self, module: ModuleInfo, name: str, table: str) -> Any:
        """``name`` as defined in ``module`` or imported into it from a scanned module."""
        own = getattr(module, table)
        if name in own:
            return own[name]
        target = module.aliases.get(name)
        if target and "." in target:
            mod_name, attr = target.rsplit(".", 1)
            other = self.module_named(mod_name)
            if other is not None:
                return getattr(other, table).get(attr)
        return None

    def function(self, module: ModuleInfo, name: str) -> Optional[FuncInfo]:
        return self._defined(module, name, "functions")

    def cls(self, module: ModuleInfo, name: str) -> Optional[ClassInfo]:
        return self._defined(module, name, "classes")

    def class_by_name(self, name: str) -> Optional[ClassInfo]:
        return self.by_class.get(name)

    def method(self, cls: ClassInfo, name: str, depth: int = 0) -> Optional[FuncInfo]:
        if name in cls.methods:
            return cls.methods[name]
        if depth < 5:
            for base in cls.bases:
                parent = self.class_by_name(base)
                if parent is not None and parent is not cls:
                    found = self.method(parent, name, depth + 1)
                    if found is not None:
                        return found
        return None

    def unique_method(self, name: str) -> Optional[FuncInfo]:
        if name.startswith("__") or name in CONTAINER_ADDERS:
            return None
        found = self.by_method.get(name, [])
        return found[0] if len(found) == 1 else None

    def is_predictor_class(self, cls: ClassInfo, depth: int = 0) -> bool:
        if any(b.endswith("Predictor") for b in cls.bases):
            return True
        if depth < 5:
            for base in cls.bases:
                parent = self.class_by_name(base)
                if parent is not None and parent is not cls and self.is_predictor_class(parent, depth + 1):
                    return True
        return False

    # -- results -----------------------------------------------------------
    def report(self, module: ModuleInfo, node: ast.AST, operation: str, effect: str, why: str, fix: str,
               taint: Taint) -> None:
        concrete = {t for t in taint if t >= 0}
        if not concrete:
            return
        cell, line = module.where(node.lineno)  # type: ignore[attr-defined]
        key = (module.path, node.lineno, operation)  # type: ignore[attr-defined]
        if key not in self.findings:
            self.findings[key] = Finding(module.path, line, operation, why, fix, cell, effect)
            self.finding_taint[key] = set()
        self.finding_taint[key] |= concrete

    def summary(self, func: FuncInfo, args: Tuple[Taint, ...], kinds: Tuple[Optional[str], ...] = ()) -> Summary:
        """Analyse ``func`` with its parameters bound to ``args`` (memoised)."""
        key = (id(func.node), args)
        done = self.summaries.get(key)
        if done is not None:
            return done
        if key in self.in_progress:
            return Summary()  # recursion: what is known so far
        self.in_progress.add(key)
        try:
            scope = Scope(self, func.module, func.cls, func)
            names = list(func.params)
            for i, name in enumerate(names):
                scope.env[name] = args[i] if i < len(args) else CLEAN
                if i < len(kinds) and kinds[i]:
                    scope.kinds[name] = kinds[i]  # type: ignore[assignment]
            extra = [a for a in (func.vararg, *func.kwonly, func.kwarg) if a]
            for j, name in enumerate(extra):
                i = len(names) + j
                scope.env[name] = args[i] if i < len(args) else CLEAN
            if func.is_method and names:
                scope.kinds[names[0]] = "self"
            scope.run(func.node.body)  # type: ignore[attr-defined]
            result = Summary()
            result.ret = scope.returned
            result.ret_kind = scope.returned_kind
            self.summaries[key] = result
            return result
        finally:
            self.in_progress.discard(key)

    def call(self, func: FuncInfo, call: ast.Call, scope: Scope, bound_self: bool) -> Summary:
        """Bind a call's arguments to ``func``'s parameters and analyse it."""
        params = list(func.params)
        slots: List[Taint] = [CLEAN] * (len(params) + (1 if func.vararg else 0) + len(func.kwonly)
                                        + (1 if func.kwarg else 0))
        kinds: List[Optional[str]] = [None] * len(params)
        offset = 1 if (func.is_method and bound_self) else 0
        if offset and params:
            kinds[0] = "self"
        vararg_slot = len(params) if func.vararg else None
        kwarg_slot = len(slots) - 1 if func.kwarg else None
        for i, arg in enumerate(call.args):
            t, k = scope.eval(arg)
            index = i + offset
            if isinstance(arg, ast.Starred):
                for j in range(index, len(params)):
                    slots[j] = slots[j] | t
                if vararg_slot is not None:
                    slots[vararg_slot] |= t
                break
            if index < len(params):
                slots[index] = t
                kinds[index] = k
            elif vararg_slot is not None:
                slots[vararg_slot] |= t
        for kw in call.keywords:
            t, k = scope.eval(kw.value)
            if kw.arg is None:
                for j in range(offset, len(slots)):
                    slots[j] = slots[j] | t
            elif kw.arg in params:
                slots[params.index(kw.arg)] = t
                kinds[params.index(kw.arg)] = k
            elif kw.arg in func.kwonly:
                slots[len(params) + (1 if func.vararg else 0) + func.kwonly.index(kw.arg)] = t
            elif kwarg_slot is not None:
                slots[kwarg_slot] |= t
        return self.summary(func, tuple(slots), tuple(kinds))


def analyse(modules: Sequence[ModuleInfo]) -> Project:
    """Run the analysis over parsed modules until class attributes settle."""
    project = Project()
    project.modules = list(modules)
    project.index()
    for _ in range(MAX_ROUNDS):
        project.rounds += 1
        project.changed = False
        project.summaries.clear()
        project.findings.clear()
        project.finding_taint.clear()
        for module in project.modules:
            top = Scope(project, module, None, None)
            top.run(module.tree.body)
            for name, t in top.env.items():
                if t - module.globals.get(name, CLEAN):
                    module.globals[name] = module.globals.get(name, CLEAN) | t
                    project.changed = True
            for name, k in top.kinds.items():
                if module.global_kinds.get(name) != k:
                    module.global_kinds[name] = k
                    project.changed = True
            # every function once on its own, parameters clean: the sources
            # inside it and what it does with them
            for func in list(module.functions.values()) + [
                m for c in module.classes.values() for m in c.methods.values()
            ]:
                args: Tuple[Taint, ...] = ()
                project.summary(func, args, ("self",) if func.is_method else ())
        if not project.changed:
            break
    for key, finding in project.findings.items():
        finding.sources = sorted(_source_label(project, sid) for sid in project.finding_taint[key])
    return project


def _source_label(project: Project, sid: int) -> str:
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
    module = ModuleInfo(path, ast.parse(source, filename=path))
    return sorted_findings(analyse([module]).findings.values())


def scan(paths: Sequence[str]) -> Tuple[Project, List[Tuple[str, str]]]:
    """Parse every file under ``paths`` and analyse them together; also the files that failed."""
    modules: List[ModuleInfo] = []
    errors: List[Tuple[str, str]] = []
    for path in paths:
        try:
            files = files_under(path)
        except OSError as exc:
            errors.append((path, str(exc)))
            continue
        for file in files:
            try:
                modules.append(load(file))
            except (OSError, SyntaxError, ValueError, UnicodeDecodeError) as exc:
                errors.append((file, f"{type(exc).__name__}: {exc}"))
    project = analyse(modules)
    errors.extend((where, f"statement skipped, internal error ({why}); please report it")
                  for where, why in sorted(project.skipped.items()))
    return project, errors


def audit_path(path: str) -> List[Finding]:
    """Findings for a .py file, a .ipynb notebook, or every such file under a folder (one project)."""
    project, errors = scan([path])
    if errors:
        raise ValueError("; ".join(f"{p}: {e}" for p, e in errors))
    return sorted_findings(project.findings.values())
