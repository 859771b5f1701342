"""Several cameras in one node: newest-wins slots per camera taken together as one batch
(plain Python), and over real DDS each camera's outputs carry its own header, while a malformed
frame on one camera leaves the other alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vit_perception.node_stats import NodeStats
from vit_perception.ros.camera_slots import CameraSlots, SlotClosed, camera_names


def test_slots_batch_one_newest_frame_per_camera():
    slots = CameraSlots(["front", "rear"])
    assert slots.take(timeout=0.01) == []
    assert slots.put("rear", 1) is False
    assert slots.put("front", 2) is False
    assert slots.put("front", 3) is True  # 2 replaced before it was taken
    assert slots.take(timeout=0) == [("front", 3), ("rear", 1)]  # camera order, one each
    assert slots.dropped == {"front": 1}
    slots.put("rear", 4)
    assert slots.take(timeout=0) == [("rear", 4)]
    with pytest.raises(KeyError, match="side"):
        slots.put("side", 5)
    slots.put("front", 6)
    slots.clear()
    assert slots.take(timeout=0) == []
    got = []
    waiter = threading.Thread(target=lambda: got.append(slots.take(timeout=5)))
    waiter.start()
    slots.put("rear", 7)  # wakes the waiting take
    waiter.join(5)
    assert got == [[("rear", 7)]]
    slots.close()
    with pytest.raises(SlotClosed):
        slots.take(timeout=0)
    with pytest.raises(SlotClosed):
        slots.put("front", 8)


def test_slot_close_wakes_a_blocked_take_and_keeps_a_waiting_frame():
    slots = CameraSlots(["cam"])
    slots.put("cam", 1)
    slots.close()
    assert slots.take() == [("cam", 1)]  # a waiting frame survives close
    result = []

    def consumer():
        try:
            slots.take()
        except SlotClosed:
            result.append("closed")

    slots = CameraSlots(["cam"])
    thread = threading.Thread(target=consumer)
    thread.start()
    time.sleep(0.05)
    slots.close()
    thread.join(timeout=2)
    assert result == ["closed"]


def test_slots_threads_lose_nothing_and_never_block_the_producer():
    """Every frame of every camera is either taken or counted as dropped, exactly once, and in
    order per camera."""
    slots = CameraSlots(["a", "b"])
    stats = NodeStats()
    taken: dict[str, list[int]] = {"a": [], "b": []}
    n = 10000

    def consumer():
        while True:
            try:
                batch = slots.take(timeout=1.0)
            except SlotClosed:
                return
            for cam, item in batch:
                taken[cam].append(item)
            time.sleep(0.0001 if len(batch) % 2 else 0)  # "inference" slower than input

    worker = threading.Thread(target=consumer)
    worker.start()
    for i in range(n):
        for cam in ("a", "b"):
            stats.on_input()
            if slots.put(cam, i):
                stats.on_dropped()
    slots.close()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert stats.dropped == sum(slots.dropped.values()) > 0
    for cam in ("a", "b"):
        got = taken[cam]
        assert len(got) + slots.dropped[cam] == n
        assert got == sorted(got) and len(set(got)) == len(got)
        assert got[-1] == n - 1  # the newest frame is always processed


def test_put_returns_while_the_consumer_is_stuck_in_inference():
    """A stalled worker never stalls a subscription callback: puts keep returning and are
    counted as drops, and each camera's newest frame is what the worker takes next."""
    slots = CameraSlots(["a", "b"])
    stuck, release, taken = threading.Event(), threading.Event(), []

    def consumer():
        taken.append(slots.take(timeout=5))
        stuck.set()
        release.wait(timeout=10)  # "inference" that does not end until released
        taken.append(slots.take(timeout=5))

    worker = threading.Thread(target=consumer)
    worker.start()
    slots.put("a", 0)
    assert stuck.wait(timeout=5)
    for i in range(1, 1001):
        slots.put("a", i)
        slots.put("b", -i)
    assert slots.dropped == {"a": 999, "b": 999} and worker.is_alive()
    release.set()
    worker.join(timeout=5)
    assert taken == [[("a", 0)], [("a", 1000), ("b", -1000)]]


