"""TensorRT backend: a serialized engine run through the TensorRT 10 Python API.

Device buffers are torch CUDA tensors (``set_tensor_address``), and the engine is enqueued on
torch's current stream (``execute_async_v3``), so no copy or sync separates it from torch pre- and
post-processing. ``tensorrt`` is imported only when a runner is activated.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vit_perception.runtime.base import Runner, RunnerError

if TYPE_CHECKING:
    import tensorrt as trt


_HOW = ("Install it from NVIDIA (JetPack ships it; on desktops `pip install tensorrt` with "
        "access to pypi.nvidia.com), or use backend 'onnxruntime' or 'torch'.")


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a ``RunnerError`` saying how to get it.

    Judged by what it provides (``Builder``, ``Runtime``, ``__version__``), not by the import
    succeeding: ``tensorrt-stubs`` (type stubs) leaves an empty ``tensorrt/`` package behind
    that imports fine.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise RunnerError(f"TensorRT is not installed: `import tensorrt` failed. {_HOW}") from exc
    missing = [n for n in ("Builder", "Runtime", "__version__") if not hasattr(tensorrt, n)]
    if missing:
        where = getattr(tensorrt, "__file__", None) or list(getattr(tensorrt, "__path__", []))
        raise RunnerError(f"TensorRT is not installed: the `tensorrt` package found ({where}) "
                          f"lacks {', '.join(missing)} (type stubs only?). {_HOW}")
    return tensorrt


def require_tensorrt() -> Any:
    """``import_tensorrt()``, and a ``RunnerError`` when torch sees no CUDA device for it."""
    trt_module = import_tensorrt()
    if not torch.cuda.is_available():
        raise RunnerError("TensorRT needs a CUDA GPU and torch sees none here; use backend "
                          "'onnxruntime' or 'torch' on this machine")
    return trt_module


def tensorrt_available() -> bool:
    """True when the real ``tensorrt`` imports and torch sees a CUDA device."""
    try:
        require_tensorrt()
    except RunnerError:
        return False
    return True


def torch_dtype(trt_module: Any, dtype: trt.DataType) -> torch.dtype:
    table = {
        trt_module.DataType.FLOAT: torch.float32,
        trt_module.DataType.HALF: torch.float16,
        trt_module.DataType.BF16: torch.bfloat16,
        trt_module.DataType.INT32: torch.int32,
        trt_module.DataType.INT64: torch.int64,
        trt_module.DataType.BOOL: torch.bool,
        trt_module.DataType.INT8: torch.int8,
        trt_module.DataType.UINT8: torch.uint8,
    }
    if dtype not in table:
        raise RunnerError(f"tensorrt: unsupported tensor dtype {dtype}")
    return table[dtype]


def deserialize_engine(data: bytes, logger: trt.ILogger | None = None) -> trt.ICudaEngine:
    """Deserialize engine bytes; ``RunnerError`` when TensorRT rejects them."""
    trt_module = import_tensorrt()
    logger = logger or trt_module.Logger(trt_module.Logger.WARNING)
    runtime = trt_module.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise RunnerError("tensorrt: the engine could not be deserialized (corrupt, or built "
                          "with another TensorRT version or GPU)")
    return engine


class TensorRTRunner(Runner):
    """Run a serialized TensorRT engine on a CUDA device."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device: str | torch.device = "cuda") -> None:
        super().__init__()
        self.engine_path = Path(engine_path)
        self._device = torch.device(device)
        if self._device.type != "cuda":
            raise RunnerError(f"tensorrt: runs on CUDA devices only, not {self._device}")
        self.engine: trt.ICudaEngine | None = None
        self.context: trt.IExecutionContext | None = None
        self._trt: Any = None
        self._dtypes: dict[str, torch.dtype] = {}

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def input_dtype(self) -> torch.dtype:
        return self._dtypes.get(self.input_names[0], torch.float32)

    def _activate(self) -> None:
        self._trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise RunnerError("tensorrt: torch sees no CUDA device")
        if not self.engine_path.is_file():
            raise RunnerError(f"tensorrt: engine file not found: {self.engine_path}")
        with torch.cuda.device(self._device):
            self.engine = deserialize_engine(self.engine_path.read_bytes())
            self.context = self.engine.create_execution_context()
        inputs, outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self._dtypes[name] = torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
            if self.engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT:
                inputs.append(name)
            else:
                outputs.append(name)
        self.input_names, self.output_names = inputs, outputs

    def _deactivate(self) -> None:
        self.context = None
        self.engine = None

    def _infer(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        assert self.engine is not None
        first = self.engine.get_tensor_shape(self.input_names[0])
        batch = inputs[self.input_names[0]].shape[0]
        if batch > 1 and len(first) and first[0] == 1:  # fixed batch-1 engine: image by image
            parts = [self._infer_one({n: inputs[n][i : i + 1] for n in self.input_names})
                     for i in range(batch)]
            return {n: torch.cat([p[n] for p in parts]) for n in self.output_names}
        return self._infer_one(inputs)

    def _infer_one(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        assert self.context is not None
        context = self.context
        kept = []
        for name in self.input_names:
            t = inputs[name].to(self._device, self._dtypes[name]).contiguous()
            kept.append(t)
            if not context.set_input_shape(name, tuple(t.shape)):
                raise RunnerError(f"tensorrt: input {name} shape {tuple(t.shape)} not accepted")
            context.set_tensor_address(name, t.data_ptr())
        outputs = {}
        for name in self.output_names:
            dims = context.get_tensor_shape(name)
            shape = [int(dims[k]) for k in range(len(dims))]
            out = torch.empty(shape, dtype=self._dtypes[name], device=self._device)
            outputs[name] = out
            context.set_tensor_address(name, out.data_ptr())
        stream = torch.cuda.current_stream(self._device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RunnerError("tensorrt: execute_async_v3 failed")
        return outputs
