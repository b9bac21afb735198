"""What the docs claim against what the runs and the code show.

* figures from a run whose bench said "Noisy" carry the word where quoted;
* statements about which families a feature covers match the registry and
  the GPU runs that exercised them;
* a GPU test cited for a run passed in that run;
* the prose that describes code says what the code does, the same way on
  every page (precedence, sources of the mode, configure()'s keywords, the
  KPI buckets, the layout, the fast-compile warm-up).

Figures themselves are checked in test_docs_figures.py: every figure on a
page is computed there from its one results file, so two pages quoting the
same measurement cannot disagree without one of them failing.
"""

from __future__ import annotations

import re
from typing import Dict, Iterator, List, Set, Tuple

import docs_check as dc
from docs_quotes import NOT_MEASUREMENTS

ROOT = dc.ROOT
PKG = ROOT / "samgpu_shim"


# --- noisy runs -------------------------------------------------------------------


def noisy_runs() -> Dict[str, List[str]]:
    """Logs whose bench verdict says Noisy -> the JSON files of that run."""
    out = {}
    for path in sorted(dc.RESULTS.glob("*.log")):
        if "Noisy:" in dc.log(path.name):
            stem = path.name[: -len(".log")]
            out[path.name] = sorted(p.name for p in dc.RESULTS.glob(stem + "*.json"))
            assert out[path.name], f"{path.name} says Noisy but no JSON of that run is there"
    return out


# how the docs name what a run measured (segment-anything's runs are named by their number only)
IDENTITY = {
    "hq": ("SAM-HQ", "segment-anything-hq"),
    "mobile": ("MobileSAM", "mobile-sam", "vit_t"),
    "efficientvit": ("EfficientViT", "efficientvit"),
    "sam2": ("SAM 2", "sam2", "hiera_t", "hiera_l"),
    "sam3": ("SAM 3", "sam3"),
}
# the ratios the docs quote: (numerator, denominator) paths
RATIOS = (
    ("upstream predict (numpy out)", "shim predict, CUDA graph replay"),
    ("shim predict, CUDA graph replay", "device floor (graph replays back to back)"),
    ("shim predict (tensors out)", "upstream predict (numpy out)"),
    ("CUDA graph replay, metrics on", "shim predict, CUDA graph replay"),
    ("shim predict, metrics on", "shim predict (tensors out)"),
    ("shim predict, KPI events on", "shim predict (tensors out)"),
)


def _figures_of_run(names: List[str]) -> Tuple[Set[str], Tuple[str, ...]]:
    """The figures a noisy run can be quoted with, and the words that say which run it is."""
    figures: Set[str] = set()
    run = re.search(r"run(\d+)", names[0])
    identity: Tuple[str, ...] = (f"run {run.group(1)}", f"Run {run.group(1)}") if run else (names[0][: -len(".json")],)
    for name in names:
        for result in dc.load(name)["results"]:
            identity += IDENTITY.get(result.get("family") or "", ())
            p50 = {row["path"]: row["p50_ms"] for row in result["rows"]}
            for row in result["rows"]:
                for key in ("p50_ms", "p99_ms", "max_ms"):
                    figures |= {dc.f(row[key], 2), dc.f(row[key], 3)}
                figures.add(dc.f(row["p99_ms"] / row["p50_ms"], 2))
            for a, b in RATIOS:
                if a in p50 and b in p50:
                    figures |= {dc.f(p50[a] / p50[b], 2), dc.pct(p50[a] / p50[b])}
    # a timing figure needs three significant digits to be told from a count
    return {x for x in figures if len(re.sub(r"\D", "", x).lstrip("0")) >= 3}, identity


def _shown_figures(name: str, unit: str) -> Set[str]:
    plain = dc.without_code(name, unit)
    plain = _NOT_MEASURED.sub(" ", plain)  # versions and settings are not a run's figures
    return set(re.findall(r"[-+]?\d+\.\d+%?", plain))


_NOT_MEASURED = re.compile("|".join("(?:" + rule.replace(" ", r"\s+") + ")" for rule, _ in NOT_MEASUREMENTS))


def noisy_quotes_without_the_word(text_of=dc.page) -> List[str]:
    runs = [(log_name, *_figures_of_run(jsons)) for log_name, jsons in noisy_runs().items()]
    out = []
    for name in dc.PAGE_NAMES:
        text = text_of(name)
        for (a, _), unit in dc.units(name, text):
            if "noisy" in unit.lower() or not re.search(r"\d\.\d", unit):
                continue
            shown = _shown_figures(name, unit)
            for log_name, figures, identity in runs:
                hits = shown & figures
                if hits and any(word in unit for word in identity):
                    line = text.count("\n", 0, a) + 1
                    out.append(
                        f"{name}:{line}: {sorted(hits)} from {log_name} (a noisy run) without 'noisy': "
                        f"{' '.join(unit.split())[:160]!r}"
                    )
    return out


