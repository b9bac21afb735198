"""``samgpu-shim audit`` against a corpus of client code with expected findings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from samgpu_shim._audit import audit_path, audit_source

CORPUS = Path(__file__).parent / "audit_corpus"
EXPECT = re.compile(r"expect: (.+?)(\\n|\"|$)")


def _expected_py(path: Path):
    out = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = re.search(r"# expect: (.+)$", line)
        if match:
            out.add((number, match.group(1).strip()))
    return out


def test_python_corpus_findings_exact():
    path = CORPUS / "orchestrator.py"
    found = {(f.line, f.operation) for f in audit_path(str(path))}
    assert found == _expected_py(path)


def test_notebook_findings_with_cells():
    path = CORPUS / "notebook.ipynb"
    nb = json.loads(path.read_text())
    expected = set()
    cell_no = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        cell_no += 1
        for number, line in enumerate("".join(cell["source"]).splitlines(), start=1):
            match = re.search(r"# expect: (.+)$", line)
            if match:
                expected.add((cell_no, number, match.group(1).strip()))
    found = {(f.cell, f.line, f.operation) for f in audit_path(str(path))}
    assert found == expected


def test_findings_explain_and_fix():
    findings = audit_path(str(CORPUS / "orchestrator.py"))
    astype = next(f for f in findings if f.operation == ".astype()")
    assert "AttributeError" in astype.why and "torch.uint8" in astype.fix
    text = astype.format()
    assert text.startswith(f"{CORPUS / 'orchestrator.py'}:{astype.line}: .astype()")


def test_taint_is_per_function_and_reassignment_clears_it():
    source = (
        "import numpy as np\n"
        "def a(predictor):\n"
        "    masks, s, l = predictor.predict(box=b)\n"
        "    masks = np.zeros(3)\n"
        "    return np.sum(masks)\n"
        "def b(masks):\n"
        "    return np.sum(masks)\n"
    )
    assert audit_source(source) == []


def test_cli_exit_status_and_json(tmp_path):
    clean = tmp_path / "clean.py"
    clean.write_text("x = 1\n")
    ok = subprocess.run([sys.executable, "-m", "samgpu_shim", "audit", str(clean)], capture_output=True, text=True)
    assert ok.returncode == 0 and "0 finding(s)" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "samgpu_shim", "audit", "--json", str(CORPUS)], capture_output=True, text=True
    )
    assert bad.returncode == 1
    rows = json.loads(bad.stdout)
    assert {r["operation"] for r in rows} >= {".astype()", "plt.imshow()", "np.save()"}
    assert all({"path", "line", "operation", "why", "fix", "cell"} <= set(r) for r in rows)
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    err = subprocess.run([sys.executable, "-m", "samgpu_shim", "audit", str(broken)], capture_output=True, text=True)
    assert err.returncode == 2 and "cannot scan" in err.stderr
