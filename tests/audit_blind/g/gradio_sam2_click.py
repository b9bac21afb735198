# SAM 2 click-to-segment demo (Gradio).  Started from the HF space template,
# single user only - state lives in module globals.
import os
import tempfile

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw

from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.sam2_image_predictor import SAM2ImagePredictor

MODEL_ID = os.environ.get("SAM2_MODEL", "facebook/sam2.1-hiera-large")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

sam2_predictor = SAM2ImagePredictor.from_pretrained(MODEL_ID, device=DEVICE)
everything = SAM2AutomaticMaskGenerator(sam2_predictor.model, points_per_side=32, pred_iou_thresh=0.8)

PALETTE = np.array(
    [[30, 144, 255], [255, 64, 64], [64, 200, 64], [255, 200, 0], [180, 80, 255], [0, 200, 200]],
    dtype=np.float32,
)

click_points = []
click_labels = []
prev_logits = None
last_mask = None
last_image = None


def reset_state():
    global click_points, click_labels, prev_logits, last_mask
    click_points, click_labels = [], []
    prev_logits = None
    last_mask = None


def overlay(image, mask, color, alpha=0.55):
    out = image.astype(np.float32).copy()
    out[mask] = out[mask] * (1 - alpha) + color * alpha  # expect: ndarray[t_bool]
    return out.clip(0, 255).astype(np.uint8)


def draw_clicks(pil_img):
    d = ImageDraw.Draw(pil_img)
    for (x, y), lab in zip(click_points, click_labels):
        fill = (0, 255, 0) if lab == 1 else (255, 0, 0)
        d.ellipse([x - 6, y - 6, x + 6, y + 6], fill=fill, outline=(255, 255, 255))
    return pil_img


def on_image(img):
    global last_image
    reset_state()
    if img is None:
        return None
    last_image = np.array(img.convert("RGB"))
    with torch.inference_mode(), torch.autocast(DEVICE, dtype=torch.bfloat16):
        sam2_predictor.set_image(last_image)
    return img


def on_click(img, mode, evt: gr.SelectData):
    global prev_logits, last_mask
    if last_image is None:
        return img, "upload an image first"
    click_points.append(list(evt.index))
    click_labels.append(1 if mode == "Foreground" else 0)
    with torch.inference_mode(), torch.autocast(DEVICE, dtype=torch.bfloat16):
        masks, scores, logits = sam2_predictor.predict(
            point_coords=np.array(click_points, dtype=np.float32),
            point_labels=np.array(click_labels),
            mask_input=None if prev_logits is None else prev_logits[None, :, :],
            multimask_output=len(click_points) == 1,
        )
    best = np.argmax(scores)  # expect: np.argmax
    prev_logits = logits[best]
    last_mask = masks[best]
    vis = overlay(last_image, last_mask, PALETTE[0])
    area = 100.0 * last_mask.sum() / last_mask.size  # expect: t.size
    return draw_clicks(Image.fromarray(vis)), f"score {scores[best]:.3f} | area {area:.1f}%"


def on_boxes(img, boxes_text):
    # "x0,y0,x1,y1; x0,y0,x1,y1"
    if last_image is None or not boxes_text.strip():
        return img
    boxes = np.array([[float(v) for v in b.split(",")] for b in boxes_text.split(";") if b.strip()])
    with torch.inference_mode(), torch.autocast(DEVICE, dtype=torch.bfloat16):
        masks, scores, _ = sam2_predictor.predict(box=boxes, multimask_output=False)
    if masks.ndim == 4:  # several boxes -> B x 1 x H x W
        masks = masks[:, 0]
    union = masks.max(axis=0)  # expect: max(axis=0)
    return Image.fromarray(overlay(last_image, union, PALETTE[1]))


def export_png():
    if last_mask is None:
        raise gr.Error("No mask yet - click on the image first")
    path = os.path.join(tempfile.mkdtemp(), "mask.png")
    Image.fromarray((last_mask * 255).astype(np.uint8)).save(path)  # expect: astype
    return path


def export_cutout():
    if last_mask is None:
        raise gr.Error("No mask yet - click on the image first")
    yx = np.argwhere(last_mask)  # expect: np.argwhere
    (y0, x0), (y1, x1) = yx.min(0), yx.max(0) + 1
    alpha = (last_mask.cpu().numpy() * 255).astype(np.uint8)
    rgba = np.dstack([last_image, alpha])[y0:y1, x0:x1]
    path = os.path.join(tempfile.mkdtemp(), "cutout.png")
    Image.fromarray(rgba, mode="RGBA").save(path)
    return path


def segment_everything(img):
    # the automatic generator returns plain numpy masks in dicts
    image = np.array(img.convert("RGB"))
    anns = everything.generate(image)
    canvas = image.astype(np.float32)
    for k, ann in enumerate(sorted(anns, key=lambda a: a["area"], reverse=True)):
        m = ann["segmentation"]
        canvas[m] = canvas[m] * 0.5 + PALETTE[k % len(PALETTE)] * 0.5
    stats = {
        "n_masks": len(anns),
        "mean_pred_iou": float(np.mean([a["predicted_iou"] for a in anns])) if anns else 0.0,
        "largest_area": int(max((a["area"] for a in anns), default=0)),
    }
    return Image.fromarray(canvas.astype(np.uint8)), stats


with gr.Blocks(title="SAM 2 click demo") as demo:
    gr.Markdown("## SAM 2 - click to segment")
    with gr.Tab("Click"):
        with gr.Row():
            inp = gr.Image(type="pil", label="image")
            out = gr.Image(type="pil", label="mask")
        mode = gr.Radio(["Foreground", "Background"], value="Foreground", label="click type")
        info = gr.Textbox(label="info")
        with gr.Row():
            btn_reset = gr.Button("Reset clicks")
            btn_png = gr.Button("Download mask")
            btn_cut = gr.Button("Download cutout")
        file_out = gr.File()
        inp.upload(on_image, inp, out)
        inp.select(on_click, [inp, mode], [out, info])
        btn_reset.click(lambda: reset_state() or None, None, out)
        btn_png.click(export_png, None, file_out)
        btn_cut.click(export_cutout, None, file_out)
    with gr.Tab("Boxes"):
        boxes_txt = gr.Textbox(label="boxes  x0,y0,x1,y1; ...")
        btn_boxes = gr.Button("Segment boxes")
        box_out = gr.Image(type="pil")
        btn_boxes.click(on_boxes, [inp, boxes_txt], box_out)
    with gr.Tab("Everything"):
        ev_in = gr.Image(type="pil")
        ev_out = gr.Image(type="pil")
        ev_stats = gr.JSON()
        gr.Button("Segment everything").click(segment_everything, ev_in, [ev_out, ev_stats])

if __name__ == "__main__":
    demo.queue().launch(server_name="0.0.0.0")
