#!/usr/bin/env python3
"""ROS node: segments the object under the last clicked point in the camera stream
(MobileSAM, so it keeps up with 15 Hz on the robot's GPU)."""

import json
import threading

import cv2
import numpy as np
import rospy
import torch
from cv_bridge import CvBridge
from geometry_msgs.msg import PointStamped
from mobile_sam import SamPredictor, sam_model_registry
from sensor_msgs.msg import Image as ImageMsg
from std_msgs.msg import Float32, String
from std_srvs.srv import Trigger, TriggerResponse


class SamNode:
    def __init__(self):
        ckpt = rospy.get_param("~checkpoint", "weights/mobile_sam.pt")
        model = sam_model_registry["vit_t"](checkpoint=ckpt).to("cuda").eval()
        self.mobile_sam = SamPredictor(model)
        self.bridge = CvBridge()
        self.lock = threading.Lock()
        self.click = None
        self.last_mask = None
        self.reference_path = rospy.get_param("~reference_mask", "/tmp/reference.png")
        self.mask_pub = rospy.Publisher("~mask", ImageMsg, queue_size=1)
        self.overlay_pub = rospy.Publisher("~overlay", ImageMsg, queue_size=1)
        self.score_pub = rospy.Publisher("~score", Float32, queue_size=1)
        self.cov_pub = rospy.Publisher("~coverage", Float32, queue_size=1)
        self.status_pub = rospy.Publisher("~status", String, queue_size=1)
        rospy.Subscriber("/camera/color/image_raw", ImageMsg, self.on_image, queue_size=1, buff_size=2 ** 24)
        rospy.Subscriber("/clicked_point", PointStamped, self.on_click)
        rospy.Service("~load_reference", Trigger, self.on_load_reference)

    def on_click(self, msg):
        with self.lock:
            self.click = np.array([[msg.point.x, msg.point.y]], dtype=np.float32)

    def on_load_reference(self, _req):
        ref = cv2.imread(self.reference_path, cv2.IMREAD_GRAYSCALE)
        if ref is None:
            return TriggerResponse(success=False, message="no reference mask")
        with self.lock:
            self.last_mask = ref > 127
            area = int(np.count_nonzero(self.last_mask))
            mono = self.last_mask.astype(np.uint8) * 255
        self.mask_pub.publish(self.bridge.cv2_to_imgmsg(mono, encoding="mono8"))
        return TriggerResponse(success=True, message=f"reference area {area}")

    def on_image(self, msg):
        frame = self.bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
        with self.lock:
            click = self.click
        if click is None:
            return
        self.mobile_sam.set_image(frame)
        masks, scores, _ = self.mobile_sam.predict(point_coords=click, point_labels=np.array([1]),
                                                   multimask_output=True)
        k = int(scores.argmax())
        with self.lock:
            self.last_mask = masks[k]
        self.score_pub.publish(Float32(data=float(scores[k])))
        status = json.dumps({"stamp": msg.header.stamp.to_sec(), "score": scores[k], "candidates": len(scores)})  # expect: json.dumps()
        self.status_pub.publish(String(data=status))
        self.cov_pub.publish(Float32(data=self.coverage()))
        self.publish(frame, msg.header)

    def coverage(self):
        with self.lock:
            m = self.last_mask
        return float(m.sum()) / m.size  # expect: .size

    def publish(self, frame, header):
        with self.lock:
            mask = self.last_mask
        mono = mask.to(torch.uint8) * 255
        out = self.bridge.cv2_to_imgmsg(mono, encoding="mono8")  # expect: unscanned cv2_to_imgmsg()
        out.header = header
        self.mask_pub.publish(out)
        overlay = frame.copy()
        overlay[mask] = (0.5 * overlay[mask] + (0, 127, 0)).astype(np.uint8)  # expect: ndarray[mask]
        self.overlay_pub.publish(self.bridge.cv2_to_imgmsg(overlay, encoding="rgb8"))


if __name__ == "__main__":
    rospy.init_node("sam_segmenter")
    SamNode()
    rospy.spin()
