"""Bag replay through the live node without rosbag2: `vit-perception play` feeds a synthetic bag
to perception_node over real DDS, `vit-perception record` records its detections, and `eval
--predictions-topic` scores the recorded bag exactly as the in-process predictor scores the same
frames."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_perception_node import NODE

from ros_support.processes import require_ros, ros_process

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from ros_support.models import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


def wait_for_line(path: Path, text: str, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None and time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)


def labelled_by_predictor(tmp_path: Path, predictor) -> Path:
    """Synthetic frames labelled with the predictor's own top boxes, moved a little: a random
    model then scores well above zero, so equal AP means equal detections."""
    from vit_perception.data.bag_writer import BagWriter
    from vit_perception.data.bags import read_frames
    from vit_perception.data.synth import write_synthetic_bag

    synth = write_synthetic_bag(tmp_path / "synth", frames=4, size=(192, 144), seed=4,
                                num_classes=1)
    out = tmp_path / "lab"
    with BagWriter(out) as writer:
        for k, frame in enumerate(read_frames(synth)):
            pred = predictor.predict(frame.image)
            boxes = pred.boxes[:4] + (k % 3 - 1) * 2.0
            writer.write_image("/camera/image_raw", frame.stamp_ns, frame.frame_id, frame.image)
            writer.write_detections("/labels", frame.stamp_ns, frame.frame_id, boxes,
                                    pred.label_names[:4])
    return out


def test_play_record_eval_scores_the_node_like_the_predictor(checkpoint, tmp_path):
    require_ros()
    from vit_perception.evaluation.replay import replay_model, score_recorded
    from vit_perception.runtime.predictor import Predictor

    predictor = Predictor.load(checkpoint, score_threshold=0.0, max_detections=30)
    bag = labelled_by_predictor(tmp_path, predictor)
    node_log, rec_log, play_log = (tmp_path / f"{n}.log" for n in ("node", "record", "play"))
    preds_bag = tmp_path / "preds"
    params = ["-p", f"model:={checkpoint}", "-p", "score_threshold:=0.0", "-p",
              "max_detections:=30", "-p", "qos_reliability:=reliable", "-p", "qos_depth:=10",
              "-r", "image:=/camera/image_raw"]
    cli = ["-m", "vit_perception"]
    with ros_process([*NODE, *params], node_log) as node, \
            ros_process([*cli, "record", str(preds_bag), "--topics", "/detections",
                         "/vision_info", "/features"], rec_log) as recorder:
        for topic in ("/detections", "/vision_info", "/features"):
            wait_for_line(rec_log, f"connected: {topic}", recorder)
        with ros_process([*cli, "play", str(bag), "--rate", "0", "--wait", "60"],
                         play_log) as player:
            assert player.wait(timeout=60) == 0, play_log.read_text()
        assert node.poll() is None, node_log.read_text()
    assert recorder.returncode == 0, rec_log.read_text()  # stopped by SIGINT, cleanly
    played = play_log.read_text()
    assert "/camera/image_raw 4" in played and "/labels 4" in played, played
    assert "no answer" not in played, played
    assert "recorded into" in rec_log.read_text() and "Traceback" not in rec_log.read_text()

    recorded = score_recorded(bag, "/detections", prediction_bags=[preds_bag], keep_worst=0)
    direct = replay_model(bag, predictor, keep_worst=0)
    assert recorded.metrics["frames_without_predictions"] == 0
    assert recorded.metrics["labelled_frames"] == direct.metrics["labelled_frames"] == 4
    assert [len(p["boxes"]) for p in recorded.predictions] == \
        [len(p["boxes"]) for p in direct.predictions] == [30] * 4
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert recorded.metrics[key] == pytest.approx(direct.metrics[key], abs=1e-6), key
    assert direct.metrics["AP50"] > 0.3  # the comparison is not between two empty results

    # the latched vision_info (recorded with its publisher's durability) and our own FeatureMap
    # type (registered from its .msg file) are in the bag too
    from vit_perception.data.bag_source import iter_messages

    msgs: dict[str, list] = {}
    for m in iter_messages(preds_bag):
        msgs.setdefault(m.topic, []).append(m.msg)
    assert len(msgs["/detections"]) == 4
    assert msgs["/vision_info"][0].method.startswith("vit_tiny_detr")
    assert len(msgs["/features"]) == 4
    fm = msgs["/features"][0]
    assert len(fm.data) == fm.channels * fm.height * fm.width * 2 and fm.dtype == "float16"


def test_play_and_record_name_missing_topics_and_bags(tmp_path, capsys):
    require_ros()
    from vit_perception.cli import main
    from vit_perception.data.synth import write_synthetic_bag

    bag = write_synthetic_bag(tmp_path / "lab", frames=1, size=(64, 64))
    assert main(["play", str(bag), "--topics", "/nope"]) != 0
    err = capsys.readouterr().err
    assert "/nope" in err and "/camera/image_raw" in err and "Traceback" not in err
    assert main(["play", str(tmp_path / "missing")]) != 0
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err
    assert main(["record", str(bag)]) != 0  # never overwrites a bag
    err = capsys.readouterr().err
    assert str(bag) in err and "exists" in err and "Traceback" not in err


def test_play_loops_in_recorded_order_until_sigint(tmp_path):
    """`--loop` replays the bag again and again, each pass in the bag's order, until SIGINT;
    the player then exits 0."""
    require_ros()
    import signal

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from vit_perception.data.synth import write_synthetic_bag

    bag = write_synthetic_bag(tmp_path / "lab", frames=3, size=(64, 64))
    log = tmp_path / "play.log"
    stamps: list[int] = []
    with rclpy.init():
        node = rclpy.create_node("loop_listener")
        node.create_subscription(Image, "/camera/image_raw",
                                 lambda m: stamps.append(m.header.stamp.nanosec), QoSProfile(
                                     depth=100, reliability=ReliabilityPolicy.RELIABLE))
        with ros_process(["-m", "vit_perception", "play", str(bag), "--loop", "--rate", "3"],
                         log) as player:
            deadline = time.monotonic() + 30
            while len(stamps) < 7 and time.monotonic() < deadline and player.poll() is None:
                rclpy.spin_once(node, timeout_sec=0.05)
            player.send_signal(signal.SIGINT)
            assert player.wait(timeout=15) == 0, log.read_text()
        node.destroy_node()
    assert len(stamps) >= 7, log.read_text()
    first = stamps[:3]
    assert first == sorted(first) and len(set(first)) == 3
    assert stamps[3:6] == first  # the second pass repeats the first, stamps and all
    assert "loops" in log.read_text() and "stopped by SIGINT" in log.read_text()
