"""PyTorch backend: eager (or ``torch.compile``) on CPU or CUDA, fp32 / fp16 / bf16."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from vit_perception.runtime import OUTPUT_NAMES
from vit_perception.runtime.base import Runner, RunnerError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner(Runner):
    """Run an ``nn.Module`` returning a dict of named tensors.

    ``precision``: ``fp32``, or ``fp16``/``bf16`` through autocast (``cast="autocast"``, the
    default: LayerNorm and softmax stay in fp32) or by casting weights and inputs
    (``cast="half"``). ``compile`` wraps the model in ``torch.compile``; ``cuda_graphs`` captures
    one CUDA graph for a fixed input shape (CUDA only; outputs are cloned out of the graph pool).
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        cast: str = "autocast",
        compile: bool = False,
        cuda_graphs: bool = False,
        output_names: Sequence[str] = OUTPUT_NAMES,
    ) -> None:
        super().__init__(output_names=output_names)
        if precision not in PRECISIONS:
            raise RunnerError(f"torch: precision {precision!r} not in {sorted(PRECISIONS)}")
        if cast not in ("autocast", "half"):
            raise RunnerError(f"torch: cast must be 'autocast' or 'half', not {cast!r}")
        self._device = torch.device(device)
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise RunnerError("torch: device 'cuda' requested but CUDA is not available")
        if cuda_graphs and self._device.type != "cuda":
            raise RunnerError("torch: CUDA graphs need a CUDA device")
        self.precision = precision
        self.cast = cast
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.model = model
        self._forward: nn.Module | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_in: torch.Tensor | None = None
        self._static_out: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def input_dtype(self) -> torch.dtype:
        if self.precision != "fp32" and self.cast == "half":
            return PRECISIONS[self.precision]
        return torch.float32

    def _activate(self) -> None:
        model = self.model.eval().to(self._device)
        if self.precision != "fp32" and self.cast == "half":
            model = model.to(PRECISIONS[self.precision])
        self._forward = torch.compile(model) if self.compile else model  # type: ignore[assignment]

    def _deactivate(self) -> None:
        self._forward = None
        self._graph = None
        self._static_in = None
        self._static_out = {}
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32" or self.cast == "half":
            return contextlib.nullcontext()
        return torch.autocast(self._device.type, dtype=PRECISIONS[self.precision])

    def _run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self._forward is not None
        with torch.inference_mode(), self._autocast():
            out = self._forward(images)
        return {k: out[k] for k in self.output_names if isinstance(out.get(k), torch.Tensor)}

    def _infer(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = inputs[self.input_names[0]].to(self._device, self.input_dtype, non_blocking=True)
        if not self.cuda_graphs:
            return self._run(images)
        if self._graph is None or self._static_in is None or self._static_in.shape != images.shape:
            self._capture(images)
        assert self._graph is not None and self._static_in is not None
        self._static_in.copy_(images)
        self._graph.replay()
        return {k: v.clone() for k, v in self._static_out.items()}

    def _capture(self, images: torch.Tensor) -> None:
        self._static_in = images.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph (cuBLAS handles, autotuning)
            for _ in range(3):
                self._run(self._static_in)
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._static_out = self._run(self._static_in)
