"""perception_node in its own process, over real DDS, with a tiny random-weight checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ros_support.processes import require_ros, ros_process

pytestmark = pytest.mark.ros
NODE = ["-m", "vit_perception.ros.perception_node", "--ros-args"]


def frame(seed: int, w: int = 400, h: int = 300) -> np.ndarray:
    """A natural-ish RGB frame: gradient background with a few filled shapes."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1).astype(np.uint8)
    for _ in range(3):
        x, y = int(r.integers(0, w - 60)), int(r.integers(0, h - 60))
        cv2.rectangle(img, (x, y), (x + 50, y + 40), tuple(int(c) for c in r.integers(0, 255, 3)),
                      -1)
    return img


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from ros_support.models import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def expected(checkpoint):
    from vit_perception.runtime.predictor import Predictor

    predictor = Predictor.load(checkpoint, score_threshold=0.0, max_detections=5)
    return lambda rgb: predictor.predict(rgb)


def node_args(checkpoint, *extra: str, ns: str = "") -> list[str]:
    return [*NODE, "-p", f"model:={checkpoint}", "-p", "score_threshold:=0.0",
            "-p", "max_detections:=5", "-p", "qos_reliability:=reliable",
            "-p", "qos_depth:=100", *(a for e in extra for a in ("-p", e)),
            *(["-r", f"__ns:={ns}"] if ns else [])]


@pytest.fixture(scope="module")
def ros():
    """One rclpy context for this module's test-side nodes."""
    require_ros()
    import rclpy

    with rclpy.init():
        yield


@pytest.fixture(scope="module")
def running_node(ros, checkpoint, tmp_path_factory):
    from ros_support.node_client import NodeClient

    log = tmp_path_factory.mktemp("node") / "node.log"
    with ros_process(node_args(checkpoint), log) as proc:
        client = NodeClient()
        assert client.wait_for_node(proc=proc), log.read_text()
        yield client, log
        client.destroy_node()


def test_detections_keep_stamp_frame_id_and_input_pixel_boxes(running_node, expected):
    from ros_support.node_client import image_msg

    client, log = running_node
    for i in range(3):
        rgb = frame(i)
        client.image_pub.publish(image_msg(rgb, 100 + i, 250, "front_camera"))
        assert client.spin_until(lambda i=i: (100 + i, 250) in client.detections), log.read_text()
        msg = client.detections[(100 + i, 250)]
        assert msg.header.frame_id == "front_camera"
        want = expected(rgb)
        assert len(msg.detections) == len(want) == 5
        got = np.array([[d.bbox.center.position.x - d.bbox.size_x / 2,
                         d.bbox.center.position.y - d.bbox.size_y / 2,
                         d.bbox.center.position.x + d.bbox.size_x / 2,
                         d.bbox.center.position.y + d.bbox.size_y / 2] for d in msg.detections])
        np.testing.assert_allclose(got, want.boxes, atol=1e-2)
        assert [d.results[0].hypothesis.class_id for d in msg.detections] == want.label_names
        np.testing.assert_allclose([d.results[0].hypothesis.score for d in msg.detections],
                                   want.scores, atol=1e-4)
        assert all(d.header.stamp == msg.header.stamp for d in msg.detections)
    assert client.spin_until(lambda: client.vision_info)
    assert client.vision_info[0].database_location.endswith("/classes")


def test_feature_map_decodes_to_advertised_shape(running_node, expected):
    from ros_support.node_client import image_msg
    from vit_perception.ros.messages import feature_map_to_array

    client, _ = running_node
    client.subscribe_features()
    rgb = frame(7)
    ok = False
    for attempt in range(20):  # the node publishes features once it sees the subscriber
        client.image_pub.publish(image_msg(rgb, 200 + attempt))
        ok = client.spin_until(lambda: client.features, timeout=1.0)
        if ok:
            break
    assert ok
    fm = client.features[-1]
    feats = feature_map_to_array(fm)
    want = expected(rgb)
    assert feats.shape == (fm.channels, fm.height, fm.width) == want.features.shape
    assert feats.dtype == np.float16 and fm.dtype == "float16"
    np.testing.assert_allclose(feats.astype(np.float32), want.features, atol=2e-2, rtol=1e-2)
    assert len(fm.embedding) == want.embedding.shape[0]
    # the grid maps back to the input image: first and last cell centres inside the image
    assert (fm.image_width, fm.image_height) == (400, 300)
    assert 0 < fm.offset_x + 0.5 * fm.stride_x < 400
    assert fm.offset_y + (fm.height - 0.5) * fm.stride_y > 300 * 0.9


