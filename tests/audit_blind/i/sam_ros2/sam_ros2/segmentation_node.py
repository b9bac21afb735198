#!/usr/bin/env python3
"""ROS 2 node: turns 2D detections into instance masks with EfficientViT-SAM.

Subscribes:  /camera/color/image_raw (sensor_msgs/Image)
             /detections (vision_msgs/Detection2DArray)
Publishes:   /sam/instance_mask (sensor_msgs/Image, mono16, 0 = background)
             /sam/scores (std_msgs/Float32MultiArray)
             /sam/centroids (geometry_msgs/PoseArray, pixel coordinates)
             /sam/debug_image (sensor_msgs/Image, only rendered when someone listens)
"""
import message_filters
import numpy as np
import rclpy
import samgpu_shim  # noqa: F401
import torch
from cv_bridge import CvBridge
from efficientvit.models.efficientvit.sam import EfficientViTSamPredictor
from efficientvit.sam_model_zoo import create_efficientvit_sam_model
from geometry_msgs.msg import Pose, PoseArray
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray
from vision_msgs.msg import Detection2DArray

import cv2


def detection_to_box(det):
    cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
    w, h = det.bbox.size_x, det.bbox.size_y
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float32)


class SamSegmentationNode(Node):
    def __init__(self):
        super().__init__("sam_segmentation")
        self.declare_parameter("model", "efficientvit-sam-l0")
        self.declare_parameter("weights", "")
        self.declare_parameter("min_score", 0.6)
        self.declare_parameter("min_area", 50)

        name = self.get_parameter("model").value
        weights = self.get_parameter("weights").value or None
        model = create_efficientvit_sam_model(name, pretrained=True, weight_url=weights)
        model = model.cuda().eval() if torch.cuda.is_available() else model.eval()
        self.predictor = EfficientViTSamPredictor(model)
        self.min_score = float(self.get_parameter("min_score").value)
        self.min_area = int(self.get_parameter("min_area").value)

        self.bridge = CvBridge()
        image_sub = message_filters.Subscriber(self, Image, "/camera/color/image_raw")
        det_sub = message_filters.Subscriber(self, Detection2DArray, "/detections")
        self.sync = message_filters.ApproximateTimeSynchronizer([image_sub, det_sub], queue_size=5, slop=0.05)
        self.sync.registerCallback(self.on_frame)

        self.mask_pub = self.create_publisher(Image, "/sam/instance_mask", 2)
        self.score_pub = self.create_publisher(Float32MultiArray, "/sam/scores", 2)
        self.centroid_pub = self.create_publisher(PoseArray, "/sam/centroids", 2)
        self.debug_pub = self.create_publisher(Image, "/sam/debug_image", 1)
        self.get_logger().info(f"Loaded {name}")

    def on_frame(self, image_msg: Image, det_msg: Detection2DArray):
        frame = self.bridge.imgmsg_to_cv2(image_msg, desired_encoding="rgb8")
        h, w = frame.shape[:2]
        self.predictor.set_image(frame)

        instance = np.zeros((h, w), dtype=np.uint16)
        kept_scores = []
        centroids = PoseArray(header=image_msg.header)
        debug = frame.copy() if self.debug_pub.get_subscription_count() > 0 else None

        for det in det_msg.detections:
            masks, scores, _ = self.predictor.predict(box=detection_to_box(det), multimask_output=False)
            if scores[0] < self.min_score or masks[0].sum() < self.min_area:
                continue
            mask = np.squeeze(masks)
            instance[mask] = len(kept_scores) + 1  # expect: ndarray setitem

            ys, xs = mask.nonzero()  # expect: nonzero
            pose = Pose()
            pose.position.x, pose.position.y = float(xs.mean()), float(ys.mean())
            centroids.poses.append(pose)

            if debug is not None:
                mask_u8 = mask.astype(np.uint8) * 255  # expect: astype
                contours, _ = cv2.findContours(mask_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(debug, contours, -1, (0, 255, 0), 2)
                cv2.putText(debug, f"{scores[0]:.2f}", (int(xs.min()), int(ys.min())),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
            kept_scores.append(scores[0])

        if debug is not None:
            self.debug_pub.publish(self.bridge.cv2_to_imgmsg(debug, encoding="rgb8"))
        out = self.bridge.cv2_to_imgmsg(instance, encoding="mono16")
        out.header = image_msg.header
        self.mask_pub.publish(out)
        self.score_pub.publish(Float32MultiArray(data=np.array(kept_scores, dtype=np.float32).tolist()))  # expect: np.array
        self.centroid_pub.publish(centroids)
        self.get_logger().debug(f"{len(kept_scores)}/{len(det_msg.detections)} detections segmented")


def main(args=None):
    rclpy.init(args=args)
    node = SamSegmentationNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    main()
