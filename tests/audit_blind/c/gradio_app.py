"""SAM 2 click demo (Gradio). ``python gradio_app.py --share``

Left click adds a point (positive / negative from the radio), "Everything"
runs the automatic mask generator, "Candidates" shows the three multimask
outputs of the last click.
"""

import argparse
import functools
import tempfile

import gradio as gr
import numpy as np
import torch
from PIL import Image

from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from sam_tools.postprocess import overlay_mask

CFG = "configs/sam2.1/sam2.1_hiera_l.yaml"
CKPT = "checkpoints/sam2.1_hiera_large.pt"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

SAM2 = build_sam2(CFG, CKPT, device=DEVICE)
PREDICTOR = SAM2ImagePredictor(SAM2)
AMG = SAM2AutomaticMaskGenerator(SAM2, points_per_side=32, pred_iou_thresh=0.8)
PALETTE = np.random.default_rng(7).integers(0, 255, size=(256, 3), dtype=np.uint8)


def empty_state():
    return {"image": None, "points": [], "labels": [], "logits": None,
            "mask": None, "masks": None, "scores": None}


def on_upload(image, state):
    state = empty_state()
    state["image"] = image
    with torch.inference_mode(), torch.autocast(DEVICE, dtype=torch.bfloat16):
        PREDICTOR.set_image(image)
    return image, state


def on_click(image, state, mode, evt: gr.SelectData):
    if state["image"] is None:
        raise gr.Error("Upload an image first")
    state["points"].append(list(evt.index))
    state["labels"].append(1 if mode == "positive" else 0)
    with torch.inference_mode(), torch.autocast(DEVICE, dtype=torch.bfloat16):
        masks, scores, logits = PREDICTOR.predict(
            point_coords=np.array(state["points"], dtype=np.float32),
            point_labels=np.array(state["labels"], dtype=np.int32),
            mask_input=state["logits"],
            multimask_output=len(state["points"]) == 1,
        )
    best = int(scores.argmax())
    state["logits"] = logits[best][None]
    state["mask"], state["masks"], state["scores"] = masks[best], masks, scores
    coverage = 100.0 * masks[best].mean()
    vis = overlay_mask(state["image"], masks[best])
    return vis, state, f"score {scores[best]:.3f} | {coverage:.1f}% of the image"


def everything(state):
    if state["image"] is None:
        raise gr.Error("Upload an image first")
    anns = sorted(AMG.generate(state["image"]), key=lambda a: a["area"], reverse=True)
    canvas = state["image"].copy()
    for i, ann in enumerate(anns):
        seg = ann["segmentation"]
        canvas[seg] = (0.45 * canvas[seg] + 0.55 * PALETTE[i % 256]).astype(np.uint8)
    return canvas, f"{len(anns)} masks"


def export_png(state):
    m = state["mask"]
    if m is None:
        raise gr.Error("Nothing to export yet")
    path = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
    Image.fromarray(m).save(path)  # expect: Image.fromarray
    return path


def cutout(state):
    """Foreground on black, for the 'copy object' button."""
    if state["mask"] is None:
        raise gr.Error("Click an object first")
    fg = state["image"] * state["mask"][..., None]  # expect: ndarray*tensor
    return fg.astype(np.uint8)


def reset(image, state, keep_image=True):
    fresh = empty_state()
    if keep_image and state["image"] is not None:
        fresh["image"] = state["image"]
        return state["image"], fresh, "cleared"
    return None, fresh, "cleared"


with gr.Blocks(title="SAM 2 point demo") as demo:
    state = gr.State(empty_state())
    with gr.Row():
        inp = gr.Image(type="numpy", label="image")
        out = gr.Image(type="numpy", label="result")
    mode = gr.Radio(["positive", "negative"], value="positive", label="click type")
    info = gr.Textbox(label="info")
    with gr.Row():
        all_btn = gr.Button("Everything")
        cand_btn = gr.Button("Candidates")
        png_btn = gr.Button("Download mask")
        cut_btn = gr.Button("Cut out")
        clear_btn = gr.Button("Clear points")
    gallery = gr.Gallery(label="candidates", columns=3)
    png_file = gr.File(label="mask.png")

    inp.upload(on_upload, [inp, state], [out, state])
    out.select(on_click, [out, state, mode], [out, state, info])
    all_btn.click(everything, [state], [out, info])
    cand_btn.click(
        lambda st: [(np.dstack([m * 255] * 3).astype(np.uint8), f"{s:.2f}") for m, s in zip(st["masks"], st["scores"])],  # expect: np.dstack
        [state], [gallery],
    )
    png_btn.click(export_png, [state], [png_file])
    cut_btn.click(cutout, [state], [out])
    clear_btn.click(functools.partial(reset, keep_image=True), [out, state], [out, state, info])

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--share", action="store_true")
    ap.add_argument("--port", type=int, default=7860)
    args = ap.parse_args()
    demo.queue(max_size=8).launch(share=args.share, server_port=args.port)
