"""A click-to-segment Gradio demo, as people post them."""

import gradio as gr
import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry

sam = sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth").to("cuda")
predictor = SamPredictor(sam)


def on_click(image, evt: gr.SelectData):
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(
        point_coords=np.array([evt.index]), point_labels=np.array([1]), multimask_output=True
    )
    mask = masks[np.argmax(scores)]  # expect: np.argmax()
    overlay = image.copy()
    overlay[mask] = (overlay[mask] * 0.5 + np.array([255, 0, 0]) * 0.5).astype(np.uint8)  # expect: ndarray[mask], ndarray[mask] = v
    return overlay


with gr.Blocks() as demo:
    img = gr.Image(type="numpy")
    img.select(on_click, [img], [img])
