"""Recall and precision of ``samgpu-shim audit`` on the blind batches in
``tests/audit_blind/`` (client code written and labelled by someone who had
not read the audit; each batch scanned on its own), at this checkout and,
with ``--at``, at earlier commits (the figures of a batch's first run)::

    python tests/audit_blind_score.py --at 9c99020 --at 0565acb --out docs/results/audit-blind-cpu2.json

A line counts once however many operations it holds; a finding is right
when its line is labelled (``tests/audit_labels.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BLIND = HERE / "audit_blind"
BATCHES = ("a", "b", "c", "d", "e", "f", "g", "h", "i")
sys.path.insert(0, str(HERE))

from audit_labels import expected  # noqa: E402


def score(checkout: Path, batch: str) -> Dict[str, object]:
    """Run the audit of ``checkout`` on one batch; its figures and the lines missed or extra."""
    root = BLIND / batch
    want = {(str(Path(p).relative_to(root)), c, n) for p, c, n, _ in expected(root)}
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, "-m", "samgpu_shim", "audit", "--json", "."], cwd=root,
                         capture_output=True, text=True, env=env)
    data = json.loads(out.stdout)
    findings = data["findings"] if isinstance(data, dict) else data
    got = {(str(Path(f["path"])), f.get("cell"), f["line"]) for f in findings}
    hit = want & got
    return {"labelled": len(want), "found": len(hit), "findings": len(got), "false_alarms": len(got - want),
            "recall": round(len(hit) / len(want), 3), "precision": round(len(hit) / len(got), 3) if got else None,
            "missed": sorted([list(x) for x in want - got], key=str),
            "extra": sorted([list(x) for x in got - want], key=str)}


def at_commit(commit: str) -> Dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), commit], check=True)
        try:
            return {b: score(tree, b) for b in BATCHES}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--at", action="append", default=[], help="also score this commit")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    result = {"now": {b: score(ROOT, b) for b in BATCHES},
              "at": {c: at_commit(c) for c in args.at}}
    for name, scores in [("now", result["now"]), *result["at"].items()]:
        for b, s in scores.items():
            print(f"{name} {b}: {s['found']}/{s['labelled']} found, {s['false_alarms']} false alarms")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
