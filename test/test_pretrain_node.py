"""perception_node serves pretrain's backbone.pt in features-only mode, over real DDS: features
for every frame, the same as the predictor's, no detections, and vision_info says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ros_support.processes import require_ros, ros_process

pytestmark = pytest.mark.ros
NODE = ["-m", "vit_perception.ros.perception_node", "--ros-args"]


@pytest.fixture(scope="module")
def backbone_pt(tmp_path_factory):
    from vit_perception.config import load_config
    from vit_perception.data.synth import write_synthetic_bag
    from vit_perception.training.pretrain import pretrain

    root = tmp_path_factory.mktemp("pretrain")
    bag = write_synthetic_bag(root / "bag", frames=4, seed=3, size=(96, 72), style="photo",
                              num_classes=2)
    cfg = load_config("vit_tiny_detr", {"input": {"width": 96, "height": 64}, "pretrain": {
        "epochs": 1, "batch_size": 4, "global_size": 48, "local_size": 32, "local_crops": 1,
        "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "threads": 1,
        "checkpoint_every_s": 0}})
    threads = torch.get_num_threads()
    try:
        result = pretrain(cfg, [str(bag)], root / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    return result["backbone"]


def test_node_publishes_features_only_for_a_backbone(backbone_pt, tmp_path):
    require_ros()
    import rclpy

    from ros_support.node_client import NodeClient, image_msg
    from vit_perception.ros.messages import feature_map_to_array
    from vit_perception.runtime.predictor import Predictor

    rgb = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    with Predictor.load(backbone_pt) as predictor:
        want = predictor.predict(rgb)
    args = [*NODE, "-p", f"model:={backbone_pt}", "-p", "qos_reliability:=reliable",
            "-p", "qos_depth:=100"]
    with rclpy.init(), ros_process(args, tmp_path / "node.log") as proc:
        client = NodeClient()
        try:
            assert client.wait_for_node(proc=proc), (tmp_path / "node.log").read_text()
            client.subscribe_features()
            ok = False
            for attempt in range(20):  # features are published once the node sees us
                client.image_pub.publish(image_msg(rgb, 300 + attempt))
                ok = client.spin_until(lambda: client.features, timeout=1.0)
                if ok:
                    break
            assert ok, (tmp_path / "node.log").read_text()
            feats = feature_map_to_array(client.features[-1])
            assert feats.shape == want.features.shape
            np.testing.assert_allclose(feats.astype(np.float32), want.features, atol=2e-2,
                                       rtol=1e-2)
            assert client.spin_until(lambda: client.vision_info, timeout=10.0)
            assert "features only" in client.vision_info[-1].method
            client.spin_until(lambda: client.detections, timeout=1.0)
            assert client.detections == {}
            assert client.count_publishers("detections") == 0
        finally:
            client.destroy_node()
    log = (tmp_path / "node.log").read_text()
    assert "no detector" in log
