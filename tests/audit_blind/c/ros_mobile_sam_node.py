#!/usr/bin/env python3
"""ROS 2 node: MobileSAM masks for 2D detections.

Subscribes to ``image_raw`` and ``detections`` (vision_msgs/Detection2DArray,
e.g. from the YOLO node), runs MobileSAM with each detection box as prompt in
a worker thread, and publishes

* ``sam/instances``  mono16 instance-id image (0 = background)
* ``sam/overlay``    rgb8 debug image
* ``sam/polygons``   one geometry_msgs/PolygonStamped per instance
"""

import json
import queue
import threading
import time

import cv2
import numpy as np
import rclpy
import torch
from cv_bridge import CvBridge
from geometry_msgs.msg import Point32, PolygonStamped
from message_filters import ApproximateTimeSynchronizer, Subscriber
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image as ImageMsg
from std_msgs.msg import String
from vision_msgs.msg import Detection2DArray

from mobile_sam import SamPredictor, sam_model_registry

from acme_ros_utils.viz import draw_instances
from sam_tools.postprocess import mask_to_polygons


class MobileSamNode(Node):
    def __init__(self):
        super().__init__("mobile_sam_segmenter")
        self.declare_parameter("checkpoint", "/opt/models/mobile_sam.pt")
        self.declare_parameter("min_score", 0.5)
        self.declare_parameter("min_coverage", 0.0005)
        self.declare_parameter("publish_overlay", True)
        ckpt = self.get_parameter("checkpoint").value
        self.min_score = float(self.get_parameter("min_score").value)
        self.min_coverage = float(self.get_parameter("min_coverage").value)
        self.publish_overlay = bool(self.get_parameter("publish_overlay").value)

        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = sam_model_registry["vit_t"](checkpoint=ckpt).to(device).eval()
        self.mobile_sam = SamPredictor(model)
        self.bridge = CvBridge()

        self.jobs: "queue.Queue" = queue.Queue(maxsize=2)
        self.results: "queue.Queue" = queue.Queue()
        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._infer_loop, name="sam-worker", daemon=True)
        self.worker.start()

        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.sync = ApproximateTimeSynchronizer(
            [Subscriber(self, ImageMsg, "image_raw", qos_profile=qos),
             Subscriber(self, Detection2DArray, "detections")],
            queue_size=10, slop=0.05,
        )
        self.sync.registerCallback(self._on_frame)
        self.inst_pub = self.create_publisher(ImageMsg, "sam/instances", 5)
        self.overlay_pub = self.create_publisher(ImageMsg, "sam/overlay", 5)
        self.poly_pub = self.create_publisher(PolygonStamped, "sam/polygons", 20)
        self.stats_pub = self.create_publisher(String, "sam/stats", 5)
        self.create_timer(0.01, self._drain)
        self.get_logger().info(f"MobileSAM ready on {device}")

    # ------------------------------------------------------------ callbacks
    def _on_frame(self, img_msg: ImageMsg, dets: Detection2DArray):
        rgb = self.bridge.imgmsg_to_cv2(img_msg, desired_encoding="rgb8")
        boxes = []
        for d in dets.detections:
            c = d.bbox.center.position
            w, h = d.bbox.size_x, d.bbox.size_y
            boxes.append([c.x - w / 2, c.y - h / 2, c.x + w / 2, c.y + h / 2])
        if not boxes:
            return
        try:
            self.jobs.put_nowait((img_msg.header, rgb, np.asarray(boxes, np.float32)))
        except queue.Full:
            self.get_logger().debug("dropping frame, worker busy")

    def _infer_loop(self):
        while not self._stop.is_set():
            try:
                header, rgb, boxes = self.jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            t0 = time.perf_counter()
            with torch.no_grad():
                self.mobile_sam.set_image(rgb)
                found = []
                for box in boxes:
                    masks, scores, _ = self.mobile_sam.predict(box=box, multimask_output=False)
                    found.append((masks[0], scores[0]))
            self.results.put((header, rgb, found, time.perf_counter() - t0))

    def _drain(self):
        try:
            header, rgb, found, dt = self.results.get_nowait()
        except queue.Empty:
            return
        instances = np.zeros(rgb.shape[:2], dtype=np.uint16)
        kept = []
        for inst_id, (mask, score) in enumerate(found, start=1):
            if score < self.min_score:
                continue
            coverage = mask.sum() / mask.size  # expect: size
            if coverage < self.min_coverage:
                continue
            instances[mask] = inst_id  # expect: ndarray-setitem
            kept.append(mask)
            for poly in mask_to_polygons(mask, epsilon=2.0):
                msg = PolygonStamped(header=header)
                msg.polygon.points = [Point32(x=float(x), y=float(y), z=0.0)
                                      for x, y in zip(poly[0::2], poly[1::2])]
                self.poly_pub.publish(msg)

        inst_msg = self.bridge.cv2_to_imgmsg(instances, encoding="mono16")
        inst_msg.header = header
        self.inst_pub.publish(inst_msg)
        if self.publish_overlay and kept:
            overlay = draw_instances(rgb, kept, alpha=0.45)  # expect: unscanned draw_instances
            ov_msg = self.bridge.cv2_to_imgmsg(overlay, encoding="rgb8")
            ov_msg.header = header
            self.overlay_pub.publish(ov_msg)
        self.get_logger().debug(f"{len(kept)}/{len(found)} instances in {dt * 1000:.1f} ms")
        stats = {"stamp": header.stamp.sec + header.stamp.nanosec * 1e-9, "latency_ms": dt * 1000.0,
                 "kept": len(kept), "scores": [s for _, s in found]}
        self.stats_pub.publish(String(data=json.dumps(stats)))  # expect: json.dumps

    def destroy_node(self):
        self._stop.set()
        self.worker.join(timeout=1.0)
        super().destroy_node()


def main(args=None):
    rclpy.init(args=args)
    node = MobileSamNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    main()
