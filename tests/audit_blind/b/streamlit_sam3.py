"""Streamlit page: click to segment with SAM 3's interactive head (with undo),
or a text prompt to segment every instance."""

import json

import numpy as np
import streamlit as st
from PIL import Image
from sam3.model.sam3_image_processor import Sam3Processor
from sam3.model_builder import build_sam3_image_model
from streamlit_image_coordinates import streamlit_image_coordinates


@st.cache_resource
def load():
    model = build_sam3_image_model(enable_inst_interactivity=True).cuda().eval()
    return model, Sam3Processor(model)


model, processor = load()
if "history" not in st.session_state:
    st.session_state.history = []

up = st.file_uploader("image", type=["png", "jpg", "jpeg"])
if up is None:
    st.stop()

image = Image.open(up).convert("RGB")
rgb = np.asarray(image)
state = processor.set_image(image)

st.subheader("click")
coords = streamlit_image_coordinates(image, key="img")
hist = st.session_state.history
if coords and (not hist or hist[-1]["click"] != [coords["x"], coords["y"]]):
    pts = np.array([[coords["x"], coords["y"]]], np.float32)
    if hist:
        pts = np.vstack([hist[-1]["points"], pts])
    lbl = np.ones(len(pts), np.int32)
    masks, scores, logits = model.predict_inst(state, point_coords=pts, point_labels=lbl,
                                               mask_input=hist[-1]["logits"][None] if hist else None,
                                               multimask_output=not hist)
    k = int(scores.argmax())
    hist.append({"click": [coords["x"], coords["y"]], "points": pts, "logits": logits[k],
                 "mask": masks[k], "score": scores[k]})

if hist and st.button("undo"):
    hist.pop()

if hist:
    cur = hist[-1]
    m = cur["mask"]
    st.image(m, caption=f"mask, score {cur['score']:.3f}", clamp=True)  # expect: st.image()
    blend = (rgb * 0.5 + np.array([255, 0, 0]) * 0.5 * m[..., None]).astype(np.uint8)  # expect: ndarray * mask
    st.image(blend)
    st.write(f"{len(cur['points'])} clicks, first at {cur['points'][0].astype(int).tolist()}")
    payload = json.dumps({"points": cur["points"].tolist(), "score": cur["score"]})  # expect: json.dumps()
    st.download_button("prompts.json", payload, "prompts.json")
    if st.button("save logits"):
        np.save("/tmp/logits.npy", cur["logits"])  # expect: np.save()

st.subheader("text")
prompt = st.text_input("objects", "person")
if st.button("segment all"):
    s = processor.set_text_prompt(state=state, prompt=prompt)
    boxes = s["boxes"].float().cpu().numpy()
    masks_b, scores_b, _ = model.predict_inst_batch([state], box_batch=[boxes], multimask_output=False)
    masks, scores = masks_b[0], scores_b[0]
    scores = scores.reshape(-1)
    keep = scores > 0.6
    st.write(f"{int(keep.sum())} of {len(scores)} instances kept, best {scores.max():.2f}")
    label = np.zeros(rgb.shape[:2], np.int32)
    for i, mm in enumerate(masks[keep], start=1):
        label[np.squeeze(mm)] = i  # expect: ndarray[mask] = v
    st.image((label * 40 % 255).astype(np.uint8))
