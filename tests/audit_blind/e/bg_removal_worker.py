"""Catalogue cut-out worker.

Pulls jobs from SQS (``{"sku": ..., "bucket": ..., "key": ..., "options": {...}}``),
downloads the product shot from S3, finds the product with the detector, cuts it out
with SAM-HQ and uploads a transparent PNG plus a white-background JPEG.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import time

import boto3
import cv2
import numpy as np
from PIL import Image
from segment_anything_hq import SamPredictor, sam_model_registry
from shopcore.imaging import log_debug_mask
from ultralytics import YOLO

log = logging.getLogger("cutout")

QUEUE_URL = os.environ.get("CUTOUT_QUEUE_URL", "")
RESULT_QUEUE_URL = os.environ.get("CUTOUT_RESULT_QUEUE_URL", "")
OUT_BUCKET = os.environ.get("CUTOUT_BUCKET", "catalogue-cutouts")
SAM_CKPT = os.environ.get("SAM_HQ_CKPT", "/models/sam_hq_vit_h.pth")


class LowConfidence(Exception):
    pass


class CutoutWorker:
    def __init__(self, device: str = "cuda"):
        self.s3 = boto3.client("s3")
        self.sqs = boto3.client("sqs")
        model = sam_model_registry["vit_h"](checkpoint=SAM_CKPT)
        self._sam = SamPredictor(model.to(device))
        self.detector = YOLO("/models/product-det-v5.pt")
        self._stop = False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, *_):
        log.info("SIGTERM: finishing current job")
        self._stop = True

    # ---------------------------------------------------------------- io
    def _load_image(self, bucket: str, key: str) -> np.ndarray:
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return np.array(Image.open(io.BytesIO(body)).convert("RGB"))

    def _load_manual_mask(self, ref):
        """``options.manual_mask`` is either an S3 key of a retoucher's PNG or an inline RLE list."""
        if isinstance(ref, str):
            body = self.s3.get_object(Bucket=OUT_BUCKET, Key=ref)["Body"].read()
            return np.array(Image.open(io.BytesIO(body)).convert("L")) > 127
        flat = np.concatenate([np.full(n, i % 2, dtype=bool) for i, n in enumerate(ref["counts"])])
        return flat.reshape(ref["size"], order="F")

    def _put(self, key: str, data: bytes, content_type: str, meta: dict) -> None:
        self.s3.put_object(Bucket=OUT_BUCKET, Key=key, Body=data, ContentType=content_type, Metadata=meta)

    # ------------------------------------------------------------ vision
    def _product_box(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        res = self.detector.predict(image, conf=0.25, verbose=False)[0]
        boxes = res.boxes.xyxy.cpu().numpy()
        confs = res.boxes.conf.cpu().numpy()
        if len(boxes) == 0:
            return np.array([0, 0, w - 1, h - 1], dtype=np.float32)
        return boxes[int(np.argmax(confs))]

    @staticmethod
    def _largest_component(mask):
        n, cc, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)  # expect: astype
        if n <= 2:
            return cc > 0
        keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        return cc == keep

    @staticmethod
    def _feather(mask, radius: int) -> np.ndarray:
        alpha = np.where(mask, 255, 0).astype(np.uint8)  # expect: np.where
        if radius > 0:
            k = 2 * radius + 1
            alpha = cv2.GaussianBlur(alpha, (k, k), 0)
        return alpha

    def _cutout(self, image: np.ndarray, opts: dict):
        if opts.get("manual_mask") is not None:
            mask = self._load_manual_mask(opts["manual_mask"])
            return self._feather(mask, opts.get("feather", 2)), mask, 1.0

        box = self._product_box(image)
        self._sam.set_image(image)
        masks, scores, _ = self._sam.predict(box=box[None, :], multimask_output=False, hq_token_only=True)
        score = scores[0]
        if score < opts.get("min_score", 0.80):
            raise LowConfidence(f"sam score {score:.2f} below threshold")
        fill = masks[0].sum() / masks[0].size  # expect: t.size
        if fill < 0.02:
            raise LowConfidence(f"product covers only {fill:.1%} of the frame")

        mask = masks[0]
        if opts.get("despeckle", True):
            mask = self._largest_component(mask)
        alpha = self._feather(mask, radius=opts.get("feather", 2))
        if opts.get("debug"):
            log_debug_mask(opts.get("sku", "?"), masks[0])  # expect: unscanned log_debug_mask
        return alpha, masks[0], score

    # -------------------------------------------------------------- job
    def handle(self, job: dict) -> None:
        opts = job.get("options", {})
        opts.setdefault("sku", job["sku"])
        image = self._load_image(job["bucket"], job["key"])
        alpha, mask, score = self._cutout(image, opts)

        rgba = np.dstack([image, alpha])
        ys, xs = np.nonzero(mask)  # expect: np.nonzero
        pad = int(0.04 * max(image.shape[:2]))
        y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad, image.shape[0] - 1)
        x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad, image.shape[1] - 1)

        png = io.BytesIO()
        Image.fromarray(rgba[y0 : y1 + 1, x0 : x1 + 1], "RGBA").save(png, "PNG", optimize=True)
        self._put(f"{job['sku']}/cutout.png", png.getvalue(), "image/png", {"sam-score": f"{float(score):.4f}"})

        white = np.full_like(image, 255)
        comp = np.where(mask[..., None], image, white)  # expect: np.where
        jpg = io.BytesIO()
        Image.fromarray(comp[y0 : y1 + 1, x0 : x1 + 1]).save(jpg, "JPEG", quality=92)
        self._put(f"{job['sku']}/white.jpg", jpg.getvalue(), "image/jpeg", {})

        result = {"sku": job["sku"], "score": score, "bbox": [x0, y0, x1, y1], "ts": time.time()}
        self.sqs.send_message(QueueUrl=RESULT_QUEUE_URL, MessageBody=json.dumps(result))  # expect: json.dumps

    def run_forever(self) -> None:
        while not self._stop:
            resp = self.sqs.receive_message(QueueUrl=QUEUE_URL, MaxNumberOfMessages=1, WaitTimeSeconds=20)
            for msg in resp.get("Messages", []):
                try:
                    self.handle(json.loads(msg["Body"]))
                except LowConfidence as exc:
                    log.warning("job %s needs manual retouch: %s", msg["MessageId"], exc)
                except Exception:
                    log.exception("job %s failed", msg["MessageId"])
                    continue
                self.sqs.delete_message(QueueUrl=QUEUE_URL, ReceiptHandle=msg["ReceiptHandle"])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    CutoutWorker().run_forever()