def test_camera_names_from_topics():
    assert camera_names(["/front/image_raw", "/rear/image_raw"]) == ["front", "rear"]
    assert camera_names(["/robot/left/image_rect", "/cam0", "image"]) == \
        ["robot_left", "cam0", "camera2"]
    assert camera_names(["/a/image_raw", "/a/image_raw/compressed"]) == ["a", "camera1"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from ros_support.models import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.mark.ros
def test_two_cameras_each_with_its_own_header_and_a_bad_frame_on_one(checkpoint, tmp_path):
    from ros_support.processes import require_ros, ros_process

    require_ros()
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from test_perception_node import frame, node_args
    from vision_msgs.msg import Detection2DArray

    from ros_support.node_client import NodeClient, image_msg, stamp_key

    log = tmp_path / "node.log"
    args = node_args(checkpoint, "image_topics:=[/front/image_raw, /rear/image_raw]",
                     ns="/twocams")
    with rclpy.init(), ros_process(args, log) as proc:
        client = NodeClient(namespace="/twocams")
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {c: client.create_publisher(Image, f"/{c}/image_raw", reliable)
                for c in ("front", "rear")}
        got: dict[str, dict] = {"front": {}, "rear": {}}
        for cam in got:
            client.create_subscription(
                Detection2DArray, f"{cam}/detections",
                lambda m, cam=cam: got[cam].__setitem__(stamp_key(m.header), m), 100)
        assert client.spin_until(lambda: all(p.get_subscription_count() for p in
                                             pubs.values()) or proc.poll() is not None, 60), \
            log.read_text()
        assert proc.poll() is None, log.read_text()
        views = {"front": frame(1), "rear": frame(2, w=320, h=240)}  # different sizes
        for k in range(3):  # both at once: the worker takes them as one batch when both wait
            for cam, rgb in views.items():
                pubs[cam].publish(image_msg(rgb, 100 + k, 10 if cam == "front" else 20,
                                            f"{cam}_optical_frame"))
            assert client.spin_until(lambda k=k: len(got["front"]) == len(got["rear"]) == k + 1
                                     ), (got, log.read_text())
        for cam, nanosec in (("front", 10), ("rear", 20)):
            for k in range(3):
                msg = got[cam][(100 + k, nanosec)]
                assert msg.header.frame_id == f"{cam}_optical_frame"
                assert all(d.header.frame_id == f"{cam}_optical_frame"
                           for d in msg.detections)
                assert len(msg.detections) == 5
        # the same frames give the same boxes whether or not they shared a batch
        boxes = [np.array([[d.bbox.center.position.x, d.bbox.size_x]
                           for d in got["rear"][(100 + k, 20)].detections]) for k in range(3)]
        np.testing.assert_allclose(boxes[0], boxes[2], atol=1e-2)

        bad = Image(height=8, width=8, encoding="rgb8", step=20, data=bytes(8 * 24))
        bad.header.stamp.sec = 200
        pubs["front"].publish(bad)  # step mismatch on the front camera
        pubs["rear"].publish(image_msg(views["rear"], 200, 20, "rear_optical_frame"))
        assert client.spin_until(lambda: (200, 20) in got["rear"]), log.read_text()
        pubs["front"].publish(image_msg(views["front"], 201, 10, "front_optical_frame"))
        assert client.spin_until(lambda: (201, 10) in got["front"]), log.read_text()
        assert (200, 0) not in got["front"]
        want = {"errors_step_mismatch": "1", "front_frames_processed": "4",
                "rear_frames_processed": "4"}
        assert client.spin_until(lambda: want.items() <= client.latest_diagnostics().items()), \
            client.latest_diagnostics()
        assert 1.0 <= float(client.latest_diagnostics()["frames_per_batch_mean"]) <= 2.0
        client.destroy_node()
