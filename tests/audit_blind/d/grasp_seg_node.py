"""ROS 2 node: YOLO finds fruit on the plant, a lightweight SAM refines each box
into a mask, and a planar grasp (centre, approach angle, width) is published per
fruit.  Inference runs in a worker thread so the camera callbacks never block.

    ros2 run harvest_perception grasp_seg_node --ros-args -p sam_kind:=mobile_sam
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from typing import Callable, List, Optional

import joblib
import message_filters
import numpy as np
import rclpy
import torch
from cv_bridge import CvBridge
from geometry_msgs.msg import Point
from harvest_msgs.msg import FruitGrasp, FruitGraspArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from ultralytics import YOLO


class SamBackend:
    """Wraps whichever small SAM the robot has the VRAM for."""

    def __init__(self, kind: str, checkpoint: str, device: str = "cuda") -> None:
        self.kind = kind
        if kind == "mobile_sam":
            from mobile_sam import SamPredictor, sam_model_registry
            net = sam_model_registry["vit_t"](checkpoint=checkpoint).to(device).eval()
            self.predictor = SamPredictor(net)
        elif kind == "efficientvit":
            from efficientvit.models.efficientvit.sam import EfficientViTSamPredictor
            from efficientvit.sam_model_zoo import create_efficientvit_sam_model
            net = create_efficientvit_sam_model("efficientvit-sam-l0", True, checkpoint).to(device).eval()
            self.predictor = EfficientViTSamPredictor(net)
        else:
            raise ValueError(kind)


@dataclass
class Job:
    stamp: object
    rgb: np.ndarray
    depth: np.ndarray  # metres, float32
    boxes: np.ndarray  # (N, 4) xyxy
    labels: List[str]


def principal_angle(xs: np.ndarray, ys: np.ndarray) -> float:
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    pts -= pts.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov(pts.T))
    major = evecs[:, int(np.argmax(evals))]
    return math.atan2(major[1], major[0])


class GraspSegNode(Node):
    def __init__(self, backend: SamBackend, detector: YOLO, quality_model,
                 on_result: Optional[Callable[[FruitGraspArray], None]] = None) -> None:
        super().__init__("grasp_seg_node")
        self.backend = backend
        self.detector = detector
        self.quality_model = quality_model
        self.bridge = CvBridge()
        self.fx = self.fy = self.cx = self.cy = None
        self.jobs: "queue.Queue[Job]" = queue.Queue(maxsize=2)
        self.pub = self.create_publisher(FruitGraspArray, "fruit_grasps", 10)
        self.dbg = self.create_publisher(Image, "fruit_masks/debug", 2)
        self.on_result = on_result or self.pub.publish
        self.create_subscription(CameraInfo, "camera/color/camera_info", self._on_info, 1)
        rgb_sub = message_filters.Subscriber(self, Image, "camera/color/image_raw")
        depth_sub = message_filters.Subscriber(self, Image, "camera/aligned_depth_to_color/image_raw")
        sync = message_filters.ApproximateTimeSynchronizer([rgb_sub, depth_sub], 5, 0.03)
        sync.registerCallback(self._on_rgbd)
        self.occupied: Optional[np.ndarray] = None
        threading.Thread(target=self._worker, daemon=True).start()

    def _on_info(self, msg: CameraInfo) -> None:
        self.fx, self.fy, self.cx, self.cy = msg.k[0], msg.k[4], msg.k[2], msg.k[5]

    def _on_rgbd(self, rgb_msg: Image, depth_msg: Image) -> None:
        rgb = self.bridge.imgmsg_to_cv2(rgb_msg, "rgb8")
        depth = self.bridge.imgmsg_to_cv2(depth_msg, "16UC1").astype(np.float32) / 1000.0
        det = self.detector.predict(rgb, conf=0.4, classes=[0, 1], verbose=False)[0]
        if len(det.boxes) == 0:
            return
        job = Job(stamp=rgb_msg.header.stamp, rgb=rgb, depth=depth,
                  boxes=det.boxes.xyxy.cpu().numpy(),
                  labels=[det.names[int(c)] for c in det.boxes.cls.tolist()])
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            pass  # drop frame, we are behind

    def _worker(self) -> None:
        while rclpy.ok():
            job = self.jobs.get()
            with torch.inference_mode():
                self.backend.predictor.set_image(job.rgb)
                out = FruitGraspArray()
                out.header.stamp = job.stamp
                out.header.frame_id = "camera_color_optical_frame"
                self.occupied = np.zeros(job.rgb.shape[:2], bool)
                for box, label in zip(job.boxes, job.labels):
                    masks, scores, _ = self.backend.predictor.predict(box=box, multimask_output=True)
                    order = np.argsort(scores)[::-1]  # expect: np.argsort
                    k = order[0]
                    grasp = self._grasp_from_mask(job, masks[k], scores[k], label)
                    if grasp is not None:
                        out.grasps.append(grasp)
                    self.occupied |= masks[k]  # expect: |=
                self._publish_debug(job)
            self.on_result(out)

    def _grasp_from_mask(self, job: Job, mask, score, label: str) -> Optional[FruitGrasp]:
        if self.fx is None or mask.sum() < 80:
            return None
        if mask.sum() / mask.size > 0.25:  # expect: size attribute
            return None  # mask leaked into the canopy / background
        z_vals = job.depth[mask]  # expect: ndarray bool index
        z_vals = z_vals[(z_vals > 0.1) & (z_vals < 1.5)]
        if z_vals.size < 20:
            return None
        z = float(np.median(z_vals))
        ys, xs = np.where(mask)  # expect: np.where
        u, v = float(xs.mean()), float(ys.mean())
        theta = principal_angle(xs, ys)
        width_px = float(np.ptp(xs)) if abs(math.cos(theta)) < 0.7 else float(np.ptp(ys))
        feat = np.array([[mask.sum().item(), width_px, z, float(score)]], np.float32)
        quality = float(self.quality_model.predict_proba(feat)[0, 1])

        g = FruitGrasp()
        g.label = label
        g.center = Point(x=(u - self.cx) * z / self.fx, y=(v - self.cy) * z / self.fy, z=z)
        g.approach_angle = theta
        g.width = width_px * z / self.fx
        g.mask_score = score  # expect: ros msg float field
        g.quality = quality
        return g

    def _publish_debug(self, job: Job) -> None:
        if self.dbg.get_subscription_count() == 0 or self.occupied is None:
            return
        vis = job.rgb.copy()
        vis[self.occupied] = (0.5 * vis[self.occupied] + (0, 127, 0)).astype(np.uint8)
        self.dbg.publish(self.bridge.cv2_to_imgmsg(vis, "rgb8"))


def main() -> None:
    rclpy.init()
    probe = rclpy.create_node("grasp_seg_params")
    kind = probe.declare_parameter("sam_kind", "mobile_sam").value
    ckpt = probe.declare_parameter("sam_checkpoint", "/opt/models/mobile_sam.pt").value
    probe.destroy_node()
    node = GraspSegNode(
        backend=SamBackend(kind, ckpt),
        detector=YOLO("/opt/models/fruit_yolov8s.pt"),
        quality_model=joblib.load("/opt/models/grasp_quality_gbm.joblib"),
    )
    try:
        rclpy.spin(node)
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    main()
