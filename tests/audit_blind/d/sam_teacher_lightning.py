"""Box-supervised semantic segmentation: a small U-Net student trained on SAM 3
pseudo-labels generated on the fly from the detection boxes of the dataset.

The teacher is only ever run under ``torch.no_grad`` and is never moved to the
optimiser; pseudo-labels are cached per image id after the first epoch.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
import wandb
from PIL import Image


class PseudoLabelCache:
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)

    def _path(self, key: str) -> str:
        return os.path.join(self.root, f"{key}.npz")

    def get(self, key: str) -> Optional[Tuple[np.ndarray, np.ndarray, float]]:
        p = self._path(key)
        if not os.path.exists(p):
            return None
        d = np.load(p)
        return d["sem"], d["logits"], float(d["conf"])

    def put(self, key: str, sem: np.ndarray, logits: np.ndarray, conf: float) -> None:
        np.savez_compressed(self._path(key), sem=sem, logits=logits, conf=np.float32(conf))


class BoxDistillModule(pl.LightningModule):
    def __init__(self, encoder: str = "resnet34", lr: float = 3e-4, kd_weight: float = 0.5,
                 cache_dir: str = "cache/sam3_pseudo", bpe_path: Optional[str] = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.student = smp.Unet(encoder, encoder_weights="imagenet", classes=1)
        self.cache = PseudoLabelCache(cache_dir)
        self._sam3 = None
        self._processor = None

    # ----------------------------------------------------------- teacher
    def teacher(self):
        if self._sam3 is None:
            from sam3 import build_sam3_image_model
            from sam3.model.sam3_image_processor import Sam3Processor

            self._sam3 = build_sam3_image_model(bpe_path=self.hparams.bpe_path,
                                                enable_inst_interactivity=True).to(self.device).eval()
            self._processor = Sam3Processor(self._sam3)
        return self._sam3, self._processor

    @torch.no_grad()
    def pseudo_labels(self, images: List[np.ndarray], boxes: List[np.ndarray], keys: List[str]):
        sems, kd_logits, confs = [], [], []
        for img, bxs, key in zip(images, boxes, keys):
            hit = self.cache.get(key)
            if hit is not None:
                sem, lr, conf = hit
                sems.append(torch.from_numpy(sem).float())
                kd_logits.append(torch.from_numpy(lr).float())
                confs.append(conf)
                continue
            sam3, proc = self.teacher()
            state = proc.set_image(Image.fromarray(img))
            layers, lowres, scores = [], [], []
            for b in bxs:
                m, s, lr = sam3.predict_inst(state, box=b[None, :], multimask_output=False)
                layers.append(torch.as_tensor(m[0], device=self.device))
                lowres.append(torch.from_numpy(lr[0]).to(self.device))  # expect: torch.from_numpy
                scores.append(float(s[0]))
            h, w = img.shape[:2]
            if layers:
                sem = torch.stack(layers).any(0).float()
                lr_max = torch.stack(lowres).amax(0)
                conf = min(scores)
            else:
                sem = torch.zeros(h, w, device=self.device)
                lr_max = torch.full((256, 256), -20.0, device=self.device)
                conf = 1.0
            self.cache.put(key, sem.cpu().numpy().astype(np.uint8), lr_max.cpu().numpy(), conf)
            sems.append(sem.cpu())
            kd_logits.append(lr_max.cpu())
            confs.append(conf)
        return (torch.stack(sems)[:, None].to(self.device),
                torch.stack(kd_logits)[:, None].to(self.device),
                torch.tensor(confs, device=self.device))

    # ---------------------------------------------------------- training
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def _loss(self, logits: torch.Tensor, sem: torch.Tensor, kd: torch.Tensor, conf: torch.Tensor) -> Dict[str, torch.Tensor]:
        w = conf.clamp(0.3, 1.0)[:, None, None, None]
        bce = (F.binary_cross_entropy_with_logits(logits, sem, reduction="none") * w).mean()
        small = F.interpolate(logits, size=kd.shape[-2:], mode="bilinear", align_corners=False)
        kd_loss = F.mse_loss(torch.sigmoid(small), torch.sigmoid(kd))
        inter = (torch.sigmoid(logits) * sem).sum((1, 2, 3))
        dice = 1 - (2 * inter + 1) / (torch.sigmoid(logits).sum((1, 2, 3)) + sem.sum((1, 2, 3)) + 1)
        return {"bce": bce, "kd": kd_loss, "dice": dice.mean(),
                "loss": bce + dice.mean() + self.hparams.kd_weight * kd_loss}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        sem, kd, conf = self.pseudo_labels(batch["image_uint8"], batch["boxes"], batch["key"])
        losses = self._loss(self(batch["image"]), sem, kd, conf)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(conf))
        self.log("train/teacher_conf", conf.mean(), batch_size=len(conf))
        return losses["loss"]

    def validation_step(self, batch, batch_idx: int) -> None:
        logits = self(batch["image"])
        pred = (logits > 0).float()
        gt = batch["mask"].float()
        inter = (pred * gt).sum((1, 2, 3))
        union = ((pred + gt) > 0).float().sum((1, 2, 3)).clamp_min(1)
        self.log("val/iou", (inter / union).mean(), prog_bar=True, batch_size=len(gt))
        if batch_idx == 0 and isinstance(self.logger, pl.loggers.WandbLogger):
            self._log_examples(batch, pred)

    def _log_examples(self, batch, pred: torch.Tensor, n: int = 4) -> None:
        sam3, proc = self.teacher()
        panels = []
        for i in range(min(n, len(pred))):
            img = batch["image_uint8"][i]
            state = proc.set_image(Image.fromarray(img))
            masks = [sam3.predict_inst(state, box=b[None, :], multimask_output=False)[0][0]
                     for b in batch["boxes"][i]]
            teacher = np.zeros(img.shape[:2], np.uint8)
            for k, m in enumerate(masks, start=1):
                teacher[m] = k  # expect: ndarray bool index
            panels.append(wandb.Image(img, masks={
                "teacher": {"mask_data": teacher},
                "student": {"mask_data": pred[i, 0].byte().cpu().numpy()},
                "gt": {"mask_data": batch["mask"][i, 0].byte().cpu().numpy()},
            }))
        self.logger.experiment.log({"val/examples": panels})

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.student.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,
                                                    total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
