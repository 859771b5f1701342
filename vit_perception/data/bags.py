"""Frames and their labels out of rosbags: `read_frames(bag, ...) -> Iterator[Frame]`.

Images come from a sensor_msgs/Image or CompressedImage topic (told apart by the topic's type),
labels from a vision_msgs/Detection2DArray topic in the same bag or in other bags, paired by header
stamp (exact nanoseconds). Label topics are small and read first; images stream one at a time, so
bags larger than memory work. A truncated bag yields its readable frames, then raises `BagError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vit_perception.data.bag_source import (
    BagError,
    bag_topics,
    check_topic,
    header_stamp_ns,
    iter_messages,
)
from vit_perception.data.msg_defs import COMPRESSED_IMAGE

__all__ = [
    "BagError",
    "Detections",
    "Frame",
    "FrameStream",
    "bag_topics",
    "decode_image",
    "detections_from_msg",
    "load_classes",
    "read_detections",
    "read_frames",
    "resolve_classes",
]

log = logging.getLogger(__name__)

DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_LABELS_TOPIC = "/labels"


@dataclass
class Detections:
    """Boxes of one Detection2DArray: `boxes [n, 4]` xyxy pixels, class_id strings, scores."""

    boxes: np.ndarray
    class_names: list[str]
    scores: np.ndarray
    frame_id: str = ""


@dataclass
class Frame:
    """One image of a bag, with its labels when a label message shares its header stamp.

    `image` is `[H, W, 3]` uint8 RGB; `boxes [n, 4]` xyxy pixels; `class_names` one per box, or
    None when the frame has no label message (unlabelled: skip it for training and evaluation).
    `labels` are indices into `classes` (the class list of the stream), None when unlabelled.
    """

    index: int
    stamp_ns: int
    frame_id: str
    image: np.ndarray
    boxes: np.ndarray
    class_names: list[str] | None
    labels: np.ndarray | None = None
    classes: list[str] | None = field(default=None, repr=False)

    @property
    def labelled(self) -> bool:
        return self.class_names is not None


def load_classes(path: str | Path) -> list[str]:
    """A classes file: one name per line; blank lines and `#` comments skipped."""
    names = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line)
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate class names")
    return names


def resolve_classes(classes, found: Sequence[str] = ()) -> list[str]:
    """The class list: a classes file path, an explicit list, or (None) the sorted set `found`."""
    if classes is None:
        return sorted(set(found))
    if isinstance(classes, (str, Path)):
        return load_classes(classes)
    return [str(c) for c in classes]


def _bbox_center(bbox) -> tuple[float, float]:
    center = bbox.center
    pos = getattr(center, "position", None)  # vision_msgs 4 (ROS 2): Pose2D{position, theta}
    if pos is not None:
        return float(pos.x), float(pos.y)
    return float(center.x), float(center.y)  # ROS 1 / older: geometry_msgs/Pose2D


def _best_hypothesis(results) -> tuple[str, float]:
    best_name, best_score = "", -np.inf
    for r in results:
        hyp = getattr(r, "hypothesis", r)
        name = getattr(hyp, "class_id", None)
        if name is None:  # ROS 1 vision_msgs: int64 id
            name = str(getattr(hyp, "id", ""))
        score = float(getattr(hyp, "score", 1.0))
        if score > best_score:
            best_name, best_score = str(name), score
    return best_name, (1.0 if best_score == -np.inf else best_score)


def detections_from_msg(msg) -> Detections:
    """A vision_msgs/Detection2DArray as `Detections` (bbox centre + size -> xyxy pixels)."""
    boxes, names, scores = [], [], []
    for det in msg.detections:
        cx, cy = _bbox_center(det.bbox)
        w, h = float(det.bbox.size_x), float(det.bbox.size_y)
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        name, score = _best_hypothesis(det.results)
        names.append(name)
        scores.append(score)
    return Detections(
        boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
        class_names=names,
        scores=np.asarray(scores, np.float64),
        frame_id=str(msg.header.frame_id),
    )


def read_detections(bag: str | Path, topic: str = DEFAULT_LABELS_TOPIC,
                    errors: list | None = None) -> dict[int, Detections]:
    """{header stamp ns: Detections} of a Detection2DArray topic (first message per stamp).

    With an `errors` list, a `BagError` is appended there instead of raised (the readable
    messages are returned either way).
    """
    out: dict[int, Detections] = {}
    duplicates = 0
    try:
        for m in iter_messages(bag, [topic]):
            stamp = header_stamp_ns(m.msg)
            if stamp in out:
                duplicates += 1
                continue
            out[stamp] = detections_from_msg(m.msg)
    except BagError as exc:
        if errors is None:
            raise
        errors.append(exc)
    if duplicates:
        log.warning("%s: %d %s messages repeat a stamp; kept the first", bag, duplicates, topic)
    return out


def decode_image(msgtype: str, msg) -> np.ndarray:
    """A sensor_msgs/Image or CompressedImage message as a writable `[H, W, 3]` uint8 RGB array."""
    from vit_perception.image_encodings import compressed_to_rgb, image_to_rgb

    if msgtype == COMPRESSED_IMAGE:
        rgb = compressed_to_rgb(msg.format, msg.data)
    else:
        rgb = image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                           msg.data)
    if not rgb.flags.writeable or not rgb.flags.c_contiguous:
        rgb = np.array(rgb, copy=True, order="C")
    return rgb


class FrameStream:
    """Iterator of `Frame`s (what `read_frames` returns); `classes` and `stats` are attributes.

    `stats` (filled while iterating): frames, labelled, unlabelled, skipped (unlabelled frames
    not yielded), extra_labels (label messages matching no image), unknown_classes.
    """

    def __init__(self, bag, image_topic, labels_topic, label_bags, classes, labelled_only,
                 max_frames):
        self.bag = Path(bag)
        self.image_topic = image_topic
        self.labels_topic = labels_topic
        self.labelled_only = labelled_only
        self.max_frames = max_frames
        self._errors: list[BagError] = []
        self.labels: dict[int, Detections] = {}
        if labels_topic:
            sources = [self.bag, *[Path(b) for b in label_bags]]
            for src in sources:
                if labels_topic not in bag_topics(src):
                    continue
                for stamp, det in read_detections(src, labels_topic, self._errors).items():
                    self.labels.setdefault(stamp, det)
        found = {n for d in self.labels.values() for n in d.class_names}
        self.classes = resolve_classes(classes, found)
        self._index = {name: i for i, name in enumerate(self.classes)}
        unknown = sorted(found - set(self.classes))
        if unknown:
            raise ValueError(f"{self.bag}: labels use classes not in the class list: {unknown}")
        self.stats = {"frames": 0, "labelled": 0, "unlabelled": 0, "skipped": 0,
                      "extra_labels": 0}
        self._used: set[int] = set()
        self._it = self._generate()

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> Frame:
        return next(self._it)

    def _generate(self) -> Iterator[Frame]:
        check_topic(self.bag, self.image_topic)
        index = 0
        yielded = 0
        try:
            for m in iter_messages(self.bag, [self.image_topic]):
                if self.max_frames is not None and yielded >= self.max_frames:
                    break
                stamp = header_stamp_ns(m.msg)
                det = self.labels.get(stamp)
                self.stats["frames"] += 1
                if det is None:
                    self.stats["unlabelled"] += 1
                    if self.labelled_only:
                        self.stats["skipped"] += 1
                        index += 1
                        continue
                else:
                    self.stats["labelled"] += 1
                    self._used.add(stamp)
                frame = Frame(
                    index=index,
                    stamp_ns=stamp,
                    frame_id=str(m.msg.header.frame_id),
                    image=decode_image(m.msgtype, m.msg),
                    boxes=(np.zeros((0, 4)) if det is None else det.boxes.copy()),
                    class_names=None if det is None else list(det.class_names),
                    labels=(None if det is None else
                            np.asarray([self._index[n] for n in det.class_names], np.int64)),
                    classes=self.classes,
                )
                index += 1
                yielded += 1
                yield frame
        finally:
            self.stats["extra_labels"] = len(set(self.labels) - self._used)
        if self.max_frames is None and self.stats["extra_labels"]:
            log.info("%s: %d label messages match no image stamp (ignored)", self.bag,
                      self.stats["extra_labels"])
        if self._errors:
            raise self._errors[0]


def read_frames(
    bag: str | Path,
    image_topic: str = DEFAULT_IMAGE_TOPIC,
    labels_topic: str | None = DEFAULT_LABELS_TOPIC,
    label_bags: Sequence[str | Path] = (),
    classes: str | Path | Sequence[str] | None = None,
    *,
    labelled_only: bool = False,
    max_frames: int | None = None,
) -> FrameStream:
    """Stream the frames of `bag` (rosbag2 directory, bare .mcap/.db3, or ROS 1 .bag).

    Labels: Detection2DArray messages on `labels_topic` in `bag` and in `label_bags`, paired
    by exact header stamp; frames without one are unlabelled (`class_names=None`; left out with
    `labelled_only=True`); label messages without a frame are counted in `stats["extra_labels"]`.
    `classes`: a classes file (one name per line), a list, or None for the sorted set of
    class_id strings found. Raises `BagError` after the readable frames of a truncated bag,
    `ValueError` for a missing/non-image topic or a class not in the given class list.
    """
    return FrameStream(bag, image_topic, labels_topic, label_bags, classes, labelled_only,
                       max_frames)
