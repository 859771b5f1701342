"""Frames in, detections and dense features out, the same way for every backend.

``Predictor.load(model, backend=...)`` takes a checkpoint (``.pt``), a model config name or YAML
(random weights, with a warning), an exported ``.onnx`` or a TensorRT ``.engine`` (with its JSON
sidecar). Preprocessing (letterbox + normalise) runs on the backend's device; the model's
``PostProcessor`` maps boxes back to the pixels of each original frame.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vit_perception.runtime import INPUT_NAME
from vit_perception.runtime.base import Runner, RunnerError
from vit_perception.runtime.metadata import ModelMetadata

BACKENDS = {"torch": "torch", "onnxruntime": "onnxruntime", "onnx": "onnxruntime",
            "ort": "onnxruntime", "tensorrt": "tensorrt", "trt": "tensorrt"}


@dataclasses.dataclass(frozen=True)
class Grid:
    """Where feature-map cells lie in the original frame.

    ``stride_x/stride_y``: model-input pixels per cell; ``offset_x/offset_y``: letterbox padding
    in model-input pixels; ``scale``: model-input pixels per frame pixel (``scale_y`` vertically
    when the rounded letterbox differs by a hair; ``None``: same as ``scale``). The centre of cell
    (column ``i``, row ``j``) is at frame pixel ``((i + .5) * stride_x - offset_x) / scale``,
    ``((j + .5) * stride_y - offset_y) / scale_y`` (see ``cell_to_frame``).
    """

    stride_x: float
    stride_y: float
    offset_x: float
    offset_y: float
    scale: float
    scale_y: float | None = None

    @property
    def _sy(self) -> float:
        return self.scale if self.scale_y is None else self.scale_y

    def cell_to_frame(self, col: Any, row: Any) -> tuple[Any, Any]:
        """Frame-pixel centre of grid cell(s) ``(col, row)`` (scalars or numpy arrays)."""
        x = ((np.asarray(col) + 0.5) * self.stride_x - self.offset_x) / self.scale
        y = ((np.asarray(row) + 0.5) * self.stride_y - self.offset_y) / self._sy
        return x, y

    def frame_to_cell(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Fractional grid coordinates of frame pixel(s) ``(x, y)``."""
        col = (np.asarray(x) * self.scale + self.offset_x) / self.stride_x - 0.5
        row = (np.asarray(y) * self._sy + self.offset_y) / self.stride_y - 0.5
        return col, row


@dataclasses.dataclass
class Prediction:
    """Detections in frame pixels, plus dense features and their grid."""

    boxes: np.ndarray  # [n, 4] float32 xyxy, frame pixels
    scores: np.ndarray  # [n] float32
    labels: np.ndarray  # [n] int64 index into class_names
    class_names: list[str]
    features: np.ndarray | None  # [C, h, w] float32 (float16 from fp16 backends)
    embedding: np.ndarray | None  # [C]
    attention: np.ndarray | None  # [heads, h, w]
    grid: Grid | None
    timings: dict[str, float]  # ms: preprocess, infer, postprocess (shared by a batch)

    @property
    def label_names(self) -> list[str]:
        return [self.class_names[i] if 0 <= i < len(self.class_names) else str(i)
                for i in self.labels.tolist()]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


