"""Instance masks for text-detected objects with SAM 3: detect with a text prompt,
then refine each detection through the interactive head (predict_inst)."""

import sys

import cv2
import numpy as np
import torch
from PIL import Image
from sam3.model.sam3_image_processor import Sam3Processor
from sam3.model_builder import build_sam3_image_model

model = build_sam3_image_model(enable_inst_interactivity=True)
processor = Sam3Processor(model, confidence_threshold=0.4)


def detect(image: Image.Image, prompt: str, min_score=0.5):
    state = processor.set_image(image)
    state = processor.set_text_prompt(state=state, prompt=prompt)
    boxes = state["boxes"].float().cpu().numpy()
    det_scores = state["scores"].float().cpu().numpy()
    return state, boxes[det_scores > min_score]


def refine(image: Image.Image, prompt: str):
    state, boxes = detect(image, prompt)
    results = []
    for box in boxes:
        masks, scores, logits = model.predict_inst(state, box=box[None, :], multimask_output=False)
        results.append((masks[0], scores[0], logits[0]))
    return results


def refine_batch(images, prompts):
    states, boxes = zip(*(detect(im, p) for im, p in zip(images, prompts)))
    masks_b, scores_b, _ = model.predict_inst_batch(list(states), box_batch=list(boxes), multimask_output=False)
    return masks_b, scores_b


def paint(image: Image.Image, results, alpha=0.5):
    canvas = np.array(image.convert("RGB")).astype(np.float32)
    rng = np.random.default_rng(0)
    for mask, score, _ in results:
        color = rng.integers(0, 255, 3)
        canvas[mask] = canvas[mask] * (1 - alpha) + color * alpha  # expect: ndarray[mask]
        ys, xs = mask.nonzero()  # expect: .nonzero()
        cv2.putText(canvas, f"{score:.2f}", (int(xs.min()), int(ys.min())),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return Image.fromarray(canvas.astype(np.uint8))


def cutouts(image: Image.Image, results):
    rgb = np.asarray(image.convert("RGB"))
    return [Image.fromarray((m[..., None] * rgb).astype(np.uint8)) for m, _, _ in results]  # expect: mask * ndarray


def masks_summary(masks_b, scores_b):
    rows = []
    for i, (masks, scores) in enumerate(zip(masks_b, scores_b)):
        areas = np.sum(masks, axis=(-2, -1))  # expect: np.sum()
        rows.append({"image": i, "n": len(masks),
                     "mean_score": float(scores.mean()) if len(scores) else 0.0,
                     "areas": areas.ravel().tolist()})
    return rows


def click_to_mask(image: Image.Image, xy):
    state = processor.set_image(image)
    pts = np.array([xy], dtype=np.float32)
    masks, scores, logits = model.predict_inst(state, point_coords=pts, point_labels=np.array([1]),
                                               multimask_output=True)
    order = torch.argsort(scores, descending=True)
    masks, scores, logits = masks[order], scores[order], logits[order]
    # second pass from the best low-resolution logits
    masks2, scores2, _ = model.predict_inst(state, point_coords=pts, point_labels=np.array([1]),
                                            mask_input=logits[:1], multimask_output=False)
    return masks2[0], float(scores2[0])


if __name__ == "__main__":
    img = Image.open(sys.argv[1])
    res = refine(img, sys.argv[2])
    paint(img, res).save("instances.png")
    for i, c in enumerate(cutouts(img, res)):
        c.save(f"cutout_{i}.png")
    mask, score = click_to_mask(img, (int(sys.argv[3]), int(sys.argv[4])))
    Image.fromarray(mask).save(f"click_{score:.2f}.png")  # expect: PIL.Image.fromarray()
    print(masks_summary(*refine_batch([img], [sys.argv[2]])))
