"""PyTorch backend: eager (or ``torch.compile``) on CPU or CUDA, fp32 / fp16 / bf16, CUDA graphs.

On a CUDA device a batch-1 forward of these models is bound by kernel launches (about 10 ms of
launches for 2-3 ms of work on an H200), so by default the runner captures one CUDA graph per
input shape and batch size and replays it (``cuda_graphs=None`` = on for CUDA, off elsewhere).
fp16 on CUDA casts the whole model (``cast="half"``) rather than running autocast, whose cast
kernels made fp16 slower than fp32 in eager mode.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vit_perception.runtime import OUTPUT_NAMES
from vit_perception.runtime.base import Runner, RunnerError
from vit_perception.runtime.graph_cache import GraphCache, graph_key
from vit_perception.runtime.threads import default_threads

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CASTS = ("autocast", "half")
WARMUP_RUNS = 3  # eager runs on a side stream before a capture (cuBLAS handles, autotuning)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    static_in: torch.Tensor
    static_out: dict[str, torch.Tensor] = field(default_factory=dict)
    # the cached constants (sine tables, anchors) the graph reads: held while it lives, so an
    # eviction from their LRU cannot free memory a replay still reads
    keepalive: list[torch.Tensor] = field(default_factory=list)


def default_cast(precision: str, device: torch.device) -> str:
    """fp16 on CUDA: the whole model in half (no cast kernels); otherwise autocast, which keeps
    LayerNorm and softmax in fp32 (bf16 weights would round boxes to 1/256 of the image)."""
    return "half" if precision == "fp16" and device.type == "cuda" else "autocast"


def inductor_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where ``torch.compile`` keeps its FX graphs and Triton kernels across runs:
    ``$TORCHINDUCTOR_CACHE_DIR`` if set, else ``<engine cache>/inductor``."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if env:
        return Path(env)
    if cache_dir is None:
        from vit_perception.runtime.loading import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "inductor"


class TorchRunner(Runner):
    """Run an ``nn.Module`` returning a dict of named tensors.

    ``precision``: ``fp32``, or ``fp16``/``bf16`` through autocast (``cast="autocast"``:
    LayerNorm and softmax stay in fp32) or by casting the whole model and its inputs
    (``cast="half"``: weights, position tables and anchors all in that dtype). ``cast=None``
    picks ``half`` for fp16 on CUDA and ``autocast`` otherwise.

    ``cuda_graphs``: ``None`` = on for a CUDA device, off on the CPU; ``True`` on the CPU is a
    ``RunnerError``. One graph is captured per ``(batch, C, H, W, dtype)`` the first time that
    shape arrives (three eager warm-up runs, then the capture) and replayed after; at most
    ``graph_cache_size`` shapes are held (least recently used evicted). Outputs are cloned out of
    the graph's memory, so they stay valid after the next call.

    ``threads``: torch's CPU threads, set on activate (on the thread that activates, which
    should be the one that infers) and restored on deactivate; ``None``: on the CPU
    ``threads.default_threads()`` (all physical cores but one); 0: leave torch's choice.

    ``compile``: wrap the model in ``torch.compile`` (inductor). The first forward of each input
    shape compiles, which takes tens of seconds to minutes; the FX graphs and Triton kernels are
    kept under ``inductor_cache_dir(cache_dir)`` so a later process with the same model and
    shapes starts in seconds. With ``cuda_graphs`` the compiled model is what gets captured.
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        cast: str | None = None,
        compile: bool = False,
        cuda_graphs: bool | None = None,
        output_names: Sequence[str] = OUTPUT_NAMES,
        graph_cache_size: int = 4,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(output_names=output_names)
        if precision not in PRECISIONS:
            raise RunnerError(f"torch: precision {precision!r} not in {sorted(PRECISIONS)}")
        self._device = torch.device(device)
        if cast is None:
            cast = default_cast(precision, self._device)
        if cast not in CASTS:
            raise RunnerError(f"torch: cast must be 'autocast' or 'half', not {cast!r}")
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise RunnerError("torch: device 'cuda' requested but CUDA is not available")
        if cuda_graphs is None:
            cuda_graphs = self._device.type == "cuda"
        if cuda_graphs and self._device.type != "cuda":
            raise RunnerError(f"torch: CUDA graphs need a CUDA device, not {self._device} "
                              "(leave cuda_graphs unset to get them on CUDA only)")
        if threads is not None and int(threads) < 0:
            raise RunnerError(f"torch: threads must be 0 (torch's choice) or more, not {threads}")
        self.threads = None if threads is None else int(threads)
        self._threads_before: int | None = None
        self.precision = precision
        self.cast = cast
        self.compile = bool(compile)
        self.cuda_graphs = bool(cuda_graphs)
        self.cache_dir = cache_dir
        self.model = model
        self._forward: nn.Module | None = None
        self.graphs: GraphCache[_Captured] = GraphCache(graph_cache_size, _release)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def input_dtype(self) -> torch.dtype:
        if self.precision != "fp32" and self.cast == "half":
            return PRECISIONS[self.precision]
        return torch.float32

    def _activate(self) -> None:
        threads = self.threads
        if threads is None and self._device.type == "cpu":
            threads = default_threads()  # a core left to the camera driver
        if threads:  # on the calling thread: OpenMP keeps the count per thread
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
        model = self.model.eval().to(self._device)
        if self.precision != "fp32" and self.cast == "half":
            model = model.to(PRECISIONS[self.precision])
        if self.compile:
            cache = inductor_cache_dir(self.cache_dir)
            cache.mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))
            self._forward = torch.compile(model, dynamic=False)  # type: ignore[assignment]
        else:
            self._forward = model

    def _deactivate(self) -> None:
        self._forward = None
        self.graphs.clear()
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def _autocast(self, capturing: bool = False) -> contextlib.AbstractContextManager:
        if self.precision == "fp32" or self.cast == "half":
            return contextlib.nullcontext()
        # autocast's weight-cast cache must be off while a CUDA graph is captured (torch docs)
        return torch.autocast(self._device.type, dtype=PRECISIONS[self.precision],
                              cache_enabled=not capturing)

    def _run(self, images: torch.Tensor, capturing: bool = False) -> dict[str, torch.Tensor]:
        assert self._forward is not None
        with torch.inference_mode(), self._autocast(capturing):
            out = self._forward(images)
        return {k: out[k] for k in self.output_names if isinstance(out.get(k), torch.Tensor)}

    def _infer(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = inputs[self.input_names[0]].to(self._device, self.input_dtype, non_blocking=True)
        if not self.cuda_graphs:
            return self._run(images)
        key = graph_key(images)
        captured = self.graphs.get(key)
        if captured is None:
            captured = self._capture(images)
            self.graphs.put(key, captured)
        captured.static_in.copy_(images)
        captured.graph.replay()
        return {k: v.clone() for k, v in captured.static_out.items()}

    def _capture(self, images: torch.Tensor) -> _Captured:
        static_in = images.clone()
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._run(static_in, capturing=True)
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the node's other threads may use CUDA while this one captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self._run(static_in, capturing=True)
        return _Captured(graph, static_in, static_out, cached_constants())


def cached_constants() -> list[torch.Tensor]:
    """The tensors ``models.position_encoding.cached_constant`` holds right now."""
    from vit_perception.models import position_encoding

    with position_encoding._LOCK:
        return list(position_encoding._CACHE.values())


def _release(captured: _Captured) -> None:
    captured.graph.reset()
    captured.static_out.clear()
    captured.keepalive.clear()