def test_score_threshold_change_at_run_time(running_node):
    from ros_support.node_client import image_msg

    client, _ = running_node
    assert client.set_parameter("score_threshold", 1.0).successful
    client.image_pub.publish(image_msg(frame(1), 300))
    assert client.spin_until(lambda: (300, 0) in client.detections)
    assert len(client.detections[(300, 0)].detections) == 0
    assert not client.set_parameter("score_threshold", 1.5).successful  # out of range
    assert not client.set_parameter("max_detections", 0).successful
    assert client.set_parameter("score_threshold", 0.0).successful
    assert client.set_parameter("max_detections", 2).successful
    client.image_pub.publish(image_msg(frame(1), 301))
    assert client.spin_until(lambda: (301, 0) in client.detections)
    assert len(client.detections[(301, 0)].detections) == 2
    assert client.set_parameter("max_detections", 5).successful


def test_malformed_flood_keeps_node_up_and_is_counted(running_node):
    from sensor_msgs.msg import Image

    from ros_support.node_client import image_msg

    client, log = running_node
    base = int(client.latest_diagnostics().get("errors_total", "0") or 0)
    log_start = len(log.read_text())
    started = time.monotonic()
    kinds = ["unsupported", "truncated", "step", "zero", "huge"]
    good_stamps = []
    bad = 0
    for i in range(1000):
        m = Image()
        m.header.stamp.sec = 5000 + i
        kind = kinds[i % len(kinds)]
        m.height, m.width, m.encoding, m.step = 8, 8, "rgb8", 24
        m.data = bytes(8 * 24)
        if kind == "unsupported":
            m.encoding = "32FC7"
        elif kind == "truncated":
            m.data = bytes(10)
        elif kind == "step":
            m.step = 20
        elif kind == "zero":
            m.height = m.width = m.step = 0
            m.data = b""
        else:
            m.height, m.width, m.step = 100000, 100000, 300000
        client.image_pub.publish(m)
        bad += 1
        if i % 50 == 49:
            sec = 9000 + i
            client.image_pub.publish(image_msg(frame(i), sec))
            good_stamps.append((sec, 0))
            client.spin_until(lambda s=sec: (s, 0) in client.detections, timeout=5.0)
        time.sleep(0.002)  # ~500 Hz: the reliable writer's history (depth 100) never overflows
    client.spin_until(lambda: all(s in client.detections for s in good_stamps), timeout=20)
    done = [s for s in good_stamps if s in client.detections]
    assert len(done) >= 0.8 * len(good_stamps), f"{len(done)}/{len(good_stamps)} good processed"
    bad_stamps = [s for s in client.detections if 5000 <= s[0] < 6000]
    assert bad_stamps == [], "published something for a malformed frame"

    def counted():
        d = client.latest_diagnostics()
        return int(d.get("errors_total", "0")) - base >= bad

    assert client.spin_until(counted, timeout=10), client.latest_diagnostics()
    diag = client.latest_diagnostics()
    assert int(diag["errors_total"]) - base == bad
    for k in ("errors_unsupported_encoding", "errors_truncated_data", "errors_step_mismatch",
              "errors_bad_size"):
        assert int(diag[k]) >= 200, diag
    # logged once per kind per 10 s, not once per message (200 of this kind were sent)
    periods = int((time.monotonic() - started) // 10) + 1
    assert 1 <= log.read_text()[log_start:].count("kind 'unsupported_encoding'") <= periods + 1


def test_compressed_image_path(ros, checkpoint, expected, tmp_path):
    from sensor_msgs.msg import CompressedImage

    from ros_support.node_client import NodeClient
    from vit_perception.image_encodings import compressed_to_rgb, rgb_to_compressed

    log = tmp_path / "node.log"
    with ros_process(node_args(checkpoint, "compressed:=true", ns="/compressed"), log) as proc:
        client = NodeClient(compressed=True, namespace="/compressed")
        assert client.wait_for_node(proc=proc), log.read_text()
        rgb = frame(3)
        fmt, data = rgb_to_compressed(rgb, "jpeg", 90)
        bad = CompressedImage(format="jpeg", data=data[: len(data) // 2])
        bad.header.stamp.sec = 41
        client.image_pub.publish(bad)
        time.sleep(0.2)
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp.sec = 42
        client.image_pub.publish(msg)
        assert client.spin_until(lambda: (42, 0) in client.detections), log.read_text()
        assert (41, 0) not in client.detections
        want = expected(compressed_to_rgb(fmt, data))
        got = client.detections[(42, 0)]
        assert len(got.detections) == len(want)
        assert client.spin_until(
            lambda: client.latest_diagnostics().get("errors_corrupt_compressed") == "1")
        client.destroy_node()


def test_lifecycle_transitions(ros, checkpoint, tmp_path):
    from lifecycle_msgs.msg import Transition

    from ros_support.node_client import NodeClient, image_msg

    log = tmp_path / "node.log"
    with ros_process(node_args(checkpoint, "autostart:=false", ns="/lifecycle"), log):
        client = NodeClient(namespace="/lifecycle")
        assert client.get_state() == "unconfigured", log.read_text()
        assert client.change_state(Transition.TRANSITION_CONFIGURE)
        assert client.get_state() == "inactive"
        assert client.change_state(Transition.TRANSITION_ACTIVATE)
        assert client.get_state() == "active"
        assert client.wait_for_node()
        client.image_pub.publish(image_msg(frame(0), 77))
        assert client.spin_until(lambda: (77, 0) in client.detections), log.read_text()
        assert client.change_state(Transition.TRANSITION_DEACTIVATE)
        assert client.get_state() == "inactive"
        client.image_pub.publish(image_msg(frame(0), 78))
        client.spin_until(lambda: False, timeout=1.0)
        assert (78, 0) not in client.detections  # inactive: nothing processed
        assert client.change_state(Transition.TRANSITION_CLEANUP)
        assert client.get_state() == "unconfigured"
        client.destroy_node()


def test_missing_model_file_fails_configure_naming_it(ros, tmp_path):
    from lifecycle_msgs.msg import Transition

    from ros_support.node_client import NodeClient

    log = tmp_path / "node.log"
    missing = tmp_path / "nowhere" / "model.pt"
    with ros_process([*NODE, "-p", f"model:={missing}", "-p", "autostart:=false", "-r",
                      "__ns:=/missing"], log):
        client = NodeClient(namespace="/missing")
        assert not client.change_state(Transition.TRANSITION_CONFIGURE)
        assert client.get_state() == "unconfigured"
        client.destroy_node()
    text = log.read_text()
    assert str(missing) in text and "parameter 'model'" in text


def test_bad_parameter_fails_configure_naming_it(ros, checkpoint, tmp_path):
    from lifecycle_msgs.msg import Transition

    from ros_support.node_client import NodeClient

    log = tmp_path / "node.log"
    with ros_process([*NODE, "-p", f"model:={checkpoint}", "-p", "backend:=banana", "-p",
                      "autostart:=false", "-r", "__ns:=/badparam"], log):
        client = NodeClient(namespace="/badparam")
        assert not client.change_state(Transition.TRANSITION_CONFIGURE)
        assert client.get_state() == "unconfigured"
        client.destroy_node()
    text = log.read_text()
    assert "parameter 'backend'" in text and "banana" in text, text
