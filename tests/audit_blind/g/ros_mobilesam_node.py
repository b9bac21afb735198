#!/usr/bin/env python3
"""ROS1 node: YOLO boxes -> MobileSAM masks -> per-object point clouds for the grasp planner.

Inference runs in a worker thread; results are handed to a ROS timer through a queue so
publishing never blocks the camera callbacks.
"""
import queue
import threading

import cv2
import numpy as np
import rospy
import torch
from cv_bridge import CvBridge
from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from ultralytics import YOLO

from mobile_sam import SamPredictor, sam_model_registry

from grasp_perception.cloud_utils import mask_to_pointcloud  # lab perception stack (separate repo)
from grasp_perception.msg import ObjectMask


class MobileSamNode:
    def __init__(self):
        self.bridge = CvBridge()
        self.min_score = rospy.get_param("~min_score", 0.75)
        ckpt = rospy.get_param("~sam_checkpoint", "weights/mobile_sam.pt")
        device = "cuda" if torch.cuda.is_available() else "cpu"

        mobile_sam = sam_model_registry["vit_t"](checkpoint=ckpt)
        mobile_sam.to(device=device)
        mobile_sam.eval()
        self.segmenter = SamPredictor(mobile_sam)
        self.detector = YOLO(rospy.get_param("~detector", "yolov8s.pt"))
        self.classes = set(rospy.get_param("~classes", ["cup", "bottle", "bowl"]))

        self.jobs = queue.Queue(maxsize=1)
        self.done = queue.Queue()
        self.depth = None
        self.K = None
        self.lock = threading.Lock()

        self.mask_pub = rospy.Publisher("~masks", ObjectMask, queue_size=10)
        self.cloud_pub = rospy.Publisher("~object_cloud", PointCloud2, queue_size=2)
        self.centroid_pub = rospy.Publisher("~centroid_px", PointStamped, queue_size=10)
        self.debug_pub = rospy.Publisher("~debug", Image, queue_size=1)

        rospy.Subscriber("camera/color/image_raw", Image, self.on_rgb, queue_size=1, buff_size=2 ** 24)
        rospy.Subscriber("camera/aligned_depth_to_color/image_raw", Image, self.on_depth, queue_size=1)
        rospy.Subscriber("camera/color/camera_info", CameraInfo, self.on_info, queue_size=1)

        threading.Thread(target=self.inference_loop, daemon=True).start()
        rospy.Timer(rospy.Duration(0.05), self.flush)
        rospy.loginfo("mobile_sam_node ready (%s)", device)

    # ---------------- callbacks ----------------
    def on_info(self, msg):
        self.K = np.array(msg.K, dtype=np.float64).reshape(3, 3)

    def on_depth(self, msg):
        depth = self.bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough").astype(np.float32) / 1000.0
        with self.lock:
            self.depth = depth

    def on_rgb(self, msg):
        frame = self.bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
        try:
            self.jobs.put_nowait((msg.header, frame))
        except queue.Full:
            pass  # still busy with the previous frame, drop this one

    # ---------------- worker ----------------
    def inference_loop(self):
        while not rospy.is_shutdown():
            try:
                header, frame = self.jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            det = self.detector.predict(frame, conf=0.35, verbose=False)[0]
            if det.boxes is None or len(det.boxes) == 0:
                continue
            xyxy = det.boxes.xyxy.cpu().numpy()
            names = [det.names[int(c)] for c in det.boxes.cls.cpu().numpy()]
            self.segmenter.set_image(frame)
            for box, name in zip(xyxy, names):
                if name not in self.classes:
                    continue
                masks, scores, _ = self.segmenter.predict(box=box, multimask_output=False)
                self.done.put((header, frame, name, masks[0], scores[0]))

    # ---------------- publishing (timer) ----------------
    def flush(self, _event):
        while True:
            try:
                header, frame, name, mask, score = self.done.get_nowait()
            except queue.Empty:
                return
            if score < self.min_score:
                continue

            mask_u8 = mask.astype(np.uint8) * 255  # expect: astype
            contours, _ = cv2.findContours(mask_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)

            out = ObjectMask()
            out.header = header
            out.label = name
            out.score = float(score)
            out.pixels = int(np.count_nonzero(mask))  # expect: np.count_nonzero
            out.mask = self.bridge.cv2_to_imgmsg(mask_u8, encoding="mono8")
            self.mask_pub.publish(out)

            ys, xs = mask.nonzero()  # expect: nonzero unpack
            c = PointStamped()
            c.header = header
            c.point.x, c.point.y = float(xs.mean()), float(ys.mean())
            self.centroid_pub.publish(c)

            with self.lock:
                depth = None if self.depth is None else self.depth.copy()
            if depth is not None and self.K is not None:
                self.cloud_pub.publish(mask_to_pointcloud(mask, depth, self.K, header))  # expect: unscanned mask_to_pointcloud

            if self.debug_pub.get_num_connections() > 0:
                dbg = frame.copy()
                dbg[mask] = (0.5 * dbg[mask] + np.array([0, 127, 0])).astype(np.uint8)  # expect: ndarray[t_bool]
                cv2.drawContours(dbg, contours, -1, (0, 255, 0), 2)
                cv2.putText(dbg, f"{name} {score:.2f}", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
                self.debug_pub.publish(self.bridge.cv2_to_imgmsg(dbg, encoding="rgb8"))


if __name__ == "__main__":
    rospy.init_node("mobile_sam_node")
    MobileSamNode()
    rospy.spin()
