"""ONNX Runtime backend: CPU execution provider, CUDA / TensorRT providers where installed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vit_perception.runtime.base import Runner, RunnerError

# Provider names by short alias, in preference order for device "cuda".
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def physical_cores() -> int:
    """Physical CPU cores (hyper-threads share a core's FP units, so they rarely help GEMMs)."""
    try:
        cores = set()
        phys = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                cores.add((phys, core))
        n = len(cores)
    except OSError:
        n = 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(n or usable or 1, usable or 1))


def session_options(intra_op_threads: int | None = None, allow_spinning: bool = False) -> Any:
    """Session options tuned for CPU inference: all graph optimisations, one thread per core.

    Spinning is off by default: ORT's idle workers otherwise busy-wait after every run and take
    the cores from the torch pre/post-processing that follows (measured: preprocess 10x slower).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


class OnnxRunner(Runner):
    """Run an ONNX file in ONNX Runtime.

    ``device``: ``cpu`` or ``cuda``; ``providers`` overrides the provider list (aliases from
    ``PROVIDERS`` or full names). On CUDA, inputs and outputs stay on the GPU through IOBinding
    (``io_binding=True``, the default there); on CPU outputs are wrapped without a copy.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        providers: Sequence[str] | None = None,
        io_binding: bool | None = None,
        intra_op_threads: int | None = None,
        provider_options: dict[str, dict[str, Any]] | None = None,
        allow_spinning: bool = False,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise RunnerError(f"onnxruntime: model file not found: {self.path}")
        self._device = torch.device(device)
        self._providers = [PROVIDERS.get(p, p) for p in providers] if providers else None
        self.io_binding = self._device.type == "cuda" if io_binding is None else io_binding
        self.intra_op_threads = intra_op_threads
        self.provider_options = provider_options or {}
        self.allow_spinning = allow_spinning
        self.session: Any = None
        self._fixed_batch: int | None = None

    @property
    def device(self) -> torch.device:
        return self._device

    def providers(self) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self._providers is not None:
            wanted = self._providers
        elif self._device.type == "cuda":
            wanted = [PROVIDERS["tensorrt"], PROVIDERS["cuda"], PROVIDERS["cpu"]]
        else:
            wanted = [PROVIDERS["cpu"]]
        chosen = [p for p in wanted if p in available]
        if self._device.type == "cuda" and PROVIDERS["cuda"] not in chosen:
            raise RunnerError(
                f"onnxruntime: device 'cuda' needs CUDAExecutionProvider; available: {available}"
                " (install onnxruntime-gpu)"
            )
        if not chosen:
            raise RunnerError(f"onnxruntime: none of {wanted} available; have {available}")
        return chosen

    def _activate(self) -> None:
        import onnxruntime as ort

        providers = self.providers()
        opts = [self.provider_options.get(p, {}) for p in providers]
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(self.intra_op_threads, self.allow_spinning),
                providers=providers, provider_options=opts,
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise RunnerError(f"onnxruntime: cannot load {self.path}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        first = self.session.get_inputs()[0].shape
        self._fixed_batch = first[0] if first and isinstance(first[0], int) else None

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = inputs[self.input_names[0]].shape[0]
        if batch > 1 and self._fixed_batch == 1:  # exported for one image: run them in turn
            parts = [self._infer_one({n: inputs[n][i : i + 1] for n in self.input_names})
                     for i in range(batch)]
            return {n: torch.cat([p[n] for p in parts]) for n in self.output_names}
        return self._infer_one(inputs)

    def _infer_one(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.io_binding:
            return self._infer_bound(inputs)
        feed = {n: inputs[n].detach().float().cpu().contiguous().numpy() for n in self.input_names}
        outs = self.session.run(self.output_names, feed)
        return {n: torch.from_numpy(np.asarray(o)) for n, o in zip(self.output_names, outs)}

    def _infer_bound(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Bind torch tensors as ORT buffers: no host round trip when the device is CUDA."""
        binding = self.session.io_binding()
        dev = self._device
        index = (dev.index or 0) if dev.type == "cuda" else 0
        kept = [inputs[n].detach().to(dev, torch.float32).contiguous() for n in self.input_names]
        for n, t in zip(self.input_names, kept):
            binding.bind_input(n, dev.type, index, np.float32, list(t.shape), t.data_ptr())
        batch = kept[0].shape[0]
        out: dict[str, torch.Tensor] = {}
        for meta in self.session.get_outputs():
            shape = [d if isinstance(d, int) else None for d in meta.shape]
            if shape and shape[0] is None:
                shape[0] = batch
            if any(d is None for d in shape):  # unknown size: let ORT allocate, copy afterwards
                binding.bind_output(meta.name, dev.type, index)
                continue
            dims = [int(d) for d in shape if d is not None]
            t = torch.empty(dims, dtype=_TORCH_DTYPES.get(meta.type, torch.float32), device=dev)
            out[meta.name] = t
            binding.bind_output(
                meta.name, dev.type, index, _NUMPY_DTYPES[t.dtype], dims, t.data_ptr()
            )
        if dev.type == "cuda":
            torch.cuda.current_stream(dev).synchronize()
        self.session.run_with_iobinding(binding)
        for n, value in zip(self.output_names, binding.get_outputs()):
            if n not in out:
                out[n] = torch.from_numpy(value.numpy()).to(dev)
        return {n: out[n] for n in self.output_names}


_TORCH_DTYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}
