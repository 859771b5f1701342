"""A test-side ROS node that feeds images to perception_node and records what comes back."""

from __future__ import annotations

import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray, VisionInfo

from vit_perception.msg import FeatureMap


def stamp_key(header) -> tuple[int, int]:
    return header.stamp.sec, header.stamp.nanosec


class NodeClient(Node):
    """Publishes frames on `image`, collects detections/features/diagnostics by stamp."""

    _count = 0

    def __init__(self, target: str = "perception_node", compressed: bool = False,
                 namespace: str = ""):
        NodeClient._count += 1
        super().__init__(f"perception_test_client_{NodeClient._count}", namespace=namespace)
        self.target = f"{namespace.strip('/')}/{target}".strip("/")
        self._service_clients: dict[str, object] = {}
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(CompressedImage if compressed else Image, "image",
                                               reliable)
        self.detections: dict[tuple[int, int], Detection2DArray] = {}
        self.features: list[FeatureMap] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.vision_info: list[VisionInfo] = []
        self.create_subscription(Detection2DArray, "detections",
                                 lambda m: self.detections.__setitem__(stamp_key(m.header), m),
                                 100)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.create_subscription(VisionInfo, "vision_info", self.vision_info.append,
                                 QoSProfile(depth=1, durability=1))
        # get_state last: see _handshake.
        for srv_type, name in ((SetParameters, "set_parameters"), (ChangeState, "change_state"),
                               (GetState, "get_state")):
            self._service_clients[name] = self.create_client(srv_type, f"/{self.target}/{name}")
        self._handshake_done = False

    def subscribe_features(self) -> None:
        self.create_subscription(FeatureMap, "features", self.features.append, 10)

    def spin_until(self, predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
        return predicate()

    def wait_for_node(self, timeout: float = 60.0, proc=None) -> bool:
        """Until the node subscribes to `image` (False at once if `proc` has exited)."""
        self.spin_until(lambda: self.image_pub.get_subscription_count() > 0
                        or (proc is not None and proc.poll() is not None), timeout)
        return self.image_pub.get_subscription_count() > 0

    def _handshake(self, timeout: float) -> None:
        """Until a get_state round trip works, so no response of the node's is lost.

        wait_for_service sees the server from this side only. Fast DDS's server drops a
        response when its writer has not yet matched the client's response reader (it waits
        100 ms, then logs "client will not receive response"); on a loaded 2-core machine that
        matching can lag by seconds. get_state is idempotent, so it is retried until it
        answers; its client was created last, and discovery announces one participant's
        readers in order, so an answer also means the earlier clients' readers are matched.
        """
        client = self._service_clients["get_state"]
        deadline = time.monotonic() + timeout
        assert client.wait_for_service(timeout_sec=timeout), "no service get_state"
        while time.monotonic() < deadline:
            future = client.call_async(GetState.Request())
            if self.spin_until(future.done, min(2.0, max(0.0, deadline - time.monotonic()))):
                self._handshake_done = True
                return
            client.remove_pending_request(future)
        raise AssertionError(f"/{self.target} did not answer get_state in {timeout} s")

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        if not self._handshake_done:
            self._handshake(timeout)
        client = self._service_clients[name]
        assert client.wait_for_service(timeout_sec=timeout), f"no service {name}"
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout), f"no response from {name} in {timeout} s"
        return future.result()

    def set_parameter(self, name: str, value: float | int):
        req = SetParameters.Request()
        if isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        req.parameters = [ParameterMsg(name=name, value=pv)]
        return self.call(SetParameters, "set_parameters", req).results[0]

    def change_state(self, transition_id: int) -> bool:
        req = ChangeState.Request()
        req.transition.id = transition_id
        return self.call(ChangeState, "change_state", req).success

    def get_state(self) -> str:
        return self.call(GetState, "get_state", GetState.Request()).current_state.label

    def latest_diagnostics(self) -> dict[str, str]:
        for arr in reversed(self.diagnostics):
            for status in arr.status:
                if status.name.startswith(f"/{self.target}:"):
                    return {kv.key: kv.value for kv in status.values}
        return {}


def image_msg(rgb: np.ndarray, sec: int, nanosec: int = 0, frame_id: str = "cam") -> Image:
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id = frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding, msg.step = "rgb8", rgb.shape[1] * 3
    msg.data = rgb.tobytes()
    return msg
