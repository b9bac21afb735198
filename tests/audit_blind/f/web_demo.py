"""Click-to-segment demo (Gradio + MobileSAM), deployed on the lab's GPU box.

Left click adds a point with the selected polarity; "Undo" drops the last
one; "Export" writes the current mask as PNG and a small JSON sidecar.
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
import time
from typing import Any, Dict, List, Optional

import gradio as gr
import numpy as np
import torch
from PIL import Image

from mobile_sam import SamPredictor, sam_model_registry

CKPT = os.environ.get("MOBILE_SAM_CKPT", "weights/mobile_sam.pt")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
COLORS = {1: (40, 220, 90), 0: (230, 40, 40)}


@functools.lru_cache(maxsize=1)
def get_predictor() -> SamPredictor:
    model = sam_model_registry["vit_t"](checkpoint=CKPT)
    return SamPredictor(model.to(DEVICE).eval())


def new_state(image: Optional[np.ndarray] = None) -> Dict[str, Any]:
    return {"image": image, "points": [], "labels": [], "logits": None,
            "mask": None, "score": None, "history": [], "t": time.time()}


def render(state: Dict[str, Any]) -> Optional[np.ndarray]:
    img = state["image"]
    if img is None:
        return None
    mask = state["mask"]
    out = img.copy()
    if mask is not None:
        tint = np.array([255, 140, 0], dtype=np.float32)
        out = np.where(mask[..., None], (0.45 * out + 0.55 * tint).astype(np.uint8), out)  # expect: np.where
    for (x, y), lab in zip(state["points"], state["labels"]):
        y0, y1, x0, x1 = max(y - 4, 0), y + 5, max(x - 4, 0), x + 5
        out[y0:y1, x0:x1] = COLORS[lab]
    return out


def _run(state: Dict[str, Any]) -> Dict[str, Any]:
    if not state["points"]:
        state.update(mask=None, logits=None, score=None)
        return state
    sam = get_predictor()
    first = len(state["points"]) == 1
    masks, scores, logits = sam.predict(
        point_coords=np.asarray(state["points"], dtype=np.float32),
        point_labels=np.asarray(state["labels"], dtype=np.int32),
        mask_input=None if first else state["logits"],
        multimask_output=first,
    )
    if first:
        # the three candidates are ordered small -> large; take the most confident
        best, *_ = sorted(range(len(scores)), key=lambda i: -scores[i])
    else:
        best = 0
    state["mask"] = masks[best]
    state["logits"] = logits[best][None]
    state["score"] = scores[best]
    return state


def on_upload(image: np.ndarray):
    if image is None:
        return None, new_state(), ""
    get_predictor().set_image(image)
    return image, new_state(image), f"{image.shape[1]}x{image.shape[0]} ready"


def on_click(state: Dict[str, Any], polarity: str, evt: gr.SelectData):
    if state["image"] is None:
        raise gr.Error("upload an image first")
    x, y = (int(v) for v in evt.index)
    state["history"].append((list(state["points"]), list(state["labels"])))
    state["points"].append([x, y])
    state["labels"].append(1 if polarity == "foreground" else 0)
    state = _run(state)
    frac = state["mask"].mean()  # expect: mean
    return render(state), state, f"pred IoU {state['score']:.3f} | {100 * frac:.1f}% of image"


def on_undo(state: Dict[str, Any]):
    if not state["history"]:
        return render(state), state, "nothing to undo"
    pts, labs = state["history"].pop()
    state["points"], state["labels"] = pts, labs
    if state["points"]:
        get_predictor().set_image(state["image"])
    state = _run(state)
    return render(state), state, f"{len(state['points'])} point(s)"


def on_export(state: Dict[str, Any]):
    if state["mask"] is None:
        raise gr.Error("no mask yet")
    tmp = tempfile.mkdtemp(prefix="samdemo_")
    png_path = os.path.join(tmp, "mask.png")
    Image.fromarray(state["mask"]).save(png_path)  # expect: Image.fromarray
    meta = {
        "points": state["points"],
        "labels": state["labels"],
        "score": state["score"].item(),
        "area": int(state["mask"].sum()),
        "shape": list(state["mask"].shape),
        "elapsed_s": round(time.time() - state["t"], 1),
    }
    json_path = os.path.join(tmp, "mask.json")
    with open(json_path, "w") as f:
        json.dump(meta, f)
    cutout = np.dstack([state["image"], np.uint8(state["mask"]) * 255])  # expect: np.uint8
    cut_path = os.path.join(tmp, "cutout.png")
    Image.fromarray(cutout, mode="RGBA").save(cut_path)
    return [png_path, json_path, cut_path]


with gr.Blocks(title="MobileSAM click demo") as demo:
    st = gr.State(new_state())
    with gr.Row():
        inp = gr.Image(type="numpy", label="image")
        view = gr.Image(type="numpy", label="result", interactive=False)
    with gr.Row():
        polarity = gr.Radio(["foreground", "background"], value="foreground", label="click type")
        undo = gr.Button("Undo")
        export = gr.Button("Export")
    info = gr.Markdown()
    files = gr.File(label="download", file_count="multiple")

    inp.upload(on_upload, inp, [view, st, info])
    view.select(on_click, [st, polarity], [view, st, info])
    undo.click(on_undo, st, [view, st, info])
    export.click(on_export, st, files)

if __name__ == "__main__":
    demo.queue(max_size=8).launch(server_name="0.0.0.0", server_port=int(os.environ.get("PORT", 7860)))
