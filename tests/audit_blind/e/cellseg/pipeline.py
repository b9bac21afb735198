"""Plate-level batch runner: one SAM per worker process, wells fanned out with a Pool.

    python -m cellseg.pipeline /data/plates/P0193 --out /scratch/P0193 --gpus 0,1
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from labkit import qc as labkit_qc
from segment_anything import SamAutomaticMaskGenerator

from .engine import find_seeds, open_predictor, segment_field, to_rgb
from .measure import area_summary, measure_cells, write_label_stack, write_overlay_png

log = logging.getLogger("cellseg.pipeline")

_STACK: ExitStack | None = None
_SAM = None
_OUT: Path | None = None


def _init_worker(checkpoint: str, gpus: list, counter, out_dir: str) -> None:
    global _STACK, _SAM, _OUT
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    _STACK = ExitStack()
    _SAM = _STACK.enter_context(open_predictor(checkpoint, device=f"cuda:{gpus[slot % len(gpus)]}"))
    _OUT = Path(out_dir)


def _process_well(path: Path):
    stem = path.stem
    img = tifffile.imread(path)  # (C, H, W) uint16: DAPI, GFP, brightfield
    dapi, gfp = img[0], img[1]
    rgb = to_rgb(gfp)
    seeds = find_seeds(dapi)
    _SAM.set_image(rgb)

    qc = {"well": stem, "n_seeds": len(seeds)}

    # confluence: one box over the whole field, single mask
    h, w = rgb.shape[:2]
    fg, _, _ = _SAM.predict(box=np.array([0, 0, w - 1, h - 1]), multimask_output=False)
    confluence = fg[0].mean()  # expect: bool_t.mean
    qc["confluence"] = float(confluence)
    qc["debris"] = labkit_qc.debris_fraction(fg[0], rgb)  # expect: unscanned labkit_qc.debris_fraction

    if not seeds:
        # empty / out-of-focus well: fall back to automatic masks to tell the two apart
        amg = SamAutomaticMaskGenerator(_SAM.model, points_per_side=16, pred_iou_thresh=0.9)
        anns = amg.generate(rgb)
        qc["amg_masks"] = len(anns)
        qc["amg_coverage"] = float(np.any([a["segmentation"] for a in anns], axis=0).mean()) if anns else 0.0
        qc["amg_best_iou"] = max((a["predicted_iou"] for a in anns), default=0.0)
        return pd.DataFrame(), qc

    cells = list(segment_field(_SAM, rgb, seeds))
    table = measure_cells(cells, gfp)
    table.insert(0, "well", stem)
    write_label_stack(_OUT / f"{stem}_cells.tif", cells, rgb.shape[:2])
    write_overlay_png(_OUT / f"{stem}_overlay.png", rgb, cells)

    qc["n_cells"] = len(cells)
    qc.update(area_summary(cells))
    if cells:
        best = max(cells, key=lambda c: c.score)
        qc["best_score"] = round(best.score, 3)  # expect: round
        qc["mean_score"] = float(np.mean([c.score for c in cells]))  # expect: np.mean
    return table, qc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("plate", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--checkpoint", default="weights/sam_vit_b_01ec64.pth")
    ap.add_argument("--gpus", default="0")
    ap.add_argument("--procs-per-gpu", type=int, default=2)
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    wells = sorted(args.plate.glob("*.tif"))
    gpus = [int(g) for g in args.gpus.split(",")]
    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)

    frames, qcs = [], []
    with ctx.Pool(
        processes=len(gpus) * args.procs_per_gpu,
        initializer=_init_worker,
        initargs=(args.checkpoint, gpus, counter, str(args.out)),
    ) as pool:
        for table, qc in pool.imap_unordered(_process_well, wells, chunksize=1):
            log.info("%s: %s cells", qc["well"], qc.get("n_cells", 0))
            frames.append(table)
            qcs.append(qc)

    pd.concat(frames, ignore_index=True).to_parquet(args.out / "cells.parquet")
    (args.out / "qc.json").write_text(json.dumps(qcs, indent=2))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