class Predictor:
    """Runs one ``Runner`` between shared pre- and post-processing.

    ``score_threshold`` and ``max_detections`` may be changed at any time (``None``: the
    post-processor's defaults). ``want_features`` / ``want_attention`` / ``want_embedding`` off
    skip the device-to-host copies of outputs the caller does not use.
    """

    def __init__(
        self,
        runner: Runner,
        postprocessor: Any,
        metadata: ModelMetadata,
        input_size: tuple[int, int] | None = None,
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> None:
        self.runner = runner
        self.postprocessor = postprocessor
        self.metadata = metadata
        self.input_size = tuple(input_size) if input_size else metadata.input_size
        self.class_names = list(metadata.class_names)
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.want_features = True
        self.want_attention = True
        self.want_embedding = True
        # False for a backbone-only model (``pretrain``'s backbone.pt): no boxes, features only
        self.has_detector = not bool(((metadata.config or {}).get("model") or {})
                                     .get("backbone_only"))
        self._mean = list(metadata.mean)
        self._std = list(metadata.std)

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @classmethod
    def load(
        cls,
        model: str | Path,
        backend: str = "torch",
        device: str = "cpu",
        precision: str = "fp32",
        input_size: tuple[int, int] | None = None,
        score_threshold: float | None = None,
        max_detections: int | None = None,
        **runner_options: Any,
    ) -> Predictor:
        """Build a predictor; see ``runtime.loading.load_runner`` for what ``model`` may be."""
        from vit_perception.runtime.loading import load_runner

        if backend not in BACKENDS:
            raise RunnerError(f"unknown backend {backend!r}; one of {sorted(set(BACKENDS))}")
        runner, postprocessor, meta = load_runner(
            model, BACKENDS[backend], device=device, precision=precision,
            input_size=input_size, **runner_options,
        )
        predictor = cls(runner, postprocessor, meta, meta.input_size, score_threshold,
                        max_detections)
        runner.activate()
        return predictor

    def warmup(self, batch_sizes: Sequence[int] = (1,),
               frame_size: tuple[int, int] | None = None) -> None:
        """Run blank frames (``frame_size`` w, h; default the input size) once per batch size,
        so first-call work (CUDA graph capture per batch size, torch.compile, autotuning) is
        done before the first real frame (e.g. 1..N for a node batching N cameras)."""
        w, h = frame_size or self.input_size
        for n in batch_sizes:
            self.predict_batch([np.zeros((h, w, 3), np.uint8)] * int(n))

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(self, frame: np.ndarray) -> Prediction:
        """One ``H x W x 3`` uint8 RGB frame."""
        return self.predict_batch([frame])[0]

    def predict_batch(self, frames: Sequence[np.ndarray]) -> list[Prediction]:
        """Frames of any sizes (e.g. several cameras) in one batch; one ``Prediction`` each."""
        if len(frames) == 0:
            return []
        for f in frames:
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise ValueError(f"expected HxWx3 uint8 RGB frames, got {f.dtype} {f.shape}")
        sync = self._sync
        t0 = time.perf_counter()
        images, letterboxes = self.preprocess(frames)
        sync()
        t1 = time.perf_counter()
        outputs = self.runner.infer({INPUT_NAME: images})
        sync()
        t2 = time.perf_counter()
        predictions = self.postprocess(outputs, letterboxes)
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3,
                   "postprocess": (t3 - t2) * 1e3}
        for p in predictions:
            p.timings = dict(timings)
        return predictions

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def preprocess(self, frames: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Any]]:
        """Letterbox + normalise on the runner's device -> ([B,3,H,W], letterboxes)."""
        from vit_perception.models.preprocess import preprocess

        images, letterboxes = preprocess(list(frames), self.input_size, self._mean, self._std,
                                         self.device, dtype=self.runner.input_dtype)
        return images, letterboxes

    def postprocess(self, outputs: dict[str, torch.Tensor], letterboxes: list[Any]
                    ) -> list[Prediction]:
        kwargs: dict[str, Any] = {}
        if self.score_threshold is not None:
            kwargs["score_threshold"] = float(self.score_threshold)
        if self.max_detections is not None:
            kwargs["max_detections"] = int(self.max_detections)
        if self.has_detector and "pred_logits" in outputs:
            head = {k: outputs[k].float() for k in ("pred_logits", "pred_boxes")}
            detections = self.postprocessor(head, letterboxes, **kwargs)
        else:  # features-only model: every frame has no detections
            detections = [_NO_DETECTIONS] * len(letterboxes)
        features = self._host(outputs, "features", self.want_features)
        embedding = self._host(outputs, "embedding", self.want_embedding)
        attention = self._host(outputs, "attention", self.want_attention)
        w, h = self.input_size
        preds = []
        for i, (det, lb) in enumerate(zip(detections, letterboxes)):
            grid = None
            if features is not None:
                fh, fw = features.shape[-2:]
                grid = Grid(w / fw, h / fh, float(lb.pad_x), float(lb.pad_y),
                            float(lb.scale_x), float(lb.scale_y))
            preds.append(Prediction(
                boxes=_np(det.boxes, np.float32).reshape(-1, 4),
                scores=_np(det.scores, np.float32).reshape(-1),
                labels=_np(det.labels, np.int64).reshape(-1),
                class_names=self.class_names,
                features=None if features is None else features[i],
                embedding=None if embedding is None else embedding[i],
                attention=None if attention is None else attention[i],
                grid=grid,
                timings={},
            ))
        return preds

    @staticmethod
    def _host(outputs: dict[str, torch.Tensor], name: str, wanted: bool) -> np.ndarray | None:
        t = outputs.get(name)
        if not wanted or t is None:
            return None
        t = t.detach()
        if t.dtype not in (torch.float32, torch.float16):
            t = t.float()
        return t.cpu().numpy()


@dataclasses.dataclass(frozen=True)
class _Empty:
    boxes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


_NO_DETECTIONS = _Empty()


def _np(value: Any, dtype: type) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


