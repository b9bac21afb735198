"""``samgpu-shim audit``: find the code that still needs numpy from ``predict``, and pin it.

A static, project-wide taint analysis of Python files and notebooks
(docs/migration.rst says what it sees and what it does not; docs/architecture.rst
how it is built). Sources are the calls that reach a patched predict; sinks
are the operations that break on a tensor (:mod:`samgpu_shim.ops`).
"""

from .analysis import analyse, audit_path, audit_source, scan
from .command import main
from .operations import ANY, CUDA, SILENT, UNSCANNED
from .report import Finding

__all__ = ["ANY", "CUDA", "SILENT", "UNSCANNED", "Finding", "analyse", "audit_path", "audit_source", "main", "scan"]