def test_the_noisy_runs_are_found():
    runs = noisy_runs()
    assert {
        "graphs-h100-run24-mobile.log",
        "graphs-h100-run24-efficientvit.log",
        "graphs-h100-run24-sam3.log",
        "metrics-h100-run21.log",
    } <= set(runs)


def test_figures_from_noisy_runs_say_noisy():
    missing = noisy_quotes_without_the_word()
    assert not missing, "\n".join(missing)


def test_a_dropped_noisy_caveat_is_found():
    def without_caveat(name):
        text = dc.page(name)
        return text.replace("mobile-sam vit_t (noisy run)", "mobile-sam vit_t") if name == "docs/families.rst" else text

    missing = noisy_quotes_without_the_word(without_caveat)
    assert any("docs/families.rst" in m and "mobile-sam vit_t" in m for m in missing), missing


# --- families: the registry and the GPU runs ----------------------------------------------


def registry():
    from samgpu_shim.families import FAMILIES

    return FAMILIES


def gpu_exercised() -> Dict[str, Set[str]]:
    """Registry families each feature ran for on a GPU, read from the logs."""
    names = {
        "segment_anything": "segment-anything",
        "segment_anything_hq": "segment-anything-hq",
        "mobile_sam": "mobile-sam",
        "mobilesam_lite": "mobilesam-lite",
        "efficientsam": "efficientvit-sam",
        "sam2": "sam2",
        "sam-hq": "segment-anything-hq",
    }
    eager = {"segment-anything"} | {
        names[m]
        for m in re.findall(
            r"^\.?(\w+) [\w ]*?: upstream \d+ syncs, shim 0", dc.log("gpu-families-h100-run15.log"), flags=re.M
        )
    }
    eager |= (
        {"sam2"}
        if "sam2 hiera_t point_multimask: upstream 5 syncs, shim 0" in dc.log("gpu-tests-h100-run13.log")
        else set()
    )
    graph = {
        fam
        for fam, short in (
            ("segment-anything", "sam"),
            ("segment-anything-hq", "hq"),
            ("mobile-sam", "mobile"),
            ("efficientvit-sam", "efficientvit"),
            ("sam2", "sam2"),
            ("sam3", "sam3"),
        )
        if (dc.RESULTS / f"graphs-h100-run24-{short}.json").exists()
    }
    assert "mobilesam_lite is not installed" in dc.log("gpu-tests-h100-run24.log")
    image = {
        names.get(m, m)
        for m in re.findall(
            r"^\.*([\w-]+): mask IoU, CUDA frame", dc.log("gpu-image-families-h100-run27.log"), flags=re.M
        )
    }
    eager |= (
        {"sam3"}
        if dc.bench_rows("graphs-h100-run24-sam3.json")[("full", "shim predict (tensors out)")]["syncs_per_call"] == 0
        else set()
    )
    return {"eager": eager, "graph": graph, "image": image}


FEATURE_WORDS = {
    "graph": r"graph mode|CUDA_GRAPHS|graphs?\b",
    "image": r"set_image|image half|CUDA frame|frame loop|image encoder|fast encoder",
}
EVIDENCE = r"H100|\bGPU\b|run \d+|measured|\bmet\b|bit-identical|host sync|passed"
EVERY = r"[Ee]very family|each family|all (?:the )?families|every SAM family"


def paragraphs(name: str, text: str) -> Iterator[Tuple[int, str]]:
    """Paragraphs of prose; a title goes with the paragraph that follows it."""
    body = dc.without_code(name, text) if name.endswith(".md") else text
    paras = [(m.start(), m.group(0)) for m in re.finditer(r"(?:[^\n]+\n?)+", body)]
    skip = False
    for i, (at, para) in enumerate(paras):
        if skip:
            skip = False
            continue
        if re.search(r"\n[-=~^]{3,}\n?$", para) and i + 1 < len(paras):
            para, skip = para + paras[i + 1][1], True
        yield at, para


