"""A one-shot personalisation loop, shaped like published SAM personalisation code (rewritten)."""

import cv2
import matplotlib.pyplot as plt
import numpy as np


def show_mask(mask, ax, random_color=False):
    if random_color:
        color = np.concatenate([np.random.random(3), np.array([0.6])], axis=0)
    else:
        color = np.array([30 / 255, 144 / 255, 255 / 255, 0.6])
    h, w = mask.shape[-2:]
    mask_image = mask.reshape(h, w, 1) * color.reshape(1, 1, -1)  # expect: mask * ndarray
    ax.imshow(mask_image)


def segment_target(predictor, test_image, topk_xy, topk_label, out_path):
    predictor.set_image(test_image)
    masks, scores, logits = predictor.predict(point_coords=topk_xy, point_labels=topk_label, multimask_output=False)
    best_idx = 0
    masks, scores, logits = predictor.predict(
        point_coords=topk_xy,
        point_labels=topk_label,
        mask_input=logits[best_idx : best_idx + 1, :, :],
        multimask_output=True,
    )
    best_idx = np.argmax(scores)  # expect: np.argmax()
    y, x = np.nonzero(masks[best_idx])  # expect: np.nonzero()
    x_min, x_max = x.min(), x.max()
    y_min, y_max = y.min(), y.max()
    input_box = np.array([x_min, y_min, x_max, y_max])
    masks, scores, logits = predictor.predict(
        point_coords=topk_xy,
        point_labels=topk_label,
        box=input_box[None, :],
        mask_input=logits[best_idx : best_idx + 1, :, :],
        multimask_output=True,
    )
    best_idx = np.argmax(scores)  # expect: np.argmax()
    plt.figure(figsize=(10, 10))
    plt.imshow(test_image)
    show_mask(masks[best_idx], plt.gca())
    plt.axis("off")
    plt.savefig(out_path.replace(".png", "_vis.png"))
    final_mask = masks[best_idx]
    mask_colors = np.zeros((final_mask.shape[0], final_mask.shape[1], 3), dtype=np.uint8)
    mask_colors[final_mask, :] = np.array([[0, 0, 128]])  # expect: ndarray[mask] = v
    cv2.imwrite(out_path, mask_colors)
