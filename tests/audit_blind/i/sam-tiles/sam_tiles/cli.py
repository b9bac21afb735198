"""Dense point-grid mask proposals for large image folders, written to HDF5.

    sam-tiles run ./images proposals.h5 --family mobile --checkpoint mobile_sam.pt
"""
import asyncio
import functools
import json
from pathlib import Path
from typing import List, Optional

import click
import cv2
import numpy as np
import samgpu_shim  # noqa: F401
import torch

from .store import MaskStore

REGISTRIES = {
    "hq": ("segment_anything_hq", "vit_l"),
    "mobile": ("mobile_sam", "vit_t"),
}


class NumpyEncoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        return super().default(o)


def build_predictor(family: str, checkpoint: str, device: str):
    module_name, model_type = REGISTRIES[family]
    module = __import__(module_name)
    sam = module.sam_model_registry[model_type](checkpoint=checkpoint).to(device).eval()
    return module.SamPredictor(sam)


def grid_points(h: int, w: int, step: int) -> np.ndarray:
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


async def infer_image(predictor, lock: asyncio.Lock, image: np.ndarray, points: np.ndarray):
    """The predictor holds one image embedding, so calls are serialised with a lock
    and pushed to a thread to keep the event loop free for I/O."""
    loop = asyncio.get_running_loop()
    async with lock:
        await loop.run_in_executor(None, predictor.set_image, image)
        results = []
        for pt in points:
            call = functools.partial(
                predictor.predict,
                point_coords=pt[None],
                point_labels=np.array([1]),
                multimask_output=False,
            )
            masks, scores, _ = await loop.run_in_executor(None, call)
            results.append((pt, masks[0], scores[0]))
    return results


async def load_images(paths: List[Path], queue: asyncio.Queue, size: int):
    loop = asyncio.get_running_loop()
    for p in paths:
        image = await loop.run_in_executor(None, cv2.imread, str(p))
        image = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA)
        await queue.put((p.stem, image))
    await queue.put(None)


async def consume(queue, predictor, store: MaskStore, step: int, min_score: float, min_area: int,
                  preview_dir: Optional[Path], summary: dict):
    lock = asyncio.Lock()
    while True:
        item = await queue.get()
        if item is None:
            break
        name, image = item
        results = await infer_image(predictor, lock, image, grid_points(*image.shape[:2], step))
        kept = [(pt, m, s) for pt, m, s in results if s >= min_score and m.sum() >= min_area]
        kept.sort(key=lambda r: r[2], reverse=True)
        store.add(name, kept)
        summary[name] = [s for _, _, s in kept]

        if preview_dir is not None:
            preview = image.copy()
            rng = np.random.default_rng(0)
            for _, m, _ in kept:
                preview[m] = rng.integers(0, 255, size=3)  # expect: ndarray setitem
            cv2.imwrite(str(preview_dir / f"{name}.jpg"), cv2.cvtColor(preview, cv2.COLOR_RGB2BGR))

        if kept:
            click.echo(f"{name}: {len(kept)} masks, best {max(s for _, _, s in kept):.3f}")
        else:
            click.echo(f"{name}: nothing above {min_score}")


@click.group()
def cli():
    pass


@cli.command()
@click.argument("image_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--family", type=click.Choice(sorted(REGISTRIES)), default="mobile")
@click.option("--checkpoint", required=True)
@click.option("--size", default=1024, show_default=True)
@click.option("--step", default=64, show_default=True, help="grid spacing in pixels")
@click.option("--min-score", default=0.88, show_default=True)
@click.option("--min-area", default=100, show_default=True)
@click.option("--preview-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def run(image_dir, output, family, checkpoint, size, step, min_score, min_area, preview_dir):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictor = build_predictor(family, checkpoint, device)
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".tif"})
    if preview_dir is not None:
        preview_dir.mkdir(parents=True, exist_ok=True)

    summary = {}

    async def pipeline():
        queue: asyncio.Queue = asyncio.Queue(maxsize=4)
        with MaskStore(str(output), size, size) as store:
            await asyncio.gather(
                load_images(paths, queue, size),
                consume(queue, predictor, store, step, min_score, min_area, preview_dir, summary),
            )

    asyncio.run(pipeline())
    with open(output.with_suffix(".summary.json"), "w") as fh:
        json.dump(summary, fh, cls=NumpyEncoder, indent=1)  # expect: json.dump
    click.echo(f"done: {sum(len(v) for v in summary.values())} masks from {len(summary)} images")


if __name__ == "__main__":
    cli()