def every_family_claims_without_exceptions(text_of=dc.page) -> List[str]:
    all_families = {f.name for f in registry()}
    ran = gpu_exercised()
    out = []
    for name in dc.PAGE_NAMES:
        if name == "docs/architecture.rst":
            continue  # a file list: what the code serves, no evidence
        text = text_of(name)
        for at, para in paragraphs(name, text):
            if not re.search(EVERY, para) or not re.search(EVIDENCE, dc.without_code(name, para)):
                continue
            for feature, words in FEATURE_WORDS.items():
                if not re.search(words, para):
                    continue
                for family in sorted(all_families - ran[feature]):
                    if family not in para:
                        line = text.count("\n", 0, at) + 1
                        out.append(
                            f"{name}:{line}: 'every family' with GPU evidence for {feature}, but {family} never "
                            f"ran {feature} on a GPU here and the paragraph does not say so"
                        )
    return out


def test_gpu_runs_exercised_what_the_docs_say():
    ran = gpu_exercised()
    assert ran["eager"] == {f.name for f in registry()}
    assert "mobilesam-lite" not in ran["graph"] and "mobilesam-lite" not in ran["image"]
    assert len(ran["graph"]) == len(ran["image"]) == 6


def test_every_family_claims_name_the_families_not_run():
    missing = every_family_claims_without_exceptions()
    assert not missing, "\n".join(missing)


def test_a_dropped_family_exception_is_found():
    def without(name):
        text = dc.page(name)
        return (
            text.replace(" (mobilesam-lite\nby mobile-sam's code; its graph mode has not run on a GPU here)", "")
            if name == "README.md"
            else text
        )

    assert dc.page("README.md") != without("README.md")
    assert any(m.startswith("README.md") for m in every_family_claims_without_exceptions(without))


def _patched_column() -> Dict[str, str]:
    _, rows = dc.list_table("docs/families.rst", "The SAM family")
    return {row[0]: row[4] for row in rows[1:]}


def test_what_is_patched_lists_every_target():
    column = _patched_column()
    assert set(column) == {f.name for f in registry()}, "one row per registry family"
    for family in registry():
        for target in family.targets():
            method = target.attribute.split(".")[-1]
            shown = target.attribute if method == "forward" else method
            assert (
                f"``{shown}``" in column[family.name]
                or f"{target.attribute.split('.')[0]}.{method}" in column[family.name]
            ), f"docs/families.rst: {family.name} patches {target.attribute}; its row omits it"


def test_the_readme_lists_every_package_of_the_registry():
    text = dc.page("README.md").split("## Supported packages")[1].split("\n\n")[1]
    for family in registry():
        assert f"`{family.distribution}`" in text, f"README's table has no row for {family.distribution}"


def test_sync_counts_in_the_family_tables_match_the_logs():
    def counted(log_name, package, mix):
        m = re.search(rf"{package} {mix}: upstream (\d+) syncs, shim (\d+)", dc.log(log_name))
        return f"{m.group(1)} -> {m.group(2)}"

    def upstream(name, model):
        return f"{round(dc.bench_rows(name)[(model, 'upstream predict (numpy out)')]['syncs_per_call'])} -> 0"

    hq = lambda mix: counted("gpu-tests-h100-run14.log", "segment_anything_hq", mix)  # noqa: E731
    expected = {
        "segment-anything": (upstream("graphs-h100-run24-sam.json", "vit_h"),),
        "segment-anything-hq": (hq("point_multimask"), hq("points_single_mask"), hq("everything")),
        "mobile-sam": (counted("gpu-families-h100-run15.log", "mobile_sam", "point_multimask"),),
        "mobilesam-lite": (counted("gpu-families-h100-run15.log", "mobilesam_lite", "point_multimask"),),
        "efficientvit-sam": (counted("gpu-families-h100-run15.log", "efficientsam", "point_multimask"),),
        "sam2": tuple(
            counted("gpu-tests-h100-run13.log", "sam2 hiera_t", mix)
            for mix in ("point_multimask", "points_and_box", "everything")
        )
        + (
            re.search(
                r"predict_batch \(2 images\): upstream (\d+) syncs, shim (\d+)", dc.log("gpu-tests-h100-run13.log")
            ).expand(r"\1 -> \2"),
        ),
        "sam3": (upstream("graphs-h100-run24-sam3.json", "full"),),
    }
    _, rows = dc.list_table("docs/families.rst", "The SAM family")
    cells = {row[0]: row[3] for row in rows[1:]}
    readme = dc.page("README.md").split("## Supported packages")[1].split("\n\n")[1]
    assert counted("gpu-tests-h100-run13.log", "sam2 hiera_t", "box_1d") == expected["sam2"][0]  # "a point, or a box"
    for family, counts in expected.items():
        found = re.findall(r"\d+ -> \d+", cells[family])
        assert list(counts) == found[: len(counts)], (family, counts, found)
        dist = next(f.distribution for f in registry() if f.name == family)
        line = next(ln for ln in readme.splitlines() if f"`{dist}`" in ln)
        assert counts[0].replace("->", "→") in line, (family, line)


