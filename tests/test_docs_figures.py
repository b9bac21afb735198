"""Figures in the docs against their results files: a drift fails here."""

from __future__ import annotations

import json
import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent
RESULTS = ROOT / "docs" / "results"
PAGES = sorted((ROOT / "docs").glob("*.rst")) + [ROOT / "README.md"]
# run number in the main table of docs/benchmarks.rst -> its results file
RUN_FILES = {
    "1": "bench-h100-run1.json",
    "2": "bench-h100-run2.json",
    "3": "bench-h100-run3-graphs.json",
    "4": "bench-h100-run4-graphs.json",
    "5": "bench-h100x2-run5-graphs-kpi.json",
}


def _rows(name):
    data = json.loads((RESULTS / name).read_text())
    return {(r["model"], row["path"]): row for r in data["results"] for row in r["rows"]}


def test_every_results_file_named_in_the_docs_exists():
    names = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        names |= set(re.findall(r"docs/results/([A-Za-z0-9_.+-]+[A-Za-z0-9])", text))
        names |= set(re.findall(r"``((?:bench|refactor|frames|strict)[A-Za-z0-9_.-]*run\d+[a-z0-9-]*)", text))
    assert names
    for name in sorted(names):
        base = name.rstrip("*").rstrip(".")
        assert any(p.name.startswith(base) for p in RESULTS.iterdir()), f"{name} is in no file under docs/results"


def test_main_benchmark_table_matches_its_json():
    text = (ROOT / "docs" / "benchmarks.rst").read_text()
    pattern = re.compile(r"^(\d)\s+(vit_[bh])\s+(.+?)\s{2,}(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", re.M)
    checked = 0
    for run, model, path, syncs, p50, p99, top in pattern.findall(text):
        # the table shortens one path name
        name = {"shim, CUDA graph replay": "shim predict, CUDA graph replay"}.get(path.strip(), path.strip())
        row = _rows(RUN_FILES[run])[(model, name)]
        assert round(row["syncs_per_call"]) == int(syncs), (run, model, path)
        for key, shown in (("p50_ms", p50), ("p99_ms", p99), ("max_ms", top)):
            assert abs(row[key] - float(shown)) <= 0.006, (run, model, path, key, row[key], shown)
        checked += 1
    assert checked >= 40


def test_current_run_table_matches_its_json():
    text = (ROOT / "docs" / "benchmarks.rst").read_text()
    section = text.split("Current run (H100, run 19")[1].split("The runs\n")[0]
    cells = re.findall(r"\* - (before|after)\n\s+- (\d)\n\s+- ([\d.]+) / ([\d.]+)\n\s+- ([\d.]+) / ([\d.]+)\n"
                       r"\s+- ([\d.]+) / ([\d.]+)", section)
    assert len(cells) == 4
    for code, pair, *figures in cells:
        rows = _rows(f"refactor-h100-run19-{code}-{pair}.json")
        paths = ("upstream predict (numpy out)", "shim predict (tensors out)", "shim predict, CUDA graph replay")
        expected = []
        for path in paths:
            expected += [rows[("vit_h", path)]["p50_ms"], rows[("vit_h", path)]["p99_ms"]]
        assert [float(f) for f in figures] == [round(e, 3) for e in expected], (code, pair)


def test_run17_and_kpi_figures_in_prose():
    text = (ROOT / "docs" / "benchmarks.rst").read_text()
    rows17 = _rows("bench-h100-run17-graphs.json")
    shim = rows17[("vit_h", "shim predict (tensors out)")]["p50_ms"]
    ratio = shim / rows17[("vit_h", "upstream predict (numpy out)")]["p50_ms"]
    assert f"shim/upstream p50\n{ratio:.2f}" in text or f"shim/upstream p50 {ratio:.2f}" in text.replace("\n", " ")
    rows5 = _rows("bench-h100x2-run5-graphs-kpi.json")
    for model, shown in (("vit_h", "+4.2%"), ("vit_b", "+4.1%")):
        cost = rows5[(model, "shim predict, KPI events on")]["p50_ms"] / rows5[(model, "shim predict (tensors out)")][
            "p50_ms"
        ] - 1
        assert f"{cost:+.1%}" == shown and shown in text


