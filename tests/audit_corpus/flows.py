"""Small data-flow cases, one per function (a line that must be reported ends with its operations)."""

import json

import numpy as np
import torch


def starred_and_conditional(predictor, pts, lbls, use_first):
    masks, *rest = predictor.predict(point_coords=pts, point_labels=lbls)
    logits = rest[-1]
    chosen = masks[0] if use_first else masks[-1]
    area = np.count_nonzero(chosen)  # expect: np.count_nonzero()
    peak = np.max(logits)  # expect: np.max()
    return area, peak


def comprehension_and_generator(sam_predictor, boxes):
    results = [sam_predictor.predict(box=b, multimask_output=False) for b in boxes]
    areas = [np.sum(m) for m, _, _ in results]  # expect: np.sum()
    best = max(s[0] for _, s, _ in results)
    text = json.dumps({"best": best})  # expect: json.dumps()
    return areas, text


def branch_keeps_taint(predictor, pts, lbls, squeeze):
    masks, scores, _ = predictor.predict(pts, lbls)
    if squeeze:
        masks = np.squeeze(masks)
    else:
        masks = masks[0]
    return np.where(masks)  # expect: np.where()


def rebind_both_branches_clears(predictor, pts, lbls, flag):
    masks, scores, _ = predictor.predict(pts, lbls)
    if flag:
        masks = np.zeros((4, 4))
    else:
        masks = np.ones((4, 4))
    return np.where(masks)


def containers(predictor, prompts):
    kept = []
    for p in prompts:
        m, s, _ = predictor.predict(point_coords=p, point_labels=np.ones(1))
        kept.append(m[0])
    stacked = np.stack(kept)  # expect: np.stack()
    as_array = np.array(kept)  # expect: np.array()
    on_device = torch.stack(kept)
    return stacked, as_array, on_device


def dict_keys(predictor, box):
    out = {}
    masks, scores, _ = predictor.predict(box=box)
    out["mask"] = masks[0]
    out["count"] = 3
    record = {"score": scores[0], "label": "lesion"}
    ok = json.dumps({"count": out["count"], "label": record["label"]})
    bad = json.dumps(record)  # expect: json.dumps()
    cells = np.argwhere(out["mask"])  # expect: np.argwhere()
    return ok, bad, cells


def tuple_packing(predictor, pts, lbls):
    pair = predictor.predict(pts, lbls)[:2]
    masks, scores = pair
    best = int(scores.argmax())
    grid = np.zeros((8, 8))
    labels = ["a", "b", "c"]
    name = labels[scores.argmax()]
    grid[masks[best]] = 1  # expect: ndarray[mask] = v
    return grid, name


def walrus_and_while(predictor, pts, lbls):
    tries = 0
    while (out := predictor.predict(pts, lbls))[1].max() < 0.5 and tries < 3:
        tries += 1
    masks = out[0]
    return masks.astype(np.uint8)  # expect: .astype()


def silent_changes(predictor, pts, lbls):
    masks, scores, _ = predictor.predict(pts, lbls)
    ys, xs = masks[0].nonzero()  # expect: .nonzero()
    total = np.size(masks)  # expect: np.size()
    ratio = masks[0].sum() / masks[0].size  # expect: .size
    if masks.dtype == np.bool_:  # runs (always False on a tensor): not where it breaks
        ratio = 1.0
    return ys, xs, total, ratio


def tensor_safe(predictor, pts, lbls):
    # Nothing here breaks on CUDA tensors: no finding.
    masks, scores, logits = predictor.predict(pts, lbls)
    masks = np.squeeze(masks)
    shape = np.shape(masks)
    best = masks[scores.argmax(dim=0, keepdim=True)][0]
    ys, xs = best.nonzero(as_tuple=True)
    box = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()])
    area = best.sum()
    overlay = best.to(torch.uint8) * 255
    small = torch.nn.functional.interpolate(logits[None], scale_factor=0.5)
    host = masks.cpu().numpy()
    count = np.count_nonzero(host)
    score = float(scores.max())
    text = json.dumps({"score": score, "count": int(count), "shape": list(shape)})
    return box, area, overlay, small, text, len(masks), masks.shape[0]


def sampler_is_not_sam(sampler, sample_model, x):
    # Receivers are matched as whole words: neither is a SAM predictor.
    a = sampler.predict(x)
    b = sample_model.predict(x)
    return np.argmax(a), np.argmax(b)


def explicit_numpy(predictor, pts, lbls):
    masks, scores, _ = predictor.predict(pts, lbls, as_numpy=True)
    return masks[np.argmax(scores)].astype(np.uint8)
