#!/usr/bin/env python
"""NoC@85 / NoC@90 evaluation of SAM-family predictors.

    python run_noc_eval.py --dataset GrabCut --model sam --max-clicks 20 \
        --out runs/noc_sam_vith --debug-every 10

Datasets are expected in the RITM layout (images/ + masks/).
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from evalkit import ClickSimulator, build_predictor, mask_iou, summarize_noc, to_numpy
from evalkit.clicks import first_click_from_gt
from evalkit.metrics import db_eval_iou
from evalkit.vis import draw_clicks, draw_contours, iou_curve_plot, save_debug_panel

log = logging.getLogger("noc")

DATASETS = {
    "GrabCut": ("data/GrabCut/data_GT", "data/GrabCut/boundary_GT", ".bmp"),
    "Berkeley": ("data/Berkeley/images", "data/Berkeley/masks", ".png"),
    "DAVIS": ("data/DAVIS345/img", "data/DAVIS345/gt", ".png"),
}


@dataclass
class Sample:
    name: str
    image: Union[str, np.ndarray]
    mask: Union[str, np.ndarray]

    def load(self) -> "Sample":
        # lazily replace the paths by the arrays, the list of samples is long
        if isinstance(self.image, str):
            self.image = cv2.cvtColor(cv2.imread(self.image), cv2.COLOR_BGR2RGB)
        if isinstance(self.mask, str):
            self.mask = np.array(Image.open(self.mask))
        return self

    @property
    def gt(self) -> np.ndarray:
        return (self.mask > 127) if self.mask.max() > 1 else self.mask.astype(bool)


def list_samples(dataset: str, limit: Optional[int] = None) -> List[Sample]:
    img_root, gt_root, ext = DATASETS[dataset]
    img_dir, gt_dir = Path(img_root), Path(gt_root)
    samples = []
    for gt_path in sorted(gt_dir.glob(f"*{ext}")):
        img_path = next(iter(img_dir.glob(gt_path.stem + ".*")), None)
        if img_path is None:
            log.warning("no image for %s", gt_path.name)
            continue
        samples.append(Sample(gt_path.stem, str(img_path), str(gt_path)))
    return samples[:limit] if limit else samples


def run_sample(engine, sample: Sample, max_clicks: int = 20, iou_stop: float = 1.01,
               debug_dir: Optional[Path] = None, feed_logits: bool = True) -> List[float]:
    sample.load()
    engine.set_image(sample.image)
    sim = ClickSimulator(sample.gt)

    pred = np.zeros(sample.mask.shape[:2], dtype=bool)
    prev_logits = None
    ious: List[float] = []
    click_log = []
    for k in range(max_clicks):
        sim.next_click(pred)
        coords, labels = sim.as_prompt()
        masks, scores, logits = engine.predict(
            point_coords=coords,
            point_labels=labels,
            mask_input=prev_logits,
            multimask_output=(k == 0),
        )
        best = scores.argmax()
        pred = masks[best]
        if feed_logits:
            prev_logits = logits[best][None, :, :]

        ious.append(mask_iou(pred, sim.gt))
        click_log.append({"click": k + 1, "iou": ious[-1], "score": scores[best]})
        fg_pct = 100.0 * pred.sum() / pred.size  # expect: size
        log.debug("%s click %d: iou=%.3f fg=%.2f%%", sample.name, k + 1, ious[-1], fg_pct)

        if debug_dir is not None and k in (0, 4, 9, max_clicks - 1):
            vis = draw_clicks(draw_contours(sample.image, pred), sim.clicks)
            cv2.imwrite(str(debug_dir / f"{sample.name}_c{k + 1:02d}.jpg"), vis[..., ::-1])
        if ious[-1] >= iou_stop:
            break

    if debug_dir is not None:
        with open(debug_dir / f"{sample.name}_clicks.json", "w") as fh:
            json.dump(click_log, fh, indent=1)  # expect: json.dump
        final = to_numpy(pred)
        cv2.imwrite(str(debug_dir / f"{sample.name}_final.png"), final.astype(np.uint8) * 255)
        np.save(debug_dir / f"{sample.name}_logits.npy", prev_logits)  # expect: np.save
    # RITM convention: a sample that stopped early keeps its last IoU
    return ious + [ious[-1]] * (max_clicks - len(ious))


def first_click_oracle(engine, sample: Sample, debug_dir: Optional[Path] = None) -> dict:
    """How much do we lose by trusting SAM's own IoU head on the first click?"""
    sample.load()
    engine.set_image(sample.image)
    click = first_click_from_gt(sample.gt)
    ask3 = functools.partial(engine.predict, point_labels=np.array([1]), multimask_output=True)
    masks, scores, _ = ask3(point_coords=np.array([click.xy], dtype=np.float32))

    ious = [mask_iou(m, sample.gt) for m in masks]
    chosen = int(scores.argmax())
    if debug_dir is not None:
        save_debug_panel(sample.image, masks, scores, str(debug_dir / f"{sample.name}_multi.png"),
                         title=f"oracle {max(ious):.3f} / chosen {ious[chosen]:.3f}")
    return {
        "name": sample.name,
        "oracle_iou": max(ious),
        "chosen_iou": ious[chosen],
        "scores": np.round(scores, 4).tolist(),  # expect: np.round
        "gap": max(ious) - ious[chosen],
    }


