"""perception_node: camera images in; detections, DINO feature maps and previews out.

A lifecycle node (configures and activates itself unless ``autostart:=false``). Subscription
callbacks only store each camera's newest message; one worker thread (``inference_worker``)
decodes, runs the predictor on every frame waiting at that moment as one batch, and publishes,
so inference never blocks a callback and never builds a backlog: a frame replaced before it was
processed is dropped and counted.

One camera: the remappable ``image`` topic, outputs ``detections``, ``features``, ... Several:
parameter ``image_topics``; each camera's outputs under its name (``front/detections``).
SIGINT/SIGTERM end the process cleanly with exit code 0 (``shutdown``), also during loading.
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback
from collections import deque
from pathlib import Path

import rclpy
import rclpy.exceptions
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node, State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import VisionInfo

from vit_perception.image_encodings import ImageDecodeError, image_to_array
from vit_perception.node_stats import LogOnce, NodeStats
from vit_perception.ros import messages, params
from vit_perception.ros.camera_outputs import CameraOutputs
from vit_perception.ros.camera_slots import SlotClosed, camera_names
from vit_perception.ros.inference_worker import InferenceWorker
from vit_perception.ros.shutdown import (
    LoadingInterrupted,
    ShutdownSignals,
    exit_if_stuck,
    spin_until,
)


def cameras_of(s: params.NodeSettings) -> list[tuple[str, str, str]]:
    """(name, image topic, output prefix) per camera: the one `image` topic without a prefix
    when `image_topics` is empty."""
    if not s.image_topics:
        return [("image", "image", "")]
    return [(name, topic, name) for name, topic in zip(camera_names(s.image_topics),
                                                      s.image_topics)]


class PerceptionNode(Node):
    def __init__(self, signals: ShutdownSignals | None = None, **kwargs):
        super().__init__("perception_node", **kwargs)
        self.declare_parameter("autostart", True)
        params.declare(self)
        self.add_on_set_parameters_callback(params.validate_changes)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self.signals = signals
        self.settings: params.NodeSettings | None = None
        self.predictor = None
        self.model_id = ""
        self.detector = True
        self.stats = NodeStats()
        self.log_once = LogOnce(period_s=10.0)
        self.worker: InferenceWorker | None = None
        self.outputs: dict[str, CameraOutputs] = {}
        self._subs: list = []
        self._diag_pub = self._diag_timer = None
        # ms of the model (the runner's infer) and of the node's own stages around it, per batch
        self.stage_ms: dict[str, deque[float]] = {
            k: deque(maxlen=300) for k in ("model", "overhead", "decode", "preprocess",
                                           "postprocess", "publish")}
        self.batch_sizes: deque[int] = deque(maxlen=300)

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
        cameras = cameras_of(s)
        self.get_logger().info(f"loading model '{s.model}' on {s.backend}/{s.device}/"
                               f"{s.precision}")
        try:
            self.predictor = self._start_worker(s, [c[0] for c in cameras])
        except LoadingInterrupted as exc:
            self.get_logger().warning(f"configure abandoned: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - any load failure fails configure, named
            option = next((o for o in s.runner_options() if isinstance(exc, TypeError)
                           and f"'{o}'" in str(exc)), None)
            if option is not None:  # a runner without this option (e.g. threads on ORT)
                self.get_logger().error(
                    f"configure failed: parameter '{option}' is not supported by backend "
                    f"'{s.backend}' ({exc}); leave it at its default")
            else:
                self.get_logger().error(f"configure failed: cannot load model '{s.model}' "
                                        f"(parameter 'model'): {exc}")
            return TransitionCallbackReturn.FAILURE
        if s.class_names:
            self.predictor.class_names = list(s.class_names)
        meta = self.predictor.metadata
        name = meta.config_name or Path(s.model).stem
        self.model_id = f"{name}@{meta.model_hash[:12]}" if meta.model_hash else name
        self.detector = bool(getattr(self.predictor, "has_detector", True))
        self.get_logger().info(
            f"model {self.model_id} on {s.backend}/{s.device}/{s.precision}, input "
            f"{self.predictor.input_size[0]}x{self.predictor.input_size[1]}, "
            f"{len(self.predictor.class_names)} classes, {len(cameras)} camera(s)")
        int8_kind = getattr(getattr(self.predictor, "runner", None), "int8_kind", "")
        if int8_kind:  # onnxruntime int8: static (calibrated on which bags) or dynamic
            self.get_logger().info(f"int8: {int8_kind}")
        if not self.detector:
            self.get_logger().info("the model has no detector (a backbone): publishing "
                                   "features, features/preview and attention, no detections")
        self.outputs = {cam: CameraOutputs(self, prefix, self.detector)
                        for cam, _, prefix in cameras}
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        if not self.has_parameter("classes"):
            self.declare_parameter(
                "classes", list(self.predictor.class_names),
                params.ParameterDescriptor(description="class names of the loaded model "
                                           "(VisionInfo points here)", read_only=True))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        s = self.settings
        method = self.model_id if self.detector else f"{self.model_id} (features only)"
        info = VisionInfo(method=method,
                          database_location=f"{self.get_fully_qualified_name()}/classes",
                          database_version=1)
        info.header.stamp = self.get_clock().now().to_msg()
        qos = QoSProfile(depth=s.qos_depth, reliability=ReliabilityPolicy.BEST_EFFORT
                         if s.qos_reliability == "best_effort" else ReliabilityPolicy.RELIABLE,
                         durability=qos_profile_sensor_data.durability,
                         history=qos_profile_sensor_data.history)
        for cam, topic, _ in cameras_of(s):
            self._subs.append(self.create_subscription(
                CompressedImage if s.compressed else Image, topic,
                lambda msg, cam=cam: self._on_image(cam, msg), qos,
                qos_overriding_options=QoSOverridingOptions.with_default_policies()))
        result = super().on_activate(state)
        for out in self.outputs.values():
            out.publish_info(info)
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._destroy_subscriptions()
        if self.worker is not None:
            self.worker.slots.clear()  # a frame from before deactivation is never processed
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _destroy_subscriptions(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []

    def _start_worker(self, s: params.NodeSettings, cameras: list[str]):
        """Start the inference thread; it loads the model (its failure re-raised here; a
        shutdown signal raises LoadingInterrupted), then serves the cameras until ``stop``."""
        def load():
            from vit_perception.runtime.predictor import Predictor

            return Predictor.load(
                s.model, backend=s.backend, device=s.device, precision=s.precision,
                input_size=s.input_size, score_threshold=s.score_threshold,
                max_detections=s.max_detections, **s.runner_options())

        self.worker = InferenceWorker(cameras, load, self._serve, self._on_worker_error)
        return self.worker.start(self.signals.wait_or_raise if self.signals else None)

    def stop(self) -> None:
        """No new frames; the worker finishes its batch and ends (before the context goes)."""
        self._destroy_subscriptions()
        if self.worker is not None and self.worker.stop(timeout=10.0):
            self.worker = None

    def _release(self) -> None:
        for out in self.outputs.values():
            out.destroy()
        self.outputs = {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self.destroy_publisher(self._diag_pub)
            self._diag_timer = self._diag_pub = None
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
    def _on_image(self, camera: str, msg) -> None:
        """Subscription callback: check the message, store it as the camera's newest frame.

        Raw images are validated here (a zero-copy view, microseconds), so a flood of bad
        messages never displaces a good frame waiting for the worker.
        """
        self.stats.on_input()
        worker = self.worker
        if worker is None:
            return
        if isinstance(msg, Image):
            try:
                image_to_array(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                               msg.data)
            except ImageDecodeError as exc:
                self._count_error(exc.kind, f"dropping a bad image from {camera}: {exc}")
                return
        try:
            if worker.slots.put(camera, (msg, time.monotonic())):
                self.stats.on_dropped()
        except SlotClosed:
            pass

    def _serve(self, batch: list) -> None:
        """Decode the waiting frames (one per camera), predict them as one batch, publish."""
        t0 = time.perf_counter()
        frames = []
        for camera, (msg, received) in batch:
            try:
                frames.append((camera, msg, received, messages.image_msg_to_rgb(msg)))
            except ImageDecodeError as exc:
                self._count_error(exc.kind, f"dropping a bad image from {camera}: {exc}")
        if not frames:
            return
        t1 = time.perf_counter()
        try:
            rgbs = [f[3] for f in frames]
            preds = self.predictor.predict_batch(rgbs) if len(rgbs) > 1 \
                else [self.predictor.predict(rgbs[0])]
        except Exception as exc:  # noqa: BLE001 - keep running; count and log the kind
            self._count_error("inference_error", f"inference failed: {exc}")
            return
        t2 = time.perf_counter()
        self.batch_sizes.append(len(frames))
        for (camera, msg, received, rgb), pred in zip(frames, preds):
            self.outputs[camera].publish(pred, rgb, msg.header, self.settings, self.model_id)
            self.stats.on_processed(time.monotonic() - received)
        t3 = time.perf_counter()
        timings = preds[0].timings
        model_ms = timings.get("infer", 0.0)
        stage = self.stage_ms
        stage["model"].append(model_ms)
        stage["overhead"].append((t3 - t0) * 1e3 - model_ms)
        stage["decode"].append((t1 - t0) * 1e3)
        stage["preprocess"].append(timings.get("preprocess", 0.0))
        stage["postprocess"].append(timings.get("postprocess", 0.0))
        stage["publish"].append((t3 - t2) * 1e3)

    def _on_worker_error(self, exc: BaseException) -> None:
        self._count_error("publish_error", f"publishing failed: {exc}")

    def _count_error(self, kind: str, text: str) -> None:
        self.stats.on_error(kind)
        if self.log_once(kind):
            self.get_logger().warning(f"{text} (kind '{kind}', logged once per 10 s per kind)")

    def _publish_diagnostics(self) -> None:
        summary = self.stats.summary()
        if self.stage_ms["model"]:
            medians = {k: statistics.median(v) for k, v in self.stage_ms.items()}
            for k, v in medians.items():
                summary[f"{k}_ms_median"] = f"{v:.2f}"
            summary["overhead_fraction"] = \
                f"{medians['overhead'] / max(medians['model'], 1e-6):.3f}"
        if len(self.outputs) > 1:
            for cam, out in self.outputs.items():
                summary[f"{cam}_frames_processed"] = str(out.processed)
            if self.batch_sizes:
                summary["frames_per_batch_mean"] = \
                    f"{sum(self.batch_sizes) / len(self.batch_sizes):.2f}"
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
    """Run the node until SIGINT/SIGTERM; exit code 0 also when a signal interrupts loading."""
    stuck = None
    with ShutdownSignals() as signals, \
            rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
        try:
            node = PerceptionNode(signals=signals)
        except rclpy.exceptions.ParameterException as exc:  # a -p value of the wrong type
            print(f"perception_node: error: {exc}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            if node.get_parameter("autostart").value:
                if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                    node.trigger_activate()
                elif not signals.requested.is_set():
                    node.get_logger().error("not activated: configure failed (see above)")
            spin_until(executor, signals)
            node.get_logger().info(f"{signals.name}: shutting down")
        except ExternalShutdownException:
            pass
        finally:
            node.stop()  # the worker ends before the context does
            stuck = node.worker.thread if node.worker is not None else None
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
    exit_if_stuck(stuck)
    return 0


if __name__ == "__main__":
    sys.exit(main())
