"""ROS messages <-> the package's plain arrays and predictions (no node, no rclpy.Node)."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from vit_perception.image_encodings import compressed_to_rgb, image_to_rgb, rgb_to_image_fields
from vit_perception.msg import FeatureMap
from vit_perception.runtime.predictor import Prediction


def image_msg_to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """``H x W x 3`` uint8 RGB; raises ``ImageDecodeError`` (with a ``kind``) on bad input."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg.format, msg.data)
    return image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                        msg.data)


def array_to_image_msg(array: np.ndarray, header: Header, encoding: str = "rgb8") -> Image:
    """An rgb8 (``H x W x 3``) or mono8 (``H x W``) array as a sensor_msgs/Image."""
    fields = rgb_to_image_fields(array, encoding)
    msg = Image(header=header)
    msg.height, msg.width = fields["height"], fields["width"]
    msg.encoding, msg.is_bigendian, msg.step = fields["encoding"], fields["is_bigendian"], \
        fields["step"]
    msg.data = fields["data"]
    return msg


def detections_msg(pred: Prediction, header: Header) -> Detection2DArray:
    """Detections in input-image pixels; ``class_id`` is the class name, as in VisionInfo."""
    out = Detection2DArray(header=header)
    names = pred.label_names
    for (x0, y0, x1, y1), score, name in zip(pred.boxes.tolist(), pred.scores.tolist(), names):
        det = Detection2D(header=header)
        det.bbox.center.position.x = 0.5 * (x0 + x1)
        det.bbox.center.position.y = 0.5 * (y0 + y1)
        det.bbox.size_x = x1 - x0
        det.bbox.size_y = y1 - y0
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = name
        hyp.hypothesis.score = float(score)
        hyp.pose.pose.position.x = det.bbox.center.position.x
        hyp.pose.pose.position.y = det.bbox.center.position.y
        det.results.append(hyp)
        out.detections.append(det)
    return out


def feature_map_msg(pred: Prediction, header: Header, model_id: str, image_w: int,
                    image_h: int, dtype: str = "float16") -> FeatureMap:
    """The dense features as a self-describing FeatureMap (layout CHW, grid in input pixels)."""
    feats = np.ascontiguousarray(pred.features, dtype=np.float16 if dtype == "float16"
                                 else np.float32)
    c, h, w = feats.shape
    g = pred.grid
    msg = FeatureMap(header=header, model_id=model_id, image_width=image_w, image_height=image_h)
    msg.height, msg.width, msg.channels = h, w, c
    msg.dtype = FeatureMap.DTYPE_FLOAT16 if dtype == "float16" else FeatureMap.DTYPE_FLOAT32
    msg.layout = FeatureMap.LAYOUT_CHW
    msg.is_bigendian = feats.dtype.byteorder == ">"
    # Predictor grids are in model-input pixels; the message speaks input-image pixels.
    msg.stride_x, msg.stride_y = g.stride_x / g.scale, g.stride_y / g.scale
    msg.offset_x, msg.offset_y = -g.offset_x / g.scale, -g.offset_y / g.scale
    if pred.embedding is not None:
        msg.embedding = np.asarray(pred.embedding, dtype=np.float32).ravel().tolist()
    msg.data = feats.tobytes()
    return msg


def feature_map_to_array(msg: FeatureMap) -> np.ndarray:
    """Decode a FeatureMap into a ``C x h x w`` float array (the inverse of feature_map_msg)."""
    dtype = np.dtype(msg.dtype).newbyteorder(">" if msg.is_bigendian else "<")
    flat = np.frombuffer(bytes(msg.data), dtype=dtype)
    if msg.layout == FeatureMap.LAYOUT_HWC:
        return flat.reshape(msg.height, msg.width, msg.channels).transpose(2, 0, 1)
    return flat.reshape(msg.channels, msg.height, msg.width)
