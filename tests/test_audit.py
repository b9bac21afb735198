"""``samgpu-shim audit`` against a labelled corpus of client code, and unit cases."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from samgpu_shim.migrate import ANY, CUDA, SILENT, audit_path, audit_source, scan

from audit_labels import expected

CORPUS = Path(__file__).parent / "audit_corpus"


def _found(root: Path):
    project, errors = scan([str(root)])
    assert errors == []
    return {(f.path, f.cell, f.line, f.operation) for f in project.findings.values()}


def test_corpus_exact_recall_and_precision():
    want = expected(CORPUS)
    got = _found(CORPUS)
    assert len(want) >= 60
    missed, extra = want - got, got - want
    recall = len(want & got) / len(want)
    print(f"audit corpus: recall {len(want & got)}/{len(want)} = {recall:.3f}, false alarms {len(extra)}")
    assert not missed, f"missed: {sorted(missed, key=str)}"
    assert not extra, f"false alarms: {sorted(extra, key=str)}"


def test_the_relevance_pass_drops_nothing(monkeypatch):
    """Bodies skipped by the pass by names hold no result: the corpus gives the
    same findings and the same receivers with every body analysed."""
    from samgpu_shim.migrate import analysis

    first, _ = scan([str(CORPUS)])
    every = lambda modules: {id(m.tree) for m in modules} | {  # noqa: E731
        id(f.node) for m in modules for f in [*m.functions.values(), *(x for c in m.classes.values()
                                                                          for x in c.methods.values())]}
    monkeypatch.setattr(analysis, "relevant", every)
    second, _ = scan([str(CORPUS)])
    assert set(first.findings) == set(second.findings) and first.receivers == second.receivers
    from samgpu_shim.migrate.relevance import relevant

    assert len(relevant(first.modules)) < len(every(first.modules))


def test_notebook_findings_name_cells():
    findings = audit_path(str(CORPUS / "notebook.ipynb"))
    assert {(f.cell, f.line, f.operation) for f in findings} == {(3, 2, "plt.imshow()"), (3, 3, "np.save()")}


def test_findings_explain_effect_fix_and_source():
    findings = audit_path(str(CORPUS / "orchestrator.py"))
    astype = next(f for f in findings if f.operation == ".astype()")
    assert astype.effect == ANY and "has no astype" in astype.why and "torch.uint8" in astype.fix
    assert astype.sources == [f"{CORPUS / 'orchestrator.py'}:18:28"]
    argmax = next(f for f in findings if f.operation == "np.argmax()")
    assert argmax.effect == CUDA
    assert "raises on a CUDA tensor" in argmax.format()
    nonzero = next(f for f in findings if f.operation == "np.nonzero()")
    assert nonzero.effect == SILENT
    text = astype.format()
    assert text.startswith(f"{CORPUS / 'orchestrator.py'}:{astype.line}: .astype() (raises on any tensor)")


def _ops(source: str):
    return [(f.line, f.operation) for f in audit_source(textwrap.dedent(source))]


def test_taint_is_per_function_and_rebinding_everywhere_clears_it():
    assert _ops(
        """
        import numpy as np
        def a(predictor, b):
            masks, s, l = predictor.predict(box=b)
            masks = np.zeros(3)
            return np.sum(masks)
        def b(masks):
            return np.sum(masks)
        """
    ) == []


def test_receivers_are_whole_words_or_known_types():
    assert _ops(
        """
        import numpy as np
        from segment_anything import SamPredictor
        def f(sampler, samples, model, x, sam):
            a = sampler.predict(x)
            b = samples.predict(x)
            c = model.predict(x)
            p = SamPredictor(sam)
            d = p.predict(x)
            e = sam.predict(x)
            return np.argmax(a), np.argmax(b), np.argmax(c), np.argmax(d), np.argmax(e)
        """
    ) == [(11, "np.argmax()")]


def test_keyword_and_three_result_unpacking_make_a_source():
    assert _ops(
        """
        import numpy as np
        def f(model, pts, lbls):
            a, _, _ = model.predict(point_coords=pts, point_labels=lbls)
            masks, scores, logits = model.predict(pts, lbls)
            return np.where(a), np.argmax(scores)
        """
    ) == [(6, "np.argmax()"), (6, "np.where()")]


def test_helper_returning_results_is_a_source_for_its_callers():
    assert _ops(
        """
        import numpy as np
        def segment(predictor, box):
            masks, _, _ = predictor.predict(box=box)
            return masks[0]
        def caller(predictor, box):
            mask = segment(predictor, box)
            return np.count_nonzero(mask)
        """
    ) == [(8, "np.count_nonzero()")]


def test_self_attribute_read_in_another_method():
    assert _ops(
        """
        import numpy as np
        class Tool:
            def run(self, box):
                self.masks, self.scores, _ = self.predictor.predict(box=box)
            def report(self):
                return np.mean(self.scores), self.masks.shape
        """
    ) == [(7, "np.mean()")]


def test_instance_of_a_class_from_an_unread_module_keeps_the_receiver_name_rule():
    assert _ops(
        """
        import numpy as np
        from labtools.seg import SamWrapper
        from labtools.motion import Kalman
        def f(ckpt, image, pts):
            sam_obj = SamWrapper(ckpt)
            motion = Kalman()
            masks, scores, _ = sam_obj.predict(image, pts)
            guess = motion.predict(pts)
            return np.argmax(scores), np.asarray(guess)
        """
    ) == [(10, "np.argmax()")]


def test_self_attribute_follows_its_producer_along_each_path():
    assert _ops(
        """
        import cv2
        import numpy as np
        class Tool:
            def click(self, pts):
                masks, _, _ = self.predictor.predict(point_coords=pts)
                self.masks = masks
                self._show()
            def auto(self, image):
                self.masks = self.generator.generate(image)
                self._export()
            def reopen(self, path):
                self.masks = path
                self._load()
            def _show(self):
                return np.where(self.masks)
            def _export(self):
                return [a["segmentation"].astype(np.uint8) for a in self.masks]
            def _load(self):
                return cv2.imread(self.masks)
        """
    ) == [(16, "np.where()")]


def test_containers_keep_positions_and_keys_apart():
    assert _ops(
        """
        import numpy as np
        class Refine:
            def step(self, pts):
                masks, scores, logits = self.predictor.predict(point_coords=pts)
                self.history.append((self.points.copy(), logits))
                self.log.append({"n": len(pts), "mask": masks[0]})
            def undo(self):
                points, logits = self.history.pop()
                self.points = points
                entry = self.log[-1]
                return np.concatenate([self.points, [[0, 0]]]), np.arange(entry["n"]), np.where(entry["mask"])
        """
    ) == [(12, "np.where()")]


def test_writes_into_numpy_arrays_are_sinks():
    assert _ops(
        """
        import numpy as np
        def f(predictor, boxes, shape):
            volume = np.zeros(shape, bool)
            held = {"labels": np.zeros(shape[1:], np.uint8)}
            for z, box in enumerate(boxes):
                masks, _, logits = predictor.predict(box=box)
                volume[z] = masks[0]
                volume[...] = logits[0] > 0
                held["labels"][0:4, 0:4] = masks[0]
                held["labels"][masks[0]] = 1
                as_list = [masks[0]]
                as_list[0] = masks[1]
            return volume
        """
    ) == [(8, "ndarray[i] = mask"), (9, "ndarray[i] = mask"), (10, "ndarray[i] = mask"),
          (11, "ndarray[mask] = v")]


def test_values_reaching_a_module_not_scanned_are_reported_at_the_call(tmp_path):
    src = tmp_path / "app.py"
    src.write_text(
        "from evaluation.metrics import iou\n"
        "from evaluation.gpu import dice_tensor\n"
        "from helpers import log_run\n"
        "def f(predictor, box, gt):\n"
        "    masks, scores, _ = predictor.predict(box=box)\n"
        "    log_run('done')\n"
        "    return iou(masks[0], gt), dice_tensor(masks[0], gt)\n"
    )
    project, errors = scan([str(tmp_path)])
    assert errors == []
    (finding,) = project.findings.values()
    assert (finding.line, finding.operation) == (7, "iou()")
    assert "reaches iou() in evaluation.metrics, a module not scanned" in finding.format()
    assert project.unscanned() == {"evaluation.metrics": [f"{src}:7"]}


def test_arithmetic_follows_the_operation_table():
    assert _ops(
        """
        import numpy as np
        def overlay(image, mask, alpha=0.5):
            h, w = image.shape[:2]
            return image * (1 - alpha * mask[..., None])
        def f(predictor, box, frame):
            masks, scores, _ = predictor.predict(box=box)
            inverse = 1 - masks[0]
            weights = np.float64(1.0) / scores
            fine = masks[0] * 255, ~masks[0], 1 - scores, scores * 2.0
            return overlay(frame, masks[0]), inverse, np.argsort(weights), fine
        """
        # np.float64 / tensor runs (a float32 tensor): no finding there, the tensor is followed on
    ) == [(5, "ndarray * mask"), (8, "1 - mask"), (11, "np.argsort()")]


def test_a_module_whose_forward_runs_predict_is_a_source_when_called():
    assert _ops(
        """
        import numpy as np
        import torch
        class Head(torch.nn.Module):
            def forward(self, image, box):
                self.predictor.set_image(image)
                masks, scores, _ = self.predictor.predict(box=box)
                return masks, scores
        def f(image, box):
            head = Head().eval()
            masks, scores = head(image, box)
            return np.argmax(scores)
        """
    ) == [(12, "np.argmax()")]


def test_every_registry_entry_point_is_a_source():
    assert _ops(
        """
        import numpy as np
        from sam3 import build_sam3_image_model
        from sam3.model.sam3_image import Sam3Image
        def f(state, pts, lbls, boxes):
            model = build_sam3_image_model()
            m1, s1, _ = model.predict_inst(state, point_coords=pts, point_labels=lbls)
            m2, s2, _ = Sam3Image.predict_inst_batch(model, state, box_batch=boxes)
            m3, s3, _ = model.inst_interactive_predictor.predict_batch(box_batch=boxes)
            return np.argmax(s1), np.stack(m2), np.stack(m3)
        """
    ) == [(10, "np.argmax()"), (10, "np.stack()")]


def test_unparsable_and_missing_paths_are_errors(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    good = tmp_path / "good.py"
    good.write_text("import numpy as np\nm, s, l = predictor.predict(box=b)\nnp.argmax(s)\n")
    project, errors = scan([str(tmp_path), str(tmp_path / "missing")])
    assert [p for p, _ in errors] == [str(broken), str(tmp_path / "missing")]
    assert len(project.findings) == 1  # the good file is still audited


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "samgpu_shim", "audit", *args], capture_output=True, text=True,
                          cwd=cwd)


def test_cli_exit_status_and_json(tmp_path):
    clean = tmp_path / "clean.py"
    clean.write_text("x = 1\n")
    ok = _cli(str(clean))
    assert ok.returncode == 0 and "0 finding(s) in 1 file(s)" in ok.stdout
    bad = _cli("--json", str(CORPUS / "orchestrator.py"))
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["version"] == 2 and report["files"] == 1 and report["errors"] == []
    rows = report["findings"]
    assert {r["operation"] for r in rows} >= {".astype()", "plt.imshow()", "np.argmax()"}
    assert all({"path", "line", "operation", "why", "fix", "cell", "effect", "sources"} <= set(r) for r in rows)
    assert {s["at"] for s in report["sources"]} == {src for r in rows for src in r["sources"]}
    missing = _cli(str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "cannot scan" in missing.stderr and "could not be scanned" in missing.stdout


# -- audit --fix -------------------------------------------------------------

@pytest.fixture()
def corpus_copy(tmp_path):
    target = tmp_path / "corpus"
    shutil.copytree(CORPUS, target)
    return target


def test_fix_pins_known_predictors_only_and_a_second_run_changes_nothing(corpus_copy):
    before = {p: p.read_bytes() for p in corpus_copy.rglob("*") if p.is_file()}
    first = _cli("--fix", str(corpus_copy))
    assert first.returncode == 1, first.stdout + first.stderr  # the hand fixes remain
    assert "pinned 15 predict call(s)" in first.stdout and "pin undone" not in first.stdout
    after = {p: p.read_bytes() for p in corpus_copy.rglob("*") if p.is_file()}
    assert after != before
    second = _cli("--fix", str(corpus_copy))
    assert "pinned 0 predict call(s)" in second.stdout
    assert {p: p.read_bytes() for p in corpus_copy.rglob("*") if p.is_file()} == after
    # what remains comes only from the calls --fix leaves to a person, each with its reason
    report = json.loads(_cli("--json", str(corpus_copy)).stdout)
    assert report["findings"] and {s["fix"] for s in report["sources"]} == {"hand"}
    hand = {line.split(": needs a hand fix: ")[0] for line in second.stdout.splitlines() if "hand fix" in line}
    assert hand == {s["at"] for s in report["sources"]}
    assert all(s["why"] for s in report["sources"])
    # a wrapper's own predict is never pinned, the predictor call inside it is
    backend = (corpus_copy / "clients" / "ls_backend.py").read_text()
    assert "self.model.predict(task" in backend and "as_numpy" not in backend.split("class SamMLBackend")[1]
    segmenter = (corpus_copy / "project" / "segmenter.py").read_text()
    assert "self.model.predict(box=np.asarray(box), multimask_output=True, as_numpy=True)" in segmenter
    # a receiver known by its name only is left alone
    assert "as_numpy=True" not in (corpus_copy / "flows.py").read_text().split("def explicit_numpy")[0]


def test_fix_keeps_formatting_comments_and_notebook_outputs(corpus_copy):
    _cli("--fix", str(corpus_copy))
    tutorial_before = json.loads((CORPUS / "project" / "tutorial.ipynb").read_text())
    tutorial_after = json.loads((corpus_copy / "project" / "tutorial.ipynb").read_text())
    assert [c.get("outputs") for c in tutorial_after["cells"]] == [c.get("outputs") for c in tutorial_before["cells"]]
    assert tutorial_after["metadata"] == tutorial_before["metadata"]
    cell = "".join(tutorial_after["cells"][4]["source"])
    assert "    multimask_output=True,\n    as_numpy=True,\n)" in cell
    assert "!ls images" in "".join(tutorial_after["cells"][7]["source"])  # magics untouched
    backend = (corpus_copy / "clients" / "ls_backend.py").read_text()
    assert "multimask_output=False,\n            as_numpy=True,\n        )" in backend
    assert "# expect: .astype()" in backend  # comments stay
    for path in corpus_copy.rglob("*.py"):  # the pins are the only change, byte for byte
        assert _unpin(path.read_text()) == _unpin((CORPUS / path.relative_to(corpus_copy)).read_text()), path


def _unpin(text):
    text = re.sub(r"(?m)^[ \t]*as_numpy=True,\r?\n", "", text)
    return text.replace(", as_numpy=True", "").replace(" as_numpy=True,", "")


def test_fix_diff_writes_nothing_and_leaves_explicit_calls(tmp_path):
    src = tmp_path / "app.py"
    text = (
        "import numpy as np\n"
        "from segment_anything import SamPredictor\n"
        "def f(predictor: SamPredictor, b, flag):\n"
        "    m, s, l = predictor.predict(box=b)  # keep me\n"
        "    n, t, k = predictor.predict(box=b, as_numpy=False)\n"
        "    o, u, v = predictor.predict(box=b, as_numpy=flag)\n"
        "    return np.argmax(s), np.argmax(t), np.argmax(u)\n"
    )
    src.write_text(text)
    shown = _cli("--diff", str(src))
    assert shown.returncode == 0
    assert "+    m, s, l = predictor.predict(box=b, as_numpy=True)  # keep me" in shown.stdout
    assert src.read_text() == text
    # as_numpy=False is a source (GPU on purpose); the fix still leaves it alone
    fixed = _cli("--fix", str(src))
    assert "predictor.predict(box=b, as_numpy=False)" in src.read_text()
    assert "as_numpy=flag)" in src.read_text()
    assert fixed.returncode == 1 and "1 finding(s) remain" in fixed.stdout


def test_fix_skips_unparsable_files_untouched(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n    predictor.predict(box=b)\n")
    good = tmp_path / "good.py"
    good.write_text("import numpy as np\nfrom segment_anything import SamPredictor\npredictor = SamPredictor(sam)\n"
                    "m, s, l = predictor.predict(box=b)\nnp.argmax(s)\n")
    out = _cli("--fix", str(tmp_path))
    assert out.returncode == 2 and "cannot scan" in out.stderr
    assert broken.read_text() == "def (:\n    predictor.predict(box=b)\n"
    assert "as_numpy=True" in good.read_text()


def test_code_that_already_handles_tensors_is_not_reported():
    assert _ops(
        """
        import numpy as np
        import torch
        def a(predictor, b):
            masks, scores, _ = predictor.predict(box=b)
            if isinstance(masks, torch.Tensor):
                masks = masks.cpu().numpy()
            if not isinstance(scores, np.ndarray):
                scores = scores.detach().cpu().numpy()
            return np.argmax(scores), masks.astype(np.uint8)
        def b(predictor, box):
            masks, scores, _ = predictor.predict(box=box)
            scores = scores.cpu().numpy() if torch.is_tensor(scores) else scores
            return np.argmax(scores)
        def c(predictor, box):
            masks, scores, _ = predictor.predict(box=box)
            if isinstance(masks, torch.Tensor):
                print("a tensor")  # not converted: still reported below
            return np.argmax(scores), masks.astype(np.uint8)
        """
    ) == [(19, ".astype()"), (19, "np.argmax()")]


def test_code_written_for_both_modes_and_to_numpy_are_not_reported():
    assert _ops(
        """
        import json
        import numpy as np
        import samgpu_shim
        import torch
        def either(predictor, box):
            masks, scores, logits = predictor.predict(box=box)
            if isinstance(masks, np.ndarray):  # rolled back: all three are numpy here
                return np.argmax(scores), masks.astype(np.uint8), logits.copy()
            return scores.argmax(), masks.to(torch.uint8), logits.clone()
        def boundary(predictor, box):
            masks, scores, _ = predictor.predict(box=box)
            host = samgpu_shim.to_numpy(scores)
            packet = samgpu_shim.to_numpy({"mask": masks[0], "score": scores[0]})
            return host.astype(int), json.dumps(packet), np.argmax(scores)
        """
    ) == [(15, "np.argmax()")]


def test_a_predictor_stored_under_another_name_is_followed():
    assert _ops(
        """
        import numpy as np
        class Tool:
            def __init__(self, predictor):
                self.p = predictor
            def run(self, pts, lbls):
                m, s, l = self.p.predict(pts, lbls)
                return np.argmax(s)
        """
    ) == [(8, "np.argmax()")]


def test_an_internal_error_skips_one_statement_not_the_project(tmp_path, monkeypatch):
    from samgpu_shim.migrate import statements

    src = tmp_path / "app.py"
    src.write_text(
        "import numpy as np\n"
        "def f(predictor, b):\n"
        "    m, s, l = predictor.predict(box=b)\n"
        "    weird = s  # the analysis trips here\n"
        "    return np.argmax(s)\n"
    )
    real = statements.Scope.stmt

    def tripping(self, node):
        if getattr(node, "lineno", 0) == 4:
            raise RecursionError("too deep")
        return real(self, node)

    monkeypatch.setattr(statements.Scope, "stmt", tripping)
    project, errors = scan([str(src)])
    assert [f.operation for f in project.findings.values()] == ["np.argmax()"]
    assert errors == [(f"{src}:4", "statement skipped, internal error (RecursionError: too deep); please report it")]


# --- patterns from the blind batches (each case failed before its change) -------


def test_a_generator_yields_results_to_its_loop():
    assert _ops(
        """
        import numpy as np
        from tqdm import tqdm
        def track(predictor, frames):
            for frame in frames:
                masks, scores, _ = predictor.predict(box=None)
                yield masks[0], float(scores[0])
        def main(predictor, frames):
            for mask, score in tqdm(track(predictor, frames)):
                np.save("m.npy", mask)
        """
    ) == [(10, "np.save()")]


def test_a_thread_pool_call_and_a_dataclass_field_are_followed():
    assert _ops(
        """
        from dataclasses import dataclass
        import numpy as np
        from fastapi.concurrency import run_in_threadpool
        @dataclass
        class Segment:
            mask: object
            score: float
        def run(predictor, box):
            masks, scores, _ = predictor.predict(box=box)
            return [Segment(mask=m, score=float(s)) for m, s in zip(masks, scores)]
        async def endpoint(predictor, box):
            segs = await run_in_threadpool(run, predictor, box)
            best = max(segs, key=lambda s: s.score)
            return round(best.score, 3), best.mask.astype(np.uint8)
        """
    ) == [(15, ".astype()")]


def test_super_predict_reaches_the_base_engine():
    assert _ops(
        """
        import numpy as np
        from segment_anything import SamPredictor
        class Engine:
            def __init__(self, predictor: SamPredictor):
                self.sam = predictor
            def predict(self, box):
                masks, scores, logits = self.sam.predict(box=box)
                return {"masks": masks, "scores": scores}
        class Cached(Engine):
            def predict(self, box):
                out = super().predict(box)
                return np.argsort(-out["scores"])
        """
    ) == [(13, "np.argsort()")]


def test_a_state_dict_handed_between_callbacks():
    assert _ops(
        """
        import numpy as np
        from PIL import Image
        def on_click(state, predictor, pts):
            masks, scores, logits = predictor.predict(point_coords=pts)
            state["mask"] = masks[0]
            state["image"] = np.zeros((4, 4))
            return state
        def export(state):
            return Image.fromarray(state["mask"])
        def cutout(state):
            return (state["image"] * state["mask"][..., None]).astype(np.uint8)
        """
    ) == [(10, "Image.fromarray()"), (12, "ndarray * mask")]


def test_a_frameworks_session_store_read_by_another_function(tmp_path):
    # Streamlit's st.session_state (items and attributes), Flask's g: one object
    # for every function that names it through the module's import.
    assert _ops(
        """
        import numpy as np
        import streamlit as st
        from flask import g
        def segment(predictor, pts):
            masks, scores, logits = predictor.predict(point_coords=pts)
            st.session_state["mask"] = masks[0]
            st.session_state.score = scores[0]
            st.session_state["clicks"] = len(pts)
            g.logits = logits
        def show():
            st.image(st.session_state["mask"].astype(np.uint8) * 255)
            st.write(round(st.session_state.score, 2), np.zeros(st.session_state["clicks"]))
            return np.save("l.npy", g.logits), st.session_state["other"].astype(np.uint8)
        """
    ) == [(12, ".astype()"), (13, "round()"), (14, "np.save()")]
    # across modules: the page that reads is not the page that writes
    (tmp_path / "seg.py").write_text(textwrap.dedent(
        """
        import streamlit as st
        def run(predictor, box):
            masks, _, _ = predictor.predict(box=box)
            st.session_state.masks = masks
        """))
    (tmp_path / "view.py").write_text(textwrap.dedent(
        """
        import cv2
        import streamlit as st
        def draw(img):
            for m in st.session_state.masks:
                cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        """))
    assert [(Path(f.path).name, f.line) for f in audit_path(tmp_path)] == [("view.py", 6)]


def test_a_decorator_that_times_the_call_hands_back_the_results_in_its_tuple():
    assert _ops(
        """
        import functools, time
        import numpy as np
        def timed(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                t0 = time.perf_counter()
                out = fn(*args, **kwargs)
                return out, time.perf_counter() - t0
            return wrapper
        def passed(fn):
            def inner(*a):
                return fn(*a)
            return inner
        @timed
        def decode(predictor, box):
            return predictor.predict(box=box)
        @passed
        def plain(predictor, box):
            return predictor.predict(box=box)
        def run(predictor, box):
            (masks, scores, logits), ms = decode(predictor, box)
            m, s, lg = plain(predictor, box)
            a = masks[0].mean(), round(ms, 1)
            b = m[0].mean()
            return a, b, np.float64(scores[0]), np.float32(s[0])
        """
    ) == [(24, ".mean()"), (25, ".mean()"), (26, "np.float32()")]


def test_lists_joined_by_plus_and_filled_through_a_conditional_receiver():
    assert _ops(
        """
        import numpy as np
        class Tracker:
            def __init__(self):
                self.tracks, self.finished = [], []
            def step(self, predictor, boxes):
                alive = []
                for box in boxes:
                    masks, scores, _ = predictor.predict(box=box)
                    (alive if scores[0] > 0.5 else self.finished).append(masks[0])
                self.tracks = alive
                return alive
        def report(predictor, boxes, names):
            tracker = Tracker()
            tracker.step(predictor, boxes)
            for m in tracker.tracks + tracker.finished:
                np.save("m.npy", m)
            for m in tracker.finished:
                m.astype(np.uint8)
            both = (1, 2) + ("a",)
            return names + ["x"], both[2].upper()
        """
    ) == [(17, "np.save()"), (19, ".astype()")]


def test_executors_on_disk_arrays_numpy_only_encoders_and_filled_arguments():
    assert _ops(
        """
        import asyncio, functools, json
        import h5py, zarr
        import numpy as np
        class NumpyEncoder(json.JSONEncoder):
            def default(self, o):
                if isinstance(o, np.generic):
                    return o.item()
                return super().default(o)
        class Duck(json.JSONEncoder):
            def default(self, o):
                return o.tolist() if hasattr(o, "tolist") else super().default(o)
        def fill(predictor, box, out):
            masks, scores, _ = predictor.predict(box=box)
            out["best"] = scores[0]
        async def infer(predictor, pt, path):
            loop = asyncio.get_running_loop()
            call = functools.partial(predictor.predict, point_coords=pt)
            masks, scores, _ = await loop.run_in_executor(None, call)
            m2, s2, _ = await loop.run_in_executor(None, functools.partial(predictor.predict, box=pt))
            with h5py.File(path, "w") as f:
                ds = f.require_dataset("m", shape=(1, 4, 4), dtype="u1")
                ds[0] = masks[0]
                f.create_dataset("s", data=s2)
                f.create_dataset("n", data=len(m2))
            z = zarr.zeros((2,), dtype="f4")
            z[0] = scores[0]
            host = np.zeros(2)
            host[0] = scores[0]
            summary = {}
            fill(predictor, pt, summary)
            return json.dumps(summary, cls=NumpyEncoder), json.dumps(summary, cls=Duck)
        """
    ) == [(23, "ndarray[i] = mask"), (24, ".create_dataset()"), (27, "ndarray[i] = mask"), (32, "json.dumps()")]


def test_other_producers_paths_and_rows_of_the_table():
    assert _ops(
        """
        import numpy as np
        class Layer:
            def auto(self, generator, image):
                self.masks = generator.generate(image)
            def click(self, predictor, box):
                masks, scores, _ = predictor.predict(box=box)
                self.masks = [masks[0]]
                self.path = "saved.npy"
                return scores.argsort()[::-1], round(scores[0], 2)
            def from_file(self, path):
                self.masks = path
            def areas(self):
                return [int(a["area"]) for a in self.masks], np.load(self.masks)
        """
    ) == [(10, "round()"), (10, "t[::-1]")]


def test_a_global_filled_by_a_callback_is_read_at_the_top_level():
    assert _ops(
        """
        import numpy as np
        state = {}
        def on_click(event, sam, pts):
            masks, scores, logits = sam.predict(point_coords=pts, point_labels=None)
            state.update(masks=masks, scores=scores)
        best = state["masks"][0]
        np.save("best.npy", best)
        """
    ) == [(8, "np.save()")]


def test_a_predictor_cache_and_a_pool_submission():
    assert _ops(
        """
        import concurrent.futures as cf
        import numpy as np
        from segment_anything import SamPredictor
        _CACHE = {}
        def get(name):
            if name not in _CACHE:
                _CACHE[name] = SamPredictor(None)
            return _CACHE[name]
        def vectorize(mask):
            return mask.astype(np.uint8)
        def run(name, kw):
            net = get(name)
            _, scores, _ = net.predict(**kw)
            with cf.ThreadPoolExecutor() as pool:
                pool.submit(vectorize, scores)
            return json_ok(scores)
        def json_ok(s):
            return float(s.max())
        """
    ) == [(11, ".astype()")]


def test_callbacks_properties_items_and_dispatch_tables():
    assert _ops(
        """
        import numpy as np
        from segment_anything import SamPredictor
        def _png(mask):
            return mask.astype(np.uint8)
        def _bits(mask):
            return np.packbits(mask)
        ENCODERS = {"png": _png, "bits": _bits}
        class Tool:
            def __init__(self, button, sam: SamPredictor):
                self.sam = sam
                self.history = []
                button.bind(lambda e: self.click(e.x))
            def click(self, pts):
                masks, scores, _ = self.sam.predict(point_coords=pts)
                self.history.append(masks)
            @property
            def current(self):
                return self.history[-1][0]
            def __getitem__(self, i):
                return self.history[i]
            def save(self, fmt):
                ENCODERS[fmt](self.current)
                return np.stack([self[i] for i in range(3)])
        def to_numpy(x):
            return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)
        """
    ) == [(5, ".astype()"), (7, "np.packbits()"), (24, "np.stack()")]


def test_closures_partials_map_lambdas_and_static_methods():
    assert _ops(
        """
        import functools
        import numpy as np
        class Tool:
            @staticmethod
            def polygons(mask):
                return (mask * 255).astype(np.uint8)
        def make_stepper(predictor):
            def step(box):
                masks, scores, _ = predictor.predict(box=box)
                return np.any(masks[0], axis=0), masks[0]
            return step
        def oracle(engine, pts):
            ask = functools.partial(engine.predict, point_labels=None, multimask_output=True)
            masks, scores, _ = ask(point_coords=pts)
            areas = list(map(lambda m: m.sum(), masks))
            return np.percentile(areas, 5), Tool.polygons(masks[0])
        """
    ) == [(7, ".astype()"), (11, "np.any()"), (17, "np.percentile()")]


def test_a_global_rebound_in_a_callback_is_read_by_other_functions():
    # Gradio/Tk apps: ``global last_mask; last_mask = masks[i]`` in one handler,
    # read by an export handler; a local of the same name elsewhere is not it.
    assert _ops(
        """
        import numpy as np
        from PIL import Image
        last_mask = None
        def on_click(sam, pts):
            global last_mask
            masks, scores, _ = sam.predict(point_coords=pts, point_labels=None)
            last_mask = masks[0]
        def export_png(path):
            if last_mask is None:
                return
            Image.fromarray((last_mask * 255).astype(np.uint8)).save(path)
        def cutout():
            return np.argwhere(last_mask)
        def unrelated(last_mask):
            return last_mask.astype(np.uint8)
        def shadow():
            last_mask = np.zeros((4, 4))
            return last_mask.astype(np.uint8)
        """
    ) == [(12, ".astype()"), (14, "np.argwhere()")]


def test_a_function_of_the_package_imported_relatively(tmp_path):
    # ``from . import segment`` names no module in its text: the relevance
    # pass must still follow it to the package's __init__.
    pkg = tmp_path / "segsvc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from segment_anything import SamPredictor\n"
        "def segment(image, predictor: SamPredictor):\n"
        "    predictor.set_image(image)\n"
        "    return predictor.predict(point_coords=None)\n"
    )
    (pkg / "app.py").write_text(
        "import numpy as np\n"
        "from . import segment\n"
        "def route(image, predictor):\n"
        "    masks, scores, _ = segment(image, predictor)\n"
        "    return masks.astype(np.uint8)\n"
    )
    assert {(Path(p).name, line, op) for p, _, line, op in _found(tmp_path)} == {("app.py", 5, ".astype()")}


def test_sam2_and_sam3_masks_are_float_so_bool_only_operations_run():
    # SAM 2's predict (and SAM 3's predict_inst, through SAM 2's predictor) return
    # float32 0/1 masks, upstream and under the shim: mean() and 1 - m run there.
    assert _ops(
        """
        from sam2.sam2_image_predictor import SAM2ImagePredictor
        from segment_anything import SamPredictor
        def two(p: SAM2ImagePredictor, pts):
            masks, scores, _ = p.predict(point_coords=pts)
            return float(masks[0].mean()), 1 - masks[0]
        def three(model, state, box):
            masks, scores, _ = model.predict_inst(state, box=box)
            return float(masks[0].mean())
        def one(p: SamPredictor, pts):
            masks, scores, _ = p.predict(point_coords=pts)
            return float(masks[0].mean()), 1 - masks[0]
        """
    ) == [(12, ".mean()"), (12, "1 - mask")]


def test_a_predictor_from_a_contextmanager_and_host_arrays_from_simpleitk():
    # ``with loaded(...) as predictor``: the generator's one yield; the atlas is
    # numpy (SimpleITK.GetArrayFromImage), so ``mask & atlas`` breaks, while a
    # whole-array reduction of it is a numpy scalar, which a tensor adds.
    assert _ops(
        """
        from contextlib import contextmanager
        import SimpleITK as sitk
        from segment_anything import SamPredictor
        @contextmanager
        def loaded(model):
            yield SamPredictor(model)
        def dice(a, b):
            denom = a.sum() + b.sum()
            return float(2.0 * (a & b).sum() / denom)
        def run(model, path):
            atlas = sitk.GetArrayFromImage(sitk.ReadImage(path)) == 6
            with loaded(model) as predictor:
                masks, scores, _ = predictor.predict(box=None)
                return dice(masks[0], atlas[0])
        """
    ) == [(10, "mask * ndarray")]


def test_a_base_class_method_runs_the_subclass_override():
    # Template method: the base's run() calls self.propose(), which a subclass
    # overrides with a predict call; what run() hands on is that result too.
    assert _ops(
        """
        import numpy as np
        class Source:
            def propose(self, image, box):
                return np.zeros(image.shape[:2], bool)
            def run(self, image, box):
                return self.propose(image, box)
            def outline(self, image, box):
                return self.run(image, box).astype(np.uint8)
        class SamSource(Source):
            def __init__(self, predictor):
                self.predictor = predictor
            def propose(self, image, box):
                masks, scores, _ = self.predictor.predict(box=box)
                return masks[0]
        """
    ) == [(9, ".astype()")]
