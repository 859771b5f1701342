"""perception_node: camera images in; detections, DINO feature maps and previews out.

A lifecycle node (configures and activates itself unless ``autostart:=false``). The subscription
callback only stores the newest message; one worker thread decodes, runs the predictor and
publishes, so inference never blocks the callback and never builds a backlog: a frame replaced
before it was processed is dropped and counted.

The worker thread lives from configure to cleanup and does all of the process's torch work, the
model load included. PyTorch's CPU kernels run on GNU OpenMP, which gives every thread that
starts parallel work a thread pool of its own; with two such pools on a machine's cores libgomp
stops spinning between parallel regions, and a CPU forward pass took twice as long (28.8 ms
against 14.9 ms for the tiny model) when the model was loaded in another thread.
"""

from __future__ import annotations

import statistics
import threading
import time
import traceback
from collections import deque
from pathlib import Path

import rclpy
import rclpy.exceptions
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import Node, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray, VisionInfo

from vit_perception.image_encodings import ImageDecodeError, image_to_array
from vit_perception.msg import FeatureMap
from vit_perception.node_stats import LatestFrameSlot, LogOnce, NodeStats, SlotClosed
from vit_perception.ros import messages, params


class PerceptionNode(Node):
    def __init__(self, **kwargs):
        super().__init__("perception_node", **kwargs)
        self.declare_parameter("autostart", True)
        params.declare(self)
        self.add_on_set_parameters_callback(params.validate_changes)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self.settings: params.NodeSettings | None = None
        self.predictor = None
        self.model_id = ""
        self.stats = NodeStats()
        self.log_once = LogOnce(period_s=10.0)
        self._slot: LatestFrameSlot | None = None
        self._worker: threading.Thread | None = None
        self._sub = None
        self._pubs: dict = {}
        self._processed = 0
        self._pca_basis = None
        # per-frame ms of the model (the runner's infer) and of the node's own stages around it
        self.stage_ms: dict[str, deque[float]] = {
            k: deque(maxlen=300) for k in ("model", "overhead", "decode", "preprocess",
                                           "postprocess", "publish")}

    # ---- lifecycle -----------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            return self._configure()
        except Exception:  # noqa: BLE001 - rclpy would swallow it silently; say what broke
            self.get_logger().error(f"configure failed:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        try:
            self.settings = params.read(self)
        except (params.ParamError, rclpy.exceptions.ParameterException) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        s = self.settings
        model = Path(s.model)
        if model.suffix in (".pt", ".pth", ".onnx", ".engine", ".safetensors") \
                and not model.is_file():
            self.get_logger().error(f"configure failed: model file not found: {model} "
                                    "(parameter 'model')")
            return TransitionCallbackReturn.FAILURE
        try:
            self._start_worker(s)
        except Exception as exc:  # noqa: BLE001 - any load failure fails configure, named
            self.get_logger().error(f"configure failed: cannot load model '{s.model}' "
                                    f"(parameter 'model'): {exc}")
            return TransitionCallbackReturn.FAILURE
        if s.class_names:
            self.predictor.class_names = list(s.class_names)
        meta = self.predictor.metadata
        name = meta.config_name or Path(s.model).stem
        self.model_id = f"{name}@{meta.model_hash[:12]}" if meta.model_hash else name
        self.get_logger().info(
            f"model {self.model_id} on {s.backend}/{s.device}/{s.precision}, input "
            f"{self.predictor.input_size[0]}x{self.predictor.input_size[1]}, "
            f"{len(self.predictor.class_names)} classes")
        self._create_publishers()
        return TransitionCallbackReturn.SUCCESS

    def _create_publishers(self) -> None:
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        pub = self.create_lifecycle_publisher
        self._pubs = {
            "detections": pub(Detection2DArray, "detections", 10),
            "vision_info": pub(VisionInfo, "vision_info", latched),
            "features": pub(FeatureMap, "features", 2),
            "preview": pub(Image, "features/preview", 2),
            "attention": pub(Image, "attention", 2),
            "image": pub(Image, "detections/image", 2),
        }
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        if not self.has_parameter("classes"):
            self.declare_parameter(
                "classes", list(self.predictor.class_names),
                params.ParameterDescriptor(description="class names of the loaded model "
                                           "(VisionInfo points here)", read_only=True))

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        s = self.settings
        info = VisionInfo(method=self.model_id,
                          database_location=f"{self.get_fully_qualified_name()}/classes",
                          database_version=1)
        info.header.stamp = self.get_clock().now().to_msg()
        qos = QoSProfile(depth=s.qos_depth, reliability=ReliabilityPolicy.BEST_EFFORT
                         if s.qos_reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
                         durability=qos_profile_sensor_data.durability,
                         history=qos_profile_sensor_data.history)
        self._sub = self.create_subscription(
            CompressedImage if s.compressed else Image, "image", self._on_image, qos,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        result = super().on_activate(state)
        self._pubs["vision_info"].publish(info)
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._destroy_subscription()
        if self._slot is not None:
            self._slot.get(timeout=0)  # a frame from before deactivation is never processed
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _destroy_subscription(self) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None

    def _start_worker(self, s: params.NodeSettings) -> None:
        """Start the inference thread; it loads the model (re-raised here if that fails), then
        serves frames from the slot until ``_stop_worker``."""
        loaded = threading.Event()
        failure: list[BaseException] = []
        self._slot = LatestFrameSlot()
        self._worker = threading.Thread(target=self._work, args=(s, loaded, failure),
                                        name="inference", daemon=True)
        self._worker.start()
        loaded.wait()
        if failure:
            self._stop_worker()
            raise failure[0]

    def _stop_worker(self) -> None:
        self._destroy_subscription()
        if self._slot is not None:
            self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=30)
        self._slot, self._worker = None, None

    def _release(self) -> None:
        for p in self._pubs.values():
            self.destroy_lifecycle_publisher(p)
        self._pubs = {}
        if getattr(self, "_diag_timer", None) is not None:
            self.destroy_timer(self._diag_timer)
            self.destroy_publisher(self._diag_pub)
            self._diag_timer = None
        if self.predictor is not None:
            self.predictor.close()
            self.predictor = None

    # ---- parameters ----------------------------------------------------------------------
    def _on_parameters_set(self, changed) -> None:
        if self.settings is None:
            return
        params.apply_runtime_change(self.settings, changed)
        if self.predictor is not None:
            self.predictor.score_threshold = self.settings.score_threshold
            self.predictor.max_detections = self.settings.max_detections

    # ---- data path -----------------------------------------------------------------------
    def _on_image(self, msg) -> None:
        """Subscription callback: check the message, store it as the newest frame, return.

        Raw images are validated here (a zero-copy view, microseconds), so a flood of bad
        messages never displaces a good frame waiting for the worker.
        """
        self.stats.on_input()
        slot = self._slot
        if slot is None:
            return
        if isinstance(msg, Image):
            try:
                image_to_array(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                               msg.data)
            except ImageDecodeError as exc:
                self._count_error(exc.kind, f"dropping a bad image: {exc}")
                return
        try:
            if slot.put((msg, time.monotonic())):
                self.stats.on_dropped()
        except SlotClosed:
            pass

    def _work(self, s: params.NodeSettings, loaded: threading.Event,
              failure: list[BaseException]) -> None:
        try:
            from vit_perception.runtime.predictor import Predictor

            self.predictor = Predictor.load(
                s.model, backend=s.backend, device=s.device, precision=s.precision,
                input_size=s.input_size, score_threshold=s.score_threshold,
                max_detections=s.max_detections)
        except Exception as exc:  # noqa: BLE001 - handed to configure, which names it
            failure.append(exc)
            return
        finally:
            loaded.set()
        slot = self._slot
        while True:
            try:
                item = slot.get(timeout=0.5)
            except SlotClosed:
                return
            if item is not None:
                self._process(*item)

    def _process(self, msg, received: float) -> None:
        t0 = time.perf_counter()
        try:
            rgb = messages.image_msg_to_rgb(msg)
        except ImageDecodeError as exc:
            self._count_error(exc.kind, f"dropping a bad image: {exc}")
            return
        t1 = time.perf_counter()
        try:
            pred = self.predictor.predict(rgb)
        except Exception as exc:  # noqa: BLE001 - keep running; count and log the kind
            self._count_error("inference_error", f"inference failed: {exc}")
            return
        t2 = time.perf_counter()
        self._publish(pred, rgb, msg.header)
        t3 = time.perf_counter()
        stage = self.stage_ms
        model_ms = pred.timings.get("infer", 0.0)
        stage["model"].append(model_ms)
        stage["overhead"].append((t3 - t0) * 1e3 - model_ms)
        stage["decode"].append((t1 - t0) * 1e3)
        stage["preprocess"].append(pred.timings.get("preprocess", 0.0))
        stage["postprocess"].append(pred.timings.get("postprocess", 0.0))
        stage["publish"].append((t3 - t2) * 1e3)
        self.stats.on_processed(time.monotonic() - received)

    def _count_error(self, kind: str, text: str) -> None:
        self.stats.on_error(kind)
        if self.log_once(kind):
            self.get_logger().warning(f"{text} (kind '{kind}', logged once per 10 s per kind)")

    def _publish(self, pred, rgb, header) -> None:
        s, pubs = self.settings, self._pubs
        pubs["detections"].publish(messages.detections_msg(pred, header))
        self._processed += 1
        h, w = rgb.shape[:2]
        if s.publish_features and pred.features is not None \
                and pubs["features"].get_subscription_count() > 0 \
                and self._processed % s.features_rate_divider == 0:
            pubs["features"].publish(messages.feature_map_msg(
                pred, header, self.model_id, w, h, s.features_dtype))
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
        if s.publish_detections_image and pubs["image"].get_subscription_count() > 0:
            from vit_perception.visualize import draw_detections

            drawn = draw_detections(rgb, pred.boxes, pred.labels, pred.scores, pred.class_names)
            pubs["image"].publish(messages.array_to_image_msg(drawn, header))

    def _publish_diagnostics(self) -> None:
        summary = self.stats.summary()
        if self.stage_ms["model"]:
            medians = {k: statistics.median(v) for k, v in self.stage_ms.items()}
            for k, v in medians.items():
                summary[f"{k}_ms_median"] = f"{v:.2f}"
            summary["overhead_fraction"] = \
                f"{medians['overhead'] / max(medians['model'], 1e-6):.3f}"
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: perception",
                                  hardware_id=self.model_id)
        errors = int(summary.get("errors_total", "0"))
        status.level = DiagnosticStatus.WARN if errors else DiagnosticStatus.OK
        status.message = f"{summary['processed_rate_hz']} Hz processed, {errors} bad frames"
        status.values = [KeyValue(key=k, value=v) for k, v in summary.items()]
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(arr)


def main(args=None) -> int:
    with rclpy.init(args=args):
        node = PerceptionNode()
        if node.get_parameter("autostart").value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            else:
                node.get_logger().error("not activated: configure failed (see above)")
        try:
            rclpy.spin(node)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            node._stop_worker()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
