"""A small HTTP service around SAM."""

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
predictor = None


class Req(BaseModel):
    points: list
    labels: list


@app.post("/segment")
async def segment(req: Req):
    masks, scores, _ = predictor.predict(point_coords=np.array(req.points), point_labels=np.array(req.labels))
    best = int(scores.argmax())
    mask = masks[best]
    ys, xs = np.where(mask)  # expect: np.where()
    return {
        "score": float(scores[best]),
        "bbox": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())],
        "area": int(mask.sum()),
    }
