"""Streamlit demo: click on an image, get SAM 2.1 masks back.

    streamlit run app.py
"""
import io

import numpy as np
import samgpu_shim  # noqa: F401
import streamlit as st
import torch
from PIL import Image, ImageDraw
from sam2.sam2_image_predictor import SAM2ImagePredictor
from streamlit_image_coordinates import streamlit_image_coordinates

MODELS = {
    "tiny": "facebook/sam2.1-hiera-tiny",
    "small": "facebook/sam2.1-hiera-small",
    "base+": "facebook/sam2.1-hiera-base-plus",
    "large": "facebook/sam2.1-hiera-large",
}
PALETTE = np.array([[255, 64, 64], [64, 160, 255], [64, 220, 120]], dtype=np.uint8)


@st.cache_resource
def load_predictor(model_id: str) -> SAM2ImagePredictor:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return SAM2ImagePredictor.from_pretrained(model_id, device=device)


def overlay(image: np.ndarray, mask: np.ndarray, color: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * color
    return out.astype(np.uint8)


def draw_points(img: Image.Image, points, labels) -> Image.Image:
    draw = ImageDraw.Draw(img)
    for (x, y), lab in zip(points, labels):
        fill = (0, 255, 0) if lab == 1 else (255, 0, 0)
        draw.ellipse((x - 6, y - 6, x + 6, y + 6), fill=fill, outline=(255, 255, 255))
    return img


def main():
    st.set_page_config(page_title="SAM 2.1 point prompts", layout="wide")
    st.title("SAM 2.1 point prompts")

    size = st.sidebar.selectbox("Model", list(MODELS), index=1)
    predictor = load_predictor(MODELS[size])
    negative = st.sidebar.toggle("Negative click", value=False)
    multimask = st.sidebar.checkbox("Multimask output", value=True)

    upload = st.file_uploader("Image", type=["png", "jpg", "jpeg"])
    if upload is None:
        st.stop()

    image = np.array(Image.open(upload).convert("RGB"))
    if st.session_state.get("image_name") != upload.name:
        st.session_state.update(image_name=upload.name, points=[], labels=[])
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.cuda.is_available()):
            predictor.set_image(image)
        st.session_state["embedded"] = upload.name

    left, right = st.columns(2)
    with left:
        shown = draw_points(Image.fromarray(image), st.session_state.points, st.session_state.labels)
        click = streamlit_image_coordinates(shown, key="clicks")
        if click and (click["x"], click["y"]) not in st.session_state.points:
            st.session_state.points.append((click["x"], click["y"]))
            st.session_state.labels.append(0 if negative else 1)
            st.rerun()
        if st.button("Clear points"):
            st.session_state.update(points=[], labels=[])
            st.rerun()

    if not st.session_state.points:
        right.info("Click on the object you want to segment")
        return

    with torch.inference_mode():
        masks, scores, _ = predictor.predict(
            point_coords=np.array(st.session_state.points, dtype=np.float32),
            point_labels=np.array(st.session_state.labels, dtype=np.int32),
            multimask_output=multimask,
            as_numpy=True,
        )

    order = np.argsort(scores)[::-1]
    with right:
        for rank, idx in enumerate(order):
            mask = masks[idx] > 0.5
            st.image(overlay(image, mask, PALETTE[rank % len(PALETTE)]),
                     caption=f"#{rank + 1}  IoU {scores[idx]:.3f}  area {mask.mean():.1%}")
            buf = io.BytesIO()
            Image.fromarray((mask * 255).astype(np.uint8)).save(buf, format="PNG")
            st.download_button(f"Download mask #{rank + 1}", buf.getvalue(),
                               file_name=f"{upload.name.rsplit('.', 1)[0]}_mask{rank + 1}.png",
                               mime="image/png", key=f"dl{idx}")


if __name__ == "__main__":
    main()