def first_click_batch(sam2_predictor, samples: List[Sample], batch_size: int = 8) -> List[dict]:
    """SAM 2 only: first-click IoU for a whole batch of images at once."""
    rows = []
    for i in range(0, len(samples), batch_size):
        chunk = [s.load() for s in samples[i:i + batch_size]]
        sam2_predictor.set_image_batch([s.image for s in chunk])
        clicks = [first_click_from_gt(s.gt) for s in chunk]
        masks_b, scores_b, _ = sam2_predictor.predict_batch(
            point_coords_batch=[np.array([c.xy], dtype=np.float32) for c in clicks],
            point_labels_batch=[np.array([1], dtype=np.int32)] * len(chunk),
            multimask_output=False,
        )
        for s, m, sc in zip(chunk, masks_b, scores_b):
            score = np.float32(sc[0])  # expect: np.float32
            rows.append({"name": s.name, "iou": db_eval_iou(s.gt, m[0]), "score": score})
    return rows


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="GrabCut", choices=sorted(DATASETS))
    ap.add_argument("--model", default="sam", choices=["sam", "hq", "mobile", "effvit", "sam2"])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--no-logits", action="store_true", help="do not feed previous logits back")
    ap.add_argument("--oracle", action="store_true")
    ap.add_argument("--batch-first-click", action="store_true", help="SAM 2 only")
    ap.add_argument("--debug-every", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/noc"))
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    dbg = args.out / "debug"
    dbg.mkdir(exist_ok=True)

    engine = build_predictor(args.model, checkpoint=args.checkpoint)
    samples = list_samples(args.dataset, args.limit)

    results = []
    t0 = time.perf_counter()
    for i, s in enumerate(tqdm(samples, desc=f"{args.dataset}/{args.model}")):
        want_dbg = args.debug_every and i % args.debug_every == 0
        curve = run_sample(engine, s, args.max_clicks, debug_dir=dbg if want_dbg else None,
                           feed_logits=not args.no_logits)
        results.append((s.name, curve))
    elapsed = time.perf_counter() - t0

    names, curves = zip(*results)
    summary = summarize_noc(curves, max_clicks=args.max_clicks)
    summary["sec_per_sample"] = elapsed / max(len(samples), 1)
    summary.update(engine.stats())
    log.info("%s", json.dumps(summary))

    miou = np.mean(np.asarray(curves, dtype=np.float64), axis=0)
    iou_curve_plot([miou], [args.model], str(args.out / "miou_curve.png"))
    with open(args.out / "summary.json", "w") as f:
        json.dump({"summary": summary, "per_sample": dict(zip(names, curves))}, f, indent=2)

    if args.batch_first_click and args.model == "sam2":
        fc = first_click_batch(engine.inner, samples)
        log.info("batched first-click mIoU %.4f (mean pred IoU %.4f)",
                 np.mean([r["iou"] for r in fc]), np.mean([r["score"] for r in fc]))

    if args.oracle:
        rows = list(map(functools.partial(first_click_oracle, engine, debug_dir=dbg), samples))
        with open(args.out / "oracle.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        gaps = np.array([r["gap"] for r in rows])
        log.info("oracle gap: mean %.4f, >0.05 in %d/%d", gaps.mean(), (gaps > 0.05).sum(), len(gaps))


if __name__ == "__main__":
    main()