# --- GPU tests cited in a run ---------------------------------------------------------


def gpu_log(run: str) -> str:
    logs = [p.name for p in dc.RESULTS.glob(f"*run{run}*.log") if "test" in p.name or "families" in p.name]
    return "\n".join(dc.log(n) for n in logs)


def test_gpu_tests_cited_for_a_run_passed_in_that_run():
    checked = 0
    for name in dc.PAGE_NAMES:
        for _, unit in dc.units(name):
            flat = " ".join(unit.split())
            for test in re.findall(r"``(?:tests/[\w/]+\.py::)?(test_\w+)``", flat):
                for run in re.findall(r"\brun (\d+)", flat):
                    text = gpu_log(run)
                    if not text:
                        continue
                    failed = re.search(rf"FAILED \S*::{test}\b", text)
                    said = re.search(rf"in run {run}[^.;]*?failed|run {run}[^.;]*? failed", flat)
                    assert not failed or said, f"{name}: cites {test} for run {run}, where it failed: {flat[:200]!r}"
                    checked += 1
            for count, run in re.findall(r"(\d+) passed[^.;]*?\brun (\d+)", flat):
                assert re.search(rf"\b{count} passed", gpu_log(run)), f"{name}: {count} passed in run {run}? {flat!r}"
                checked += 1
    assert checked >= 3


# --- prose that describes the code --------------------------------------------------------


def _runtime_keys() -> List[str]:
    from samgpu_shim import _config

    return [s.key for s in _config.SETTINGS if s.runtime is not None]


def test_configure_docstring_and_page_name_every_setting():
    from samgpu_shim import _config

    doc = _config.configure.__doc__
    page = dc.page("docs/configuration.rst")
    for key in _runtime_keys():
        assert f"``{key}``" in doc, f"configure()'s docstring (the API page) omits {key}"
        assert f"configure({key}=" in page, f"docs/configuration.rst does not say how configure() sets {key}"


PRECEDENCE = ("keyword", "module", "configure", r"SAMGPU_AS_NUMPY\b(?!_)", r"default|tensors")


def precedence_statements() -> Iterator[Tuple[str, str]]:
    from samgpu_shim import _config

    for name in dc.PAGE_NAMES:
        for m in re.finditer(r"Precedence for one call:(.+?\.)(?:\s|$)", dc.page(name), flags=re.S):
            yield name, " ".join(m.group(1).split())
    doc = " ".join(_config.resolve_as_numpy.__doc__.split())
    yield "samgpu_shim/_config.py resolve_as_numpy", doc.split("Precedence:")[1]


def test_precedence_is_stated_alike_everywhere():
    statements = list(precedence_statements())
    assert len(statements) >= 4
    for where, text in statements:
        at = [re.search(word, text) for word in PRECEDENCE]
        assert all(at), f"{where}: precedence misses a step: {text!r}"
        assert [m.start() for m in at] == sorted(m.start() for m in at), f"{where}: precedence out of order: {text!r}"


def test_every_list_of_mode_sources_is_whole():
    source = (PKG / "_config.py").read_text()
    sources = set(re.findall(r'return [^\n]*?"(keyword|module|runtime|env|default)"', source))
    assert sources == {"keyword", "module", "runtime", "env", "default"}
    lists = 0
    for name in dc.PAGE_NAMES:
        text = " ".join(dc.page(name).split())
        for m in re.finditer(r"``keyword``, ``\w+``[^.]*?``default``|`keyword`, `\w+`[^.]*?`default`", text):
            lists += 1
            named = set(re.findall(r"`+(\w+)`+", m.group(0)))
            assert sources <= named, f"{name}: lists the mode sources without {sorted(sources - named)}"
    assert lists >= 3


def test_kpi_bucket_width_is_the_codes():
    from samgpu_shim.tools import kpi

    width = round((10 ** (1 / kpi._PER_DECADE) - 1) * 100)
    for where, text in (("samgpu_shim/tools/kpi.py", kpi.__doc__), ("docs/kpi.rst", dc.page("docs/kpi.rst"))):
        said = re.findall(r"buckets,? about (\d+)%\s+wide|buckets\s+about (\d+)% wide", " ".join(text.split()))
        assert said, f"{where} no longer states the bucket width"
        assert {int(a or b) for a, b in said} == {width}, f"{where}: buckets {said}, the code's are {width}% wide"


