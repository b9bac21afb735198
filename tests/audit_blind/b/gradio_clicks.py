"""Gradio demo: click to add points, undo, invert, export a cutout."""

import json

import cv2
import gradio as gr
import numpy as np
from PIL import Image
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

predictor = SAM2ImagePredictor(build_sam2("configs/sam2.1/sam2.1_hiera_l.yaml", "checkpoints/sam2.1_hiera_large.pt"))

COLORS = np.array([[255, 64, 64], [64, 200, 64]], dtype=np.uint8)


def new_state():
    return {"image": None, "points": [], "labels": [], "history": [], "mask": None}


def on_upload(image, state):
    state = new_state()
    state["image"] = np.array(image)
    predictor.set_image(state["image"])
    return image, state


def render(image, mask, points, labels):
    out = np.array(image, dtype=np.float32)
    if mask is not None:
        tint = np.array([30, 144, 255], dtype=np.float32)
        a = 0.5 * mask[..., None]
        out = out * (1 - a) + tint * a  # expect: ndarray * mask
    for (x, y), l in zip(points, labels):
        out[max(y - 4, 0): y + 5, max(x - 4, 0): x + 5] = COLORS[l]
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def on_click(state, positive, evt: gr.SelectData):
    x, y = evt.index
    state["points"].append([x, y])
    state["labels"].append(1 if positive else 0)
    pts = np.array(state["points"], dtype=np.float32)
    lbl = np.array(state["labels"], dtype=np.int32)
    prev = state["history"][-1]["logits"] if state["history"] else None
    masks, scores, logits = predictor.predict(point_coords=pts, point_labels=lbl,
                                              mask_input=None if prev is None else prev[None, :, :],
                                              multimask_output=len(pts) == 1)
    best = int(scores.argmax())
    state["history"].append({"points": pts, "labels": lbl, "logits": logits[best], "score": scores[best]})
    state["mask"] = masks[best]
    coverage = np.float64(100.0) * masks[best].sum() / masks[best].numel()
    info = f"{len(pts)} points, score {scores[best]:.3f}, {coverage:.1f}% of the image"
    return render(state["image"], state["mask"], state["points"], state["labels"]), state, info


def on_undo(state):
    if not state["history"]:
        return render(state["image"], None, [], []), state, "nothing to undo"
    state["history"].pop()
    state["points"].pop()
    state["labels"].pop()
    if state["history"]:
        last = state["history"][-1]
        masks, _, _ = predictor.predict(point_coords=last["points"], point_labels=last["labels"],
                                        mask_input=last["logits"][None, :, :], multimask_output=False)
        state["mask"] = masks[0]
        info = f"back to {len(last['points'])} points (score was {last['score']:.3f})"
    else:
        state["mask"] = None
        info = "cleared"
    return render(state["image"], state["mask"], state["points"], state["labels"]), state, info


def on_invert(state):
    if state["mask"] is not None:
        state["mask"] = 1 - state["mask"]
    return render(state["image"], state["mask"], state["points"], state["labels"]), state


def on_candidates(state):
    """Gallery of the three candidates for the last click alone."""
    if not state["points"]:
        return []
    pt = np.array(state["points"][-1:], dtype=np.float32)
    masks, scores, _ = predictor.predict(point_coords=pt, point_labels=np.ones(1, np.int32), multimask_output=True)
    order = scores.argsort()[::-1]  # expect: [::-1] on a tensor
    return [(render(state["image"], masks[i], state["points"][-1:], [1]), f"{scores[i]:.3f}") for i in order]


def export_mask(state):
    Image.fromarray(state["mask"]).save("/tmp/mask.png")  # expect: PIL.Image.fromarray()
    return "/tmp/mask.png"


def history_table(state):
    return [[i, len(h["points"]), np.round(h["points"][-1], 1).tolist(), int(h["labels"][-1]), float(h["score"])]
            for i, h in enumerate(state["history"])]


def export_prompts(state):
    return json.dumps({"points": [h["points"].tolist() for h in state["history"]],
                       "labels": [h["labels"].tolist() for h in state["history"]],
                       "negatives": int(sum((h["labels"] == 0).sum() for h in state["history"]))})


def export_cutout(state, feather):
    if state["mask"] is None:
        raise gr.Error("no mask yet")
    alpha = (state["mask"] * 255).astype(np.uint8)  # expect: .astype()
    if feather:
        alpha = cv2.GaussianBlur(alpha, (0, 0), feather)
    rgba = np.dstack([state["image"], alpha])
    Image.fromarray(rgba, "RGBA").save("/tmp/cutout.png")
    return "/tmp/cutout.png"


def save_session(state, path="/tmp/session.npz"):
    logits = np.stack([h["logits"] for h in state["history"]])  # expect: np.stack()
    np.savez(path, points=np.array(state["points"]), labels=np.array(state["labels"]), logits=logits)
    return path


with gr.Blocks(title="SAM 2 clicks") as demo:
    state = gr.State(new_state())
    with gr.Row():
        img_in = gr.Image(type="pil", label="image")
        img_out = gr.Image(type="pil", label="result")
    positive = gr.Checkbox(True, label="positive click")
    info = gr.Textbox(label="info")
    with gr.Row():
        undo_btn = gr.Button("undo")
        inv_btn = gr.Button("invert")
        cut_btn = gr.Button("export cutout")
        save_btn = gr.Button("save session")
        mask_btn = gr.Button("export mask")
    gallery = gr.Gallery(label="candidates", columns=3)
    feather = gr.Slider(0, 10, 0, label="feather")
    table = gr.Dataframe(headers=["step", "points", "last point", "last label", "score"])
    prompts = gr.Code(language="json")
    file_out = gr.File()

    img_in.upload(on_upload, [img_in, state], [img_out, state])
    img_out.select(on_click, [state, positive], [img_out, state, info]).then(history_table, state, table).then(
        on_candidates, state, gallery)
    undo_btn.click(on_undo, state, [img_out, state, info]).then(history_table, state, table)
    inv_btn.click(on_invert, state, [img_out, state])
    cut_btn.click(export_cutout, [state, feather], file_out)
    save_btn.click(save_session, state, file_out).then(export_prompts, state, prompts)
    mask_btn.click(export_mask, state, file_out)

if __name__ == "__main__":
    demo.launch()
