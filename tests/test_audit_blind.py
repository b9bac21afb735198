"""The blind batches' figures in docs/results/audit-blind-cpu2.json are the
audit's at this checkout: any change of what it finds there fails here, and
the results file (and the docs that quote it) must be generated again with
``python tests/audit_blind_score.py --at 9c99020 --at 0565acb --at d615171
--at e57918e --at bc4a68d --at 0b0621c --at 4cfcf35 --at bc0bc9f --at ea73818
--out docs/results/audit-blind-cpu2.json`` (each batch's first run is one of
these commits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from audit_blind_score import BATCHES, ROOT, score

RESULTS = json.loads((ROOT / "docs" / "results" / "audit-blind-cpu2.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("batch", BATCHES)
def test_blind_batch_figures_are_current(batch):
    assert score(ROOT, batch) == RESULTS["now"][batch]


def test_every_labelled_blind_file_is_in_a_batch():
    batches = {p.relative_to(ROOT / "tests" / "audit_blind").parts[0]
               for p in (ROOT / "tests" / "audit_blind").rglob("*") if p.suffix in (".py", ".ipynb")}
    assert batches == set(BATCHES)
    assert all(RESULTS["now"][b]["labelled"] >= 40 for b in BATCHES)
    assert Path(__file__).name == "test_audit_blind.py"
