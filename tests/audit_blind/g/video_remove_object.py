"""Remove an object from a short clip.

1. SAM 2 image predictor on frame 0 with a user box (sharper than the video model)
2. SAM 2 video predictor propagates that mask through the clip
3. every frame is inpainted (OpenCV Telea, or big-lama if --lama is given)

usage: python video_remove_object.py clip.mp4 --box 320 180 520 460 --out clean.mp4 [--lama big-lama.pt]
"""
import argparse
import functools
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from sam2.build_sam import build_sam2, build_sam2_video_predictor
from sam2.sam2_image_predictor import SAM2ImagePredictor

CFG = "configs/sam2.1/sam2.1_hiera_b+.yaml"
CKPT = "checkpoints/sam2.1_hiera_base_plus.pt"


def extract_frames(video_path, out_dir):
    cap = cv2.VideoCapture(str(video_path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    paths = []
    idx = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        p = os.path.join(out_dir, f"{idx:05d}.jpg")
        cv2.imwrite(p, frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(p)
        idx += 1
    cap.release()
    return paths, fps


def first_frame_mask(frame_rgb, box):
    image_model = build_sam2(CFG, CKPT, device="cuda")
    img_pred = SAM2ImagePredictor(image_model)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        img_pred.set_image(frame_rgb)
        segment = functools.partial(img_pred.predict, point_coords=None, point_labels=None, multimask_output=True)
        masks, scores, _ = segment(box=np.asarray(box, dtype=np.float32))
    best = scores.argmax()
    del image_model
    torch.cuda.empty_cache()
    return masks[best], scores[best]


def load_lama(path):
    model = torch.jit.load(path, map_location="cuda")
    model.eval()
    return model


@torch.inference_mode()
def lama_inpaint(model, frame_bgr, hole_u8):
    h, w = frame_bgr.shape[:2]
    ph, pw = (8 - h % 8) % 8, (8 - w % 8) % 8
    img = cv2.copyMakeBorder(frame_bgr[..., ::-1], 0, ph, 0, pw, cv2.BORDER_REFLECT)
    hole = cv2.copyMakeBorder(hole_u8, 0, ph, 0, pw, cv2.BORDER_REFLECT)
    img_t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().cuda() / 255.0
    hole_t = torch.from_numpy((hole > 0).astype(np.float32))[None, None].cuda()
    out = model(img_t, hole_t)[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    return (out[:h, :w, ::-1] * 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("--box", type=float, nargs=4, required=True)
    ap.add_argument("--out", default="clean.mp4")
    ap.add_argument("--dilate", type=int, default=15)
    ap.add_argument("--lama", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rmobj_"))
    frames_dir = work / "frames"
    frames_dir.mkdir()
    frames, fps = extract_frames(args.video, frames_dir)
    if not frames:
        raise SystemExit("could not read any frame")

    first_rgb = cv2.cvtColor(cv2.imread(frames[0]), cv2.COLOR_BGR2RGB)
    first_mask, first_score = first_frame_mask(first_rgb, args.box)
    print(f"frame 0 mask score {first_score:.3f}")

    kernel = np.ones((args.dilate, args.dilate), np.uint8)
    preview = cv2.dilate(first_mask.astype(np.uint8), kernel)  # expect: astype
    cv2.imwrite(str(work / "first_mask_dilated.png"), preview * 255)
    np.save(work / "first_mask.npy", first_mask)  # expect: np.save
    tint = first_rgb.copy()
    tint[first_mask] = (255, 0, 255)  # expect: ndarray[t_bool]
    cv2.imwrite(str(work / "first_preview.jpg"), tint[..., ::-1])

    video_pred = build_sam2_video_predictor(CFG, CKPT, device="cuda")
    video_segments = {}
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        state = video_pred.init_state(video_path=str(frames_dir))
        # add_new_mask takes a bool tensor or an array
        video_pred.add_new_mask(state, frame_idx=0, obj_id=1, mask=first_mask)
        for fidx, obj_ids, mask_logits in video_pred.propagate_in_video(state):
            video_segments[fidx] = {
                oid: (mask_logits[i] > 0.0).cpu().numpy()[0] for i, oid in enumerate(obj_ids)
            }
    # the image predictor mask is sharper on the prompted frame, use it there
    video_segments.setdefault(0, {})[1] = first_mask

    lama = load_lama(args.lama) if args.lama else None
    h, w = first_rgb.shape[:2]
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for fidx, path in enumerate(frames):
        frame = cv2.imread(path)
        objs = video_segments.get(fidx, {})
        if not objs:
            writer.write(frame)
            continue
        hole = np.logical_or.reduce(list(objs.values()))  # expect: np.logical_or.reduce
        hole = cv2.dilate(hole.astype(np.uint8), kernel)
        if lama is not None:
            frame = lama_inpaint(lama, frame, hole)
        else:
            frame = cv2.inpaint(frame, hole, 5, cv2.INPAINT_TELEA)
        writer.write(frame)
    writer.release()
    print(f"wrote {args.out} ({len(frames)} frames)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