def test_readme_table_is_run_5():
    text = (ROOT / "README.md").read_text()
    rows = _rows(RUN_FILES["5"])
    shown = {
        "upstream predict (numpy out)": "| upstream `predict` (numpy out) |",
        "shim predict (tensors out)": "| shim `predict` (tensors out, waited for) |",
        "shim predict, CUDA graph replay": "| shim in graph mode (`SAMGPU_CUDA_GRAPHS=1`) |",
        "frame pipeline, numpy on upstream": "| frame pipeline, numpy on upstream's output |",
        "frame pipeline, shim on device": "| frame pipeline, statistics on the device, one copy |",
    }
    for path, start in shown.items():
        line = next(line for line in text.splitlines() if line.startswith(start))
        syncs, p50, p99 = (cell.strip() for cell in line[len(start):].strip(" |").split("|"))
        row = rows[("vit_h", path)]
        assert round(row["syncs_per_call"]) == int(syncs)
        assert f"{row['p50_ms']:.2f}" == p50 and f"{row['p99_ms']:.2f}" == p99, (path, row["p50_ms"], row["p99_ms"])


def test_graph_mode_family_table_matches_run24():
    text = (ROOT / "docs" / "families.rst").read_text()
    section = text.split("Graph mode in every family")[1].split("In-house copies")[0]
    cells = re.findall(
        r"\* - ([\w-]+)(?: \([\d.]+\))? (\w+)\n\s+- (\d+)\n\s+- ([\d.]+)\n\s+- ([\d.]+)\n\s+- ([\d.]+)\n"
        r"\s+- ([\d.]+)\n\s+- ([\d.]+)",
        section,
    )
    files = {"segment-anything": "sam", "segment-anything-hq": "hq", "mobile-sam": "mobile",
             "efficientvit-sam": "efficientvit", "sam2": "sam2", "sam3": "sam3"}
    assert len(cells) == 8
    for family, model, syncs, up, eager, graph, floor, ratio in cells:
        rows = _rows(f"graphs-h100-run24-{files[family]}.json")
        assert round(rows[(model, "upstream predict (numpy out)")]["syncs_per_call"]) == int(syncs)
        assert round(rows[(model, "shim predict, CUDA graph replay")]["syncs_per_call"]) == 0
        shown = [float(up), float(eager), float(graph), float(floor)]
        paths = ("upstream predict (numpy out)", "shim predict (tensors out)", "shim predict, CUDA graph replay",
                 "device floor (graph replays back to back)")
        assert shown == [round(rows[(model, p)]["p50_ms"], 3) for p in paths], (family, model)
        assert f"{float(graph) / float(floor):.2f}" == ratio


def test_frame_loop_family_table_matches_runs_27_and_28():
    text = (ROOT / "docs" / "images.rst").read_text()
    section = text.split("Measured: the single-prompt loop, every family")[1].split("SAM 3 note")[0]
    cells = re.findall(
        r"\* - ([^\n]+)\n\s+- ([\d.]+) \((\d+)\)\n\s+- ([\d.]+)\n\s+- ([\d.]+)\n\s+- ([\d.]+)\n", section
    )
    files = {
        "segment-anything vit_h": "frames-h100-run27-sam.json",
        "SAM-HQ vit_h": "frames-h100-run28-hq-vit_h.json",
        "MobileSAM vit_t": "frames-h100-run28-mobile-vit_t.json",
        "EfficientViT-SAM L0": "frames-h100-run28-efficientvit-l0.json",
        "SAM 2.1 hiera_t": "frames-h100-run28-sam2-hiera_t.json",
        "SAM 2.1 hiera_l": "frames-h100-run28-sam2-hiera_l.json",
        "SAM 3 (full geometry)": "frames-h100-run28-sam3-full.json",
    }
    assert len(cells) == len(files)
    for label, up, syncs, fp32, bf16, fast in cells:
        data = json.loads((RESULTS / files[label]).read_text())
        rows = {row["path"]: row for row in data["results"][0]["rows"]}
        upstream = rows["upstream (numpy frame, host preprocessing)"]
        assert (f"{upstream['p50_ms']:.2f}", upstream["syncs_per_frame"]) == (up, int(syncs)), label
        for path, shown in (("shim, CUDA frame, fp32", fp32), ("shim, CUDA frame, bf16 autocast", bf16),
                            ("shim, CUDA frame, fast encoder", fast)):
            assert f"{rows[path]['p50_ms']:.2f}" == shown, (label, path)