def test_the_layout_names_every_module():
    text = dc.page("docs/architecture.rst")
    layout = text.split("Layout\n------")[1].split("Rules the tests hold")[0]
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if len(rel.parts) > 2:  # a package of its own inside a folder: its folder is named
            assert f"{rel.parts[1]}/" in layout, f"docs/architecture.rst: the layout omits {rel.parent}/"
            continue
        if rel.name == "__init__.py" and len(rel.parts) == 2 and rel.parts[0] == "tools":
            continue
        assert re.search(rf"(?<![\w/]){re.escape(rel.name)}\b", layout), (
            f"docs/architecture.rst: the layout omits {rel}"
        )


def _settings_text() -> str:
    from samgpu_shim import _config

    return _config.settings_table_rst()


def test_the_fast_compile_warm_up_is_stated_alike():
    frames = dc.frame_rows("frames-h100-run27-sam.json")["shim, CUDA frame, fast-compile encoder"]
    seconds = round(frames["first_call_ms"] / 1e4) * 10
    places = {name: dc.page(name) for name in dc.PAGE_NAMES}
    places["samgpu_shim/_config.py (the settings table)"] = _settings_text()
    said = []
    for where, text in places.items():
        flat = " ".join(text.split())
        assert not re.search(r"minutes of warm-up|warm-up[^.]{0,40}minutes", flat), f"{where}: warm-up in minutes"
        for m in re.finditer(r"fast-compile.{0,120}?about (\d+) s\b", flat):
            said.append((where, int(m.group(1))))
    assert {w for w, _ in said} >= {"README.md", "docs/serving.rst", "samgpu_shim/_config.py (the settings table)"}
    assert all(v == seconds for _, v in said), (said, seconds)


def test_no_page_denies_graph_mode_to_a_family_that_has_it():
    for name in dc.PAGE_NAMES:
        flat = " ".join(dc.page(name).split())
        m = re.search(r"[Gg]raph mode (?:is|was) not (?:offered|supported|available) for ([\w -]+)", flat)
        assert not m, f"{name}: {m.group(0)!r}, but run 24 measured graph mode there"


def test_audit_figures_come_from_the_blind_results():
    """The blind-batch table and the README's sentence show docs/results/audit-blind-cpu2.json."""
    import json

    data = json.loads((ROOT / "docs" / "results" / "audit-blind-cpu2.json").read_text(encoding="utf-8"))
    migration = " ".join(dc.page("docs/migration.rst").split())
    first = {"a": "0565acb", "b": "0565acb", "c": "d615171", "d": "e57918e", "e": "bc4a68d", "f": "0b0621c",
             "g": "4cfcf35", "h": "bc0bc9f", "i": "ea73818"}
    for batch, commit in first.items():
        then, now = data["at"][commit][batch], data["now"][batch]
        row = (f"{batch.upper()} {now['labelled']} {then['found']}, {then['false_alarms']} ({commit}) "
               f"{now['found']}, {now['false_alarms']}")
        assert row in migration, row
    c, d, e = data["at"]["d615171"]["c"], data["at"]["e57918e"]["d"], data["at"]["bc4a68d"]["e"]
    f_, g, h = data["at"]["0b0621c"]["f"], data["at"]["4cfcf35"]["g"], data["at"]["bc0bc9f"]["h"]
    firsts = [data["at"][first[b]][b] for b in "defghi"]
    low, high = min(firsts, key=lambda x: x["recall"]), max(firsts, key=lambda x: x["recall"])
    assert (low, high) == (h, g)
    assert f"between {h['found']} of {h['labelled']} breaking lines ({h['false_alarms']} false alarm) and " \
        f"{g['found']} of {g['labelled']} ({g['false_alarms']} false alarm) at their first runs" \
        in " ".join(dc.page("README.md").split())
    assert f"{h['found']} of {h['labelled']} at its first run, precision {round(100 * h['precision'])}%" in migration
    assert f"{g['found']} of {g['labelled']} at its first run, precision {round(100 * g['precision'])}%" \
        in migration
    assert f"({c['found']} of {c['labelled']} at its first run), precision {round(100 * c['precision'])}%" in migration
    i = data["at"]["ea73818"]["i"]
    for x in (d, e, i):
        assert f"{x['found']} of {x['labelled']} at its first run, precision {round(100 * x['precision'])}%" \
            in migration
    assert f"{f_['found']} of {f_['labelled']} at its first run, precision {round(100 * f_['precision'])}%" \
        in migration
    old = data["at"]["9c99020"]
    assert "found " + ", ".join(str(old[b]["found"]) for b in "abcdefgh") + f" and {old['i']['found']} lines " \
        "of A to I" in migration
