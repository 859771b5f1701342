"""A backbone without a detector (pretrain's backbone.pt) runs the node in features-only mode:
features, features/preview and attention are published, detections are not, and the log and
vision_info say so."""

from __future__ import annotations

import pytest
from test_perception_node import frame, node_args

from ros_support.processes import require_ros, ros_process

pytestmark = pytest.mark.ros


def test_backbone_only_model_publishes_features_and_no_detections(tmp_path):
    require_ros()
    import rclpy
    from sensor_msgs.msg import Image

    from ros_support.models import tiny_backbone_checkpoint
    from ros_support.node_client import NodeClient, image_msg
    from vit_perception.ros.messages import feature_map_to_array

    backbone = tiny_backbone_checkpoint(tmp_path)
    log = tmp_path / "node.log"
    with rclpy.init(), ros_process(node_args(backbone, ns="/features_only"), log) as proc:
        client = NodeClient(namespace="/features_only")
        client.subscribe_features()
        previews, attention = [], []
        client.create_subscription(Image, "features/preview", previews.append, 10)
        client.create_subscription(Image, "attention", attention.append, 10)
        assert client.wait_for_node(proc=proc), log.read_text()
        for k in range(20):  # until the node has matched the three subscribers
            client.image_pub.publish(image_msg(frame(k), 400 + k))
            if client.spin_until(lambda: client.features and previews and attention, 1.0):
                break
        assert client.features and previews and attention, log.read_text()
        feats = feature_map_to_array(client.features[-1])
        assert feats.ndim == 3 and feats.shape[0] == 192  # the tiny ViT's width
        assert previews[-1].encoding == "rgb8" and attention[-1].encoding == "mono8"
        assert client.detections == {}
        assert client.get_publishers_info_by_topic("/features_only/features")
        assert client.get_publishers_info_by_topic("/features_only/detections") == []
        assert client.spin_until(lambda: client.vision_info)
        assert client.vision_info[0].method.endswith("(features only)")
        client.destroy_node()
    text = log.read_text()
    assert text.count("no detections") == 1 and "Traceback" not in text, text
