"""Figures in the docs against their results files: a drift fails here.

Every table of measurements is read cell by cell against the JSON it comes
from; figures in prose are quotes (``docs_quotes.py``) checked the same way.
``test_every_figure_has_a_source`` then lists any figure of a page that no
check reads and that is not marked as an estimate.
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

import docs_check as dc
import docs_quotes

# run number in the main table of docs/benchmarks.rst -> its results file
RUN_FILES = {
    "1": "bench-h100-run1.json",
    "2": "bench-h100-run2.json",
    "3": "bench-h100-run3-graphs.json",
    "4": "bench-h100-run4-graphs.json",
    "5": "bench-h100x2-run5-graphs-kpi.json",
}
UPSTREAM, EAGER, GRAPH = "upstream predict (numpy out)", "shim predict (tensors out)", "shim predict, CUDA graph replay"
FLOOR = "device floor (graph replays back to back)"

Result = Tuple[List[str], List[dc.Span]]


def _cmp(errors: List[str], where: str, shown: str, expected: str) -> None:
    if shown != expected:
        errors.append(f"{where}: the page says {shown}, the results file {expected}")


# --- the tables ---------------------------------------------------------------


def check_main_benchmark_table(text=None) -> Result:
    span, rows = dc.simple_table("docs/benchmarks.rst", "run  model", text)
    errors: List[str] = []
    names = {"shim, CUDA graph replay": GRAPH}
    for run, model, path, syncs, p50, p99, top in rows:
        row = dc.bench_rows(RUN_FILES[run])[(model, names.get(path, path))]
        where = f"benchmarks.rst run {run} {model} {path}"
        _cmp(errors, where, syncs, str(round(row["syncs_per_call"])))
        for key, shown in (("p50_ms", p50), ("p99_ms", p99), ("max_ms", top)):
            _cmp(errors, f"{where} {key}", shown, dc.f(row[key], 2))
    assert len(rows) >= 40
    return errors, [span]


def check_run19_table(text=None) -> Result:
    span, rows = dc.list_table(
        "docs/benchmarks.rst", "Current run (H100, run 19, after the latest change to the hot path)", text
    )
    errors: List[str] = []
    for code, pair, *cells in rows[1:]:
        data = dc.bench_rows(f"refactor-h100-run19-{code}-{pair}.json")
        for path, cell in zip((UPSTREAM, EAGER, GRAPH), cells):
            row = data[("vit_h", path)]
            _cmp(errors, f"run 19 {code} {pair} {path}", cell, f"{dc.f(row['p50_ms'], 3)} / {dc.f(row['p99_ms'], 3)}")
    assert len(rows) == 5
    return errors, [span]


def check_readme_table(text=None) -> Result:
    text = dc.page("README.md") if text is None else text
    rows = dc.bench_rows(RUN_FILES["5"])
    shown = {
        UPSTREAM: "| upstream `predict` (numpy out) |",
        EAGER: "| shim `predict` (tensors out, waited for) |",
        GRAPH: "| shim in graph mode (`SAMGPU_CUDA_GRAPHS=1`) |",
        "frame pipeline, numpy on upstream": "| frame pipeline, numpy on upstream's output |",
        "frame pipeline, shim on device": "| frame pipeline, statistics on the device, one copy |",
    }
    errors, spans = [], []
    assert "| path (run 5) |" in text
    for path, start in shown.items():
        at = text.index("\n" + start) + 1
        line = text[at : text.index("\n", at)]
        syncs, p50, p99 = (cell.strip() for cell in line[len(start) :].strip(" |").split("|"))
        row = rows[("vit_h", path)]
        _cmp(errors, f"README {path} syncs", syncs, str(round(row["syncs_per_call"])))
        _cmp(errors, f"README {path} p50", p50, dc.f(row["p50_ms"], 2))
        _cmp(errors, f"README {path} p99", p99, dc.f(row["p99_ms"], 2))
        spans.append((at, at + len(line)))
    return errors, spans


GRAPH_FILES = {
    "segment-anything": "sam",
    "segment-anything-hq": "hq",
    "mobile-sam": "mobile",
    "efficientvit-sam": "efficientvit",
    "sam2": "sam2",
    "sam3": "sam3",
}


def check_graph_family_table(text=None) -> Result:
    span, rows = dc.list_table("docs/families.rst", "Graph mode in every family", text)
    errors: List[str] = []
    assert len(rows) == 9, rows
    for label, syncs, up, eager, graph, floor, ratio in rows[1:]:
        m = re.fullmatch(r"([\w-]+)(?: \([\d.]+\))? (\w+)(?: \(noisy run\))?", label)
        assert m, label
        family, model = m.groups()
        data = dc.bench_rows(f"graphs-h100-run24-{GRAPH_FILES[family]}.json")
        where = f"families.rst graph table {family} {model}"
        _cmp(errors, f"{where} syncs", syncs, str(round(data[(model, UPSTREAM)]["syncs_per_call"])))
        if round(data[(model, GRAPH)]["syncs_per_call"]) != 0:
            errors.append(f"{where}: graph mode counted syncs, the page says 0")
        for path, shown in ((UPSTREAM, up), (EAGER, eager), (GRAPH, graph), (FLOOR, floor)):
            _cmp(errors, f"{where} {path}", shown, dc.f(data[(model, path)]["p50_ms"], 3))
        _cmp(
            errors,
            f"{where} graph / floor",
            ratio,
            dc.f(data[(model, GRAPH)]["p50_ms"] / data[(model, FLOOR)]["p50_ms"], 2),
        )
    return errors, [span]


FRAME_FILES = {
    "segment-anything vit_h": "frames-h100-run27-sam.json",
    "SAM-HQ vit_h": "frames-h100-run28-hq-vit_h.json",
    "MobileSAM vit_t": "frames-h100-run28-mobile-vit_t.json",
    "EfficientViT-SAM L0": "frames-h100-run28-efficientvit-l0.json",
    "SAM 2.1 hiera_t": "frames-h100-run28-sam2-hiera_t.json",
    "SAM 2.1 hiera_l": "frames-h100-run28-sam2-hiera_l.json",
    "SAM 3 (full geometry)": "frames-h100-run28-sam3-full.json",
}
FRAME_PATHS = {
    "fast-compile": "shim, CUDA frame, fast-compile encoder",
    "fast-compile + graph": "shim, CUDA frame, fast-compile, graph mode",
    "fast + graph": "shim, CUDA frame, fast encoder, graph mode",
    "fast": "shim, CUDA frame, fast encoder",
}


def check_frame_family_table(text=None) -> Result:
    span, rows = dc.list_table("docs/images.rst", "Measured: the single-prompt loop, every family", text)
    errors: List[str] = []
    assert [len(r) for r in rows] == [7] * 8, rows
    for label, up, fp32, bf16, fast, fast_graph, best in rows[1:]:
        data = dc.frame_rows(FRAME_FILES[label])
        upstream = data["upstream (numpy frame, host preprocessing)"]
        where = f"images.rst frame table {label}"
        _cmp(errors, f"{where} upstream", up, f"{dc.f(upstream['p50_ms'], 2)} ({upstream['syncs_per_frame']})")
        for path, shown in (
            ("shim, CUDA frame, fp32", fp32),
            ("shim, CUDA frame, bf16 autocast", bf16),
            ("shim, CUDA frame, fast encoder", fast),
        ):
            _cmp(errors, f"{where} {path}", shown, dc.f(data[path]["p50_ms"], 2))
        graph_row = data.get("shim, CUDA frame, fast encoder, graph mode")
        _cmp(errors, f"{where} fast + graph", fast_graph, dc.f(graph_row["p50_ms"], 2) if graph_row else "(not run)")
        name, ms, iou = re.fullmatch(r"(.+) ([\d.]+) ms, ([\d.]+)", best).groups()
        row = data[FRAME_PATHS[name]]
        _cmp(errors, f"{where} best", f"{ms} {iou}", f"{dc.f(row['p50_ms'], 2)} {row['mask_iou_vs_fp32']}")
        fastest = min((r for p, r in data.items() if p.startswith("shim")), key=lambda r: r["p50_ms"])
        if fastest is not row:
            errors.append(f"{where}: 'best' is {name}, the fastest path is {fastest['path']}")
        if any(r["syncs_per_frame"] != 1 for p, r in data.items() if p.startswith("shim")):
            errors.append(f"{where}: a shim path made more than 1 sync per frame; the page says 1")
    return errors, [span]


def check_frame_loop_table_run8(text=None) -> Result:
    span, rows = dc.simple_table("docs/images.rst", "model  path", text)
    errors: List[str] = []
    data = {(r["model"], row["path"]): row for r in dc.load("frames-h100-run8.json")["results"] for row in r["rows"]}
    names = {"upstream (numpy frame, PIL resize)": "upstream (numpy frame, PIL resize)"}
    for model, path, syncs, fps, p50, p99, iou in rows:
        row = data[(model, names.get(path, path))]
        where = f"images.rst run 8 {model} {path}"
        _cmp(errors, f"{where} syncs", syncs, str(row["syncs_per_frame"]))
        _cmp(errors, f"{where} fps", fps, dc.f(row["fps"], 2))
        _cmp(errors, f"{where} p50", p50, dc.f(row["p50_ms"], 2))
        _cmp(errors, f"{where} p99", p99, dc.f(row["p99_ms"], 2))
        _cmp(errors, f"{where} IoU", iou, str(row.get("mask_iou_vs_upstream", "")))
    assert len(rows) == 8
    return errors, [span]


def check_sam2_run13_table(text=None) -> Result:
    span, rows = dc.simple_table("docs/benchmarks.rst", "model    path", text)
    errors: List[str] = []
    data = dc.bench_rows("bench-sam2-h100-run13.json")
    for model, path, syncs, p50, p99 in rows:
        row = data[(model, path)]
        where = f"benchmarks.rst SAM 2 run 13 {model} {path}"
        _cmp(errors, f"{where} syncs", syncs, str(round(row["syncs_per_call"])))
        _cmp(errors, f"{where} p50", p50, dc.f(row["p50_ms"], 3))
        _cmp(errors, f"{where} p99", p99, dc.f(row["p99_ms"], 3))
    assert len(rows) == 8
    return errors, [span]


def check_igt_table(text=None) -> Result:
    span, rows = dc.list_table("docs/igt.rst", "Measured (H100, runs 25 and 30)", text)
    errors: List[str] = []
    runs = {"vit_b": 25, "vit_h": 25, "hiera_t": 30}
    assert len(rows) == 25, len(rows)
    for label, mode, answered, dropped, late, p50, p99 in rows[1:]:
        model, rate = re.fullmatch(r"(\w+), (\d+)/s", label).groups()
        data = {r["mode"]: r for r in dc.load(f"igt-h100-run{runs[model]}-{model}-{rate}.json")["rows"]}
        row = data[mode]
        where = f"igt.rst {label} {mode}"
        for key, shown in (("answered", answered), ("dropped", dropped), ("late_over_deadline", late)):
            _cmp(errors, f"{where} {key}", shown, str(row[key]))
        _cmp(errors, f"{where} p50", p50, dc.f(row["e2e_p50_ms"], 2))
        _cmp(errors, f"{where} p99", p99, dc.f(row["e2e_p99_ms"], 2))
        if row["frames_sent"] != 300:
            errors.append(f"{where}: {row['frames_sent']} frames sent, the page says 300")
    return errors, [span]


def check_serving_table(text=None) -> Result:
    span, rows = dc.list_table("docs/serving.rst", "Measured (H100, run 29)", text)
    errors: List[str] = []
    data = {
        (r["model"], r["mode"], r["prompts_per_frame"]): r
        for res in dc.load("serving-h100-run29.json")["results"]
        for r in res["rows"]
    }
    assert len(rows) == 9
    for model, mode, prompts, p50, p99, rate in rows[1:]:
        row = data[(model, mode, int(prompts))]
        where = f"serving.rst {model} {mode} {prompts}"
        _cmp(errors, f"{where} p50", p50, dc.f(row["p50_ms"], 2))
        _cmp(errors, f"{where} p99", p99, dc.f(row["p99_ms"], 2))
        _cmp(errors, f"{where} requests/s", rate, dc.f(row["requests_per_s"], 1))
    return errors, [span]


TABLE_CHECKS = (
    check_main_benchmark_table,
    check_run19_table,
    check_readme_table,
    check_graph_family_table,
    check_frame_family_table,
    check_frame_loop_table_run8,
    check_sam2_run13_table,
    check_igt_table,
    check_serving_table,
)


def test_main_benchmark_table_matches_its_json():
    assert check_main_benchmark_table()[0] == []


def test_current_run_table_matches_its_json():
    assert check_run19_table()[0] == []


def test_readme_table_is_run_5():
    assert check_readme_table()[0] == []


def test_graph_mode_family_table_matches_run24():
    assert check_graph_family_table()[0] == []


def test_frame_loop_family_table_matches_runs_27_and_28():
    assert check_frame_family_table()[0] == []


def test_frame_loop_table_matches_run_8():
    assert check_frame_loop_table_run8()[0] == []


def test_sam2_run13_table_matches_its_json():
    assert check_sam2_run13_table()[0] == []


def test_igt_table_matches_runs_25_and_30():
    assert check_igt_table()[0] == []


def test_serving_table_matches_run_29():
    assert check_serving_table()[0] == []


# --- figures in prose ----------------------------------------------------------


def test_quoted_figures_match_their_results():
    errors = [why for q in docs_quotes.QUOTES for why, _ in [dc.check_quote(q)] if why]
    assert not errors, "\n".join(errors)


def test_every_results_file_named_in_the_docs_exists():
    names = set()
    for name in dc.PAGE_NAMES:
        text = dc.page(name)
        names |= set(re.findall(r"docs/results/([A-Za-z0-9_.+-]+[A-Za-z0-9])", text))
        names |= set(
            re.findall(
                r"``((?:bench|refactor|frames|strict|graphs|igt|metrics|serving)[A-Za-z0-9_.-]*run\d+"
                r"[a-z0-9-]*)",
                text,
            )
        )
    assert names
    for name in sorted(names):
        base = name.rstrip("*").rstrip(".")
        assert any(p.name.startswith(base) for p in dc.RESULTS.iterdir()), f"{name} is in no file under docs/results"


# --- every figure accounted for -----------------------------------------------


def covered_spans() -> Dict[str, List[dc.Span]]:
    spans: Dict[str, List[dc.Span]] = {name: [] for name in dc.PAGE_NAMES}
    pages = {
        check: name
        for name, checks in (
            ("docs/benchmarks.rst", (check_main_benchmark_table, check_run19_table, check_sam2_run13_table)),
            ("README.md", (check_readme_table,)),
            ("docs/families.rst", (check_graph_family_table,)),
            ("docs/images.rst", (check_frame_family_table, check_frame_loop_table_run8)),
            ("docs/igt.rst", (check_igt_table,)),
            ("docs/serving.rst", (check_serving_table,)),
        )
        for check in checks
    }
    for check in TABLE_CHECKS:
        spans[pages[check]] += check()[1]
    for q in docs_quotes.QUOTES:
        spans.setdefault(q.page, []).extend(dc.check_quote(q)[1])
    return spans


def unsourced(name: str, spans: List[dc.Span], text=None) -> List[str]:
    """Figures of a page that no check reads, no estimate marks and no rule explains."""
    text = dc.page(name) if text is None else text
    allowed = [
        m.span() for rule, _ in docs_quotes.NOT_MEASUREMENTS for m in re.finditer(rule.replace(" ", r"\s+"), text)
    ]
    titles = [(m.start(), m.group(1)) for m in re.finditer(r"^(\S[^\n]*)\n[-=~^]{3,}\n", text, flags=re.M)]
    out = []
    for at, figure in dc.figures(name, text):
        if dc.covered(spans, at) or dc.covered(allowed, at):
            continue
        title = next((t for start, t in reversed(titles) if start < at), "")
        if dc.ESTIMATE.search(dc.unit_at(name, at, text)) or dc.ESTIMATE.search(title):
            continue
        line = text.count("\n", 0, at) + 1
        out.append(f"{name}:{line}: {figure} in {text.splitlines()[line - 1].strip()!r}")
    return out


def test_every_figure_has_a_source():
    spans = covered_spans()
    missing = [m for name in dc.PAGE_NAMES for m in unsourced(name, spans[name])]
    assert not missing, (
        "figures with no check: add a quote to tests/docs_quotes.py (the figure computed from its results file), "
        "or say in the sentence that it is an estimate and what it was measured on:\n" + "\n".join(missing)
    )


# --- the checks can fail --------------------------------------------------------


def test_a_changed_table_figure_fails():
    text = dc.page("docs/igt.rst").replace("     - 29.67\n", "     - 29.60\n", 1)
    errors, _ = check_igt_table(text)
    assert errors and "29.60" in errors[0]
    text = dc.page("docs/families.rst").replace("     - 2.270\n", "     - 2.207\n", 1)
    assert check_graph_family_table(text)[0]


def test_a_changed_quoted_figure_fails():
    q = next(q for q in docs_quotes.QUOTES if q.page == "README.md" and "29.7" in q.values)
    text = dc.page("README.md").replace("p99 29.7 ms", "p99 27.9 ms")
    why, _ = dc.check_quote(q, text)
    assert why and "27.9" in why


def test_an_unsourced_figure_is_found():
    name = "docs/gpu.rst"
    text = dc.page(name) + "\nOn an H100 the call takes 4.2 ms.\n"
    assert unsourced(name, [], text) == [f"{name}:{text.count(chr(10))}: 4.2 in 'On an H100 the call takes 4.2 ms.'"]
    marked = dc.page(name) + "\nOn an H100 the call takes 4.2 ms (an estimate, not from a results file).\n"
    assert unsourced(name, [], marked) == []


# --- one measurement, one figure on every page ---------------------------------------------


def measurements(quotes) -> Dict[str, List[Tuple[str, dc.Fig]]]:
    """Named measurements of the quotes: key -> (page, figure as shown) wherever it is quoted."""
    out: Dict[str, List[Tuple[str, dc.Fig]]] = {}
    for q in quotes:
        for value in q.values:
            if isinstance(value, dc.Fig):
                out.setdefault(value.key, []).append((q.page, value))
    return out


def quoted_differently(quotes) -> List[str]:
    out = []
    for key, shown in measurements(quotes).items():
        raws = {round(v.raw, 9) for _, v in shown}
        if len(raws) > 1:
            out.append(f"{key}: quoted from different values {sorted(raws)} on {sorted({p for p, _ in shown})}")
    return out


def test_one_measurement_is_quoted_alike_on_every_page():
    # Every figure of a page is a quote (test_every_figure_has_a_source) computed from its results
    # file; a measurement quoted on several pages is named, and all its quotes must come from one
    # value, whatever their rounding (README's 100.2 ms and the images page's 100.20 ms).
    named = measurements(docs_quotes.QUOTES)
    across = {key for key, shown in named.items() if len({p for p, _ in shown}) > 1}
    assert len(across) >= 12, sorted(across)
    assert quoted_differently(docs_quotes.QUOTES) == []


def test_another_runs_figure_under_the_same_name_is_caught():
    # run 27's hiera_l upstream loop (105.48 ms) quoted as the measurement run 28 gave (100.20 ms)
    wrong = dc.fig(
        "hiera_l loop: upstream p50 (run 28)",
        dc.frame_rows("frames-h100-run27-sam2.json")["upstream (numpy frame, host preprocessing)"]["p50_ms"],
        1,
    )
    quotes = list(docs_quotes.QUOTES) + [dc.quote("README.md", "upstream {} ms", wrong, source="run 27")]
    assert any(m.startswith("hiera_l loop: upstream p50 (run 28)") for m in quoted_differently(quotes))
