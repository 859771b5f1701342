"""One camera's output topics and what the node publishes on them for each processed frame.

Topics are relative to the node's namespace, under ``prefix/`` when the node serves several
cameras (``front/detections``, ``front/features``, ...). Every output copies the input image's
header. Features, previews, attention and the drawn image are published only while someone
subscribes; detections always, unless the model has no detector (features-only).
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, VisionInfo

from vit_perception.msg import FeatureMap
from vit_perception.ros import messages

_TOPICS = {  # key -> (type, topic, qos depth)
    "detections": (Detection2DArray, "detections", 10),
    "features": (FeatureMap, "features", 2),
    "preview": (Image, "features/preview", 2),
    "attention": (Image, "attention", 2),
    "image": (Image, "detections/image", 2),
}


class CameraOutputs:
    """The lifecycle publishers of one camera and its per-camera state (PCA basis, count)."""

    def __init__(self, node, prefix: str, detector: bool):
        self.node = node
        self.prefix = prefix
        self.detector = detector
        self.processed = 0
        self._pca_basis = None
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs = {key: node.create_lifecycle_publisher(kind, self.topic(name), depth)
                     for key, (kind, name, depth) in _TOPICS.items()
                     if detector or key not in ("detections", "image")}
        self.pubs["vision_info"] = node.create_lifecycle_publisher(
            VisionInfo, self.topic("vision_info"), latched)

    def topic(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def destroy(self) -> None:
        for pub in self.pubs.values():
            self.node.destroy_lifecycle_publisher(pub)
        self.pubs = {}

    def publish_info(self, info: VisionInfo) -> None:
        self.pubs["vision_info"].publish(info)

    def publish(self, pred, rgb, header, s, model_id: str) -> None:
        """Everything for one processed frame; `s` is the node's NodeSettings."""
        pubs = self.pubs
        if self.detector:
            pubs["detections"].publish(messages.detections_msg(pred, header))
        self.processed += 1
        h, w = rgb.shape[:2]
        if s.publish_features and pred.features is not None \
                and pubs["features"].get_subscription_count() > 0 \
                and self.processed % s.features_rate_divider == 0:
            pubs["features"].publish(messages.feature_map_msg(
                pred, header, model_id, w, h, s.features_dtype))
        if s.publish_preview and pred.features is not None \
                and pubs["preview"].get_subscription_count() > 0:
            from vit_perception.visualize import pca_preview

            preview, self._pca_basis = pca_preview(pred.features, w, h, self._pca_basis)
            pubs["preview"].publish(messages.array_to_image_msg(preview, header))
        if s.publish_attention and pred.attention is not None \
                and pubs["attention"].get_subscription_count() > 0:
            from vit_perception.visualize import attention_map

            pubs["attention"].publish(messages.array_to_image_msg(
                attention_map(pred.attention, w, h), header, "mono8"))
        if self.detector and s.publish_detections_image \
                and pubs["image"].get_subscription_count() > 0:
            from vit_perception.visualize import draw_detections

            drawn = draw_detections(rgb, pred.boxes, pred.labels, pred.scores, pred.class_names)
            pubs["image"].publish(messages.array_to_image_msg(drawn, header))
